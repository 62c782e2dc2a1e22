package clientsecret

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"
	"golang.org/x/crypto/bcrypt"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// deputy's store is what SecretUsage writes to.
var _ SecretToucher = (*storage.Store)(nil)

func TestNewClientSecret(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		secret, hash, prefix, err := NewClientSecret()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, protocol.ClientSecretPrefix))
		if !strings.HasPrefix(secret, protocol.ClientSecretPrefix) || err != nil || len(raw) != 32 {
			t.Fatalf("secret %q is not %s + base64url(32 bytes)", secret, protocol.ClientSecretPrefix)
		}
		if sum := sha256.Sum256([]byte(secret)); !bytes.Equal(hash, sum[:]) {
			t.Fatal("hash is not SHA-256 of the secret")
		}
		if prefix != secret[:SecretDisplayPrefixLen] {
			t.Fatalf("display prefix %q", prefix)
		}
		if seen[secret] {
			t.Fatal("secret repeated")
		}
		seen[secret] = true
	}
}

func TestSHA256HasherCompare(t *testing.T) {
	t.Parallel()
	secret, hash, _, err := NewClientSecret()
	if err != nil {
		t.Fatal(err)
	}
	var matched [][]byte
	h := &SHA256Hasher{OnMatch: func(b []byte) { matched = append(matched, b) }}
	if got, _ := h.Hash(context.Background(), []byte(secret)); !bytes.Equal(got, hash) {
		t.Error("Hash disagrees with NewClientSecret")
	}
	for _, tc := range []struct {
		name   string
		hash   []byte
		secret string
		ok     bool
	}{
		{"right secret", hash, secret, true},
		{"wrong secret", hash, secret[:len(secret)-1] + "x", false},
		{"the hash as the secret", hash, string(hash), false},
		{"empty secret", hash, "", false},
		{"no stored hash", nil, secret, false},
		{"truncated stored hash", hash[:16], secret, false},
	} {
		matched = nil
		err := h.Compare(context.Background(), tc.hash, []byte(tc.secret))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if tc.ok != (len(matched) == 1) {
			t.Errorf("%s: OnMatch called %d times", tc.name, len(matched))
		}
	}
}

// countingToucher is the real store, counting its writes.
type countingToucher struct {
	*storage.Store
	mu     sync.Mutex
	writes int
}

func (c *countingToucher) TouchClientSecret(ctx context.Context, hash []byte, at time.Time) error {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Store.TouchClientSecret(ctx, hash, at)
}

// TestSecretUsageThrottle: a secret used on every request is written at
// most once a minute, and last_used_at ends at the latest write.
func TestSecretUsageThrottle(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		c := &storage.Client{ID: "robot", Name: "robot", GrantTypes: []string{"client_credentials"}}
		c.SetOwner("alice")
		if err := s.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
		_, hash, prefix, err := NewClientSecret()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateClientSecret(ctx, c.ID, hash, prefix); err != nil {
			t.Fatal(err)
		}

		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		clock := testkit.NewClock(t0)

		store := &countingToucher{Store: s}
		u := newSecretUsage(store, time.Minute, nil, clock.Now)
		for range 100 {
			u.Used(hash) // a burst: one write
		}
		clock.Advance(59 * time.Second)
		u.Used(hash) // still within the minute: none
		clock.Advance(2 * time.Second)
		u.Used(hash) // a minute after the first write: one more
		u.Used(hash)
		u.Used([]byte("not a hash"))
		u.Close()
		u.Used(hash) // after Close: ignored, and no panic

		if store.writes != 2 {
			t.Errorf("%d writes, want 2", store.writes)
		}
		ss, err := s.ListClientSecrets(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) != 1 || !ss[0].LastUsedAt.Valid || !ss[0].LastUsedAt.Time.Equal(t0.Add(61*time.Second)) {
			t.Errorf("last_used_at = %+v, want %s", ss[0].LastUsedAt, t0.Add(61*time.Second))
		}
	})
}

// TestRefused: what a request's comparisons tell the client-authentication
// limiter at endpoints that do not report for themselves (a host's).
func TestRefused(t *testing.T) {
	t.Parallel()
	right := sha256.Sum256([]byte("right"))
	host := &fosite.BCrypt{Config: &fosite.Config{HashCost: bcrypt.MinCost}}
	hostHash, err := host.Hash(context.Background(), []byte("host-right"))
	if err != nil {
		t.Fatal(err)
	}
	h := HostHasher{Deputy: &SHA256Hasher{}, Host: host}
	tests := []struct {
		name    string
		do      func(ctx context.Context)
		refused bool
	}{
		{"nothing compared", func(context.Context) {}, false},
		{"deputy's secret matches", func(ctx context.Context) { h.Compare(ctx, Mark(right[:]), []byte("right")) }, false},
		{"deputy's secret wrong", func(ctx context.Context) { h.Compare(ctx, Mark(right[:]), []byte("wrong")) }, true},
		{"the first secret wrong, a rotated one right", func(ctx context.Context) {
			h.Compare(ctx, Mark(make([]byte, 32)), []byte("right"))
			h.Compare(ctx, Mark(right[:]), []byte("right"))
		}, false},
		{"the host's secret matches", func(ctx context.Context) { h.Compare(ctx, hostHash, []byte("host-right")) }, false},
		{"the host's secret wrong", func(ctx context.Context) { h.Compare(ctx, hostHash, []byte("wrong")) }, true},
		{"an unknown client", func(ctx context.Context) { NoteUnknownClient(ctx) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := WithMatch(context.Background())
			tc.do(ctx)
			if got := Refused(ctx); got != tc.refused {
				t.Fatalf("Refused = %v, want %v", got, tc.refused)
			}
		})
	}
	// Outside a guarded request nothing is recorded, and nothing refused.
	NoteUnknownClient(context.Background())
	if Refused(context.Background()) {
		t.Fatal("Refused without a Match")
	}
}
