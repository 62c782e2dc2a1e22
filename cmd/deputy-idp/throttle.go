package main

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/deputyauth/deputy/internal/ratelimit"
)

// loginLimits bound wrong passwords at /login. Each limit is a bucket of
// failures that refills at a steady rate; an attempt is admitted only if it
// can reserve one failure from its buckets *before* the password is
// checked, and a correct password gives the reservation back. So N parallel
// guesses cannot slip past a limit while bcrypt runs, and the user's own
// successful logins cost nothing.
//
// The buckets (docs/idp.md, "Sign-in throttling", says the same):
//
//   - per source address (IPv4, or the /64 of IPv6), all usernames
//     together: SourceBurst failures, then one every SourceEvery;
//   - per account (the username as typed, lower-cased, existing or not,
//     so the limit says nothing about which names exist): AccountBurst
//     failures from anywhere, then one every AccountEvery;
//   - per account and source: once the account's bucket is empty, each
//     address still gets one attempt every PairEvery at that account.
//
// The last is what keeps a stranger from locking the real user out: failures
// from other addresses drain the account's bucket, never the user's own
// address's allowance, so her first attempt always goes through and a
// mistake of her own costs her at most PairEvery. A refused attempt is told
// when to come back (429, Retry-After); nothing accumulates beyond an empty
// bucket, so no refusal is longer than max(SourceEvery, min(AccountEvery,
// PairEvery)), however long the failures went on.
type loginLimits struct {
	SourceBurst  float64
	SourceEvery  time.Duration
	AccountBurst float64
	AccountEvery time.Duration
	PairEvery    time.Duration
	// MaxEntries caps each map of buckets; when full, buckets that have
	// refilled go first, then the fullest.
	MaxEntries int
}

// defaultLoginLimits: a person who mistypes a few times never meets them;
// a guesser at one address gets 30 tries, then 6 a minute across every
// account; one account takes 10 failures, then 2 a minute from anywhere
// plus 2 a minute from each address; no refusal asks to wait more than 30 s.
var defaultLoginLimits = loginLimits{
	SourceBurst:  30,
	SourceEvery:  10 * time.Second,
	AccountBurst: 10,
	AccountEvery: 30 * time.Second,
	PairEvery:    30 * time.Second,
	MaxEntries:   10000,
}

// loginThrottle holds the buckets of one process. They are in memory: each
// replica counts its own failures (R replicas admit up to R times the
// numbers above), and a restart forgets them.
type loginThrottle struct {
	limits loginLimits
	now    func() time.Time

	mu       sync.Mutex
	sources  map[string]*failureBucket
	accounts map[string]*failureBucket
	pairs    map[pairKey]*failureBucket
}

type pairKey struct{ account, source string }

// failureBucket holds the failures still allowed; it refills at one per
// every, up to burst. A missing bucket is a full one.
type failureBucket struct {
	tokens float64
	at     time.Time
}

func newLoginThrottle(l loginLimits) *loginThrottle {
	return &loginThrottle{
		limits:   l,
		now:      time.Now,
		sources:  map[string]*failureBucket{},
		accounts: map[string]*failureBucket{},
		pairs:    map[pairKey]*failureBucket{},
	}
}

// level is b's tokens at t.
func (b *failureBucket) level(t time.Time, burst float64, every time.Duration) float64 {
	if d := t.Sub(b.at); d > 0 {
		return min(burst, b.tokens+float64(d)/float64(every))
	}
	return b.tokens
}

// wait is how long until b holds a whole token again.
func (b *failureBucket) wait(t time.Time, burst float64, every time.Duration) time.Duration {
	missing := 1 - b.level(t, burst, every)
	if missing <= 0 {
		return 0
	}
	return max(time.Duration(missing*float64(every)), time.Nanosecond)
}

// loginReservation is an admitted attempt's hold on its buckets.
type loginReservation struct {
	th      *loginThrottle
	source  string
	account string
	pair    bool // the failure was reserved from the (account, source) allowance
}

