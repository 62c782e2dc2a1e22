package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage/querycount"
	"github.com/deputyauth/deputy/storage/storagetest"
)

var debugAddrPattern = regexp.MustCompile(`msg="debug listening" addr=(\S+)`)

// TestServeDebugListener: DEPUTY_DEBUG_LISTEN binds a loopback listener
// serving the store's query counts and pprof, which grow with the requests
// of the public listener; the public listener serves neither.
func TestServeDebugListener(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, logs testkit.Buffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, config{
			Listen:      "127.0.0.1:0",
			DebugListen: "127.0.0.1:0",
			DatabaseURL: storagetest.SQLite.NewDSN(t),
			Logger:      newLogger(&logs, slog.LevelInfo, false),
			Out:         &out,
		})
	}()
	base := waitFor(t, &out, bannerPattern, done)
	debug := "http://" + waitFor(t, &logs, debugAddrPattern, done)
	counts := func() querycount.Counts {
		t.Helper()
		resp, body := get(t, http.DefaultClient, debug+"/debug/querycount")
		var c querycount.Counts
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &c) != nil {
			t.Fatalf("/debug/querycount: %d %s", resp.StatusCode, body)
		}
		return c
	}
	before := counts()
	if before.RoundTrips() == 0 {
		t.Errorf("no queries counted after start-up (migrations ran): %s", before)
	}
	// A token request looks its client up: at least one more call.
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("nobody", "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token with unknown credentials: %d", resp.StatusCode)
	}
	if d := counts().Sub(before); d.RoundTrips() < 1 {
		t.Errorf("a token request counted no query: %s", d)
	}
	if resp, body := get(t, http.DefaultClient, debug+"/debug/pprof/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d", resp.StatusCode)
	}
	for _, path := range []string{"/debug/querycount", "/debug/pprof/"} {
		if resp, _ := get(t, http.DefaultClient, base+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("public listener %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := get(t, http.DefaultClient, debug+"/healthz"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("debug listener serves the IdP: /healthz %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}

// The debug listener binds loopback IP addresses only, and serve refuses
// to start otherwise.
func TestServeDebugListenerLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "localhost:0", "192.0.2.7:6060", "127.0.0.1"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			err := serve(context.Background(), config{
				Listen:      "127.0.0.1:0",
				DebugListen: addr,
				DatabaseURL: storagetest.SQLite.NewDSN(t),
			})
			if err == nil || !strings.Contains(err.Error(), debugListenEnv) {
				t.Errorf("serve with debug listener %q = %v, want a refusal naming %s", addr, err, debugListenEnv)
			}
		})
	}
}
