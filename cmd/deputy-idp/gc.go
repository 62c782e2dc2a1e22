package main

import (
	"os"
	"runtime/debug"
)

// defaultGCPercent is deputy-idp's GOGC when the environment sets none.
// The server's live heap is a few megabytes while a token allocates about
// 20 to 30 KB, so at Go's default (100) the collector runs dozens of times a
// second under load; 400 makes that four times fewer for some tens of
// megabytes more memory, and took 10 to 25 % off the Go CPU per token
// (docs/performance.md change 12). GOGC in the environment wins, as Go
// documents; GOMEMLIMIT works as usual.
const defaultGCPercent = 400

// setGCPercent applies defaultGCPercent unless the environment sets GOGC,
// and returns the setting in force and where it came from.
func setGCPercent() (gogc, source string) {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		return v, "GOGC"
	}
	debug.SetGCPercent(defaultGCPercent)
	return "400", "default"
}
