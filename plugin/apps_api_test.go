package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func TestOtherUsersGetNotFound(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		base := "/api/apps/" + app.ID
		routes := []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, base, nil},
			{http.MethodPut, base, map[string]any{"name": "mine now", "scopes": []string{"docs:read"}}},
			{http.MethodDelete, base, nil},
			{http.MethodPost, base + "/secrets", nil},
			{http.MethodGet, base + "/secrets", nil},
			{http.MethodDelete, base + "/secrets/" + sec.ID, nil},
		}
		for _, r := range routes {
			if st, body := e.call("bob", r.method, r.path, r.body); st != http.StatusNotFound {
				t.Errorf("bob %s %s: %d %s, want 404", r.method, r.path, st, body)
			}
			// An unknown app looks exactly the same.
			p := strings.Replace(r.path, app.ID, "0000", 1)
			if st, _ := e.call("alice", r.method, p, r.body); st != http.StatusNotFound {
				t.Errorf("alice %s %s: %d, want 404", r.method, p, st)
			}
		}
		// Nothing bob did had an effect.
		e.mustToken(app.ID, sec.Secret, "acme")
		var got plugin.App
		st, body := e.call("alice", http.MethodGet, base, nil)
		e.must(http.StatusOK, st, body, &got)
		if got.Name != app.Name {
			t.Errorf("bob renamed the app to %q", got.Name)
		}
		// bob's listing does not show it; an admin's does, and the admin
		// may manage it.
		var list []plugin.App
		st, body = e.call("bob", http.MethodGet, "/api/apps", nil)
		e.must(http.StatusOK, st, body, &list)
		if len(list) != 0 {
			t.Errorf("bob lists %+v", list)
		}
		if st, _ := e.call("bob", http.MethodGet, "/api/apps?user_id=alice", nil); st != http.StatusForbidden {
			t.Errorf("bob listing alice's apps: %d, want 403", st)
		}
		st, body = e.call(admin, http.MethodGet, "/api/apps?user_id=alice", nil)
		e.must(http.StatusOK, st, body, &list)
		if len(list) != 1 || list[0].ID != app.ID || list[0].OwnerUserID != "alice" {
			t.Errorf("admin lists %+v", list)
		}
		if st, _ := e.call(admin, http.MethodGet, base+"/secrets", nil); st != http.StatusOK {
			t.Errorf("admin reading secrets: %d", st)
		}
		// No session, or a bearer token instead of one: 401.
		if st, _ := e.call("", http.MethodGet, "/api/apps", nil); st != http.StatusUnauthorized {
			t.Errorf("no session: %d", st)
		}
		tok := e.mustToken(app.ID, sec.Secret, "acme")
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/apps", nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("bearer token on the apps API: %d, want 401", resp.StatusCode)
		}
		// A cross-origin browser write is refused.
		req, _ = http.NewRequest(http.MethodDelete, e.srv.URL+base, nil)
		req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site DELETE: %d, want 403", resp.StatusCode)
		}
	})
}

