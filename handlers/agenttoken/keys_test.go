package agenttoken

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func mintWith(t *testing.T, k *Keyring, s *storage.Store, org string) *AgentToken {
	t.Helper()
	m := &Minter{Keys: k, Store: s, Directory: newDirectory(), Catalog: scope.NewCatalog(), Issuer: testIssuer}
	tok, err := m.Mint(context.Background(), MintRequest{UserID: testUser, Organization: org, AgentSessionID: testSession, ClientID: agentClientID})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	seg, _, _ := strings.Cut(strings.TrimPrefix(token, protocol.AgentTokenPrefix), ".")
	raw, err := b64.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

// TestKeyringFirstKeyRace: replicas starting together on one database agree
// on one active key.
func TestKeyringFirstKeyRace(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		dsn := b.NewDSN(t)
		const replicas = 6
		stores := make([]*storage.Store, replicas)
		for i := range stores {
			stores[i] = storagetest.OpenDSN(t, dsn)
		}
		keyrings := make([]*Keyring, replicas)
		errs := make([]error, replicas)
		var wg sync.WaitGroup
		for i := range stores {
			wg.Go(func() {
				keyrings[i], errs[i] = NewKeyring(context.Background(), KeyringConfig{Store: stores[i], SystemSecret: testSecret})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
		}
		want := keyrings[0].set.Load().active.kid
		for i, k := range keyrings {
			if got := k.set.Load().active.kid; got != want {
				t.Errorf("replica %d signs with %s, replica 0 with %s", i, got, want)
			}
		}
		rows, err := stores[0].SigningKeys(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 {
			t.Errorf("%d keys stored, want 1", len(rows))
		}
	})
}

// TestRotateKeysAcrossReplicas: after RotateKeys on one replica, a second
// store instance on the same database verifies both the old key's tokens
// (until they expire) and the new key's, and signs with the new key once it
// reloads.
func TestRotateKeysAcrossReplicas(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		ctx := context.Background()
		dsn := b.NewDSN(t)
		sa, sb := storagetest.OpenDSN(t, dsn), storagetest.OpenDSN(t, dsn)
		ka, err := NewKeyring(ctx, KeyringConfig{Store: sa, SystemSecret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		kb, err := NewKeyring(ctx, KeyringConfig{Store: sb, SystemSecret: testSecret, MinRefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		va := &AgentVerifier{Keys: ka, Issuer: testIssuer}
		vb := &AgentVerifier{Keys: kb, Issuer: testIssuer}

		old := mintWith(t, ka, sa, testOrg)
		oldKid := kidOf(t, old.Token)
		if err := ka.RotateKeys(ctx); err != nil {
			t.Fatal(err)
		}
		fresh := mintWith(t, ka, sa, testOrg)
		newKid := kidOf(t, fresh.Token)
		if newKid == oldKid {
			t.Fatal("RotateKeys did not change the signing key")
		}
		for name, v := range map[string]*AgentVerifier{"rotating replica": va, "other replica": vb} {
			for _, tok := range []*AgentToken{old, fresh} {
				if _, err := v.Verify(ctx, tok.Token, testOrg); err != nil {
					t.Errorf("%s: %s-key token: %v", name, kidOf(t, tok.Token), err)
				}
			}
		}
		// B learned the new key on meeting its kid; reloaded, it signs with it.
		if err := kb.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if got := kidOf(t, mintWith(t, kb, sb, testOrg).Token); got != newKid {
			t.Errorf("replica B signs with %s after reload, want %s", got, newKid)
		}
		// The old key's token verifies until it expires, and not after.
		vb.now = func() time.Time { return old.ExpiresAt.Add(-time.Second) }
		if _, err := vb.Verify(ctx, old.Token, testOrg); err != nil {
			t.Errorf("old token just before expiry: %v", err)
		}
		vb.now = func() time.Time { return old.ExpiresAt.Add(DefaultLeeway + time.Second) }
		if _, err := vb.Verify(ctx, old.Token, testOrg); !errors.Is(err, resource.ErrInvalidToken) {
			t.Errorf("old token after expiry: %v", err)
		}

		// Both keys are published; the retired one until its retention ends.
		if jwks := string(kb.JWKS()); !strings.Contains(jwks, oldKid) || !strings.Contains(jwks, newKid) {
			t.Errorf("JWKS lacks a key: %s", jwks)
		}
		rows, err := sb.SigningKeys(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var retired *storage.SigningKey
		for _, r := range rows {
			if r.ID == oldKid {
				retired = r
			}
		}
		if retired == nil || retired.Active || !retired.DropAfter.Valid ||
			retired.DropAfter.Time.Sub(retired.RetiredAt.Time) < protocol.MaxAgentTokenLifespan {
			t.Fatalf("retired key kept for too short: %+v", retired)
		}
		// Once its retention has passed, the old key is gone from the set
		// every replica loads, and a further rotation deletes the row.
		later := retired.DropAfter.Time.Add(time.Second)
		if rows, _ := sb.SigningKeys(ctx, later); len(rows) != 1 || rows[0].ID != newKid {
			t.Errorf("keys after retention: %d", len(rows))
		}
	})
}

// TestKeyringUnknownKidRateLimited: tokens naming kids nobody has cannot make
// the verifier query the database more than once per MinRefreshInterval.
func TestKeyringUnknownKidRateLimited(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	k, err := NewKeyring(context.Background(), KeyringConfig{Store: s, SystemSecret: testSecret, MinRefreshInterval: time.Hour})
	// One reload for the first unknown kid is allowed; the other 199 are not.
	if err != nil {
		t.Fatal(err)
	}
	v := &AgentVerifier{Keys: k, Issuer: testIssuer}
	before := k.loads.Load()
	for i := range 200 {
		h := map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": strings.Repeat("0", 20) + string(rune('a'+i%6)) + "bcd"}
		if _, err := v.Verify(context.Background(), forge(t, k, h, validClaims()), testOrg); !errors.Is(err, resource.ErrInvalidToken) {
			t.Fatalf("unknown kid accepted: %v", err)
		}
	}
	// forge reads the keys itself through the store, not the keyring.
	if n := k.loads.Load() - before; n > 1 {
		t.Errorf("%d reloads for unknown kids, want at most 1", n)
	}
}

// TestKeysSealedAtRest: the database holds no private key in the clear, and
// a replica with another system secret cannot sign with it.
func TestKeysSealedAtRest(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		k, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		_, _, priv, _ := activeKey(t, k)
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := s.SigningKeys(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		seed := der[len(der)-32:] // the Ed25519 seed ends the PKCS #8 encoding
		if bytes.Contains(rows[0].PrivateKey, seed) || bytes.Contains(rows[0].PrivateKey, der) {
			t.Fatal("private key stored in the clear")
		}
		if _, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: []byte("another-system-secret-of-32-bytes-or-more"), Logger: slog.New(slog.DiscardHandler)}); err == nil {
			t.Error("a keyring with the wrong system secret came up able to sign")
		}
		// A sealed key moved onto another row does not open.
		if _, err := k.open("another-kid", rows[0].Algorithm, rows[0].PrivateKey); err == nil {
			t.Error("sealed key opened under another kid")
		}
	})
}

// TestES256Keys: ES256 signs and verifies too, keys of both algorithms
// coexist after switching, and neither algorithm's header opens the other's key.
func TestES256Keys(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		ed, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		edTok := mintWith(t, ed, s, testOrg)
		ec, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret, Algorithm: AlgES256, MinRefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := ec.RotateKeys(ctx); err != nil {
			t.Fatal(err)
		}
		if _, alg, _, _ := activeKey(t, ec); alg != AlgES256 {
			t.Fatalf("active key is %s", alg)
		}
		ecTok := mintWith(t, ec, s, testOrg)
		v := &AgentVerifier{Keys: ed, Issuer: testIssuer}
		for _, tok := range []string{edTok.Token, ecTok.Token} {
			if _, err := v.Verify(ctx, tok, testOrg); err != nil {
				t.Errorf("verify %s: %v", kidOf(t, tok), err)
			}
		}
		// The ES256 key named under an EdDSA header is refused.
		h := map[string]any{"alg": AlgEdDSA, "kid": kidOf(t, ecTok.Token), "typ": "at+jwt"}
		if _, err := v.Verify(ctx, forge(t, ec, h, validClaims()), testOrg); !errors.Is(err, resource.ErrInvalidToken) {
			t.Errorf("algorithm confusion accepted: %v", err)
		}
		if _, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret, Algorithm: "HS256"}); err == nil {
			t.Error("HS256 keyring accepted")
		}
	})
}

