// Package ratelimit holds the client-authentication rate limiter in front of
// the token, introspection and revocation endpoints. docs/security.md
// describes its model and bounds.
package ratelimit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults of ClientAuthLimit.
const (
	// DefaultClientAuthBurst failed authentications a client may have in a
	// row, from all sources together, before it has to wait.
	DefaultClientAuthBurst = 10
	// DefaultClientAuthRate is how many failures per second a client earns
	// back: a secret guessed at this rate is guessed at about 86,000 tries a
	// day instead of at line speed.
	DefaultClientAuthRate = 1.0
	// DefaultClientAuthSourceBurst is each source's own allowance at a
	// client, used once the client's shared failures are spent. Failures
	// from other sources cannot spend it: it is what keeps the real client
	// working while a stranger who knows its client_id fails on its behalf.
	DefaultClientAuthSourceBurst = 5
	// DefaultClientAuthSourceRate refills a source's allowance: one failure
	// every 5 seconds.
	DefaultClientAuthSourceRate = 0.2
	// DefaultClientAuthMaxClients bounds how many buckets of each kind (per
	// client, per client and source) are remembered at once.
	DefaultClientAuthMaxClients = 10_000
	// DefaultClientAuthMaxBody is the most of a request body read to find
	// the client_id. Token, introspection and revocation requests are a few
	// hundred bytes.
	DefaultClientAuthMaxBody = 64 << 10
	// DefaultClientAuthMaxWait is how long a request waits, rather than be
	// refused, when the only allowance left is held by requests still in
	// flight (a client's own concurrent requests, which usually succeed and
	// give it back within milliseconds).
	DefaultClientAuthMaxWait = time.Second
)

// ClientAuthLimit configures ClientAuthLimiter. The zero value means the
// defaults.
type ClientAuthLimit struct {
	// Burst is how many failed authentications a client may have in a row,
	// from every source together; Rate how many per second it earns back.
	Burst int
	Rate  float64
	// SourceBurst is how many failures each source may still have at a
	// client once the client's Burst is spent, SourceRate how many per
	// second it earns back. Only that source's own failures spend it.
	SourceBurst int
	SourceRate  float64
	// MaxClients bounds memory: how many buckets of each kind are kept.
	// When full, buckets that have refilled are forgotten first (a
	// forgotten bucket is a full one), then the fullest.
	MaxClients int
	// MaxBody is the largest request body read to find a form client_id; a
	// larger body is refused with 413 before the endpoint sees it.
	MaxBody int64
	// MaxWait is how long a request waits for allowance held by requests in
	// flight before it is refused.
	MaxWait time.Duration
	// Source names where a request comes from. Default: the TCP peer's
	// address, an IPv6 peer by its /64 (Source). Behind a reverse proxy
	// every request shares the proxy's address; set Source to read the
	// client address the proxy vouches for.
	Source func(*http.Request) string
}

func (c ClientAuthLimit) withDefaults() ClientAuthLimit {
	bad := func(r float64) bool { return r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) }
	if c.Burst <= 0 {
		c.Burst = DefaultClientAuthBurst
	}
	if bad(c.Rate) {
		c.Rate = DefaultClientAuthRate
	}
	if c.SourceBurst <= 0 {
		c.SourceBurst = DefaultClientAuthSourceBurst
	}
	if bad(c.SourceRate) {
		c.SourceRate = DefaultClientAuthSourceRate
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultClientAuthMaxClients
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultClientAuthMaxBody
	}
	if c.MaxWait <= 0 {
		c.MaxWait = DefaultClientAuthMaxWait
	}
	if c.Source == nil {
		c.Source = Source
	}
	return c
}

// LongestRefusal is the most any refusal asks a client to wait: the
// largest Retry-After the limiter sends, in whole seconds. A refused
// request waits for whichever of its buckets refills first, so this is
// 1/max(Rate, SourceRate) rounded up, and at least the one second a
// request is told when allowance held in flight was not given back within
// MaxWait. With the defaults, one second.
func (c ClientAuthLimit) LongestRefusal() time.Duration {
	c = c.withDefaults()
	secs := math.Max(1, math.Ceil(1/math.Max(c.Rate, c.SourceRate)))
	return time.Duration(secs) * time.Second
}