func TestAppValidation(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		code := func(uris ...string) map[string]any {
			return map[string]any{"name": "web", "grantTypes": []string{"authorization_code", "refresh_token"}, "redirectUris": uris, "scopes": []string{"docs:read", "openid"}}
		}
		for _, tc := range []struct {
			name  string
			user  string
			body  any
			field string
		}{
			{"mixed grant types", "alice", map[string]any{"name": "x", "grantTypes": []string{"client_credentials", "authorization_code"}, "scopes": []string{"docs:read"}}, "grantTypes"},
			{"unknown grant type", "alice", map[string]any{"name": "x", "grantTypes": []string{"password"}, "scopes": []string{"docs:read"}}, "grantTypes"},
			// Only an administrator's tools (apps.Service.AdminCreate: the
			// CLI, CreateAgentPlatform) give the agent-token grant.
			{"agent-token grant", admin, map[string]any{"name": "x", "grantTypes": []string{plugin.GrantTypeAgentToken}, "scopes": []string{"docs:read"}}, "grantTypes"},
			{"agent-token grant beside code", admin, map[string]any{"name": "x", "grantTypes": []string{"authorization_code", plugin.GrantTypeAgentToken}, "redirectUris": []string{"https://a.example/cb"}, "scopes": []string{"docs:read"}}, "grantTypes"},
			{"refresh alone", admin, map[string]any{"name": "x", "grantTypes": []string{"refresh_token"}}, "grantTypes"},
			{"plain http redirect", admin, code("http://app.example.com/cb"), "redirectUris"},
			{"javascript redirect", admin, code("javascript:alert(1)"), "redirectUris"},
			{"fragment redirect", admin, code("https://app.example.com/cb#x"), "redirectUris"},
			{"relative redirect", admin, code("/cb"), "redirectUris"},
			{"credentials in redirect", admin, code("https://u:p@app.example.com/cb"), "redirectUris"},
			{"no redirect for code", admin, code(), "redirectUris"},
			{"redirect on client_credentials", "alice", map[string]any{"name": "x", "scopes": []string{"docs:read"}, "redirectUris": []string{"https://a.example/cb"}}, "redirectUris"},
			{"unknown scope", "alice", map[string]any{"name": "x", "scopes": []string{"docs:read", "billing:write"}}, "scopes"},
			{"malformed scope", "alice", map[string]any{"name": "x", "scopes": []string{`docs"read`}}, "scopes"},
			{"no scope", "alice", map[string]any{"name": "x"}, "scopes"},
			{"openid on client_credentials", "alice", map[string]any{"name": "x", "scopes": []string{"openid"}}, "scopes"},
			{"name too long", "alice", map[string]any{"name": strings.Repeat("n", apps.MaxNameLength+1), "scopes": []string{"docs:read"}}, "name"},
			{"name missing", "alice", map[string]any{"scopes": []string{"docs:read"}}, "name"},
			{"name blank", "alice", map[string]any{"name": "   ", "scopes": []string{"docs:read"}}, "name"},
			{"name control char", "alice", map[string]any{"name": "a\x00b", "scopes": []string{"docs:read"}}, "name"},
			{"name not a string", "alice", `{"name": 5, "scopes": ["docs:read"]}`, "name"},
			{"scopes not strings", "alice", `{"name": "x", "scopes": [1]}`, "scopes"},
			{"unknown field", "alice", `{"name": "x", "scopes": ["docs:read"], "owner_user_id": "bob"}`, "owner_user_id"},
			{"bad icon", "alice", map[string]any{"name": "x", "scopes": []string{"docs:read"}, "iconUrl": "javascript:1"}, "iconUrl"},
			{"bad auth method", "alice", map[string]any{"name": "x", "scopes": []string{"docs:read"}, "tokenEndpointAuthMethod": "none"}, "tokenEndpointAuthMethod"},
			{"bad JSON", "alice", `{"name": `, "body"},
			{"two objects", "alice", `{"name": "x", "scopes": ["docs:read"]} {}`, "body"},
			{"array body", "alice", `[]`, "body"},
			{"huge body", "alice", `{"name": "` + strings.Repeat("a", 70<<10) + `"}`, "body"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				st, body := e.call(tc.user, http.MethodPost, "/api/apps", tc.body)
				var apiErr plugin.APIError
				if err := json.Unmarshal(body, &apiErr); err != nil {
					t.Fatalf("%d %s: %v", st, body, err)
				}
				if st != http.StatusBadRequest || apiErr.Field != tc.field || !strings.Contains(apiErr.Message, tc.field) {
					t.Errorf("%d %+v, want 400 naming %q", st, apiErr, tc.field)
				}
			})
		}
		// What is valid passes: an admin's authorization_code app with a
		// loopback and a native redirect, and no owner.
		app := e.createApp(admin, code("https://app.example.com/cb", "http://127.0.0.1:8080/cb", "com.example.app:/cb"))
		if app.OwnerUserID != "" || !slices.Equal(app.GrantTypes, []string{"authorization_code", "refresh_token"}) {
			t.Errorf("authorization_code app = %+v", app)
		}
		// A non-admin may not create one: it would have no owner to manage it.
		if st, _ := e.call("alice", http.MethodPost, "/api/apps", code("https://app.example.com/cb")); st != http.StatusForbidden {
			t.Errorf("non-admin authorization_code app: %d, want 403", st)
		}
		// An app cannot switch between the two kinds.
		cc := e.ccApp("alice", "docs:read")
		// Nothing about a secret is the caller's to choose.
		st, body := e.call("alice", http.MethodPost, "/api/apps/"+cc.ID+"/secrets", `{"secret": "dpy_cs_chosen"}`)
		if st != http.StatusBadRequest || !strings.Contains(string(body), `"field":"secret"`) {
			t.Errorf("chosen secret: %d %s", st, body)
		}
		if st, body := e.call("alice", http.MethodPost, "/api/apps/"+cc.ID+"/secrets", `{}`); st != http.StatusCreated {
			t.Errorf("empty object: %d %s", st, body)
		}
		st, body = e.call("alice", http.MethodPut, "/api/apps/"+cc.ID, code("https://app.example.com/cb"))
		if st != http.StatusBadRequest || !strings.Contains(string(body), "grantTypes") {
			t.Errorf("switching kinds: %d %s", st, body)
		}
	})
}