// TestVerifyFastPath: our own tokens' header is recognised without decoding
// JSON, which is what keeps verification cheap.
func TestVerifyFastPath(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	k, err := NewKeyring(context.Background(), KeyringConfig{Store: s, SystemSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok := mintWith(t, k, s, testOrg)
	header, _, _ := strings.Cut(strings.TrimPrefix(tok.Token, protocol.AgentTokenPrefix), ".")
	if k.set.Load().byHeader[header] == nil {
		t.Errorf("header %s is not the one expected", header)
	}
}

// TestKeyringPeriodicRefresh: a replica that sees no token from a rotated-in
// key still switches to signing with it once its copy of the keys is stale.
func TestKeyringPeriodicRefresh(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		ctx := context.Background()
		dsn := b.NewDSN(t)
		sa, sb := storagetest.OpenDSN(t, dsn), storagetest.OpenDSN(t, dsn)
		ka, err := NewKeyring(ctx, KeyringConfig{Store: sa, SystemSecret: testSecret})
		if err != nil {
			t.Fatal(err)
		}
		kb, err := NewKeyring(ctx, KeyringConfig{Store: sb, SystemSecret: testSecret, RefreshInterval: time.Millisecond, MinRefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := ka.RotateKeys(ctx); err != nil {
			t.Fatal(err)
		}
		want := ka.set.Load().active.kid
		// Polls, with a generous deadline, for the background reload that a
		// stale key set triggers; no timing is asserted.
		deadline := time.Now().Add(20 * time.Second)
		for {
			p, err := kb.signer()
			if err != nil {
				t.Fatal(err)
			}
			if p.kid == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica B still signs with %s, want %s", p.kid, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}
