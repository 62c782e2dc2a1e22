package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The HTTP floor answers what the load generator sends as a token
// response, and refuses what it could not have sent: a floor that accepted
// anything would measure less than a token endpoint's HTTP.
func TestHTTPFloorHandler(t *testing.T) {
	t.Parallel()
	form := "grant_type=client_credentials&scope=projects%3Aread"
	tests := []struct {
		name   string
		method string
		body   string
		basic  bool
		want   int
	}{
		{"token request", http.MethodPost, form, true, http.StatusOK},
		{"GET", http.MethodGet, "", true, http.StatusMethodNotAllowed},
		{"no grant_type", http.MethodPost, "scope=a", true, http.StatusBadRequest},
		{"no client authentication", http.MethodPost, form, false, http.StatusUnauthorized},
		{"body over 64 KiB", http.MethodPost, form + "&pad=" + strings.Repeat("x", 1<<16), true, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(tt.method, "/token", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.basic {
				req.SetBasicAuth(httpFloorClientID, httpFloorSecret)
			}
			rec := httptest.NewRecorder()
			httpFloorHandler().ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want != http.StatusOK {
				return
			}
			body := rec.Body.String()
			if !strings.Contains(body, `"access_token":"dpy_at_`) || !strings.Contains(body, `"scope":"projects:read"`) {
				t.Errorf("body %s, want a token response", body)
			}
			if got := rec.Header().Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
		})
	}
}

// The http-floor cell runs through the load generator like every HTTP
// cell, and its row has what the table and its reference lines read.
func TestRunHTTPFloorCell(t *testing.T) {
	t.Parallel()
	rep, table := runBench(t, "-cells", groupHTTPFloor, "-clients", "2", "-duration", "300ms", "-warmup", "100ms")
	if len(rep.Results) != 1 {
		t.Fatalf("%d rows, want 1:\n%s", len(rep.Results), table)
	}
	r := rep.Results[0]
	if r.Cell != cellHTTPFloor || !r.Available || r.Requests == 0 || r.Errors != 0 || r.CPUPerRequestUs == nil {
		t.Fatalf("row %+v, want an available http-floor row with requests, no errors and its CPU\n%s", r, table)
	}
	if r.VsBaseline != nil || r.VsFloor != nil {
		t.Errorf("ratios on the http-floor row: vs baseline %v, vs floor %v", r.VsBaseline, r.VsFloor)
	}
	if !strings.Contains(table, "p99, HTTP floor") {
		t.Errorf("table without the HTTP floor's reference line:\n%s", table)
	}
}
