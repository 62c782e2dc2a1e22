package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// loginFrom posts the login form to h as a client at address src.
func loginFrom(t *testing.T, h http.Handler, src, username, password string) *httptest.ResponseRecorder {
	t.Helper()
	form := url.Values{"username": {username}, "password": {password}, "return_to": {"/"}}
	r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.RemoteAddr = hostPort(src)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func hostPort(addr string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:40000"
	}
	return addr + ":40000"
}

// retryAfter reads a 429's Retry-After, failing unless it is a whole
// number of seconds within [1, limit].
func retryAfter(t *testing.T, w *httptest.ResponseRecorder, limit time.Duration) time.Duration {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", w.Code)
	}
	secs, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > limit {
		t.Fatalf("Retry-After %q, want 1–%v", w.Header().Get("Retry-After"), limit)
	}
	if !strings.Contains(w.Body.String(), "Try again in "+strconv.Itoa(secs)+" seconds") {
		t.Errorf("the page does not say when to come back:\n%s", w.Body.String())
	}
	return time.Duration(secs) * time.Second
}

func wantLogin(t *testing.T, what string, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("%s: status %d, want %d", what, w.Code, status)
	}
	signedIn := false
	for _, c := range w.Result().Cookies() {
		if c.Name == sessionCookie && c.Value != "" {
			signedIn = true
		}
	}
	if signedIn != (status == http.StatusSeeOther) {
		t.Fatalf("%s: status %d but session cookie set: %v", what, w.Code, signedIn)
	}
}

// TestLoginThrottle drives /login from chosen source addresses on a
// frozen clock: the documented bounds of loginThrottle, for the attacker
// and for the real user at another address.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	l := defaultLoginLimits
	longest := max(l.SourceEvery, min(l.AccountEvery, l.PairEvery))
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		clock := testkit.NewClock(time.Now())
		idp.srv.throttle.now = clock.Now
		h := idp.srv.routes()
		const attacker, alice, other = "198.51.100.1", "203.0.113.7", "2001:db8:1:2::5"

		t.Run("an account under attack from elsewhere", func(t *testing.T) {
			// The account takes AccountBurst failures from anywhere, and
			// then the attacker's address its own one attempt.
			n := 0
			var w *httptest.ResponseRecorder
			for ; n < 100; n++ {
				if w = loginFrom(t, h, attacker, "alice", "guess-"+strconv.Itoa(n)); w.Code != http.StatusUnauthorized {
					break
				}
			}
			if n != int(l.AccountBurst)+1 {
				t.Fatalf("%d wrong passwords answered before a refusal, want %d", n, int(l.AccountBurst)+1)
			}
			wait := retryAfter(t, w, longest)
			// The right password from the attacker's address waits too.
			wantLogin(t, "right password at the attacker's address", loginFrom(t, h, attacker, "alice", demoAlicePassword), http.StatusTooManyRequests)

			// alice at her own address is not held up at all, and the
			// account is one account whatever the case typed.
			wantLogin(t, "alice elsewhere", loginFrom(t, h, alice, "Alice", demoAlicePassword), http.StatusSeeOther)
			// A typo of her own while the account is drained costs her at
			// most PairEvery, however long the attack goes on.
			wantLogin(t, "alice's typo", loginFrom(t, h, alice, "alice", "alice-typo"), http.StatusUnauthorized)
			for range 50 {
				loginFrom(t, h, attacker, "alice", "more guessing") // refused, charging nothing
			}
			herWait := retryAfter(t, loginFrom(t, h, alice, "alice", demoAlicePassword), l.PairEvery)
			clock.Advance(herWait)
			wantLogin(t, "alice after her Retry-After", loginFrom(t, h, alice, "alice", demoAlicePassword), http.StatusSeeOther)

			// The attacker's refusals did not pile up: after its own
			// Retry-After it is admitted again, for what refilled (the
			// account's token and its address's allowance), and no more.
			clock.Advance(max(0, wait-herWait))
			admitted := 0
			for ; admitted < 10; admitted++ {
				if w = loginFrom(t, h, attacker, "alice", "guess-again"); w.Code != http.StatusUnauthorized {
					break
				}
			}
			if admitted < 1 || admitted > 2 {
				t.Fatalf("after Retry-After the attacker had %d more tries, want 1 or 2", admitted)
			}
			retryAfter(t, w, longest)
		})

		t.Run("a source guessing across accounts", func(t *testing.T) {
			src := "198.51.100.2"
			// Real accounts (hashed at the tests' low bcrypt cost; an
			// unknown name costs a full-cost dummy hash), a fresh one each
			// time: only the source's limit applies.
			var names []string
			for i := range int(l.SourceBurst) + 1 {
				u, err := idp.srv.users.create(context.Background(), "member-"+strconv.Itoa(i), "member-password", false)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, u.Username)
			}
			n := 0
			var w *httptest.ResponseRecorder
			for ; n < len(names); n++ {
				if w = loginFrom(t, h, src, names[n], "guess"); w.Code != http.StatusUnauthorized {
					break
				}
			}
			if n != int(l.SourceBurst) {
				t.Fatalf("%d wrong passwords answered before a refusal, want %d", n, int(l.SourceBurst))
			}
			wait := retryAfter(t, w, l.SourceEvery)
			wantLogin(t, "bob at the guessing address", loginFrom(t, h, src, "bob", demoBobPassword), http.StatusTooManyRequests)
			wantLogin(t, "bob elsewhere", loginFrom(t, h, other, "bob", demoBobPassword), http.StatusSeeOther)
			clock.Advance(wait)
			wantLogin(t, "bob at that address after Retry-After", loginFrom(t, h, src, "bob", demoBobPassword), http.StatusSeeOther)
			// A success gave its reservation back: the next wrong password
			// is still admitted.
			wantLogin(t, "a wrong password after bob's success", loginFrom(t, h, src, names[0], "guess"), http.StatusUnauthorized)
		})

		t.Run("parallel guesses reserve before the password check", func(t *testing.T) {
			const src, parallel = "198.51.100.3", 40
			codes := make(chan int, parallel)
			var wg sync.WaitGroup
			for i := range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					codes <- loginFrom(t, h, src, "bob", "parallel-guess-"+strconv.Itoa(i)).Code
				}()
			}
			wg.Wait()
			close(codes)
			counts := map[int]int{}
			for c := range codes {
				counts[c]++
			}
			// bob's account is fresh: AccountBurst failures, then this
			// address's one attempt; every other guess refused unchecked.
			if counts[http.StatusUnauthorized] != int(l.AccountBurst)+1 || counts[http.StatusTooManyRequests] != parallel-int(l.AccountBurst)-1 {
				t.Fatalf("answers %v: want %d × 401 and the rest 429", counts, int(l.AccountBurst)+1)
			}
		})

		t.Run("malformed usernames are refused unthrottled and unlooked-up", func(t *testing.T) {
			for _, name := range []string{"a\x00b", "\xff\xfe", "ali\nce"} {
				if w := loginFrom(t, h, "198.51.100.4", name, "x"); w.Code != http.StatusBadRequest {
					t.Errorf("username %q: status %d, want 400", name, w.Code)
				}
			}
		})
	})
}

