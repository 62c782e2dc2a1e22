package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage/querycount"
)

// The load generator's own client sends what a token request is and reads
// the shapes of answer net/http's server writes (a Content-Length body, a
// chunked one, Connection: close, an error status, a 200 without a token,
// an interim 103 before the answer, a body over 64 KiB), on one connection
// as long as the server keeps it: an answer it misreads would count a
// failure as a token, or read the rest of one answer as the next. The
// server sees each request exactly once: nothing is sent twice.
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
		{"103 early hints first", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Write([]byte(token))
		}, "", 1},
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
			var conns, calls atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
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
				if w.retries != 0 {
					t.Fatalf("request %d: %d retries", i, w.retries)
				}
				if tt.wantConns == 3 && w.conn != nil {
					t.Fatalf("request %d: the connection is kept after an answer that ends it", i)
				}
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("%d connections for three requests, want %d", got, tt.wantConns)
			}
			if got := calls.Load(); got != 3 {
				t.Errorf("the server saw %d requests for three sent", got)
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
// failed request, and the retry is counted as sent (countSent).
func TestTokenRequestRedialsAClosedConnection(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"access_token":"dpy_at_x"}`))
	}))
	t.Cleanup(srv.Close)
	var sent atomic.Int64
	o := countSent(tokenRequest(srv.URL, "a", "b", url.Values{"grant_type": {"client_credentials"}}), &sent)
	w := &worker{}
	defer w.close()
	if err := o(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	if err := o(context.Background(), w); err != nil {
		t.Fatalf("after the server closed the connection: %v", err)
	}
	// The retry went on the wire: the generator's figures count it.
	if got := sent.Load(); got != 3 {
		t.Errorf("sent %d, want 3 (two requests, one retried)", got)
	}
}

// A server that read the request and then said nothing is not asked again
// (only a connection closed before any answer is), and the context's end
// cuts the request short instead of the worker's own deadline.
func TestTokenRequestDoesNotResendAfterSilence(t *testing.T) {
	t.Parallel()
	addr, requests, _ := serveRaw(t, func(n int64, c net.Conn) bool {
		if n == 1 {
			c.Write([]byte(okAnswer))
			return true
		}
		io.Copy(io.Discard, c) // read, then silence until the client gives up
		return false
	})
	o := tokenRequest("http://"+addr+"/token", "a", "b", url.Values{"grant_type": {"client_credentials"}})
	w := &worker{timeout: time.Hour}
	defer w.close()
	if err := o(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- o(ctx, w) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want the context's", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not end with its context")
	}
	if got := requests.Load(); got != 2 || w.retries != 0 {
		t.Errorf("the server saw %d requests and %d retries, want 2 and 0", got, w.retries)
	}
}

// Bytes a server sends after an answer are never read as the next
// request's answer: the connection is dropped and the next request dials.
func TestTokenRequestDropsAConnectionWithBytesAfterTheAnswer(t *testing.T) {
	t.Parallel()
	addr, requests, conns := serveRaw(t, func(n int64, c net.Conn) bool {
		if n == 1 {
			c.Write([]byte(okAnswer + "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}"))
			return true
		}
		c.Write([]byte(okAnswer))
		return true
	})
	o := tokenRequest("http://"+addr+"/token", "a", "b", url.Values{"grant_type": {"client_credentials"}})
	w := &worker{}
	defer w.close()
	for i := range 3 {
		if err := o(context.Background(), w); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if r, c := requests.Load(), conns.Load(); r != 3 || c != 2 {
		t.Errorf("%d requests on %d connections, want 3 on 2", r, c)
	}
}

// okAnswer is a token answer as a raw HTTP/1.1 response.
const okAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"access_token\":\"x\"}"

// serveRaw accepts connections on loopback and calls answer for each
// request read (n counts them from 1, over all connections); answer writes
// what it likes on c and says whether to read another request from it.
// It returns the address and the counts of requests and connections.
func serveRaw(t *testing.T, answer func(n int64, c net.Conn) bool) (addr string, requests, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	requests, conns = new(atomic.Int64), new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					if !answer(requests.Add(1), c) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), requests, conns
}

// The generator's own client refuses what it cannot send: an https URL and
// a target that is not this machine.
func TestTokenRequestRefuses(t *testing.T) {
	t.Parallel()
	err := tokenRequest("https://127.0.0.1:1/token", "a", "b", nil)(context.Background(), &worker{})
	if err == nil || !strings.Contains(err.Error(), "only http://") {
		t.Errorf("https: %v, want the only-http:// refusal", err)
	}
	err = tokenRequest("http://192.0.2.1:80/token", "a", "b", nil)(context.Background(), &worker{})
	if !errors.Is(err, errNotLoopback) {
		t.Errorf("192.0.2.1: %v, want errNotLoopback", err)
	}
}

// A worker goes from one phase's context to the next (warm-up, then the
// measured run): the end of the first never cuts short a request made with
// the second, however late its watch runs.
func TestTokenRequestOutlivesThePreviousContext(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"access_token":"dpy_at_x"}`))
	}))
	t.Cleanup(srv.Close)
	o := tokenRequest(srv.URL, "a", "b", url.Values{"grant_type": {"client_credentials"}})
	w := &worker{}
	defer w.close()
	for i := range 300 {
		ctx, cancel := context.WithCancel(context.Background())
		if err := o(ctx, w); err != nil {
			t.Fatalf("round %d, first context: %v", i, err)
		}
		cancel()
		next, cancelNext := context.WithCancel(context.Background())
		err := o(next, w)
		cancelNext()
		if err != nil {
			t.Fatalf("round %d, after the first context ended: %v", i, err)
		}
	}
}

// tallyCounter counts as the driver would the statements an op runs.
type tallyCounter struct{ n querycount.Counts }

func (c *tallyCounter) Counts(context.Context) (querycount.Counts, error) { return c.n, nil }

// A request sent twice (its connection closed under it) is not a sample of
// the SQL round trips per request: both attempts may have run statements.
func TestSQLPerRequestRetakesARetriedSample(t *testing.T) {
	t.Parallel()
	var (
		c     tallyCounter
		calls int
	)
	o := func(_ context.Context, w *worker) error {
		calls++
		c.n.StmtExec++
		if calls%3 == 0 { // every third request is sent twice and runs twice
			c.n.StmtExec++
			w.retries++
		}
		return nil
	}
	got, err := sqlPerRequest(context.Background(), &c, o, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got.Samples != 4 || got.Total.RoundTrips() != 4 {
		t.Errorf("%d samples, %d round trips in them; want 4 and 4 (the retried ones left out)", got.Samples, got.Total.RoundTrips())
	}
}