// reserve admits an attempt at account from source, reserving one failure
// from the source's bucket and from the account's (or, when that is empty,
// from the pair's). Refused, it returns nil and how long to wait.
func (th *loginThrottle) reserve(source, account string) (*loginReservation, time.Duration) {
	l := th.limits
	t := th.now()
	th.mu.Lock()
	defer th.mu.Unlock()
	src := bucketFor(th.sources, source, t, l.SourceBurst, l.MaxEntries, l.SourceEvery)
	acct := bucketFor(th.accounts, account, t, l.AccountBurst, l.MaxEntries, l.AccountEvery)

	var wait time.Duration
	if src.level(t, l.SourceBurst, l.SourceEvery) < 1 {
		wait = src.wait(t, l.SourceBurst, l.SourceEvery)
	}
	var pair *failureBucket
	if acct.level(t, l.AccountBurst, l.AccountEvery) < 1 {
		pair = bucketFor(th.pairs, pairKey{account, source}, t, 1, l.MaxEntries, l.PairEvery)
		if pair.level(t, 1, l.PairEvery) < 1 {
			wait = max(wait, min(acct.wait(t, l.AccountBurst, l.AccountEvery), pair.wait(t, 1, l.PairEvery)))
		}
	}
	if wait > 0 {
		return nil, wait
	}
	take(src, t, l.SourceBurst, l.SourceEvery)
	if pair != nil {
		take(pair, t, 1, l.PairEvery)
	} else {
		take(acct, t, l.AccountBurst, l.AccountEvery)
	}
	return &loginReservation{th: th, source: source, account: account, pair: pair != nil}, 0
}

// release gives the reserved failure back: the attempt succeeded, or
// failed for a reason that was not a wrong password.
func (r *loginReservation) release() {
	th, l := r.th, r.th.limits
	t := th.now()
	th.mu.Lock()
	defer th.mu.Unlock()
	give(th.sources[r.source], t, l.SourceBurst, l.SourceEvery)
	if r.pair {
		give(th.pairs[pairKey{r.account, r.source}], t, 1, l.PairEvery)
	} else {
		give(th.accounts[r.account], t, l.AccountBurst, l.AccountEvery)
	}
}

func take(b *failureBucket, t time.Time, burst float64, every time.Duration) {
	b.tokens, b.at = b.level(t, burst, every)-1, t
}

// give returns a token; a bucket forgotten meanwhile was full.
func give(b *failureBucket, t time.Time, burst float64, every time.Duration) {
	if b != nil {
		b.tokens, b.at = min(burst, b.level(t, burst, every)+1), t
	}
}

// bucketFor returns m's bucket for k, making a full one when there is none and
// making room first when m is at its cap. Caller holds th.mu.
func bucketFor[K comparable](m map[K]*failureBucket, k K, t time.Time, burst float64, maxEntries int, every time.Duration) *failureBucket {
	if b, ok := m[k]; ok {
		return b
	}
	if len(m) >= maxEntries {
		evict(m, t, burst, every, maxEntries)
	}
	b := &failureBucket{tokens: burst, at: t}
	m[k] = b
	return b
}

// evict forgets the buckets that have refilled and, if m is still full,
// the fullest eighth (ratelimit.Evict): a flood of fresh usernames or
// addresses pushes out buckets close to full, never the drained ones of an
// address or account under attack.
func evict[K comparable](m map[K]*failureBucket, t time.Time, burst float64, every time.Duration, maxEntries int) {
	ratelimit.Evict(m, burst, maxEntries, func(b *failureBucket) (float64, bool) {
		return b.level(t, burst, every), true
	})
}

// loginSource is the address a login attempt counts against: the TCP peer
// (the demo serves clients directly; behind a reverse proxy every attempt
// would share the proxy's address, see docs/idp.md), an IPv6 peer by its
// /64, which one host usually holds whole.
func loginSource(r *http.Request) string { return ratelimit.Source(r) }

// loginAccount is the account key of a username as typed: byUsername looks
// names up in lower case, so "Alice" and "alice" are one account.
func loginAccount(username string) string { return strings.ToLower(username) }
