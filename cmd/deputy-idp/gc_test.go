package main

import (
	"runtime/debug"
	"testing"
)

// TestSetGCPercent: serve's GC default applies only when GOGC is not set.
// Not parallel: it sets the process's GC percent and environment.
func TestSetGCPercent(t *testing.T) {
	current := func() int {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	defer debug.SetGCPercent(current())
	tests := []struct {
		env, wantGOGC, wantSource string
		wantPercent               int
	}{
		{"", "400", "default", defaultGCPercent},
		{"250", "250", "GOGC", 100}, // Go read GOGC at start; it stays as it was
	}
	for _, tt := range tests {
		t.Setenv("GOGC", tt.env)
		debug.SetGCPercent(100)
		gogc, source := setGCPercent()
		if gogc != tt.wantGOGC || source != tt.wantSource || current() != tt.wantPercent {
			t.Errorf("GOGC=%q: %s from %s, percent %d; want %s from %s, %d", tt.env, gogc, source, current(), tt.wantGOGC, tt.wantSource, tt.wantPercent)
		}
	}
}