func TestAuthorizedApps(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		app := e.ccApp("alice", "docs:read", "docs:write")
		sec := e.createSecret("alice", app.ID)
		tok := e.mustToken(app.ID, sec.Secret, "acme", "docs:read")

		var list []plugin.AuthorizedApp
		st, body := e.call("alice", http.MethodGet, "/api/authorized-apps", nil)
		e.must(http.StatusOK, st, body, &list)
		if len(list) != 1 || list[0].ID != app.ID || !slices.Equal(list[0].Scopes, []string{"docs:read"}) {
			t.Errorf("authorized apps = %+v", list)
		}
		st, body = e.call("bob", http.MethodGet, "/api/authorized-apps", nil)
		e.must(http.StatusOK, st, body, &list)
		if len(list) != 0 {
			t.Errorf("bob's authorized apps = %+v", list)
		}
		// bob cannot revoke alice's tokens; alice can.
		if st, _ := e.call("bob", http.MethodDelete, "/api/authorized-apps/"+app.ID, nil); st != http.StatusNotFound {
			t.Errorf("bob revoking: %d", st)
		}
		if in := e.introspect(rs, tok.AccessToken); !in.Active {
			t.Fatal("bob's revocation had an effect")
		}
		st, body = e.call("alice", http.MethodDelete, "/api/authorized-apps/"+app.ID, nil)
		e.must(http.StatusNoContent, st, body, nil)
		if in := e.introspect(rs, tok.AccessToken); in.Active {
			t.Errorf("revoked authorization still active: %+v", in)
		}
		if st, _ := e.call("alice", http.MethodDelete, "/api/authorized-apps/"+app.ID, nil); st != http.StatusNotFound {
			t.Errorf("second revoke: %d, want 404", st)
		}
	})
}

