package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
)

func testJTI(t *testing.T, s Store) {
	ctx := context.Background()
	if err := s.ClientAssertionJWTValid(ctx, "j1"); err != nil {
		t.Fatalf("unknown jti: %v", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "j1", future); err != nil {
		t.Fatal(err)
	}
	if err := s.ClientAssertionJWTValid(ctx, "j1"); !errors.Is(err, fosite.ErrJTIKnown) {
		t.Fatalf("known jti: %v", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "j1", future); !errors.Is(err, fosite.ErrJTIKnown) {
		t.Fatalf("replayed jti: %v", err)
	}
	// An expired jti is swept by the next Set and may be used again.
	if err := s.SetClientAssertionJWT(ctx, "j2", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.ClientAssertionJWTValid(ctx, "j2"); err != nil {
		t.Fatalf("expired jti: %v", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "j2", future); err != nil {
		t.Fatalf("reuse expired jti: %v", err)
	}
}

func testAuthorizeCodes(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	req := newRequest(c, "r1", "alice", future)
	if err := s.CreateAuthorizeCodeSession(ctx, "code1", req); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAuthorizeCodeSession(ctx, "code1", req); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("duplicate signature: %v", err)
	}
	got, err := s.GetAuthorizeCodeSession(ctx, "code1", session())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, got, req)
	if err := s.InvalidateAuthorizeCodeSession(ctx, "code1"); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetAuthorizeCodeSession(ctx, "code1", session())
	if !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) || got == nil || got.GetID() != "r1" {
		t.Fatalf("used code: %v %v (fosite needs the request back to revoke its tokens)", got, err)
	}
	if _, err := s.GetAuthorizeCodeSession(ctx, "nope", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("missing code: %v", err)
	}
	if err := s.InvalidateAuthorizeCodeSession(ctx, "nope"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("invalidate missing: %v", err)
	}
	// Only an active code is invalidated: a second redemption that got
	// past fosite's read of the code loses here (RaceCodeInvalidation).
	if err := s.InvalidateAuthorizeCodeSession(ctx, "code1"); !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		t.Fatalf("invalidate twice: %v, want ErrInvalidatedAuthorizeCode", err)
	}
}

