package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The token tables have no foreign key to clients (docs/performance.md), so
// DeleteClient itself must remove every request the client was issued, of
// every kind, and leave other clients' alone. Checked by removing the
// deletion loop from DeleteClient: the test then fails for every table.
func TestDeleteClientRemovesEveryRequest(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		s := b.Open(t)
		ctx := context.Background()
		future := time.Now().Add(time.Hour)
		gone, kept := newClient(t, s, "gone"), newClient(t, s, "kept")
		addSecretHash(t, s, "gone", []byte("hash-of-gone"))
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
		tables := []string{"oauth2_access_tokens", "oauth2_refresh_tokens", "oauth2_authorize_codes", "oauth2_pkce", "oauth2_oidc", "client_secrets"}
		for _, table := range tables {
			for id, want := range map[string]int{"gone": 0, "kept": 1} {
				if table == "client_secrets" && id == "kept" {
					continue // kept was given no secret
				}
				var n int
				if err := s.DB().Get(&n, s.DB().Rebind(`SELECT COUNT(*) FROM `+table+` WHERE client_id = ?`), id); err != nil {
					t.Fatal(err)
				}
				if n != want {
					t.Errorf("%s: %d rows of client %q after deleting %q, want %d", table, n, id, "gone", want)
				}
			}
		}
	})
}