func TestUnownedClientGetsNoClientCredentialsToken(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		// Only a host writing to storage directly can make this app; the
		// API refuses it.
		c := &storage.Client{ID: "unowned", Name: "unowned", GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs:read"}}
		if err := s.CreateClient(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		secret, hash, prefix, err := clientsecret.NewClientSecret()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateClientSecret(context.Background(), c.ID, hash, prefix); err != nil {
			t.Fatal(err)
		}
		st, body := e.form(plugin.TokenPath, c.ID, secret, url.Values{"grant_type": {"client_credentials"}})
		if st != http.StatusBadRequest || !strings.Contains(string(body), "unauthorized_client") {
			t.Errorf("unowned client: %d %s, want unauthorized_client", st, body)
		}
	})
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		resp, err := http.Get(e.srv.URL + plugin.MetadataPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		iss := plugin.DefaultIssuer
		for k, want := range map[string]string{
			"issuer":                 iss,
			"token_endpoint":         iss + "/oauth2/token",
			"introspection_endpoint": iss + "/oauth2/introspect",
			"revocation_endpoint":    iss + "/oauth2/revoke",
			"jwks_uri":               iss + "/.well-known/jwks.json",
		} {
			if m[k] != want {
				t.Errorf("%s = %v, want %s", k, m[k], want)
			}
		}
		var grants []string
		for _, g := range m["grant_types_supported"].([]any) {
			grants = append(grants, g.(string))
		}
		for _, g := range []string{"client_credentials", "authorization_code", "refresh_token", plugin.GrantTypeAgentToken} {
			if !slices.Contains(grants, g) {
				t.Errorf("grant_types_supported %v lacks %s", grants, g)
			}
		}
	})
}

