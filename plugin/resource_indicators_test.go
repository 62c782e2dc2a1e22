package plugin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The resources of these tests: an MCP server and an API.
const (
	resMCP = "https://mcp.example.com/mcp"
	resAPI = "https://api.example.com"
)

// audienceOf introspects token and returns its aud ("-" when inactive).
func (e *env) audienceOf(as introspector, token string) []string {
	e.t.Helper()
	st, body := e.form(plugin.IntrospectionPath, as.id, as.secret, url.Values{"token": {token}})
	var out struct {
		Active bool     `json:"active"`
		Aud    []string `json:"aud"`
	}
	e.must(http.StatusOK, st, body, &out)
	if !out.Active {
		return []string{"-"}
	}
	return out.Aud
}

// tokenAnswer is a token endpoint's answer.
type tokenAnswer struct {
	Status       int
	Error        string `json:"error"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func (e *env) tokenRequest(clientID, secret string, form url.Values) tokenAnswer {
	e.t.Helper()
	st, body := e.form(plugin.TokenPath, clientID, secret, form)
	var out tokenAnswer
	_ = json.Unmarshal(body, &out)
	out.Status = st
	return out
}

// jwtAudience decodes the aud claim of an agent token (no verification:
// the middleware tests verify).
func jwtAudience(t *testing.T, token string) []string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(token, "dpy_agt_"), ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	if err := json.Unmarshal(c.Aud, &many); err != nil {
		t.Fatalf("aud %s", c.Aud)
	}
	return many
}

// resourceURL is cfg's authorization URL (PKCE S256, a state) naming
// resources.
func resourceURL(cfg oauth2.Config, verifier string, resources ...string) string {
	u, _ := url.Parse(cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
	q := u.Query()
	for _, r := range resources {
		q.Add("resource", r)
	}
	q.Set("organization", "acme")
	u.RawQuery = q.Encode()
	return u.String()
}

// TestResourceIndicators: RFC 8707 in kit mode, with two resources and no
// default. The resource becomes the token's audience (introspection's aud,
// the agent token's aud); unknown resources are invalid_target; a token
// request and a refresh can keep or narrow the audience, never widen it.
func TestResourceIndicators(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnvConfig(t, s, func(c *plugin.Config) { c.Resources = []string{resMCP, resAPI} })
		rs := e.resourceServer()
		const redirect = "http://127.0.0.1:9/cb"
		cfg := e.codeClient(redirect, "docs:read", "offline_access")

		// authorizeAs runs the authorization naming resources and returns
		// the redirect's parameters.
		authorizeAs := func(verifier string, resources ...string) url.Values {
			t.Helper()
			resp := e.authorize("alice", resourceURL(cfg, verifier, resources...))
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			return loc.Query()
		}
		// exchange runs the whole code flow and the token request, with
		// resources at each.
		exchange := func(atAuthorize, atToken []string) tokenAnswer {
			t.Helper()
			verifier := oauth2.GenerateVerifier()
			q := authorizeAs(verifier, atAuthorize...)
			if q.Get("code") == "" {
				t.Fatalf("authorize %v: %v", atAuthorize, q)
			}
			form := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
			form["resource"] = atToken
			return e.tokenRequest(cfg.ClientID, cfg.ClientSecret, form)
		}
		refresh := func(rt string, resources ...string) tokenAnswer {
			t.Helper()
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
			form["resource"] = resources
			return e.tokenRequest(cfg.ClientID, cfg.ClientSecret, form)
		}

		t.Run("authorization endpoint", func(t *testing.T) {
			for _, tc := range []struct {
				name      string
				resources []string
				error     string
				aud       []string
			}{
				{"one resource", []string{resMCP}, "", []string{resMCP}},
				{"another spelling of it", []string{"HTTPS://MCP.Example.com:443/mcp/"}, "", []string{resMCP}},
				{"two resources", []string{resMCP, resAPI}, "", []string{resMCP, resAPI}},
				{"none, and no default", nil, "", nil},
				{"unknown", []string{"https://evil.example/mcp"}, "invalid_target", nil},
				{"a known one and an unknown one", []string{resMCP, "https://evil.example/mcp"}, "invalid_target", nil},
				{"a sub-path of a known one", []string{resMCP + "/admin"}, "invalid_target", nil},
				{"fragment", []string{resMCP + "#x"}, "invalid_target", nil},
				{"relative", []string{"/mcp"}, "invalid_target", nil},
			} {
				t.Run(tc.name, func(t *testing.T) {
					verifier := oauth2.GenerateVerifier()
					q := authorizeAs(verifier, tc.resources...)
					if q.Get("error") != tc.error {
						t.Fatalf("answer %v, want error %q", q, tc.error)
					}
					if tc.error != "" {
						if q.Get("iss") == "" || q.Get("code") != "" {
							t.Errorf("error answer %v", q)
						}
						return
					}
					form := url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
					tok := e.tokenRequest(cfg.ClientID, cfg.ClientSecret, form)
					if tok.Status != http.StatusOK {
						t.Fatalf("token: %+v", tok)
					}
					if got := e.audienceOf(rs, tok.AccessToken); !slices.Equal(got, tc.aud) {
						t.Errorf("access token aud %v, want %v", got, tc.aud)
					}
					if got := e.audienceOf(rs, tok.RefreshToken); !slices.Equal(got, tc.aud) {
						t.Errorf("refresh token aud %v, want %v", got, tc.aud)
					}
				})
			}
		})

		t.Run("token endpoint", func(t *testing.T) {
			for _, tc := range []struct {
				name                 string
				atAuthorize, atToken []string
				error                string
				aud                  []string
			}{
				{"the authorized resource", []string{resMCP}, []string{resMCP}, "", []string{resMCP}},
				{"the authorized resource, spelled otherwise", []string{resMCP}, []string{resMCP + "/"}, "", []string{resMCP}},
				// Attack: a token for a resource the user never authorized.
				// Without the check in ResourceIndicatorHandler.code the
				// exchange succeeds.
				{"another resource", []string{resMCP}, []string{resAPI}, "invalid_target", nil},
				{"an unknown resource", []string{resMCP}, []string{"https://evil.example"}, "invalid_target", nil},
				{"one of two authorized", []string{resMCP, resAPI}, []string{resAPI}, "", []string{resMCP, resAPI}},
				// An authorization without resource has no audience to
				// widen: the token request's resource narrows it.
				{"a resource for an authorization without one", nil, []string{resAPI}, "", []string{resAPI}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tok := exchange(tc.atAuthorize, tc.atToken)
					if tok.Error != tc.error {
						t.Fatalf("token: %+v, want error %q", tok, tc.error)
					}
					if tc.error == "" {
						if got := e.audienceOf(rs, tok.AccessToken); !slices.Equal(got, tc.aud) {
							t.Errorf("aud %v, want %v", got, tc.aud)
						}
					}
				})
			}
		})

		t.Run("refresh keeps or narrows, never widens", func(t *testing.T) {
			both := exchange([]string{resMCP, resAPI}, nil)
			if both.Status != http.StatusOK {
				t.Fatalf("token: %+v", both)
			}
			kept := refresh(both.RefreshToken)
			if got := e.audienceOf(rs, kept.AccessToken); !slices.Equal(got, []string{resMCP, resAPI}) {
				t.Errorf("refresh without resource: aud %v", got)
			}
			narrowed := refresh(kept.RefreshToken, resMCP)
			if got := e.audienceOf(rs, narrowed.AccessToken); !slices.Equal(got, []string{resMCP}) {
				t.Errorf("refresh naming %s: aud %v", resMCP, got)
			}
			// Attack: the narrowed refresh token asks for the other
			// resource back. Without the check in
			// ResourceIndicatorHandler.refresh it gets a token for it.
			if w := refresh(narrowed.RefreshToken, resAPI); w.Error != "invalid_target" {
				t.Errorf("widening refresh: %+v, want invalid_target", w)
			}
			if w := refresh(narrowed.RefreshToken, "https://evil.example"); w.Error != "invalid_target" {
				t.Errorf("unknown resource at refresh: %+v, want invalid_target", w)
			}
			// The refused requests spent nothing: the token still refreshes.
			again := refresh(narrowed.RefreshToken)
			if got := e.audienceOf(rs, again.AccessToken); !slices.Equal(got, []string{resMCP}) {
				t.Errorf("after refused widenings: %+v aud %v", again, got)
			}
		})

		t.Run("client credentials", func(t *testing.T) {
			app := e.ccApp("alice", "docs:read")
			sec := e.createSecret("alice", app.ID)
			for _, tc := range []struct {
				resources []string
				error     string
				aud       []string
			}{
				{[]string{resAPI}, "", []string{resAPI}},
				{[]string{"https://API.example.com/"}, "", []string{resAPI}},
				{nil, "", nil},
				{[]string{"https://evil.example"}, "invalid_target", nil},
			} {
				form := url.Values{"grant_type": {"client_credentials"}, "organization": {"acme"}}
				form["resource"] = tc.resources
				tok := e.tokenRequest(app.ID, sec.Secret, form)
				if tok.Error != tc.error {
					t.Errorf("%v: %+v, want error %q", tc.resources, tok, tc.error)
					continue
				}
				if tc.error == "" {
					if got := e.audienceOf(rs, tok.AccessToken); !slices.Equal(got, tc.aud) {
						t.Errorf("%v: aud %v, want %v", tc.resources, got, tc.aud)
					}
				}
			}
		})

		t.Run("agent tokens", func(t *testing.T) {
			platID, platSecret, err := e.p.CreateAgentPlatform(context.Background(), plugin.AgentPlatform{Name: "Agents", Scopes: []string{"docs:read", "docs:write"}})
			if err != nil {
				t.Fatal(err)
			}
			mint := func(subject string, resources ...string) tokenAnswer {
				form := url.Values{
					"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {subject},
					"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
					"agent_session_id":   {"chat-1"}, "organization": {"acme"},
				}
				form["resource"] = resources
				return e.tokenRequest(platID, platSecret, form)
			}
			forMCP := exchange([]string{resMCP}, nil)
			none := exchange(nil, nil)
			for _, tc := range []struct {
				name      string
				subject   string
				resources []string
				error     string
				aud       []string
			}{
				{"the subject token's audience", forMCP.AccessToken, nil, "", []string{resMCP}},
				{"the subject token's resource, named", forMCP.AccessToken, []string{resMCP}, "", []string{resMCP}},
				// Attack: exchanging a token for one resource to reach
				// another. Without the check in
				// AgentTokenGrantHandler.audience it succeeds.
				{"another resource", forMCP.AccessToken, []string{resAPI}, "invalid_target", nil},
				{"an unknown resource", none.AccessToken, []string{"https://evil.example"}, "invalid_target", nil},
				{"a resource for a subject token without audience", none.AccessToken, []string{resAPI}, "", []string{resAPI}},
				// No resource anywhere and no default: the issuer, as ever.
				{"no resource at all", none.AccessToken, nil, "", []string{e.p.Config().Issuer}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					tok := mint(tc.subject, tc.resources...)
					if tok.Error != tc.error {
						t.Fatalf("%+v, want error %q", tok, tc.error)
					}
					if tc.error == "" {
						if got := jwtAudience(t, tok.AccessToken); !slices.Equal(got, tc.aud) {
							t.Errorf("aud %v, want %v", got, tc.aud)
						}
					}
				})
			}
		})
	})
}

// TestDefaultResource: with exactly one resource (or a DefaultResource),
// a request that names none gets it.
func TestDefaultResource(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		for _, tc := range []struct {
			name string
			mod  func(*plugin.Config)
		}{
			{"the only resource", func(c *plugin.Config) { c.Resources = []string{resMCP + "/"} }},
			{"DefaultResource", func(c *plugin.Config) {
				c.Resources, c.DefaultResource = []string{resAPI, resMCP}, "https://MCP.example.com/mcp"
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnvConfig(t, s, tc.mod)
				if res, def := e.p.Resources(); def != resMCP || !slices.Contains(res, resMCP) {
					t.Fatalf("Resources() = %v, %q", res, def)
				}
				rs := e.resourceServer()
				const redirect = "http://127.0.0.1:9/cb"
				cfg := e.codeClient(redirect, "docs:read")
				verifier := oauth2.GenerateVerifier()
				resp := e.authorize("alice", resourceURL(cfg, verifier))
				loc, _ := url.Parse(resp.Header.Get("Location"))
				tok := e.tokenRequest(cfg.ClientID, cfg.ClientSecret, url.Values{
					"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirect}, "code_verifier": {verifier},
				})
				if got := e.audienceOf(rs, tok.AccessToken); !slices.Equal(got, []string{resMCP}) {
					t.Errorf("code flow without resource: aud %v", got)
				}
				app := e.ccApp("alice", "docs:read")
				sec := e.createSecret("alice", app.ID)
				cc := e.tokenRequest(app.ID, sec.Secret, url.Values{"grant_type": {"client_credentials"}})
				if got := e.audienceOf(rs, cc.AccessToken); !slices.Equal(got, []string{resMCP}) {
					t.Errorf("client credentials without resource: aud %v", got)
				}
			})
		}
	})
}

// TestResourcesConfig: resources that cannot be canonical URIs, or a
// default that is not one of them, are a configuration error.
func TestResourcesConfig(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	for _, tc := range []struct {
		resources []string
		def       string
		ok        bool
	}{
		{[]string{resMCP, resAPI}, "", true},
		{[]string{resMCP, resAPI}, resAPI + "/", true},
		{[]string{"https://mcp.example.com/#x"}, "", false},
		{[]string{"mcp.example.com"}, "", false},
		{[]string{"urn:example:mcp"}, "", false},
		{[]string{resMCP}, resAPI, false},
		{nil, resAPI, false},
	} {
		caller := slices.Clone(tc.resources)
		_, err := plugin.New(context.Background(), plugin.Config{
			Store: s, Directory: testkit.NewDirectory(), Sessions: cookieSessions,
			SystemSecret: bytes.Repeat([]byte("k"), 32), Resources: caller, DefaultResource: tc.def,
		})
		if (err == nil) != tc.ok {
			t.Errorf("Resources %v, default %q: %v, want ok %v", tc.resources, tc.def, err, tc.ok)
		}
		if !slices.Equal(caller, tc.resources) {
			t.Errorf("New changed the caller's Resources: %v", caller)
		}
	}
}

// TestMiddlewareForResource: the resource middleware of one resource
// refuses tokens for another (opaque and agent tokens alike), takes tokens
// for no particular resource only when told to, and publishes RFC 9728
// metadata naming this IdP.
func TestMiddlewareForResource(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnvConfig(t, s, func(c *plugin.Config) { c.Resources = []string{resMCP, resAPI} })
		org := func(*http.Request) string { return "acme" }
		if _, err := e.p.MiddlewareFor("https://evil.example/mcp", org); err == nil {
			t.Error("MiddlewareFor an unknown resource: no error")
		}
		if _, err := e.p.MiddlewareFor("mcp", org); err == nil {
			t.Error("MiddlewareFor a relative URI: no error")
		}
		m, err := e.p.MiddlewareFor(resMCP+"/", org)
		if err != nil {
			t.Fatal(err)
		}
		lenient, _ := e.p.MiddlewareFor(resMCP, org)
		lenient.AllowNoAudience = true
		call := func(m *resource.Middleware, token string) (int, string) {
			req := httptest.NewRequest(http.MethodGet, "/mcp", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			w := httptest.NewRecorder()
			m.RequireScopes("docs:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })).ServeHTTP(w, req)
			return w.Code, w.Header().Get("WWW-Authenticate")
		}

		const redirect = "http://127.0.0.1:9/cb"
		cfg := e.codeClient(redirect, "docs:read")
		codeToken := func(resources ...string) string {
			verifier := oauth2.GenerateVerifier()
			resp := e.authorize("alice", resourceURL(cfg, verifier, resources...))
			loc, _ := url.Parse(resp.Header.Get("Location"))
			tok := e.tokenRequest(cfg.ClientID, cfg.ClientSecret, url.Values{
				"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirect}, "code_verifier": {verifier},
			})
			if tok.Status != http.StatusOK {
				t.Fatalf("token for %v: %+v", resources, tok)
			}
			return tok.AccessToken
		}
		platID, platSecret, err := e.p.CreateAgentPlatform(context.Background(), plugin.AgentPlatform{Name: "Agents", Scopes: []string{"docs:read"}})
		if err != nil {
			t.Fatal(err)
		}
		agentToken := func(subject string) string {
			tok := e.tokenRequest(platID, platSecret, url.Values{
				"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {subject},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"agent_session_id":   {"chat-1"}, "organization": {"acme"},
			})
			if tok.Status != http.StatusOK {
				t.Fatalf("agent token: %+v", tok)
			}
			return tok.AccessToken
		}
		forMCP, forAPI, forNone := codeToken(resMCP), codeToken(resAPI), codeToken()
		for _, tc := range []struct {
			name            string
			token           string
			strict, lenient int
		}{
			{"opaque, for this resource", forMCP, 204, 204},
			// Attack: a token the user gave a client for the API, replayed
			// at the MCP server. Without the middleware's audience check it
			// passes.
			{"opaque, for another resource", forAPI, 401, 401},
			{"opaque, for no particular resource", forNone, 401, 204},
			{"agent, for this resource", agentToken(forMCP), 204, 204},
			{"agent, for another resource", agentToken(forAPI), 401, 401},
			{"agent, for no particular resource", agentToken(forNone), 401, 204},
		} {
			if got, challenge := call(m, tc.token); got != tc.strict {
				t.Errorf("%s: %d %q, want %d", tc.name, got, challenge, tc.strict)
			}
			if got, challenge := call(lenient, tc.token); got != tc.lenient {
				t.Errorf("%s, AllowNoAudience: %d %q, want %d", tc.name, got, challenge, tc.lenient)
			}
		}

		_, challenge := call(m, forAPI)
		if want := `resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"`; !strings.Contains(challenge, want) {
			t.Errorf("challenge %q lacks %s", challenge, want)
		}
		doc := m.ProtectedResourceMetadata()
		if doc.Resource != resMCP || !slices.Equal(doc.AuthorizationServers, []string{e.p.Config().Issuer}) ||
			!slices.Contains(doc.ScopesSupported, "offline_access") || !slices.Contains(doc.ScopesSupported, "docs:write") {
			t.Errorf("metadata %+v", doc)
		}
		// Without a default resource, Middleware checks no audience.
		if got, _ := call(e.p.Middleware(org), forAPI); got != 204 {
			t.Errorf("Middleware without a default resource: %d", got)
		}
	})
}