// ClientAuthLimiter rate-limits failed client authentications so that a
// client secret cannot be guessed at line speed, without letting a stranger
// who knows only a (public) client_id lock the client out.
//
// Every request that names a client reserves one failure before the
// endpoint (and so the secret comparison) runs: from the client's shared
// bucket (Burst, refilled at Rate) while it has one free, else from the
// bucket of that client and the request's source (SourceBurst, refilled at
// SourceRate). A request that can reserve nothing is answered 429 with
// Retry-After before the endpoint runs. The endpoint says how the
// authentication ended (Report); a failure keeps the reservation, anything
// else gives it back, so successful authentications cost nothing.
//
// Because failures are reserved, never charged after the fact, no bucket
// goes below zero: N guesses fired at once are N reservations, and those
// past the allowance are refused, not charged. So no refusal asks to wait
// longer than LongestRefusal (1 s by default) however many failures came
// before, and failures from one source never spend another source's
// allowance. docs/security.md states the bounds.
type ClientAuthLimiter struct {
	cfg ClientAuthLimit
	now func() time.Time

	// OnRefuse, when set (before the limiter is used), is called for each
	// request answered 429: deputy's metrics count them.
	OnRefuse func()

	mu      sync.Mutex
	clients map[string]*bucket
	pairs   map[pairKey]*bucket
	// wake is closed (and replaced) when a reservation is settled, waking
	// requests waiting for allowance held in flight. nil: nobody waits.
	wake    chan struct{}
	waiting int // requests waiting on wake, for tests
}

type pairKey struct{ client, source string }

// bucket holds failures still allowed, reservations of requests in flight
// included: admitting needs tokens-reserved ≥ 1, so tokens ≥ reserved ≥ 0
// always.
type bucket struct {
	tokens   float64
	reserved int
	at       time.Time // when tokens was last brought up to date
}

// refill brings b up to date at t.
func (b *bucket) refill(t time.Time, burst int, rate float64) {
	if d := t.Sub(b.at); d > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+d.Seconds()*rate)
		b.at = t
	}
}

func (b *bucket) free() float64 { return b.tokens - float64(b.reserved) }

// wait is how long until b holds a whole token of its own again; 0 when it
// does (though requests in flight may hold it).
func (b *bucket) wait(rate float64) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// NewClientAuthLimiter returns a limiter; the zero ClientAuthLimit means the
// defaults.
func NewClientAuthLimiter(cfg ClientAuthLimit) *ClientAuthLimiter {
	return newClientAuthLimiter(cfg, time.Now)
}

func newClientAuthLimiter(cfg ClientAuthLimit, now func() time.Time) *ClientAuthLimiter {
	return &ClientAuthLimiter{
		cfg:     cfg.withDefaults(),
		now:     now,
		clients: map[string]*bucket{},
		pairs:   map[pairKey]*bucket{},
	}
}

// reservation is an admitted request's hold on one failure.
type reservation struct {
	l      *ClientAuthLimiter
	b      *bucket
	client string
	pair   *pairKey // nil: the client's shared bucket
}