func TestLoginSource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.1:5555", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:5555", "192.0.2.1"},
		{"[2001:db8:1:2::5]:5555", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::9]:1", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::5]:5555", "2001:db8:1:3::/64"},
		{"not-an-address", "not-an-address"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/login", nil)
		r.RemoteAddr = tc.remote
		if got := loginSource(r); got != tc.want {
			t.Errorf("loginSource(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

// TestLoginThrottleForgetsNoDrainedBucket: a flood of fresh names past
// MaxEntries evicts buckets that are (nearly) full, never the drained one of
// the account under attack.
func TestLoginThrottleForgetsNoDrainedBucket(t *testing.T) {
	t.Parallel()
	l := defaultLoginLimits
	l.MaxEntries = 64
	l.SourceBurst = 1e6
	th := newLoginThrottle(l)
	clock := testkit.NewClock(time.Now())
	th.now = clock.Now
	for range int(l.AccountBurst) {
		if h, _ := th.reserve("198.51.100.9", "victim"); h == nil {
			t.Fatal("refused within the burst")
		}
	}
	for i := range 10 * l.MaxEntries {
		if h, _ := th.reserve("198.51.100.9", "fresh-"+strconv.Itoa(i)); h == nil {
			t.Fatalf("fresh name %d refused", i)
		}
	}
	if n := len(th.accounts); n > l.MaxEntries {
		t.Errorf("%d account buckets held, cap %d", n, l.MaxEntries)
	}
	th.reserve("198.51.100.9", "victim") // the address's own allowance
	if h, wait := th.reserve("198.51.100.9", "victim"); h != nil || wait <= 0 {
		t.Fatalf("the drained account was forgotten: admitted %v, wait %v", h != nil, wait)
	}
}
