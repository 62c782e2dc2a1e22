// Package clientsecret makes client secrets and checks them: the dpy_cs_
// secret generator, the SHA-256 hasher fosite compares them with, and the
// throttled writer of secrets' last use.
package clientsecret

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/ory/fosite"
)

// SecretDisplayPrefixLen is how many leading characters of a secret are kept
// in clear for recognition: the prefix and five random characters (30 bits,
// too few to help a guess at the other 226).
const SecretDisplayPrefixLen = 12

// NewClientSecret returns a fresh secret (protocol.ClientSecretPrefix and 32 random
// bytes, base64url), its SHA-256 hash, and its display prefix.
func NewClientSecret() (secret string, hash []byte, displayPrefix string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, "", err
	}
	secret = protocol.ClientSecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	return secret, sum[:], secret[:SecretDisplayPrefixLen], nil
}

// NewRegistrationToken returns a fresh RFC 7592 registration access token
// (protocol.RegistrationTokenPrefix and 32 random bytes, base64url) and its
// SHA-256 hash, which is all that is stored.
func NewRegistrationToken() (token string, hash []byte, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	token = protocol.RegistrationTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(token))
	return token, sum[:], nil
}

// MatchesHash reports, in constant time, whether token hashes (SHA-256) to
// hash.
func MatchesHash(token string, hash []byte) bool {
	sum := sha256.Sum256([]byte(token))
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(hash, sum[:]) == 1
}

var errSecretMismatch = errors.New("deputy: client secret does not match")

var _ fosite.Hasher = (*SHA256Hasher)(nil)

// SHA256Hasher is the fosite.Hasher for deputy's client secrets. The secrets
// are server-generated with 256 bits of entropy, so a slow password hash
// would buy no resistance to guessing and would cost the token endpoint its
// throughput; a single SHA-256 compared in constant time suffices.
type SHA256Hasher struct {
	// OnMatch, if set, is told which stored hash authenticated a client.
	// It must not block: it runs on the token endpoint's hot path.
	OnMatch func(hash []byte)
}

func (h *SHA256Hasher) Hash(_ context.Context, data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	return sum[:], nil
}

func (h *SHA256Hasher) Compare(ctx context.Context, hash, data []byte) error {
	sum := sha256.Sum256(data)
	if len(hash) != sha256.Size || subtle.ConstantTimeCompare(hash, sum[:]) != 1 {
		noteCompare(ctx, false)
		return errSecretMismatch
	}
	noteCompare(ctx, true)
	noteMatch(ctx, hash)
	if h.OnMatch != nil {
		h.OnMatch(hash)
	}
	return nil
}

// SecretToucher records when a secret last authenticated.
type SecretToucher interface {
	TouchClientSecret(ctx context.Context, hash []byte, at time.Time) error
}

// SecretUsage keeps client_secrets.last_used_at roughly current without a
// write per token request: each secret is written at most once per Interval,
// by a background goroutine, and a use that finds the queue full is dropped
// (last_used_at is a hint for people, not an audit record).
type SecretUsage struct {
	store    SecretToucher
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu     sync.Mutex
	last   map[[sha256.Size]byte]time.Time
	closed bool

	queue chan touch
	done  chan struct{}
}

type touch struct {
	hash []byte
	at   time.Time
}

// DefaultSecretUsageInterval is how often at most one secret's last_used_at
// is written.
const DefaultSecretUsageInterval = time.Minute

// NewSecretUsage starts the writer; Close stops it. interval <= 0 means
// DefaultSecretUsageInterval; a nil log means slog.Default().
func NewSecretUsage(store SecretToucher, interval time.Duration, log *slog.Logger) *SecretUsage {
	return newSecretUsage(store, interval, log, time.Now)
}

func newSecretUsage(store SecretToucher, interval time.Duration, log *slog.Logger, now func() time.Time) *SecretUsage {
	if interval <= 0 {
		interval = DefaultSecretUsageInterval
	}
	if log == nil {
		log = slog.Default()
	}
	u := &SecretUsage{
		store:    store,
		interval: interval,
		log:      log,
		now:      now,
		last:     map[[sha256.Size]byte]time.Time{},
		queue:    make(chan touch, 256),
		done:     make(chan struct{}),
	}
	go u.run()
	return u
}

// Used notes that the secret with this hash authenticated. It never blocks.
func (u *SecretUsage) Used(hash []byte) {
	if len(hash) != sha256.Size {
		return
	}
	var k [sha256.Size]byte
	copy(k[:], hash)
	t := u.now()

	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return
	}
	if prev, ok := u.last[k]; ok && t.Sub(prev) < u.interval {
		return
	}
	select {
	case u.queue <- touch{hash: k[:], at: t}:
		u.last[k] = t
	default: // writer behind: try again on a later use
	}
	// Forget secrets not seen for a while, so deleted ones do not pile up.
	if len(u.last) > 4096 {
		for h, at := range u.last {
			if t.Sub(at) >= u.interval {
				delete(u.last, h)
			}
		}
	}
}

