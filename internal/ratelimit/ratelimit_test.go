package ratelimit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeTokenEndpoint authenticates clients the way fosite does (Basic wins,
// else the form) and counts the secret comparisons it makes, so a test can
// see that a refused request never reached one.
type fakeTokenEndpoint struct {
	secrets     map[string]string
	compares    atomic.Int64
	failureCode int    // status of a failed authentication (401 by default)
	failureErr  string // error code of a failed authentication
	lastBody    []byte
}

func (e *fakeTokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.lastBody = body
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := r.ParseMultipartForm(1 << 20); err != nil && err != http.ErrNotMultipart {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	e.compares.Add(1)
	want, known := e.secrets[id]
	if !known || want != secret {
		code, name := e.failureCode, e.failureErr
		if code == 0 {
			code, name = http.StatusUnauthorized, "invalid_client"
		}
		writeOAuthError(w, code, name, "Client authentication failed.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"dpy_at_x","token_type":"bearer"}`)
}

func tokenRequest(clientID, secret string, basic bool) *http.Request {
	form := url.Values{"grant_type": {"client_credentials"}}
	if !basic {
		form.Set("client_id", clientID)
		form.Set("client_secret", secret)
	}
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		r.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func newLimited(t *testing.T, cfg ClientAuthLimit) (*ClientAuthLimiter, *fakeClock, *fakeTokenEndpoint, http.Handler) {
	t.Helper()
	clock := newFakeClock()
	l := newClientAuthLimiter(cfg, clock.Now)
	ep := &fakeTokenEndpoint{secrets: map[string]string{
		"app-a":     "dpy_cs_right-a",
		"app-b":     "dpy_cs_right-b",
		"app:colon": "dpy_cs_right-c",
	}}
	return l, clock, ep, l.Middleware(ep)
}

// TestClientAuthLimiterGuessingAttack is the attack: wrong secrets at line
// speed. Without the limiter every one of them reaches a comparison.
func TestClientAuthLimiterGuessingAttack(t *testing.T) {
	t.Parallel()
	for _, basic := range []bool{true, false} {
		t.Run(fmt.Sprintf("basic=%v", basic), func(t *testing.T) {
			t.Parallel()
			_, _, ep, h := newLimited(t, ClientAuthLimit{})
			for i := range DefaultClientAuthBurst {
				w := serve(h, tokenRequest("app-a", fmt.Sprintf("dpy_cs_guess-%d", i), basic))
				if w.Code != http.StatusUnauthorized {
					t.Fatalf("guess %d: status %d, want 401", i, w.Code)
				}
			}
			const attempts = 1000
			for i := range attempts {
				w := serve(h, tokenRequest("app-a", fmt.Sprintf("dpy_cs_more-%d", i), basic))
				if w.Code != http.StatusTooManyRequests {
					t.Fatalf("guess %d past the burst: status %d, want 429", i, w.Code)
				}
				if ra := w.Header().Get("Retry-After"); ra != "1" {
					t.Fatalf("Retry-After = %q, want 1", ra)
				}
				var body struct{ Error, ErrorDescription string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != "temporarily_unavailable" {
					t.Fatalf("429 body %q: %v", w.Body, err)
				}
				if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
					t.Fatalf("Cache-Control = %q", cc)
				}
			}
			if got := ep.compares.Load(); got != DefaultClientAuthBurst {
				t.Fatalf("%d secret comparisons, want %d: refused requests must not reach one", got, DefaultClientAuthBurst)
			}
			// Another client is not affected.
			if w := serve(h, tokenRequest("app-b", "dpy_cs_right-b", basic)); w.Code != http.StatusOK {
				t.Fatalf("other client with the right secret: %d %s", w.Code, w.Body)
			}
			// The attacked client waits too: the limiter refuses before it
			// can know the secret is right (the documented trade-off).
			if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", basic)); w.Code != http.StatusTooManyRequests {
				t.Fatalf("attacked client during the lockout: %d, want 429", w.Code)
			}
		})
	}
}

func TestClientAuthLimiterSuccessIsFree(t *testing.T) {
	t.Parallel()
	_, _, _, h := newLimited(t, ClientAuthLimit{Burst: 3})
	for i := range 500 {
		if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", i%2 == 0)); w.Code != http.StatusOK {
			t.Fatalf("success %d: %d", i, w.Code)
		}
	}
	for i := range 3 {
		if w := serve(h, tokenRequest("app-a", "wrong", false)); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d after successes: %d, want 401 (successes must not have spent the bucket)", i, w.Code)
		}
	}
	if w := serve(h, tokenRequest("app-a", "wrong", false)); w.Code != http.StatusTooManyRequests {
		t.Fatalf("failure past the burst: %d, want 429", w.Code)
	}
}

func TestClientAuthLimiterRefill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       ClientAuthLimit
		wait      time.Duration // advanced after emptying the bucket
		wantRetry string        // Retry-After right after emptying
		wantAfter int           // status after waiting
	}{
		{"default one per second", ClientAuthLimit{}, time.Second, "1", http.StatusOK},
		{"not yet refilled", ClientAuthLimit{}, 999 * time.Millisecond, "1", http.StatusTooManyRequests},
		{"slow rate", ClientAuthLimit{Burst: 2, Rate: 0.1}, 10 * time.Second, "10", http.StatusOK},
		{"slow rate early", ClientAuthLimit{Burst: 2, Rate: 0.1}, 9 * time.Second, "10", http.StatusTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, clock, _, h := newLimited(t, tc.cfg)
			for range l.cfg.Burst {
				serve(h, tokenRequest("app-a", "wrong", true))
			}
			w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", true))
			if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != tc.wantRetry {
				t.Fatalf("after the burst: %d Retry-After %q, want 429 %q", w.Code, w.Header().Get("Retry-After"), tc.wantRetry)
			}
			clock.Advance(tc.wait)
			if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)); w.Code != tc.wantAfter {
				t.Fatalf("after %v: %d, want %d", tc.wait, w.Code, tc.wantAfter)
			}
		})
	}
}