// Token text is attacker input: no string may make an endpoint fail with a
// 5xx or the verifier with anything but ErrInvalidToken.
func TestGarbageTokens(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		real := e.mustToken(app.ID, sec.Secret, "acme").AccessToken
		key, sig, _ := strings.Cut(strings.TrimPrefix(real, protocol.AccessTokenPrefix), ".")
		for _, tok := range []string{
			"", "dpy_at_", "dpy_at_.", "dpy_at_a.b", "dpy_at_..", "dpy_rt_" + key + "." + sig, "ory_at_" + key + "." + sig,
			key + "." + sig, // the right token without its prefix
			"dpy_at_" + strings.ToUpper(key) + "." + sig, // a forged key with a real signature
			"dpy_at_" + key + "." + sig + ".x", "dpy_at_\x00\xff." + sig, "dpy_at_" + strings.Repeat("A", 20000) + "." + sig,
			"dpy_agt_eyJhbGciOiJub25lIn0.e30.", "Bearer " + real, "dpy_at_ü.ö",
		} {
			if _, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), tok, "acme"); !errors.Is(err, resource.ErrInvalidToken) {
				t.Errorf("verify %.40q: %v, want ErrInvalidToken", tok, err)
			}
			if in := e.introspect(rs, tok); in.Active {
				t.Errorf("introspect %.40q: active", tok)
			}
			if st, body := e.form(plugin.RevocationPath, app.ID, sec.Secret, url.Values{"token": {tok}}); st != http.StatusOK && st != http.StatusBadRequest {
				t.Errorf("revoke %.40q: %d %s", tok, st, body)
			}
		}
		if in := e.introspect(rs, real); !in.Active {
			t.Error("garbage revocations revoked the real token")
		}
		// Garbage at the token endpoint: OAuth errors, never a 5xx.
		for _, v := range []url.Values{
			{},
			{"grant_type": {"client_credentials"}, "organization": {"a b"}},
			{"grant_type": {"client_credentials"}, "organization": {"acme", "globex"}},
			{"grant_type": {"client_credentials"}, "organization": {strings.Repeat("o", 200)}},
			{"grant_type": {"client_credentials client_credentials"}},
			{"grant_type": {"authorization_code"}, "code": {"dpy_ac_x.y"}, "redirect_uri": {"https://x"}},
			{"grant_type": {"refresh_token"}, "refresh_token": {"dpy_rt_x.y"}},
		} {
			if st, body := e.form(plugin.TokenPath, app.ID, sec.Secret, v); st < 400 || st >= 500 {
				t.Errorf("token %v: %d %s", v, st, body)
			}
		}
		if st, body := e.form(plugin.TokenPath, app.ID, sec.Secret, url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Repeat("docs:read ", 1000)}}); st != http.StatusOK {
			t.Errorf("repeated scope: %d %s", st, body)
		}
		if st, _ := e.form(plugin.TokenPath, app.ID, sec.Secret, url.Values{"grant_type": {"client_credentials"}, "x": {strings.Repeat("a", 70<<10)}}); st != http.StatusBadRequest {
			t.Errorf("huge token request: %d", st)
		}
	})
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	good := func() plugin.Config {
		return plugin.Config{Store: s, Directory: testkit.NewDirectory(), Sessions: cookieSessions, SystemSecret: bytes.Repeat([]byte("k"), 32)}
	}
	for _, tc := range []struct {
		name string
		mod  func(c *plugin.Config)
		want string
	}{
		{"short secret", func(c *plugin.Config) { c.SystemSecret = []byte("short") }, "SystemSecret"},
		{"no store", func(c *plugin.Config) { c.Store = nil }, "Store"},
		{"no directory", func(c *plugin.Config) { c.Directory = nil }, "Directory"},
		{"no sessions", func(c *plugin.Config) { c.Sessions = nil }, "Sessions"},
		{"bad issuer", func(c *plugin.Config) { c.Issuer = "idp.example.com" }, "Issuer"},
		{"negative lifespan", func(c *plugin.Config) { c.AccessTokenLifespan = -1 }, "AccessTokenLifespan"},
		{"agent lifespan", func(c *plugin.Config) { c.AgentTokenLifespan = 2 * plugin.MaxAgentTokenLifespan }, "AgentTokenLifespan"},
		{"algorithm", func(c *plugin.Config) { c.AgentTokenAlgorithm = "none" }, "AgentTokenAlgorithm"},
		{"scope name", func(c *plugin.Config) { c.Scopes = []plugin.ScopeEntry{{Name: "a b"}} }, "Scopes"},
	} {
		c := good()
		tc.mod(&c)
		if _, err := plugin.New(context.Background(), c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
	p, err := plugin.New(context.Background(), good())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := p.Config()
	if c.Issuer != plugin.DefaultIssuer || c.AccessTokenLifespan != plugin.DefaultAccessTokenLifespan || c.Logger == nil || c.IsAdmin == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
	fc := p.FositeConfig()
	if !fc.EnforcePKCE || fc.EnablePKCEPlainChallengeMethod || fc.TokenURL != plugin.DefaultIssuer+plugin.TokenPath {
		t.Errorf("fosite config: PKCE %v plain %v token URL %q", fc.EnforcePKCE, fc.EnablePKCEPlainChallengeMethod, fc.TokenURL)
	}
	if bytes.Equal(fc.GlobalSecret, good().SystemSecret) {
		t.Error("the HMAC key is the system secret itself, not derived from it")
	}
	// Without Config.Agents: no agent grant composed or advertised, no JWKS.
	md := p.Metadata()
	if scope.Contains(md.GrantTypesSupported, plugin.GrantTypeAgentToken) || md.JWKSURI != "" {
		t.Errorf("metadata advertises agent tokens that were not composed: %+v", md)
	}
	if len(p.Factories()) != 5 {
		t.Errorf("plugin-mode factories: %d, want cc, introspection, refresh approvals, resource indicators, binding", len(p.Factories()))
	}
}

// TestInternalErrorsAreGeneric: the database failing is logged with its
// detail and answered with a generic message, never the error text. A
// closed database is unavailability: 503 (TestDatabaseDownAnswers503).
func TestInternalErrorsAreGeneric(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		s := b.Open(t)
		var logs testkit.Buffer
		p, err := plugin.New(context.Background(), plugin.Config{
			Store: s, Directory: testkit.NewDirectory(), Sessions: cookieSessions,
			SystemSecret: bytes.Repeat([]byte("k"), 32),
			Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		r := mux.NewRouter()
		mountKit(r, p)
		s.Close()
		for _, path := range []string{"/api/apps", "/api/apps/x", "/api/authorized-apps"} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			if rec.Code != http.StatusServiceUnavailable || strings.Contains(rec.Body.String(), "closed") || !strings.Contains(rec.Body.String(), "temporarily unavailable") {
				t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
			}
		}
		if !strings.Contains(logs.String(), "closed") {
			t.Errorf("log lacks the detail: %s", logs.String())
		}
	})
}
