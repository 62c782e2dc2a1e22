package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The conformance suite: every method of the fosite storage on every dialect.
// Each subtest gets its own database, so they run in parallel and in any order.

func newClient(t *testing.T, s *storage.Store, id string) *storage.Client {
	t.Helper()
	c := &storage.Client{
		ID: id, Name: "app " + id,
		RedirectURIs:  []string{"http://127.0.0.1/cb"},
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"},
		Scopes:        []string{"projects:read", "projects:write"},
		Audience:      []string{"https://api.example"},
	}
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatalf("create client: %v", err)
	}
	return c
}

func addSecretHash(t *testing.T, s *storage.Store, clientID string, hash []byte) {
	t.Helper()
	_, err := s.Exec(context.Background(), `INSERT INTO client_secrets (id, client_id, secret_hash, display_prefix, created_at) VALUES (?, ?, ?, ?, ?)`,
		storage.NewID(8), clientID, hash, "dpy_cs_test", time.Now().UTC())
	if err != nil {
		t.Fatalf("insert secret: %v", err)
	}
}

// newRequest is a fosite request as the handlers build one, carrying the
// secrets a real form would so that the suite can check they are dropped.
func newRequest(c fosite.Client, id, subject string, exp time.Time) *fosite.Request {
	sess := &fosite.DefaultSession{Subject: subject, Username: subject, ExpiresAt: map[fosite.TokenType]time.Time{
		fosite.AccessToken: exp, fosite.RefreshToken: exp, fosite.AuthorizeCode: exp,
	}}
	return &fosite.Request{
		ID: id, RequestedAt: time.Now().UTC().Truncate(time.Second), Client: c,
		RequestedScope:    fosite.Arguments{"projects:read", "projects:write"},
		GrantedScope:      fosite.Arguments{"projects:read"},
		RequestedAudience: fosite.Arguments{"https://api.example"},
		GrantedAudience:   fosite.Arguments{"https://api.example"},
		Form: url.Values{
			"redirect_uri": {"http://127.0.0.1/cb"}, "client_secret": {"s3cret"}, "code_verifier": {"verifier"},
			"code": {"thecode"}, "password": {"pw"}, "refresh_token": {"rt"}, "subject_token": {"st"},
		},
		Session: sess,
	}
}

