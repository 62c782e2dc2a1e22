package flows

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// BenchmarkMiddlewareOpaqueToken is the whole middleware path of a request
// carrying a dpy_at_ access token, on each dialect: the HMAC check, one
// indexed lookup by signature, the expiry check and the user re-check.
// `make bench` reports it, no test asserts it.
func BenchmarkMiddlewareOpaqueToken(b *testing.B) {
	for _, backend := range storagetest.Backends() {
		b.Run(backend.Name, func(b *testing.B) {
			s := backend.Open(b)
			ctx := context.Background()
			strategy := NewHMACStrategy(&fosite.Config{GlobalSecret: []byte(strings.Repeat("s", 32)), AccessTokenLifespan: time.Hour})
			tok := storeOpaqueToken(b, s, strategy, testUser, testOrg, []string{readScope})
			mw := &resource.Middleware{
				Opaque: &OpaqueVerifier{Strategy: strategy, Storage: s, Directory: newDirectory()},
				Org:    func(*http.Request) string { return testOrg },
			}
			h := mw.RequireScopes(readScope)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code, rec.Header().Get("WWW-Authenticate"))
				}
			}
		})
	}
}

// storeOpaqueToken stores an access token for user in org the way the
// plugin's token endpoint does (its HMAC strategy, a deputy Session bound to
// org, the request's client), and returns the token.
func storeOpaqueToken(tb testing.TB, s *storage.Store, strategy *HMACStrategy, user, org string, scopes []string) string {
	tb.Helper()
	ctx := context.Background()
	c := &storage.Client{ID: "bench-app", Name: "bench app", GrantTypes: []string{"client_credentials"},
		Scopes: scopes, TokenEndpointAuthMethod: "client_secret_basic"}
	c.SetOwner(user)
	if err := s.CreateClient(ctx, c); err != nil {
		tb.Fatal(err)
	}
	stored, err := s.GetClient(ctx, c.ID)
	if err != nil {
		tb.Fatal(err)
	}
	req := fosite.NewRequest()
	req.ID = storage.NewID(16)
	req.Client = stored
	req.RequestedAt = time.Now().UTC()
	req.RequestedScope = scopes
	req.GrantedScope = scopes
	sess := NewSession(user, org)
	sess.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	req.Session = sess
	tok, sig, err := strategy.GenerateAccessToken(ctx, req)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(ctx, sig, req); err != nil {
		tb.Fatal(err)
	}
	return tok
}