func testAccessTokens(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	req := newRequest(c, "r1", "alice", future)
	for _, sig := range []string{"at1", "at2"} {
		if err := s.CreateAccessTokenSession(ctx, sig, req); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetAccessTokenSession(ctx, "at1", session())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, got, req)
	if got.GetClient().(*storage.Client).Name != c.Name {
		t.Fatalf("client not joined: %+v", got.GetClient())
	}
	if err := s.DeleteAccessTokenSession(ctx, "at1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at1", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if err := s.DeleteAccessTokenSession(ctx, "at1"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if err := s.RevokeAccessToken(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at2", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("revoked by request id: %v", err)
	}
}

func testRefreshTokens(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	req := newRequest(c, "r1", "alice", future)
	if err := s.CreateAccessTokenSession(ctx, "at1", req); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, "rt1", "at1", req); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRefreshTokenSession(ctx, "rt1", session())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, got, req)
	// Rotation: the old refresh token turns inactive and is returned with
	// ErrInactiveToken (so fosite detects reuse); its access token goes.
	if err := s.RotateRefreshToken(ctx, "r1", "rt1"); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetRefreshTokenSession(ctx, "rt1", session())
	if !errors.Is(err, fosite.ErrInactiveToken) || got == nil || got.GetID() != "r1" {
		t.Fatalf("rotated token: %v %v", got, err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at1", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("access token after rotation: %v", err)
	}
	// Only the presented, still active token rotates: a second rotation
	// with it, or one naming a token the request does not have, loses
	// (RaceRefreshRotation).
	if err := s.RotateRefreshToken(ctx, "r1", "rt1"); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("rotate twice: %v, want ErrInactiveToken", err)
	}
	if err := s.RotateRefreshToken(ctx, "r1", "missing"); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("rotate an unknown token: %v, want ErrInactiveToken", err)
	}
	// The successor is active until the family is revoked.
	if err := s.CreateRefreshTokenSession(ctx, "rt2", "", req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt2", session()); err != nil {
		t.Fatalf("successor: %v", err)
	}
	if err := s.RevokeRefreshToken(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt2", session()); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Fatalf("revoked by request id: %v", err)
	}
	if err := s.DeleteRefreshTokenSession(ctx, "rt2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt2", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
	if err := s.DeleteRefreshTokenSession(ctx, "rt2"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func testPKCE(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	req := newRequest(c, "r1", "alice", future)
	req.Form.Set("code_challenge", "challenge")
	req.Form.Set("code_challenge_method", "S256")
	if err := s.CreatePKCERequestSession(ctx, "p1", req); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPKCERequestSession(ctx, "p1", session())
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, got, req)
	if got.GetRequestForm().Get("code_challenge") != "challenge" {
		t.Fatal("code_challenge lost")
	}
	if err := s.DeletePKCERequestSession(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPKCERequestSession(ctx, "p1", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

func testOpenIDConnect(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	req := newRequest(c, "r1", "alice", future)
	if err := s.CreateOpenIDConnectSession(ctx, "code1", req); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOpenIDConnectSession(ctx, "code1", &fosite.Request{Session: session()})
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, got, req)
	if err := s.DeleteOpenIDConnectSession(ctx, "code1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOpenIDConnectSession(ctx, "code1", &fosite.Request{Session: session()}); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("deleted: %v", err)
	}
}

// testRevocation: the apps a user authorized are those holding live tokens
// for them, and revoking one app's tokens for one user ends exactly those.
func testRevocation(t *testing.T, s Store) {
	ctx := context.Background()
	a := newOwnedClient(t, s, "a", "alice")
	b := newOwnedClient(t, s, "b", "bob")
	newToken(t, s, a, "a1", "alice", []string{"docs:read"}, future)
	newToken(t, s, a, "a2", "alice", []string{"docs:write"}, future)
	newToken(t, s, b, "b1", "alice", []string{"docs:read"}, past) // expired: not listed
	newToken(t, s, b, "b2", "bob", []string{"docs:read"}, future)

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
	if _, err := s.GetAccessTokenSession(ctx, "a1", session()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("revoked token: %v", err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "b2", session()); err != nil {
		t.Errorf("bob's token went too: %v", err)
	}
	if apps, _ := s.ListAuthorizedApps(ctx, "alice"); len(apps) != 0 {
		t.Errorf("after revocation: %+v", apps)
	}
}

func testTransactions(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	tx, err := s.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(tx, "rolled-back", newRequest(c, "r1", "alice", future)); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback(tx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "rolled-back", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("rolled back row visible: %v", err)
	}
	tx, err = s.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(tx, "committed", newRequest(c, "r2", "alice", future)); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(tx); err != nil {
		t.Fatal(err)
	}
	if err := s.Rollback(tx); err != nil {
		t.Fatalf("rollback after commit must be harmless: %v", err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "committed", session()); err != nil {
		t.Fatalf("committed row: %v", err)
	}
}

// testParallelWriters: concurrent issue-and-rotate cycles on one store all
// succeed, and each leaves its access token gone and its refresh token
// inactive.
func testParallelWriters(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("r%d", i)
			req := newRequest(c, id, "alice", future)
			if err := s.CreateAccessTokenSession(ctx, "at-"+id, req); err != nil {
				errs <- err
				return
			}
			if err := s.CreateRefreshTokenSession(ctx, "rt-"+id, "at-"+id, req); err != nil {
				errs <- err
				return
			}
			if err := s.RotateRefreshToken(ctx, id, "rt-"+id); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var live, active int
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		if _, err := s.GetAccessTokenSession(ctx, "at-"+id, session()); !errors.Is(err, fosite.ErrNotFound) {
			live++
		}
		if _, err := s.GetRefreshTokenSession(ctx, "rt-"+id, session()); !errors.Is(err, fosite.ErrInactiveToken) {
			active++
		}
	}
	if live != 0 || active != 0 {
		t.Fatalf("after %d rotations: %d access tokens left, %d refresh tokens not inactive", n, live, active)
	}
}

// testDeleteExpired: the sweep removes every expired row of every kind
// (stored requests, jti, agent grants) and nothing live.
func testDeleteExpired(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	old, live := newRequest(c, "old", "alice", past), newRequest(c, "live", "alice", future)
	for _, r := range []*fosite.Request{old, live} {
		for _, err := range []error{
			s.CreateAccessTokenSession(ctx, "at-"+r.ID, r),
			s.CreateRefreshTokenSession(ctx, "rt-"+r.ID, "at-"+r.ID, r),
			s.CreateAuthorizeCodeSession(ctx, "ac-"+r.ID, r),
			s.CreatePKCERequestSession(ctx, "pk-"+r.ID, r),
			s.CreateOpenIDConnectSession(ctx, "oi-"+r.ID, r),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.SetClientAssertionJWT(ctx, "jold", past); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "gone", []string{"a:write"}, past); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteExpired(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 {
		t.Fatalf("swept %d rows, want 7 (5 requests, 1 jti, 1 grant)", n)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-live", session()); err != nil {
		t.Fatalf("live token swept: %v", err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt-old", session()); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("expired token kept: %v", err)
	}
}