// reserve admits a request of client from source, reserving one failure, or
// refuses it with how long to wait. When the allowance it could use is only
// held by requests in flight it waits for them, up to MaxWait.
func (l *ClientAuthLimiter) reserve(ctx context.Context, client, source string) (*reservation, time.Duration) {
	deadline := time.Now().Add(l.cfg.MaxWait)
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		t := l.now()
		c := bucketFor(l.clients, client, t, l.cfg.Burst, l.cfg.Rate, l.cfg.MaxClients)
		c.refill(t, l.cfg.Burst, l.cfg.Rate)
		if c.free() >= 1 {
			c.reserved++
			return &reservation{l: l, b: c, client: client}, 0
		}
		k := pairKey{client, source}
		p := bucketFor(l.pairs, k, t, l.cfg.SourceBurst, l.cfg.SourceRate, l.cfg.MaxClients)
		p.refill(t, l.cfg.SourceBurst, l.cfg.SourceRate)
		if p.free() >= 1 {
			p.reserved++
			return &reservation{l: l, b: p, client: client, pair: &k}, 0
		}
		if c.tokens < 1 && p.tokens < 1 {
			// Spent by failures: nothing in flight can give any back.
			return nil, min(c.wait(l.cfg.Rate), p.wait(l.cfg.SourceRate))
		}
		remaining := time.Until(deadline)
		if remaining <= 0 || ctx.Err() != nil {
			return nil, time.Second
		}
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.waiting++
		l.mu.Unlock()
		timer := time.NewTimer(remaining)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		l.mu.Lock()
		l.waiting--
	}
}

// settle ends the reservation: a failure keeps the reserved token spent,
// anything else gives it back. A bucket back to full with nothing in
// flight is forgotten (the same as no bucket).
func (r *reservation) settle(failed bool) {
	l := r.l
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	burst, rate := l.cfg.Burst, l.cfg.Rate
	if r.pair != nil {
		burst, rate = l.cfg.SourceBurst, l.cfg.SourceRate
	}
	b := r.b
	b.refill(t, burst, rate)
	b.reserved--
	if failed {
		b.tokens--
	}
	if b.reserved == 0 && b.tokens >= float64(burst) {
		if r.pair == nil {
			if l.clients[r.client] == b {
				delete(l.clients, r.client)
			}
		} else if l.pairs[*r.pair] == b {
			delete(l.pairs, *r.pair)
		}
	}
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
}

// bucketFor returns m's bucket for k, making a full one when there is none
// and making room first when m is at its cap. Caller holds l.mu.
func bucketFor[K comparable](m map[K]*bucket, k K, t time.Time, burst int, rate float64, maxEntries int) *bucket {
	if b, ok := m[k]; ok {
		return b
	}
	if len(m) >= maxEntries {
		evict(m, t, burst, rate, maxEntries)
	}
	b := &bucket{tokens: float64(burst), at: t}
	m[k] = b
	return b
}

// evict makes room in m: it forgets the idle buckets (nothing in flight)
// that have refilled and, if m is still full, the fullest eighth of the idle
// ones (Evict); never one a request in flight holds.
func evict[K comparable](m map[K]*bucket, t time.Time, burst int, rate float64, maxEntries int) {
	Evict(m, float64(burst), maxEntries, func(b *bucket) (float64, bool) {
		if b.reserved > 0 {
			return 0, false
		}
		b.refill(t, burst, rate)
		return b.tokens, true
	})
}

// Evict makes room in a map of token buckets, for any limiter that keeps
// one per key in bounded memory. level reports a bucket's tokens now and
// whether it may be dropped at all. A bucket back at full is forgotten
// (it is the same as no bucket); if m still holds maxEntries or more, the
// fullest eighth of the droppable rest goes too (at least one). So a flood
// of fresh keys pushes out buckets close to full, never the drained ones of
// a key under attack.
func Evict[K comparable, B any](m map[K]B, full float64, maxEntries int, level func(B) (tokens float64, droppable bool)) {
	type entry struct {
		k      K
		tokens float64
	}
	rest := make([]entry, 0, len(m))
	for k, b := range m {
		tokens, ok := level(b)
		if !ok {
			continue
		}
		if tokens >= full {
			delete(m, k)
			continue
		}
		rest = append(rest, entry{k, tokens})
	}
	if len(m) < maxEntries {
		return
	}
	slices.SortFunc(rest, func(a, b entry) int { return cmp.Compare(b.tokens, a.tokens) })
	for _, e := range rest[:min(len(rest), max(1, len(rest)/8))] {
		delete(m, e.k)
	}
}

// Len reports how many buckets are held, of both kinds.
func (l *ClientAuthLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients) + len(l.pairs)
}

