package ratelimit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/testkit"
)

// newFakeClock is a clock the test moves by hand.
func newFakeClock() *testkit.Clock {
	return testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
}

// fakeTokenEndpoint authenticates clients the way fosite does (Basic wins,
// else the form), counts the secret comparisons it makes, so a test can see
// that a refused request never reached one, and reports the outcome to the
// limiter as deputy's endpoints do. gate, when set, holds every request
// after its comparison until it is closed.
type fakeTokenEndpoint struct {
	secrets  map[string]string
	compares atomic.Int64
	inside   atomic.Int64 // requests between the comparison and the gate
	gate     chan struct{}
	lastBody []byte
	mu       sync.Mutex
}

func (e *fakeTokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.lastBody = body
	e.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := r.ParseMultipartForm(1 << 20); err != nil && err != http.ErrNotMultipart {
		Report(r.Context(), false)
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
		Report(r.Context(), false)
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	e.compares.Add(1)
	want, known := e.secrets[id]
	failed := !known || want != secret
	Report(r.Context(), failed)
	if e.gate != nil {
		e.inside.Add(1)
		<-e.gate
	}
	if failed {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"access_token":"dpy_at_x","token_type":"bearer"}`)
}

// The sources requests come from: a stranger's address, the real client's.
const (
	strangerAddr = "203.0.113.7:40000"
	clientAddr   = "198.51.100.20:50000"
)

func tokenRequest(clientID, secret string, basic bool) *http.Request {
	return tokenRequestFrom(strangerAddr, clientID, secret, basic)
}

func tokenRequestFrom(remoteAddr, clientID, secret string, basic bool) *http.Request {
	form := url.Values{"grant_type": {"client_credentials"}}
	if !basic {
		form.Set("client_id", clientID)
		form.Set("client_secret", secret)
	}
	r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
	r.RemoteAddr = remoteAddr
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

func newLimited(t *testing.T, cfg ClientAuthLimit) (*ClientAuthLimiter, *testkit.Clock, *fakeTokenEndpoint, http.Handler) {
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

// fail reserves and settles one failure of client from source, as a
// request the endpoint refused would.
func fail(t *testing.T, l *ClientAuthLimiter, client, source string) bool {
	t.Helper()
	res, _ := l.reserve(context.Background(), client, source)
	if res == nil {
		return false
	}
	res.settle(true)
	return true
}

func wantRefused(t *testing.T, w *httptest.ResponseRecorder, retryAfter string) {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d %s, want 429", w.Code, w.Body)
	}
	if ra := w.Header().Get("Retry-After"); ra != retryAfter {
		t.Fatalf("Retry-After = %q, want %q", ra, retryAfter)
	}
	var body struct{ Error, ErrorDescription string }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != "temporarily_unavailable" {
		t.Fatalf("429 body %q: %v", w.Body, err)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control = %q", cc)
	}
}

// TestClientAuthLimiterGuessingAttack is the attack: wrong secrets at line
// speed from one source. Without the limiter every one of them reaches a
// comparison. The client's shared failures and then the source's own
// allowance are spent; past them every guess is refused before the
// endpoint, told to come back in a second, and the real client, elsewhere,
// is not affected.
func TestClientAuthLimiterGuessingAttack(t *testing.T) {
	t.Parallel()
	const allowed = DefaultClientAuthBurst + DefaultClientAuthSourceBurst
	for _, basic := range []bool{true, false} {
		t.Run(fmt.Sprintf("basic=%v", basic), func(t *testing.T) {
			t.Parallel()
			_, _, ep, h := newLimited(t, ClientAuthLimit{})
			for i := range allowed {
				w := serve(h, tokenRequest("app-a", fmt.Sprintf("dpy_cs_guess-%d", i), basic))
				if w.Code != http.StatusUnauthorized {
					t.Fatalf("guess %d: status %d, want 401", i, w.Code)
				}
			}
			for i := range 1000 {
				wantRefused(t, serve(h, tokenRequest("app-a", fmt.Sprintf("dpy_cs_more-%d", i), basic)), "1")
			}
			if got := ep.compares.Load(); got != allowed {
				t.Fatalf("%d secret comparisons, want %d: refused requests must not reach one", got, allowed)
			}
			// Another client is not affected.
			if w := serve(h, tokenRequest("app-b", "dpy_cs_right-b", basic)); w.Code != http.StatusOK {
				t.Fatalf("other client with the right secret: %d %s", w.Code, w.Body)
			}
			// The attacked client, from its own address, is not either: the
			// stranger spent the shared failures and the stranger's own
			// allowance, never the client's.
			if w := serve(h, tokenRequestFrom(clientAddr, "app-a", "dpy_cs_right-a", basic)); w.Code != http.StatusOK {
				t.Fatalf("attacked client from its own address: %d %s, want 200", w.Code, w.Body)
			}
			// From the stranger's address it waits too: the limiter refuses
			// before it can know the secret is right.
			wantRefused(t, serve(h, tokenRequest("app-a", "dpy_cs_right-a", basic)), "1")
		})
	}
}

// waitFor polls until cond holds: synchronisation with goroutines the test
// started, not a timing assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// TestClientAuthLimiterBurstIsReserved is the attack of issue 13: a burst of
// 300 wrong secrets fired at once, all in flight together, by someone who
// knows only the client_id. Each admitted request holds a reservation
// before its secret is compared, so exactly the allowance reaches a
// comparison, the rest are refused, nothing is charged beyond it, and the
// wait it leaves is LongestRefusal, not one second per guess: without the
// reservation (failures charged when the answer is seen, with no floor)
// all 300 were compared and the client was locked out for minutes.
func TestClientAuthLimiterBurstIsReserved(t *testing.T) {
	t.Parallel()
	const n = 300
	const allowed = DefaultClientAuthBurst + DefaultClientAuthSourceBurst
	for round := range 3 {
		t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) {
			t.Parallel()
			l, clock, ep, h := newLimited(t, ClientAuthLimit{MaxWait: time.Minute})
			ep.gate = make(chan struct{})
			codes := make([]int, n)
			retry := make([]string, n)
			var done atomic.Int64
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := serve(h, tokenRequest("app-a", fmt.Sprintf("dpy_cs_burst-%d", i), i%2 == 0))
					codes[i], retry[i] = w.Code, w.Header().Get("Retry-After")
					done.Add(1)
				}()
			}
			// Every request is in flight at the endpoint, refused, or
			// waiting for the allowance the ones in flight hold.
			waitFor(t, "all requests to reach the limiter", func() bool {
				l.mu.Lock()
				waiting := l.waiting
				l.mu.Unlock()
				return ep.inside.Load()+done.Load()+int64(waiting) == n
			})
			if got := ep.inside.Load(); got != allowed {
				t.Fatalf("%d requests in flight at once, want the allowance %d", got, allowed)
			}
			close(ep.gate)
			wg.Wait()

			counts := map[int]int{}
			for i, c := range codes {
				counts[c]++
				if c == http.StatusTooManyRequests && retry[i] != "1" {
					t.Fatalf("Retry-After %q after the burst, want 1 (LongestRefusal)", retry[i])
				}
			}
			if counts[http.StatusUnauthorized] != allowed || counts[http.StatusTooManyRequests] != n-allowed {
				t.Fatalf("answers %v, want %d × 401 and %d × 429", counts, allowed, n-allowed)
			}
			if got := ep.compares.Load(); got != allowed {
				t.Fatalf("%d secret comparisons, want %d", got, allowed)
			}
			// The real client, from its own address, at once.
			if w := serve(h, tokenRequestFrom(clientAddr, "app-a", "dpy_cs_right-a", true)); w.Code != http.StatusOK {
				t.Fatalf("the real client right after the burst: %d %s", w.Code, w.Body)
			}
			// From the stranger's address, after the longest refusal.
			clock.Advance(ClientAuthLimit{}.LongestRefusal())
			if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)); w.Code != http.StatusOK {
				t.Fatalf("after LongestRefusal: %d %s, want 200: the burst left debt", w.Code, w.Body)
			}
		})
	}
}

// TestClientAuthLimiterStrangerCannotLockOut: a stranger failing without
// pause, from one address or several, for ten minutes; the real client
// authenticates from its own address all along and is never refused.
func TestClientAuthLimiterStrangerCannotLockOut(t *testing.T) {
	t.Parallel()
	_, clock, ep, h := newLimited(t, ClientAuthLimit{})
	for step := range 1200 {
		for i := range 5 {
			addr := fmt.Sprintf("203.0.113.%d:4000", 1+(step+i)%20)
			serve(h, tokenRequestFrom(addr, "app-a", "wrong", i%2 == 0))
		}
		if w := serve(h, tokenRequestFrom(clientAddr, "app-a", "dpy_cs_right-a", step%2 == 0)); w.Code != http.StatusOK {
			t.Fatalf("step %d: the real client got %d %s", step, w.Code, w.Body)
		}
		clock.Advance(500 * time.Millisecond)
	}
	// 20 addresses over 600 s: the shared failures (10 + 600) and each
	// address's own (5 + 600/5), no more.
	if max := int64(10 + 600 + 20*(5+600/5)); ep.compares.Load()-1200 > max {
		t.Fatalf("%d wrong secrets compared, want at most %d", ep.compares.Load()-1200, max)
	}
}

// TestClientAuthLimiterConcurrentSuccesses: a client's own requests, many
// at once from one address, all succeed: while the allowance is held by
// requests in flight the others wait for it rather than be refused.
func TestClientAuthLimiterConcurrentSuccesses(t *testing.T) {
	t.Parallel()
	const n = 60
	l, _, ep, h := newLimited(t, ClientAuthLimit{MaxWait: time.Minute})
	ep.gate = make(chan struct{})
	codes := make([]int, n)
	var done atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = serve(h, tokenRequestFrom(clientAddr, "app-a", "dpy_cs_right-a", true)).Code
			done.Add(1)
		}()
	}
	waitFor(t, "the requests to be in flight or waiting", func() bool {
		l.mu.Lock()
		waiting := l.waiting
		l.mu.Unlock()
		return ep.inside.Load()+int64(waiting)+done.Load() == n
	})
	close(ep.gate)
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Fatalf("request %d: %d, want 200", i, c)
		}
	}
	if l.Len() != 0 {
		t.Fatalf("%d buckets left after successes only", l.Len())
	}
}

// TestClientAuthLimiterMaxWait: allowance held in flight longer than
// MaxWait, or a request that gives up, is a refusal, not a hang.
func TestClientAuthLimiterMaxWait(t *testing.T) {
	t.Parallel()
	l, _, ep, h := newLimited(t, ClientAuthLimit{Burst: 1, SourceBurst: 1, MaxWait: 20 * time.Millisecond})
	ep.gate = make(chan struct{})
	defer close(ep.gate)
	held := make(chan int, 2)
	go func() { held <- serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)).Code }()
	go func() { held <- serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)).Code }()
	waitFor(t, "two requests in flight", func() bool { return ep.inside.Load() == 2 })
	wantRefused(t, serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)), "1")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res, _ := l.reserve(ctx, "app-a", "203.0.113.7"); res != nil {
		t.Fatal("a cancelled request was admitted on allowance held in flight")
	}
}

func TestClientAuthLimiterSuccessIsFree(t *testing.T) {
	t.Parallel()
	_, _, _, h := newLimited(t, ClientAuthLimit{Burst: 3, SourceBurst: 1})
	for i := range 500 {
		if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", i%2 == 0)); w.Code != http.StatusOK {
			t.Fatalf("success %d: %d", i, w.Code)
		}
	}
	for i := range 4 {
		if w := serve(h, tokenRequest("app-a", "wrong", false)); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d after successes: %d, want 401 (successes must not have spent anything)", i, w.Code)
		}
	}
	if w := serve(h, tokenRequest("app-a", "wrong", false)); w.Code != http.StatusTooManyRequests {
		t.Fatalf("failure past the allowance: %d, want 429", w.Code)
	}
}

func TestClientAuthLimiterRefill(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       ClientAuthLimit
		wait      time.Duration // advanced after spending every allowance
		wantRetry string        // Retry-After right after
		wantAfter int           // status after waiting
	}{
		{"default one per second", ClientAuthLimit{}, time.Second, "1", http.StatusOK},
		{"not yet refilled", ClientAuthLimit{}, 999 * time.Millisecond, "1", http.StatusTooManyRequests},
		{"slow rate", ClientAuthLimit{Burst: 2, Rate: 0.1, SourceBurst: 1, SourceRate: 0.05}, 10 * time.Second, "10", http.StatusOK},
		{"slow rate early", ClientAuthLimit{Burst: 2, Rate: 0.1, SourceBurst: 1, SourceRate: 0.05}, 9 * time.Second, "10", http.StatusTooManyRequests},
		{"the source refills first", ClientAuthLimit{Burst: 2, Rate: 0.01, SourceBurst: 1, SourceRate: 0.5}, 2 * time.Second, "2", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, clock, _, h := newLimited(t, tc.cfg)
			for range l.cfg.Burst + l.cfg.SourceBurst {
				if w := serve(h, tokenRequest("app-a", "wrong", true)); w.Code != http.StatusUnauthorized {
					t.Fatalf("spending the allowance: %d", w.Code)
				}
			}
			w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", true))
			wantRefused(t, w, tc.wantRetry)
			if ra, _ := strconv.Atoi(tc.wantRetry); time.Duration(ra)*time.Second > l.cfg.LongestRefusal() {
				t.Fatalf("Retry-After %s s beyond LongestRefusal %v", tc.wantRetry, l.cfg.LongestRefusal())
			}
			clock.Advance(tc.wait)
			if w := serve(h, tokenRequest("app-a", "dpy_cs_right-a", true)); w.Code != tc.wantAfter {
				t.Fatalf("after %v: %d, want %d", tc.wait, w.Code, tc.wantAfter)
			}
		})
	}
}

func TestClientAuthLimiterLongestRefusal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  ClientAuthLimit
		want time.Duration
	}{
		{ClientAuthLimit{}, time.Second},
		{ClientAuthLimit{Rate: 100, SourceRate: 100}, time.Second},
		{ClientAuthLimit{Rate: 0.1, SourceRate: 0.05}, 10 * time.Second},
		{ClientAuthLimit{Rate: 0.01, SourceRate: 0.4}, 3 * time.Second},
	} {
		if got := tc.cfg.LongestRefusal(); got != tc.want {
			t.Errorf("LongestRefusal(Rate %v, SourceRate %v) = %v, want %v", tc.cfg.Rate, tc.cfg.SourceRate, got, tc.want)
		}
	}
}

// TestClientAuthLimiterOutcome: the limiter learns the outcome from the
// endpoint (Report), not from the answer: a reported failure is charged,
// anything else is not, and an endpoint that reports nothing is charged
// (an endpoint that forgot to report is noticed, not unlimited).
func TestClientAuthLimiterOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		report  func(ctx context.Context)
		status  int
		charged bool
	}{
		{"reported failure", func(ctx context.Context) { Report(ctx, true) }, http.StatusUnauthorized, true},
		{"reported failure answered 200", func(ctx context.Context) { Report(ctx, true) }, http.StatusOK, true},
		{"reported success answered 401", func(ctx context.Context) { Report(ctx, false) }, http.StatusUnauthorized, false},
		{"reported success answered 400 invalid_client", func(ctx context.Context) { Report(ctx, false) }, http.StatusBadRequest, false},
		{"first report counts", func(ctx context.Context) { Report(ctx, false); Report(ctx, true) }, http.StatusOK, false},
		{"nothing reported", func(context.Context) {}, http.StatusOK, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newClientAuthLimiter(ClientAuthLimit{Burst: 1, SourceBurst: 1}, newFakeClock().Now)
			h := l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.report(r.Context())
				writeOAuthError(w, tc.status, "invalid_client", "whatever the body says")
			}))
			serve(h, tokenRequest("app-a", "x", true))
			serve(h, tokenRequest("app-a", "x", true))
			charged := serve(h, tokenRequest("app-a", "x", true)).Code == http.StatusTooManyRequests
			if charged != tc.charged {
				t.Fatalf("charged = %v, want %v", charged, tc.charged)
			}
		})
	}
	// Outside the middleware Report does nothing (and does not panic).
	Report(context.Background(), true)
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
			l, _, ep, h := newLimited(t, ClientAuthLimit{Burst: 1, SourceBurst: 1})
			for i := range 2 {
				r := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader(tc.body))
				r.Header.Set("Content-Type", tc.contentType)
				if w := serve(h, r); w.Code != http.StatusUnauthorized {
					t.Fatalf("request %d: status %d %s, want 401", i, w.Code, w.Body)
				}
				if string(ep.lastBody) != tc.body {
					t.Fatalf("endpoint read %d bytes, want the %d sent", len(ep.lastBody), len(tc.body))
				}
			}
			if fail(t, l, "app-a", "192.0.2.1") {
				t.Fatal("failures not charged to the form's client_id")
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
	_, _, _, h := newLimited(t, ClientAuthLimit{Burst: 1, SourceBurst: 1})
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

// TestClientAuthLimiterBoundedMemory: spraying client ids and sources keeps
// memory bounded and frees neither the client under attack nor the
// source that attacked it.
func TestClientAuthLimiterBoundedMemory(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	l := newClientAuthLimiter(ClientAuthLimit{Burst: 5, SourceBurst: 2, MaxClients: 64}, clock.Now)
	for range 7 {
		fail(t, l, "victim", "203.0.113.7")
	}
	for i := range 10_000 {
		fail(t, l, fmt.Sprintf("spray-%d", i), fmt.Sprintf("198.51.100.%d", i%250))
		if n := l.Len(); n > 2*64 {
			t.Fatalf("%d buckets, want at most %d", n, 2*64)
		}
	}
	// Pairs too: once a client's shared failures are spent, each source
	// fails once at it; those buckets stay fuller than the attacker's.
	for range 5 {
		fail(t, l, "sprayed", "192.0.2.1")
	}
	for i := range 10_000 {
		fail(t, l, "sprayed", fmt.Sprintf("198.51.%d.%d", i/250, i%250))
		if n := l.Len(); n > 2*64 {
			t.Fatalf("%d buckets, want at most %d", n, 2*64)
		}
	}
	if fail(t, l, "victim", "203.0.113.7") {
		t.Fatal("the attacker's spent allowance was evicted by a spray of others")
	}
	// Idle buckets are forgotten once they have refilled: after a minute
	// every sprayed bucket is full again, and making room sweeps them.
	clock.Advance(time.Minute)
	l.mu.Lock()
	evict(l.clients, clock.Now(), l.cfg.Burst, l.cfg.Rate, l.cfg.MaxClients)
	evict(l.pairs, clock.Now(), l.cfg.SourceBurst, l.cfg.SourceRate, l.cfg.MaxClients)
	n := len(l.clients) + len(l.pairs)
	l.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d buckets after every one refilled, want 0", n)
	}
}

func TestClientAuthLimiterDefaults(t *testing.T) {
	t.Parallel()
	got := NewClientAuthLimiter(ClientAuthLimit{Rate: -1, SourceRate: 0}).cfg
	if got.Burst != 10 || got.Rate != 1 || got.SourceBurst != 5 || got.SourceRate != 0.2 ||
		got.MaxClients != 10_000 || got.MaxBody != 64<<10 || got.MaxWait != time.Second || got.Source == nil {
		t.Fatalf("defaults %+v", got)
	}
}

func TestSource(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]string{
		"203.0.113.7:1234":                 "203.0.113.7",
		"[::ffff:203.0.113.7]:1234":        "203.0.113.7",
		"[2001:db8:1:2:3:4:5:6]:443":       "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:4:5:6]:443":    "2001:db8:1:2::/64",
		"[2001:db8:1:3::1]:443":            "2001:db8:1:3::/64",
		"not an address":                   "not an address",
		"@unix":                            "@unix",
		"[fe80::1%eth0]:80":                "fe80::/64",
		"127.0.0.2:5555":                   "127.0.0.2",
		"[2001:db8:1:2:3:4:5:6%zone]:1234": "2001:db8:1:2::/64",
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = addr
		if got := Source(r); got != want {
			t.Errorf("Source(%q) = %q, want %q", addr, got, want)
		}
	}
}
