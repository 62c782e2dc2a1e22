package storage_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func appsTestClient(t *testing.T, s *storage.Store, id, owner string) *storage.Client {
	t.Helper()
	c := &storage.Client{ID: id, Name: id, GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs:read"}}
	c.SetOwner(owner)
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

func appsTestToken(t *testing.T, s *storage.Store, c fosite.Client, sig, subject string, scopes []string, exp time.Time) {
	t.Helper()
	r := &fosite.Request{
		ID: "req-" + sig, RequestedAt: time.Now().UTC().Truncate(time.Second), Client: c,
		GrantedScope: scopes,
		Session: &fosite.DefaultSession{Subject: subject, ExpiresAt: map[fosite.TokenType]time.Time{
			fosite.AccessToken: exp, fosite.RefreshToken: exp,
		}},
	}
	if err := s.CreateAccessTokenSession(context.Background(), sig, r); err != nil {
		t.Fatal(err)
	}
}

func TestClientSecrets(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		c := appsTestClient(t, s, "robot", "alice")
		h1, h2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
		s1, err := s.CreateClientSecret(ctx, c.ID, h1[:], "dpy_cs_one")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateClientSecret(ctx, c.ID, h2[:], "dpy_cs_two"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateClientSecret(ctx, c.ID, h2[:], "dpy_cs_two"); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("same hash twice: %v", err)
		}
		if _, err := s.CreateClientSecret(ctx, "nobody", h1[:], "x"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("secret of a missing client: %v", err)
		}
		if n, err := s.CountClientSecrets(ctx, c.ID); err != nil || n != 2 {
			t.Errorf("count = %d, %v", n, err)
		}
		got, err := s.Client(ctx, c.ID)
		if err != nil || len(got.SecretHashes) != 2 {
			t.Fatalf("client hashes: %v, %v", got, err)
		}

		at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
		if err := s.TouchClientSecret(ctx, h1[:], at); err != nil {
			t.Fatal(err)
		}
		ss, err := s.ListClientSecrets(ctx, c.ID)
		if err != nil || len(ss) != 2 {
			t.Fatalf("list: %v, %v", ss, err)
		}
		for _, cs := range ss {
			if cs.ID == s1.ID && (!cs.LastUsedAt.Valid || !cs.LastUsedAt.Time.Equal(at) || cs.DisplayPrefix != "dpy_cs_one") {
				t.Errorf("touched secret = %+v", cs)
			}
			if cs.ID != s1.ID && cs.LastUsedAt.Valid {
				t.Errorf("untouched secret has last_used_at: %+v", cs)
			}
		}

		// Deleting needs the right client; then the hash is gone at once.
		other := appsTestClient(t, s, "other", "bob")
		if err := s.DeleteClientSecret(ctx, other.ID, s1.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("delete through another client: %v", err)
		}
		if err := s.DeleteClientSecret(ctx, c.ID, s1.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteClientSecret(ctx, c.ID, s1.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("second delete: %v", err)
		}
		got, _ = s.Client(ctx, c.ID)
		if len(got.SecretHashes) != 1 || string(got.SecretHashes[0]) != string(h2[:]) {
			t.Errorf("hashes after delete: %x", got.SecretHashes)
		}
	})
}

func TestAuthorizedAppsAndRevocation(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		a := appsTestClient(t, s, "a", "alice")
		b := appsTestClient(t, s, "b", "bob")
		live, dead := time.Now().Add(time.Hour), time.Now().Add(-time.Hour)
		appsTestToken(t, s, a, "a1", "alice", []string{"docs:read"}, live)
		appsTestToken(t, s, a, "a2", "alice", []string{"docs:write"}, live)
		appsTestToken(t, s, b, "b1", "alice", []string{"docs:read"}, dead) // expired: not listed
		appsTestToken(t, s, b, "b2", "bob", []string{"docs:read"}, live)

		apps, err := s.ListAuthorizedApps(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(apps) != 1 || apps[0].Client.ID != "a" || len(apps[0].Scopes) != 2 || apps[0].Client.SecretHashes != nil {
			t.Fatalf("alice's authorized apps = %+v", apps)
		}

		if err := s.RevokeClientTokensForSubject(ctx, "b", "carol"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("nothing to revoke: %v", err)
		}
		if err := s.RevokeClientTokensForSubject(ctx, "a", "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetAccessTokenSession(ctx, "a1", &fosite.DefaultSession{}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("revoked token: %v", err)
		}
		if _, err := s.GetAccessTokenSession(ctx, "b2", &fosite.DefaultSession{}); err != nil {
			t.Errorf("bob's token went too: %v", err)
		}
		if apps, _ := s.ListAuthorizedApps(ctx, "alice"); len(apps) != 0 {
			t.Errorf("after revocation: %+v", apps)
		}
	})
}
