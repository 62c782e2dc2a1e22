package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// The load generator's own client sends what a token request is and reads
// every shape of answer net/http's server writes, on one connection as long
// as the server keeps it: an answer it misreads would count a failure as a
// token, or read the rest of one answer as the next.
func TestTokenRequestWire(t *testing.T) {
	t.Parallel()
	const token = `{"access_token":"dpy_at_x","token_type":"bearer"}`
	tests := []struct {
		name    string
		handler http.HandlerFunc
		// wantErr is a substring of the first request's error, "" for none.
		wantErr string
		// wantConns is how many connections three requests use.
		wantConns int64
	}{
		{"content-length", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(token))
		}, "", 1},
		{"chunked", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(token[:10]))
			w.(http.Flusher).Flush()
			w.Write([]byte(token[10:]))
		}, "", 1},
		{"connection close", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Connection", "close")
			w.Write([]byte(token))
		}, "", 3},
		{"error status", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client"}`))
		}, "HTTP 401: {\"error\":\"invalid_client\"}", 1},
		{"200 without a token", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(`{}`))
		}, "without an access_token", 1},
		{"answer over 64 KiB", func(w http.ResponseWriter, _ *http.Request) {
			w.Write([]byte(token + strings.Repeat(" ", 1<<16)))
		}, "over 64 KiB", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var conns atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := checkTokenRequest(r); err != "" {
					http.Error(w, err, http.StatusBadRequest)
					return
				}
				tt.handler(w, r)
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			t.Cleanup(srv.Close)

			o := tokenRequest(srv.URL+"/oauth2/token?x=1", "app 1", "s:cret", url.Values{"grant_type": {"client_credentials"}})
			w := &worker{}
			defer w.close()
			for i := range 3 {
				err := o(context.Background(), w)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Fatalf("request %d: %v", i, err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Fatalf("request %d: error %v, want one with %q", i, err, tt.wantErr)
				}
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("%d connections for three requests, want %d", got, tt.wantConns)
			}
		})
	}
}

// checkTokenRequest is what the server of TestTokenRequestWire requires of
// each request: "" when it is the token request tokenRequest was given.
func checkTokenRequest(r *http.Request) string {
	id, secret, ok := r.BasicAuth()
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/oauth2/token" || r.URL.RawQuery != "x=1":
		return "request line " + r.Method + " " + r.URL.String()
	case !ok || id != url.QueryEscape("app 1") || secret != url.QueryEscape("s:cret"):
		return "basic credentials"
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		return "content type"
	case r.PostFormValue("grant_type") != "client_credentials":
		return "form"
	}
	return ""
}

// A keep-alive connection the server closed while it sat idle (between the
// warm-up and the measured phase, say) costs a new connection, not a
// failed request.
func TestTokenRequestRedialsAClosedConnection(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"access_token":"dpy_at_x"}`))
	}))
	t.Cleanup(srv.Close)
	o := tokenRequest(srv.URL, "a", "b", url.Values{"grant_type": {"client_credentials"}})
	w := &worker{}
	defer w.close()
	if err := o(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	if err := o(context.Background(), w); err != nil {
		t.Fatalf("after the server closed the connection: %v", err)
	}
}

// The generator's own client refuses what it cannot send: an https URL and
// a target that is not this machine.
func TestTokenRequestRefuses(t *testing.T) {
	t.Parallel()
	for _, endpoint := range []string{"https://127.0.0.1:1/token", "http://192.0.2.1:80/token"} {
		err := tokenRequest(endpoint, "a", "b", nil)(context.Background(), &worker{})
		if err == nil {
			t.Errorf("%s: no error", endpoint)
		}
	}
}
