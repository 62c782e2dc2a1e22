package plugin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// BenchmarkTokenEndpoint drives OAuth2Handler in-process on SQLite, with no
// listener: what it measures is deputy's own work per token (fosite, the
// store, the middlewares around the endpoint), so that its allocs/op stay
// comparable between runs on a shared machine where ns/op do not. make bench
// measures the same grants over HTTP.
func BenchmarkTokenEndpoint(b *testing.B) {
	ctx := context.Background()
	s := storagetest.SQLite.Open(b)
	p, _ := newPlugin(b, s, func(c *plugin.Config) { c.Agents = true })
	h := p.OAuth2Handler()

	appSecret := benchClient(b, s, &storage.Client{ID: "bench-app", Name: "bench app",
		GrantTypes: []string{plugin.GrantTypeClientCredentials}, Scopes: []string{"docs:read", "docs:write"},
		TokenEndpointAuthMethod: "client_secret_basic"}, "alice")
	platSecret := benchClient(b, s, &storage.Client{ID: "bench-platform", Name: "bench platform",
		GrantTypes: []string{plugin.GrantTypeAgentToken}, Scopes: []string{"docs:read", "docs:write"},
		TokenEndpointAuthMethod: "client_secret_basic"}, "")

	cc := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "scope": {"docs:read"}, "organization": {"acme"}}
	userToken := benchToken(b, h, "bench-app", appSecret, url.Values{"grant_type": {plugin.GrantTypeClientCredentials},
		"scope": {"docs:read docs:write"}, "organization": {"acme"}})
	if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "bench-platform", "s1", []string{"docs:write"}, time.Now().Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	mint := url.Values{"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {userToken},
		"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {"s1"},
		"organization": {"acme"}, "scope": {"docs:read docs:write"}}

	for _, bc := range []struct {
		name, client, secret string
		form                 url.Values
	}{
		{"client_credentials", "bench-app", appSecret, cc},
		{"agent_mint", "bench-platform", platSecret, mint},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := bc.form.Encode()
			benchToken(b, h, bc.client, bc.secret, bc.form)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest(http.MethodPost, plugin.TokenPath, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(bc.client, bc.secret)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("token: %d %s", w.Code, w.Body.String())
				}
			}
		})
	}
}

// benchClient stores c, owned by owner when owner is not empty, with one
// secret, and returns the secret.
func benchClient(tb testing.TB, s *storage.Store, c *storage.Client, owner string) string {
	tb.Helper()
	ctx := context.Background()
	if owner != "" {
		c.SetOwner(owner)
	}
	if err := s.CreateClient(ctx, c); err != nil {
		tb.Fatal(err)
	}
	sec, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.CreateClientSecret(ctx, c.ID, hash, prefix); err != nil {
		tb.Fatal(err)
	}
	return sec
}

// benchToken asks h for a token and returns its access_token.
func benchToken(tb testing.TB, h http.Handler, client, secret string, form url.Values) string {
	tb.Helper()
	req := httptest.NewRequest(http.MethodPost, plugin.TokenPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &tok) != nil || tok.AccessToken == "" {
		tb.Fatalf("token: %d %s", w.Code, w.Body.String())
	}
	return tok.AccessToken
}
