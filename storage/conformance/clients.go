package conformance

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
)

func testClients(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	if err := s.CreateClient(ctx, &storage.Client{ID: "c1", Name: "dup"}); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("duplicate id: err = %v, want ErrConflict", err)
	}
	for _, h := range []string{"hash-one", "hash-two"} {
		if _, err := s.CreateClientSecret(ctx, "c1", []byte(h), "dpy_cs_test"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetClient(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	sc := got.(*storage.Client)
	if len(sc.SecretHashes) != 2 || got.GetHashedSecret() == nil || len(sc.GetRotatedHashes()) != 1 {
		t.Fatalf("secrets: %q", sc.SecretHashes)
	}
	if fmt.Sprint(got.GetRedirectURIs(), got.GetGrantTypes(), got.GetScopes(), got.GetAudience()) !=
		fmt.Sprint(c.RedirectURIs, c.GrantTypes, c.Scopes, c.Audience) {
		t.Fatalf("lists not kept: %+v", got)
	}
	if _, err := s.GetClient(ctx, "nope"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("missing client: %v", err)
	}
	if sc.IsAgent() {
		t.Fatal("a new client is an agent only when marked so")
	}
	sc.Name = "renamed"
	sc.SetOwner("alice")
	sc.Agent = true
	if err := s.UpdateClient(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Client(ctx, "c1"); err != nil || !got.IsAgent() {
		t.Fatalf("agent flag not kept by UpdateClient: %+v %v", got, err)
	}
	if err := s.UpdateClient(ctx, &storage.Client{ID: "nope"}); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
	newClient(t, s, "c2")
	owned, err := s.ListClients(ctx, "alice")
	if err != nil || len(owned) != 1 || owned[0].Name != "renamed" || owned[0].Owner() != "alice" {
		t.Fatalf("list owned: %v %v", owned, err)
	}
	all, err := s.ListClients(ctx, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("list all: %d %v", len(all), err)
	}
	// Deleting a client takes its tokens with it.
	if err := s.CreateAccessTokenSession(ctx, "at-c1", newRequest(sc, "r1", "alice", future)); err != nil {
		t.Fatal(err)
	}
	// A token's client is the live one, agent flag included: approvals
	// (flows.Approvals) are decided on it at every use.
	tok, err := s.GetAccessTokenSession(ctx, "at-c1", session())
	if err != nil {
		t.Fatal(err)
	}
	if ac, ok := tok.GetClient().(interface{ IsAgent() bool }); !ok || !ac.IsAgent() {
		t.Fatalf("a token's client lost its agent flag: %+v", tok.GetClient())
	}
	if err := s.DeleteClient(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-c1", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("token of deleted client: %v", err)
	}
	if err := s.DeleteClient(ctx, "c1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testClientSecrets(t *testing.T, s Store) {
	ctx := context.Background()
	c := newOwnedClient(t, s, "robot", "alice")
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
	other := newOwnedClient(t, s, "other", "bob")
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
}

// testDeleteClient: DeleteClient removes every request the client was
// issued, of every kind, and its secrets, and leaves other clients' alone.
// A client registered again under the same id must not find any of them:
// a row left behind would come back to life with it.
func testDeleteClient(t *testing.T, s Store) {
	ctx := context.Background()
	gone, kept := newClient(t, s, "gone"), newClient(t, s, "kept")
	if _, err := s.CreateClientSecret(ctx, "gone", []byte("hash-of-gone"), "dpy_cs_test"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*storage.Client{gone, kept} {
		r := newRequest(c, "req-"+c.ID, "alice", future)
		for _, err := range []error{
			s.CreateAccessTokenSession(ctx, "at-"+c.ID, r),
			s.CreateRefreshTokenSession(ctx, "rt-"+c.ID, "at-"+c.ID, r),
			s.CreateAuthorizeCodeSession(ctx, "ac-"+c.ID, r),
			s.CreatePKCERequestSession(ctx, "pk-"+c.ID, r),
			s.CreateOpenIDConnectSession(ctx, "oi-"+c.ID, r),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.DeleteClient(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	newClient(t, s, "gone")
	lookups := map[string]func(sig string) error{
		"access token": func(sig string) error { _, err := s.GetAccessTokenSession(ctx, "at-"+sig, session()); return err },
		"refresh token": func(sig string) error {
			_, err := s.GetRefreshTokenSession(ctx, "rt-"+sig, session())
			return err
		},
		"authorize code": func(sig string) error {
			_, err := s.GetAuthorizeCodeSession(ctx, "ac-"+sig, session())
			return err
		},
		"pkce": func(sig string) error { _, err := s.GetPKCERequestSession(ctx, "pk-"+sig, session()); return err },
		"openid connect": func(sig string) error {
			_, err := s.GetOpenIDConnectSession(ctx, "oi-"+sig, &fosite.Request{Session: session()})
			return err
		},
	}
	for kind, get := range lookups {
		if err := get("gone"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s of the deleted client, after its id was registered again: %v", kind, err)
		}
		if err := get("kept"); err != nil {
			t.Errorf("%s of the other client: %v", kind, err)
		}
	}
	if n, err := s.CountClientSecrets(ctx, "gone"); err != nil || n != 0 {
		t.Errorf("secrets of the deleted client: %d, %v", n, err)
	}
	if apps, err := s.ListAuthorizedApps(ctx, "alice"); err != nil || len(apps) != 1 || apps[0].Client.ID != "kept" {
		t.Errorf("alice's authorized apps: %+v, %v", apps, err)
	}
}

// testInvalidInput: values a database cannot hold (a NUL byte or invalid
// UTF-8 in PostgreSQL text) are the request's fault. A lookup finds nothing
// or says ErrInvalidInput; a write succeeds or says ErrInvalidInput; never
// anything that reads as an outage or a bug.
func testInvalidInput(t *testing.T, s Store) {
	ctx := context.Background()
	newClient(t, s, "c1")
	for _, bad := range []string{"a\x00b", "\xff\xfe", "ok\xc3("} {
		check := func(what string, err error, notFoundOK bool) {
			t.Helper()
			if err == nil || errors.Is(err, storage.ErrInvalidInput) || (notFoundOK && errors.Is(err, storage.ErrNotFound)) {
				return
			}
			t.Errorf("%s with %q: %v, want nil, ErrNotFound or ErrInvalidInput", what, bad, err)
		}
		_, err := s.GetClient(ctx, bad)
		check("GetClient", err, true)
		_, err = s.GetAccessTokenSession(ctx, bad, session())
		check("GetAccessTokenSession", err, true)
		_, err = s.AgentGrantScopes(ctx, bad, "alice", "plat", "sess", time.Now())
		check("AgentGrantScopes", err, true)
		_, err = s.AgentGrantScopes(ctx, "acme", "alice", bad, "sess", time.Now())
		check("AgentGrantScopes", err, true)
		check("RevokeAgentGrant", s.RevokeAgentGrant(ctx, "alice", bad), true)
		check("CreateClient", s.CreateClient(ctx, &storage.Client{ID: "x" + bad, Name: bad}), false)
		check("UpdateClient", s.UpdateClient(ctx, &storage.Client{ID: "c1", Name: bad}), false)
		_, err = s.ApproveAgentGrant(ctx, "acme", "alice", "plat", bad, []string{"a:read"}, future)
		check("ApproveAgentGrant", err, false)
		_, err = s.ApproveAgentGrant(ctx, "acme", "alice", bad, "sess", []string{"a:read"}, future)
		check("ApproveAgentGrant", err, false)
	}
}