func (u *SecretUsage) run() {
	defer close(u.done)
	for t := range u.queue {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := u.store.TouchClientSecret(ctx, t.hash, t.at); err != nil {
			u.log.Warn("deputy: recording client secret use", "err", err)
		}
		cancel()
	}
}

// Close writes what is queued and stops the writer. Uses after Close are
// ignored.
func (u *SecretUsage) Close() {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		<-u.done
		return
	}
	u.closed = true
	close(u.queue)
	u.mu.Unlock()
	<-u.done
}

// Match is where the hasher notes which stored hash authenticated the
// client of one request, so that the token issued to it can name the secret
// (and die with it), and what the request's secret comparisons found, so
// that the client-authentication limiter can tell a refused client from an
// accepted one at endpoints that do not say (a host's, in plugin mode).
// WithMatch puts one in a request's context.
type Match struct {
	mu       sync.Mutex
	hash     []byte
	compared bool // a secret was compared
	matched  bool // a secret, deputy's or the host's, matched
	unknown  bool // the request named a client nobody has
}

type matchKey struct{}

// WithMatch returns ctx carrying a fresh Match.
func WithMatch(ctx context.Context) context.Context {
	return context.WithValue(ctx, matchKey{}, &Match{})
}

// MatchedHash returns the stored hash that authenticated the client of the
// request ctx belongs to; ok is false when no deputy secret matched or ctx
// carries no Match.
func MatchedHash(ctx context.Context) (hash []byte, ok bool) {
	m, _ := ctx.Value(matchKey{}).(*Match)
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hash, m.hash != nil
}

// HasMatch reports whether ctx carries a Match (the request went through
// the token endpoint guard).
func HasMatch(ctx context.Context) bool {
	m, _ := ctx.Value(matchKey{}).(*Match)
	return m != nil
}

// noteCompare records one secret comparison and whether it matched.
func noteCompare(ctx context.Context, matched bool) {
	if m, _ := ctx.Value(matchKey{}).(*Match); m != nil {
		m.mu.Lock()
		m.compared = true
		m.matched = m.matched || matched
		m.mu.Unlock()
	}
}

// NoteUnknownClient records that the request named a client neither the
// host nor deputy has: its authentication is refused without a comparison.
func NoteUnknownClient(ctx context.Context) {
	if m, _ := ctx.Value(matchKey{}).(*Match); m != nil {
		m.mu.Lock()
		m.unknown = true
		m.mu.Unlock()
	}
}

// Refused reports whether the client authentication of the request ctx
// belongs to was refused, as far as deputy's hasher and client lookup saw:
// secrets were compared and none matched (fosite tries a client's rotated
// secrets after its first), or the client does not exist. A request that
// compared nothing (a public client, a malformed request) was not refused.
func Refused(ctx context.Context) bool {
	m, _ := ctx.Value(matchKey{}).(*Match)
	if m == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.matched && (m.compared || m.unknown)
}

func noteMatch(ctx context.Context, hash []byte) {
	if m, _ := ctx.Value(matchKey{}).(*Match); m != nil {
		m.mu.Lock()
		m.hash = hash
		m.mu.Unlock()
	}
}

// hashMark starts a deputy secret hash that is handed to a host's fosite
// next to the host's own hashes (bcrypt's start with "$2"), so that
// HostHasher can tell the two apart without guessing from lengths.
var hashMark = []byte("$dpy-sha256$")

// Mark returns hash marked as deputy's, for HostHasher.
func Mark(hash []byte) []byte {
	if hash == nil {
		return nil
	}
	return append(append(make([]byte, 0, len(hashMark)+len(hash)), hashMark...), hash...)
}

var _ fosite.Hasher = HostHasher{}

// HostHasher compares deputy's marked SHA-256 hashes itself and hands every
// other hash to the host's own hasher, so that one fosite provider
// authenticates the host's clients and deputy's apps alike.
type HostHasher struct {
	Deputy *SHA256Hasher
	Host   fosite.Hasher
}

// Hash hashes with the host's hasher: fosite hashes only the host's own
// clients' secrets; deputy makes its own.
func (h HostHasher) Hash(ctx context.Context, data []byte) ([]byte, error) {
	return h.Host.Hash(ctx, data)
}

func (h HostHasher) Compare(ctx context.Context, hash, data []byte) error {
	if rest, ok := bytes.CutPrefix(hash, hashMark); ok {
		return h.Deputy.Compare(ctx, rest, data)
	}
	err := h.Host.Compare(ctx, hash, data)
	noteCompare(ctx, err == nil)
	return err
}