// Source is the default ClientAuthLimit.Source: the TCP peer's address, an
// IPv6 peer by its /64, which one host usually holds whole.
func Source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

// attempt is what the endpoint reports about a request's client
// authentication (Report).
type attempt struct {
	mu       sync.Mutex
	reported bool
	failed   bool
}

type attemptKey struct{}

// Report tells the limiter, from the endpoint, how the client
// authentication of the request whose context is ctx ended: failed when
// the client's credentials were refused (fosite's invalid_client), not
// failed when they were accepted or the request failed for any other
// reason (a malformed request, a database outage). The first report counts.
// A request the limiter admitted whose endpoint reports nothing is counted
// as a failure, so an endpoint that forgets to report is noticed at once
// (its clients meet 429s) rather than silently unlimited. Outside the
// limiter's middleware Report does nothing.
func Report(ctx context.Context, failed bool) {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.reported {
		a.reported, a.failed = true, failed
	}
}

func (a *attempt) failure() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.reported || a.failed
}

// Middleware wraps the token, introspection and revocation endpoints. It
// finds the client_id in HTTP Basic credentials or, failing those, in the
// form body (read up to MaxBody and handed on intact), reserves a failure
// for it (or answers 429), runs the endpoint, and settles the reservation
// with what the endpoint Reported. A request naming no client passes
// untouched: there is no secret of anyone's to guess.
func (l *ClientAuthLimiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clientID, tooLarge, err := l.clientID(r)
		switch {
		case tooLarge:
			writeOAuthError(w, http.StatusRequestEntityTooLarge, "invalid_request", "The request body is too large.")
			return
		case err != nil:
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The request body could not be read.")
			return
		case clientID == "":
			next.ServeHTTP(w, r)
			return
		}
		res, wait := l.reserve(r.Context(), clientID, l.cfg.Source(r))
		if res == nil {
			if l.OnRefuse != nil {
				l.OnRefuse()
			}
			secs := max(int64(math.Ceil(wait.Seconds())), 1)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeOAuthError(w, http.StatusTooManyRequests, "temporarily_unavailable",
				fmt.Sprintf("Too many failed client authentications; retry after %d seconds.", secs))
			return
		}
		a := &attempt{}
		defer func() { res.settle(a.failure()) }()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), attemptKey{}, a)))
	})
}

// clientID reads the client_id the way fosite will: Basic credentials win
// (URL-decoded as RFC 6749 §2.3.1 asks), else the form's client_id. The body
// is buffered and put back so the endpoint reads it as sent.
func (l *ClientAuthLimiter) clientID(r *http.Request) (id string, tooLarge bool, err error) {
	if user, _, ok := r.BasicAuth(); ok {
		if id, err := url.QueryUnescape(user); err == nil {
			return id, false, nil
		}
		// fosite refuses an undecodable id before any secret comparison;
		// keying on the raw text still limits whoever keeps sending it.
		return user, false, nil
	}
	if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return "", false, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, l.cfg.MaxBody+1))
	r.Body.Close()
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", true, nil
		}
		return "", false, err
	}
	if int64(len(body)) > l.cfg.MaxBody {
		return "", true, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))

	// Parse a copy, so that the request the endpoint sees has parsed
	// nothing yet. Multipart is parsed too: fosite accepts it, and a limiter
	// that ignored it would be a way around.
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", false, nil // the endpoint answers the bad form
		}
		return form.Get("client_id"), false, nil
	case "multipart/form-data":
		c := r.Clone(r.Context())
		c.Body = io.NopCloser(bytes.NewReader(body))
		c.Form, c.PostForm, c.MultipartForm = nil, nil, nil
		if err := c.ParseMultipartForm(l.cfg.MaxBody); err != nil {
			return "", false, nil
		}
		defer c.MultipartForm.RemoveAll()
		return c.PostForm.Get("client_id"), false, nil
	}
	return "", false, nil
}

// writeOAuthError answers with an RFC 6749 §5.2 shaped JSON error.
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, description})
}