func checkRequest(t *testing.T, got fosite.Requester, want *fosite.Request) {
	t.Helper()
	if got.GetID() != want.ID {
		t.Errorf("id = %q, want %q", got.GetID(), want.ID)
	}
	if got.GetClient().GetID() != want.Client.GetID() {
		t.Errorf("client = %q, want %q", got.GetClient().GetID(), want.Client.GetID())
	}
	if !got.GetRequestedAt().Equal(want.RequestedAt) {
		t.Errorf("requested_at = %v, want %v", got.GetRequestedAt(), want.RequestedAt)
	}
	if fmt.Sprint(got.GetGrantedScopes()) != fmt.Sprint(want.GrantedScope) || fmt.Sprint(got.GetRequestedScopes()) != fmt.Sprint(want.RequestedScope) {
		t.Errorf("scopes = %v/%v, want %v/%v", got.GetRequestedScopes(), got.GetGrantedScopes(), want.RequestedScope, want.GrantedScope)
	}
	if fmt.Sprint(got.GetGrantedAudience()) != fmt.Sprint(want.GrantedAudience) || fmt.Sprint(got.GetRequestedAudience()) != fmt.Sprint(want.RequestedAudience) {
		t.Errorf("audience = %v/%v", got.GetRequestedAudience(), got.GetGrantedAudience())
	}
	if got.GetSession().GetSubject() != want.Session.GetSubject() {
		t.Errorf("subject = %q, want %q", got.GetSession().GetSubject(), want.Session.GetSubject())
	}
	if !got.GetSession().GetExpiresAt(fosite.AccessToken).Equal(want.Session.GetExpiresAt(fosite.AccessToken)) {
		t.Errorf("session expiry not restored")
	}
	form := got.GetRequestForm()
	if form.Get("redirect_uri") != "http://127.0.0.1/cb" {
		t.Errorf("redirect_uri lost from form: %v", form)
	}
	for _, k := range []string{"client_secret", "code_verifier", "code", "password", "refresh_token", "subject_token"} {
		if form.Has(k) {
			t.Errorf("form kept secret field %q", k)
		}
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)

	cases := []struct {
		name string
		run  func(t *testing.T, s *storage.Store)
	}{
		{"clients", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			if err := s.CreateClient(ctx, &storage.Client{ID: "c1", Name: "dup"}); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate id: err = %v, want ErrConflict", err)
			}
			addSecretHash(t, s, "c1", []byte("hash-one"))
			addSecretHash(t, s, "c1", []byte("hash-two"))
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
			sc.Name = "renamed"
			sc.SetOwner("alice")
			if err := s.UpdateClient(ctx, sc); err != nil {
				t.Fatal(err)
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
			// Deleting a client takes its secrets and tokens with it.
			if err := s.CreateAccessTokenSession(ctx, "at-c1", newRequest(sc, "r1", "alice", future)); err != nil {
				t.Fatal(err)
			}
			if err := s.DeleteClient(ctx, "c1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetAccessTokenSession(ctx, "at-c1", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("token of deleted client: %v", err)
			}
			if err := s.DeleteClient(ctx, "c1"); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("delete twice: %v", err)
			}
		}},
		{"jwt assertion jti", func(t *testing.T, s *storage.Store) {
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
		}},
		{"authorize codes", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			req := newRequest(c, "r1", "alice", future)
			if err := s.CreateAuthorizeCodeSession(ctx, "code1", req); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateAuthorizeCodeSession(ctx, "code1", req); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate signature: %v", err)
			}
			got, err := s.GetAuthorizeCodeSession(ctx, "code1", &fosite.DefaultSession{})
			if err != nil {
				t.Fatal(err)
			}
			checkRequest(t, got, req)
			if err := s.InvalidateAuthorizeCodeSession(ctx, "code1"); err != nil {
				t.Fatal(err)
			}
			got, err = s.GetAuthorizeCodeSession(ctx, "code1", &fosite.DefaultSession{})
			if !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) || got == nil || got.GetID() != "r1" {
				t.Fatalf("used code: %v %v (fosite needs the request back to revoke its tokens)", got, err)
			}
			if _, err := s.GetAuthorizeCodeSession(ctx, "nope", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("missing code: %v", err)
			}
			if err := s.InvalidateAuthorizeCodeSession(ctx, "nope"); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("invalidate missing: %v", err)
			}
		}},
		{"access tokens", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			req := newRequest(c, "r1", "alice", future)
			for _, sig := range []string{"at1", "at2"} {
				if err := s.CreateAccessTokenSession(ctx, sig, req); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.GetAccessTokenSession(ctx, "at1", &fosite.DefaultSession{})
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
			if _, err := s.GetAccessTokenSession(ctx, "at1", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("deleted: %v", err)
			}
			if err := s.DeleteAccessTokenSession(ctx, "at1"); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("delete twice: %v", err)
			}
			if err := s.RevokeAccessToken(ctx, "r1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetAccessTokenSession(ctx, "at2", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("revoked by request id: %v", err)
			}
		}},
		{"refresh tokens and rotation", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			req := newRequest(c, "r1", "alice", future)
			if err := s.CreateAccessTokenSession(ctx, "at1", req); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateRefreshTokenSession(ctx, "rt1", "at1", req); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetRefreshTokenSession(ctx, "rt1", &fosite.DefaultSession{})
			if err != nil {
				t.Fatal(err)
			}
			checkRequest(t, got, req)
			// Rotation: the old refresh token turns inactive and is returned
			// with ErrInactiveToken (so fosite detects reuse); its access token goes.
			if err := s.RotateRefreshToken(ctx, "r1", "rt1"); err != nil {
				t.Fatal(err)
			}
			got, err = s.GetRefreshTokenSession(ctx, "rt1", &fosite.DefaultSession{})
			if !errors.Is(err, fosite.ErrInactiveToken) || got == nil || got.GetID() != "r1" {
				t.Fatalf("rotated token: %v %v", got, err)
			}
			if _, err := s.GetAccessTokenSession(ctx, "at1", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("access token after rotation: %v", err)
			}
			// The successor is active until the family is revoked.
			if err := s.CreateRefreshTokenSession(ctx, "rt2", "", req); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetRefreshTokenSession(ctx, "rt2", &fosite.DefaultSession{}); err != nil {
				t.Fatalf("successor: %v", err)
			}
			if err := s.RevokeRefreshToken(ctx, "r1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetRefreshTokenSession(ctx, "rt2", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrInactiveToken) {
				t.Fatalf("revoked by request id: %v", err)
			}
			if err := s.DeleteRefreshTokenSession(ctx, "rt2"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetRefreshTokenSession(ctx, "rt2", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("deleted: %v", err)
			}
			if err := s.DeleteRefreshTokenSession(ctx, "rt2"); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("delete twice: %v", err)
			}
		}},
		{"pkce", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			req := newRequest(c, "r1", "alice", future)
			req.Form.Set("code_challenge", "challenge")
			req.Form.Set("code_challenge_method", "S256")
			if err := s.CreatePKCERequestSession(ctx, "p1", req); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetPKCERequestSession(ctx, "p1", &fosite.DefaultSession{})
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
			if _, err := s.GetPKCERequestSession(ctx, "p1", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("deleted: %v", err)
			}
		}},
		{"openid connect requests", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			req := newRequest(c, "r1", "alice", future)
			if err := s.CreateOpenIDConnectSession(ctx, "code1", req); err != nil {
				t.Fatal(err)
			}
			got, err := s.GetOpenIDConnectSession(ctx, "code1", &fosite.Request{Session: &fosite.DefaultSession{}})
			if err != nil {
				t.Fatal(err)
			}
			checkRequest(t, got, req)
			if err := s.DeleteOpenIDConnectSession(ctx, "code1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetOpenIDConnectSession(ctx, "code1", &fosite.Request{Session: &fosite.DefaultSession{}}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("deleted: %v", err)
			}
		}},
		{"expiry sweep", func(t *testing.T, s *storage.Store) {
			c := newClient(t, s, "c1")
			past := time.Now().Add(-time.Hour)
			old, live := newRequest(c, "old", "alice", past), newRequest(c, "live", "alice", future)
			for _, r := range []*fosite.Request{old, live} {
				if err := s.CreateAccessTokenSession(ctx, "at-"+r.ID, r); err != nil {
					t.Fatal(err)
				}
				if err := s.CreateRefreshTokenSession(ctx, "rt-"+r.ID, "at-"+r.ID, r); err != nil {
					t.Fatal(err)
				}
				if err := s.CreateAuthorizeCodeSession(ctx, "ac-"+r.ID, r); err != nil {
					t.Fatal(err)
				}
				if err := s.CreatePKCERequestSession(ctx, "pk-"+r.ID, r); err != nil {
					t.Fatal(err)
				}
				if err := s.CreateOpenIDConnectSession(ctx, "oi-"+r.ID, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.SetClientAssertionJWT(ctx, "jold", past); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "gone", []string{"a:write"}, past); err != nil {
				t.Fatal(err)
			}
			n, err := s.DeleteExpired(ctx, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if n != 7 {
				t.Fatalf("swept %d rows, want 7 (5 requests, 1 jti, 1 grant)", n)
			}
			if _, err := s.GetAccessTokenSession(ctx, "at-live", &fosite.DefaultSession{}); err != nil {
				t.Fatalf("live token swept: %v", err)
			}
			if _, err := s.GetRefreshTokenSession(ctx, "rt-old", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
				t.Fatalf("expired token kept: %v", err)
			}
		}},
		{"transactions", func(t *testing.T, s *storage.Store) {
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
			if _, err := s.GetAccessTokenSession(ctx, "rolled-back", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
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
			if _, err := s.GetAccessTokenSession(ctx, "committed", &fosite.DefaultSession{}); err != nil {
				t.Fatalf("committed row: %v", err)
			}
		}},
		{"parallel writers", func(t *testing.T, s *storage.Store) {
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
			var active, inactive int
			if err := s.DB().Get(&active, `SELECT COUNT(*) FROM oauth2_access_tokens`); err != nil {
				t.Fatal(err)
			}
			if err := s.DB().Get(&inactive, `SELECT COUNT(*) FROM oauth2_refresh_tokens WHERE active = FALSE`); err != nil {
				t.Fatal(err)
			}
			if active != 0 || inactive != n {
				t.Fatalf("after %d rotations: %d access tokens left, %d inactive refresh tokens", n, active, inactive)
			}
		}},
	}
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, b.Open(t))
				})
			}
		})
	}
}

// TestMigrateConcurrently starts several "replicas" migrating one database at
// once; the advisory lock (PostgreSQL) or the single writer (SQLite) must let
// exactly one apply each migration.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		dsn := b.NewDSN(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := storage.Open(context.Background(), dsn)
				if err != nil {
					errs <- err
					return
				}
				defer s.Close()
				errs <- s.Migrate(context.Background())
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		s := storagetest.OpenDSN(t, dsn)
		v, err := s.SchemaVersion(context.Background())
		if err != nil || v < 2 {
			t.Fatalf("schema version %d, %v", v, err)
		}
	})
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"", "mysql://x", "sqlite:", "postgres://user:hunter2@127.0.0.1:1/x?connect_timeout=1"} {
		_, err := storage.Open(context.Background(), dsn)
		if err == nil {
			t.Errorf("Open(%q) succeeded", dsn)
			continue
		}
		if dsn != "" && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}
