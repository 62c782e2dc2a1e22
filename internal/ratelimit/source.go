package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Defaults of SourceLimit.
const (
	// DefaultSourceBurst requests a source may make in a row.
	DefaultSourceBurst = 10
	// DefaultSourceRate is how many requests per second a source earns
	// back: ten an hour.
	DefaultSourceRate = 10.0 / 3600
	// DefaultSourceMaxSources bounds how many sources are remembered.
	DefaultSourceMaxSources = 10_000
)

// SourceLimit configures SourceLimiter. The zero value means the defaults.
type SourceLimit struct {
	// Burst is how many requests a source may make in a row.
	Burst int
	// Rate is how many requests per second a source earns back.
	Rate float64
	// MaxSources bounds memory: how many sources' buckets are kept. When
	// full, the buckets closest to full are forgotten first (a forgotten
	// bucket is a full one, so only the least-limited sources gain).
	MaxSources int
}

func (c SourceLimit) withDefaults() SourceLimit {
	if c.Burst <= 0 {
		c.Burst = DefaultSourceBurst
	}
	if c.Rate <= 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		c.Rate = DefaultSourceRate
	}
	if c.MaxSources <= 0 {
		c.MaxSources = DefaultSourceMaxSources
	}
	return c
}

// SourceLimiter rate-limits requests per source (an address, see Source)
// with a token bucket: every request admitted takes a token, and a source
// whose bucket is empty is refused until it has earned one back. It bounds
// what one source can create (dynamic client registrations), where
// ClientAuthLimiter bounds failed guesses.
type SourceLimiter struct {
	cfg SourceLimit
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

// NewSourceLimiter returns a limiter; the zero SourceLimit means the
// defaults.
func NewSourceLimiter(cfg SourceLimit) *SourceLimiter { return newSourceLimiter(cfg, time.Now) }

func newSourceLimiter(cfg SourceLimit, now func() time.Time) *SourceLimiter {
	return &SourceLimiter{cfg: cfg.withDefaults(), now: now, buckets: map[string]*bucket{}}
}

// Take admits one request of source, taking a token, or reports how long
// until the source may try again.
func (l *SourceLimiter) Take(source string) (ok bool, retryAfter time.Duration) {
	t := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := bucketFor(l.buckets, source, t, l.cfg.Burst, l.cfg.Rate, l.cfg.MaxSources)
	b.refill(t, l.cfg.Burst, l.cfg.Rate)
	if b.tokens < 1 {
		return false, b.wait(l.cfg.Rate)
	}
	b.tokens--
	return true, 0
}

// Len reports how many sources' buckets are held.
func (l *SourceLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
