package plugin_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestAuthorizationCodeWithPKCE runs the host's half (Plugin.Authorize) and
// deputy's token endpoint with golang.org/x/oauth2: PKCE S256 is required,
// tokens carry deputy's prefixes and session, introspection re-checks the
// consenting user, and the user can revoke the app.
func TestAuthorizationCodeWithPKCE(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		const redirect = "http://127.0.0.1:9/cb"
		app := e.createApp(admin, map[string]any{
			"name": "web", "grantTypes": []string{"authorization_code", "refresh_token"},
			"redirectUris": []string{redirect}, "scopes": []string{"docs:read", "docs:write", "offline_access"},
		})
		sec := e.createSecret(admin, app.ID)
		cfg := oauth2.Config{
			ClientID: app.ID, ClientSecret: sec.Secret, RedirectURL: redirect,
			Scopes:   []string{"docs:read", "docs:write", "offline_access"},
			Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInHeader},
		}
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		authorize := func(authURL string) url.Values {
			t.Helper()
			req, _ := http.NewRequest(http.MethodGet, authURL+"&organization=acme", nil)
			req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
				t.Fatalf("authorize: %d %v", resp.StatusCode, resp.Header)
			}
			return loc.Query()
		}

		// Without PKCE: refused.
		if q := authorize(cfg.AuthCodeURL("state-without-pkce")); q.Get("error") != "invalid_request" {
			t.Errorf("no PKCE: %v, want invalid_request", q)
		}
		verifier := oauth2.GenerateVerifier()
		q := authorize(cfg.AuthCodeURL("state-with-pkce", oauth2.S256ChallengeOption(verifier)))
		code := q.Get("code")
		if !strings.HasPrefix(code, protocol.AuthorizeCodePrefix) {
			t.Fatalf("code %q (%v)", code, q)
		}
		tok, err := cfg.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok.AccessToken, protocol.AccessTokenPrefix) || !strings.HasPrefix(tok.RefreshToken, protocol.RefreshTokenPrefix) {
			t.Fatalf("tokens %q %q", tok.AccessToken, tok.RefreshToken)
		}
		in := e.introspect(rs, tok.AccessToken)
		if !in.Active || in.Sub != "alice" || in.Org != "acme" || in.Scope != "docs:read docs:write offline_access" {
			t.Errorf("introspection = %+v", in)
		}
		// alice loses docs:write: the consented token loses it too.
		e.dir.Set("alice", "acme", "docs:read")
		if in := e.introspect(rs, tok.AccessToken); in.Scope != "docs:read offline_access" {
			t.Errorf("after losing docs:write: %+v", in)
		}
		if in := e.introspect(rs, tok.RefreshToken); !in.Active || in.Scope != "docs:read offline_access" {
			t.Errorf("refresh token introspection: %+v", in)
		}

		// Refreshing works, and keeps the session (subject, organization).
		ts := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken})
		tok, err = ts.Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if in := e.introspect(rs, tok.AccessToken); !in.Active || in.Sub != "alice" || in.Org != "acme" {
			t.Errorf("refreshed token: %+v", in)
		}

		// The app is among alice's authorized apps until she revokes it.
		var list []plugin.AuthorizedApp
		st, body := e.call("alice", http.MethodGet, "/api/authorized-apps", nil)
		e.must(http.StatusOK, st, body, &list)
		if len(list) != 1 || list[0].ID != app.ID || list[0].OwnerUserID != "" {
			t.Fatalf("authorized apps = %+v", list)
		}
		st, body = e.call("alice", http.MethodDelete, "/api/authorized-apps/"+app.ID, nil)
		e.must(http.StatusNoContent, st, body, nil)
		if in := e.introspect(rs, tok.AccessToken); in.Active {
			t.Error("access token active after revoking the app")
		}
		st, body = e.form(plugin.TokenPath, app.ID, sec.Secret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}})
		if st != http.StatusBadRequest && st != http.StatusUnauthorized {
			t.Errorf("refresh after revocation: %d %s", st, body)
		}
	})
}