// TestClientAuthLimiterConcurrentDebt: failures admitted together are all
// charged, so concurrency does not raise the long-run guessing rate.
func TestClientAuthLimiterConcurrentDebt(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newClientAuthLimiter(ClientAuthLimit{}, clock.Now)
	for range 40 { // 40 guesses admitted at once, all failing
		l.Failed("app-a")
	}
	ok, wait := l.Allow("app-a")
	if ok || wait != 31*time.Second {
		t.Fatalf("Allow = %v, %v; want false, 31s (10-40 tokens, back to 1 at 1/s)", ok, wait)
	}
	clock.Advance(31 * time.Second)
	if ok, _ := l.Allow("app-a"); !ok {
		t.Fatal("not allowed after the debt was paid")
	}
}

func TestClientAuthLimiterFailureStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		code    int
		errName string
		charged bool
	}{
		{"401 invalid_client", http.StatusUnauthorized, "invalid_client", true},
		{"401 request_unauthorized (introspection)", http.StatusUnauthorized, "request_unauthorized", true},
		{"400 invalid_client", http.StatusBadRequest, "invalid_client", true},
		{"400 invalid_grant", http.StatusBadRequest, "invalid_grant", false},
		{"403 access_denied", http.StatusForbidden, "access_denied", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, _, ep, h := newLimited(t, ClientAuthLimit{Burst: 1})
			ep.failureCode, ep.failureErr = tc.code, tc.errName
			serve(h, tokenRequest("app-a", "wrong", false))
			ok, _ := l.Allow("app-a")
			if ok == tc.charged {
				t.Fatalf("charged = %v, want %v", !ok, tc.charged)
			}
		})
	}
}

