// Package ratelimit holds the client-authentication rate limiter in front of
// the token, introspection and revocation endpoints.
package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults of ClientAuthLimit.
const (
	// DefaultClientAuthBurst failed client authentications are allowed in a
	// row before a client has to wait.
	DefaultClientAuthBurst = 10
	// DefaultClientAuthRate is how many failures per second a client earns
	// back: a secret guessed at this rate is guessed at about 86,000 tries a
	// day instead of at line speed.
	DefaultClientAuthRate = 1.0
	// DefaultClientAuthMaxClients bounds how many clients' failure counts are
	// remembered at once.
	DefaultClientAuthMaxClients = 10_000
	// DefaultClientAuthMaxBody is the most of a request body read to find
	// the client_id. Token, introspection and revocation requests are a few
	// hundred bytes.
	DefaultClientAuthMaxBody = 64 << 10
)

// ClientAuthLimit configures ClientAuthLimiter. The zero value means the
// defaults.
type ClientAuthLimit struct {
	// Burst is how many failed authentications a client may have in a row.
	Burst int
	// Rate is how many failures per second a client earns back.
	Rate float64
	// MaxClients bounds memory: how many clients' buckets are kept. When
	// full, the buckets closest to full are forgotten first (a forgotten
	// bucket is a full one, so only the least-penalised clients gain).
	MaxClients int
	// MaxBody is the largest request body read to find a form client_id; a
	// larger body is refused with 413 before the endpoint sees it.
	MaxBody int64
}

func (c ClientAuthLimit) withDefaults() ClientAuthLimit {
	if c.Burst <= 0 {
		c.Burst = DefaultClientAuthBurst
	}
	if c.Rate <= 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		c.Rate = DefaultClientAuthRate
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultClientAuthMaxClients
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultClientAuthMaxBody
	}
	return c
}

// ClientAuthLimiter rate-limits failed client authentications per client_id
// with a token bucket, so that a client secret cannot be guessed at line
// speed. A failed authentication takes a token; a successful one takes
// nothing; a client whose bucket is empty is answered 429 before the
// endpoint (and so any secret comparison) runs.
//
// A request is admitted while the bucket holds a token, and its failure is
// charged when its response is seen. Concurrent failures may therefore drive
// the bucket below zero; that debt is kept, so an attacker who fires many
// guesses at once waits for all of them to be paid back, and the long-run
// guessing rate stays Rate whatever the concurrency.
//
// The key is the client_id alone, as the issue asks: anyone who knows a
// client_id can make that client wait by failing on its behalf. Client ids
// are not secret, so this trades a denial of service on one client for the
// impossibility of guessing its secret; docs/security.md says so.
type ClientAuthLimiter struct {
	cfg ClientAuthLimit
	now func() time.Time

	// OnRefuse, when set (before the limiter is used), is called for each
	// request answered 429: deputy's metrics count them.
	OnRefuse func()

	mu        sync.Mutex
	buckets   map[string]*authBucket
	lastSweep time.Time
}

type authBucket struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
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
		buckets: map[string]*authBucket{},
	}
}

// refill brings b up to date at t. Caller holds l.mu.
func (l *ClientAuthLimiter) refill(b *authBucket, t time.Time) {
	if d := t.Sub(b.at); d > 0 {
		b.tokens = math.Min(float64(l.cfg.Burst), b.tokens+d.Seconds()*l.cfg.Rate)
		b.at = t
	}
}

// Allow reports whether clientID may try to authenticate now, and if not,
// how long until it may.
func (l *ClientAuthLimiter) Allow(clientID string) (ok bool, retryAfter time.Duration) {
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.buckets[clientID]
	if !found {
		return true, 0
	}
	l.refill(b, t)
	if b.tokens >= 1 {
		return true, 0
	}
	wait := (1 - b.tokens) / l.cfg.Rate
	return false, time.Duration(wait * float64(time.Second))
}

// Failed charges clientID one failed authentication.
func (l *ClientAuthLimiter) Failed(clientID string) {
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, found := l.buckets[clientID]
	if !found {
		l.makeRoom(t)
		b = &authBucket{tokens: float64(l.cfg.Burst), at: t}
		l.buckets[clientID] = b
	}
	l.refill(b, t)
	b.tokens--
}

// makeRoom forgets buckets that have refilled (they are the same as no
// bucket), at most once per refill period, and when the map is still full,
// the eighth of the buckets closest to full. Caller holds l.mu.
func (l *ClientAuthLimiter) makeRoom(t time.Time) {
	full := float64(l.cfg.Burst)
	period := time.Duration(full / l.cfg.Rate * float64(time.Second))
	if len(l.buckets) < l.cfg.MaxClients && t.Sub(l.lastSweep) < period {
		return
	}
	l.lastSweep = t
	for id, b := range l.buckets {
		l.refill(b, t)
		if b.tokens >= full {
			delete(l.buckets, id)
		}
	}
	if len(l.buckets) < l.cfg.MaxClients {
		return
	}
	type entry struct {
		id     string
		tokens float64
	}
	all := make([]entry, 0, len(l.buckets))
	for id, b := range l.buckets {
		all = append(all, entry{id, b.tokens})
	}
	slices.SortFunc(all, func(a, b entry) int { return -cmpFloat(a.tokens, b.tokens) })
	for _, e := range all[:max(1, len(all)/8)] {
		delete(l.buckets, e.id)
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Len reports how many clients' buckets are held.
func (l *ClientAuthLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Middleware wraps the token, introspection and revocation endpoints. It
// finds the client_id in HTTP Basic credentials or, failing those, in the
// form body (read up to MaxBody and handed on intact), refuses a client
// with an empty bucket, and charges a failure when the endpoint answers 401,
// or 400 with error invalid_client. A request naming no client passes
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
		if ok, wait := l.Allow(clientID); !ok {
			if l.OnRefuse != nil {
				l.OnRefuse()
			}
			secs := int64(math.Ceil(wait.Seconds()))
			if secs < 1 {
				secs = 1
			}
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeOAuthError(w, http.StatusTooManyRequests, "temporarily_unavailable",
				fmt.Sprintf("Too many failed client authentications; retry after %d seconds.", secs))
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.clientAuthFailed() {
			l.Failed(clientID)
		}
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

// statusWriter remembers the status and, for a 400, the start of the body,
// to tell an invalid_client answer from other bad requests.
type statusWriter struct {
	http.ResponseWriter
	status int
	head   []byte
}

const statusWriterPeek = 1024

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status == http.StatusBadRequest && len(w.head) < statusWriterPeek {
		n := min(len(p), statusWriterPeek-len(w.head))
		w.head = append(w.head, p[:n]...)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) clientAuthFailed() bool {
	switch w.status {
	case http.StatusUnauthorized:
		return true
	case http.StatusBadRequest:
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(w.head, &body) == nil {
			return body.Error == "invalid_client"
		}
		return bytes.Contains(w.head, []byte(`"invalid_client"`))
	}
	return false
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