// TestClientAuthLimiterKeepsBody: the endpoint reads the body exactly as
// sent, whatever the middleware read to find the client.
func TestClientAuthLimiterKeepsBody(t *testing.T) {
	t.Parallel()
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("grant_type", "client_credentials")
	mw.WriteField("client_id", "app-a")
	mw.WriteField("client_secret", "wrong")
	mw.Close()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app-a"}, "client_secret": {"wrong"}, "scope": {strings.Repeat("s", 5000)}}.Encode()
	tests := []struct {
		name, contentType, body string
	}{
		{"urlencoded", "application/x-www-form-urlencoded", form},
		{"urlencoded with charset", "application/x-www-form-urlencoded; charset=utf-8", form},
		{"multipart", mw.FormDataContentType(), mp.String()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, _, ep, h := newLimited(t, ClientAuthLimit{Burst: 1})
			r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.contentType)
			w := serve(h, r)
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("status %d %s, want 401", w.Code, w.Body)
			}
			if string(ep.lastBody) != tc.body {
				t.Fatalf("endpoint read %d bytes, want the %d sent", len(ep.lastBody), len(tc.body))
			}
			if ok, _ := l.Allow("app-a"); ok {
				t.Fatal("failure not charged to the form's client_id")
			}
		})
	}
}

func TestClientAuthLimiterOversizedBody(t *testing.T) {
	t.Parallel()
	_, _, ep, h := newLimited(t, ClientAuthLimit{MaxBody: 1024})
	body := "grant_type=client_credentials&client_id=app-a&client_secret=x&pad=" + strings.Repeat("a", 2000)
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := serve(h, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: padding must not be a way around the limiter", w.Code)
	}
	if ep.compares.Load() != 0 {
		t.Fatal("oversized request reached the endpoint")
	}
}

// TestClientAuthLimiterSameClientEveryWay: Basic (URL-encoded, as RFC 6749
// §2.3.1 asks) and the form name one bucket, so switching method is no way
// around it.
func TestClientAuthLimiterSameClientEveryWay(t *testing.T) {
	t.Parallel()
	_, _, _, h := newLimited(t, ClientAuthLimit{Burst: 2})
	serve(h, tokenRequest("app:colon", "wrong", true))
	serve(h, tokenRequest("app:colon", "wrong", false))
	for _, basic := range []bool{true, false} {
		if w := serve(h, tokenRequest("app:colon", "wrong", basic)); w.Code != http.StatusTooManyRequests {
			t.Fatalf("basic=%v: %d, want 429", basic, w.Code)
		}
	}
}

func TestClientAuthLimiterNoClientPassesThrough(t *testing.T) {
	t.Parallel()
	l, _, _, h := newLimited(t, ClientAuthLimit{Burst: 1})
	for range 5 {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader("grant_type=client_credentials"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if w := serve(h, r); w.Code != http.StatusUnauthorized {
			t.Fatalf("status %d", w.Code)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("%d buckets for requests naming no client", l.Len())
	}
}

// TestClientAuthLimiterBoundedMemory: spraying client ids keeps memory
// bounded and does not free the client under attack.
func TestClientAuthLimiterBoundedMemory(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newClientAuthLimiter(ClientAuthLimit{Burst: 5, MaxClients: 64}, clock.Now)
	for range 20 {
		l.Failed("victim")
	}
	for i := range 10_000 {
		l.Failed(fmt.Sprintf("spray-%d", i))
		if n := l.Len(); n > 64 {
			t.Fatalf("%d buckets, want at most 64", n)
		}
	}
	if ok, _ := l.Allow("victim"); ok {
		t.Fatal("the most penalised client was evicted by a spray of others")
	}
	// Idle buckets are forgotten once they have refilled.
	clock.Advance(time.Minute)
	l.Failed("late")
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after every other refilled, want 1", n)
	}
}

func TestClientAuthLimiterDefaults(t *testing.T) {
	t.Parallel()
	got := NewClientAuthLimiter(ClientAuthLimit{Rate: -1}).cfg
	want := ClientAuthLimit{Burst: 10, Rate: 1, MaxClients: 10_000, MaxBody: 64 << 10}
	if got != want {
		t.Fatalf("defaults %+v, want %+v", got, want)
	}
}
