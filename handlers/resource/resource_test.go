package resource

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

const (
	mcpResource = "https://mcp.example.com/mcp"
	apiResource = "https://api.example.com"
	mcpMetadata = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
)

// audienceStub verifies "dpy_at_<name>" tokens whose audience the test
// sets by name.
type audienceStub map[string][]string

func (a audienceStub) VerifyAccessToken(_ context.Context, token, org string) (*Identity, error) {
	aud, ok := a[strings.TrimPrefix(token, "dpy_at_")]
	if !ok {
		return nil, ErrInvalidToken
	}
	return &Identity{Subject: testUser, Organization: org, ClientID: "app", Scopes: []string{readScope}, Kind: KindAccess, Audience: aud}, nil
}

func serve(m *Middleware, scopes []string, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/mcp", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	m.RequireScopes(scopes...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})).ServeHTTP(rec, req)
	return rec
}

// TestAudience: RFC 8707 at the resource. A middleware with a Resource
// accepts only tokens for it; tokens for no particular resource only when
// it allows them; without a Resource it checks nothing.
func TestAudience(t *testing.T) {
	t.Parallel()
	tokens := audienceStub{
		"mcp":        {mcpResource},
		"mcp-spelt":  {"HTTPS://MCP.example.com:443/mcp/"},
		"api":        {apiResource},
		"both":       {apiResource, mcpResource},
		"none":       nil,
		"sub-path":   {mcpResource + "/admin"},
		"not-a-uri":  {"projects"},
		"prefix-of":  {"https://mcp.example.com"},
		"other-host": {"https://mcp.example.com.evil.example/mcp"},
	}
	for _, tc := range []struct {
		name     string
		m        Middleware
		accepted []string
	}{
		// Attack rows: "api", "sub-path", "prefix-of", "other-host" are
		// tokens for another resource. Without forThisResource they pass.
		{"a resource", Middleware{Resource: mcpResource}, []string{"mcp", "mcp-spelt", "both"}},
		{"a resource, spelt otherwise", Middleware{Resource: "https://MCP.example.com/mcp/"}, []string{"mcp", "mcp-spelt", "both"}},
		{"a resource, tokens without audience allowed", Middleware{Resource: mcpResource, AllowNoAudience: true}, []string{"mcp", "mcp-spelt", "both", "none"}},
		{"no resource: nothing checked", Middleware{}, []string{"mcp", "mcp-spelt", "api", "both", "none", "sub-path", "not-a-uri", "prefix-of", "other-host"}},
		{"a resource that is no URI: everything refused", Middleware{Resource: "mcp server"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := tc.m
			m.Opaque = tokens
			for name := range tokens {
				rec := serve(&m, []string{readScope}, "dpy_at_"+name)
				want := slices.Contains(tc.accepted, name)
				if (rec.Code == http.StatusNoContent) != want {
					t.Errorf("token for %v: %d %q, want accepted %v", tokens[name], rec.Code, rec.Header().Get("WWW-Authenticate"), want)
				}
				if !want && (rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), `Bearer error="invalid_token"`)) {
					t.Errorf("token for %v refused with %d %q, want 401 invalid_token", tokens[name], rec.Code, rec.Header().Get("WWW-Authenticate"))
				}
			}
		})
	}
}

// TestChallenges: every 401 and 403 of a middleware with a Resource names
// the scopes to ask for and where the metadata is (RFC 6750 §3, RFC 9728
// §5.1); a 403 asks for what the token holds and what it lacks together.
func TestChallenges(t *testing.T) {
	t.Parallel()
	m := &Middleware{
		Resource:        mcpResource,
		ChallengeScopes: []string{"offline_access"},
		Opaque:          audienceStub{"mcp": {mcpResource}, "api": {apiResource}},
	}
	for _, tc := range []struct {
		name   string
		scopes []string
		token  string
		status int
		want   string
	}{
		{"no token", []string{readScope}, "", 401,
			`Bearer scope="offline_access projects:read", resource_metadata="` + mcpMetadata + `"`},
		{"an unknown token", []string{readScope}, "dpy_at_nope", 401,
			`Bearer error="invalid_token", scope="offline_access projects:read", resource_metadata="` + mcpMetadata + `"`},
		{"a token for another resource", []string{readScope}, "dpy_at_api", 401,
			`Bearer error="invalid_token", error_description="The token is not for this resource.", scope="offline_access projects:read", resource_metadata="` + mcpMetadata + `"`},
		{"a route without scopes", nil, "", 401,
			`Bearer scope="offline_access", resource_metadata="` + mcpMetadata + `"`},
		{"a missing scope", []string{readScope, writeScope}, "dpy_at_mcp", 403,
			`Bearer error="insufficient_scope", scope="offline_access projects:read projects:write", resource_metadata="` + mcpMetadata + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := serve(m, tc.scopes, tc.token)
			if rec.Code != tc.status || rec.Header().Get("WWW-Authenticate") != tc.want {
				t.Errorf("%d %q\nwant %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"), tc.status, tc.want)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", rec.Header().Get("Cache-Control"))
			}
		})
	}
	t.Run("two Authorization headers", func(t *testing.T) {
		req := httptest.NewRequest(http.MethodGet, "/mcp", nil)
		req.Header.Add("Authorization", "Bearer dpy_at_mcp")
		req.Header.Add("Authorization", "Bearer dpy_at_mcp")
		rec := httptest.NewRecorder()
		m.RequireScopes(readScope)(http.NotFoundHandler()).ServeHTTP(rec, req)
		if want := `Bearer error="invalid_request", resource_metadata="` + mcpMetadata + `"`; rec.Code != 400 || rec.Header().Get("WWW-Authenticate") != want {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
}

// TestInsufficientScopeFromAHandler: a handler that checks a scope itself
// (an MCP tool) answers with the middleware's 403.
func TestInsufficientScopeFromAHandler(t *testing.T) {
	t.Parallel()
	m := &Middleware{Resource: mcpResource, Opaque: audienceStub{"mcp": {mcpResource}}}
	h := m.RequireScopes(readScope)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		m.InsufficientScope(w, id, writeScope)
	}))
	req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	req.Header.Set("Authorization", "Bearer dpy_at_mcp")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body insufficientScope
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	if rec.Code != 403 || rec.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="projects:read projects:write", resource_metadata="`+mcpMetadata+`"` ||
		!slices.Equal(body.MissingScopes, []string{writeScope}) {
		t.Errorf("%d %q %s", rec.Code, rec.Header().Get("WWW-Authenticate"), rec.Body)
	}
}

// TestProtectedResourceMetadata: RFC 9728. The metadata URL is derived from
// the resource as §3.1 says, and the document names the resource, the
// authorization servers and the scopes, to any origin.
func TestProtectedResourceMetadata(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ resource, url, path string }{
		{mcpResource, mcpMetadata, "/.well-known/oauth-protected-resource/mcp"},
		{"https://MCP.example.com/mcp/", mcpMetadata, "/.well-known/oauth-protected-resource/mcp"},
		{apiResource, apiResource + "/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource"},
		{apiResource + "/", apiResource + "/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource"},
		{"http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080/.well-known/oauth-protected-resource/api/v1", "/.well-known/oauth-protected-resource/api/v1"},
		{"https://api.example.com/v1?tenant=a", "https://api.example.com/.well-known/oauth-protected-resource/v1?tenant=a", "/.well-known/oauth-protected-resource/v1"},
		{"", "", ""},
		{"not a uri", "", ""},
	} {
		m := &Middleware{Resource: tc.resource}
		if got := m.MetadataURL(); got != tc.url {
			t.Errorf("MetadataURL for %q = %q, want %q", tc.resource, got, tc.url)
		}
		if got := m.MetadataPath(); got != tc.path {
			t.Errorf("MetadataPath for %q = %q, want %q", tc.resource, got, tc.path)
		}
	}

	m := &Middleware{Resource: "https://MCP.example.com/mcp/", Metadata: ProtectedResourceMetadata{
		AuthorizationServers: []string{"https://idp.example.com"},
		ScopesSupported:      []string{readScope, writeScope, "offline_access"},
		ResourceName:         "Projects MCP",
	}}
	h := m.MetadataHandler()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req := httptest.NewRequest(method, m.MetadataPath(), nil)
		req.Header.Set("Origin", "https://inspector.example")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("%s: %d %v", method, rec.Code, rec.Header())
		}
		if method == http.MethodHead {
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"resource":                 mcpResource,
			"authorization_servers":    []any{"https://idp.example.com"},
			"scopes_supported":         []any{readScope, writeScope, "offline_access"},
			"bearer_methods_supported": []any{"header"},
			"resource_name":            "Projects MCP",
		}
		if got, _ := json.Marshal(doc); string(got) != mustJSON(want) {
			t.Errorf("metadata %s\nwant %s", got, mustJSON(want))
		}
	}
	pre := httptest.NewRequest(http.MethodOptions, m.MetadataPath(), nil)
	pre.Header.Set("Origin", "https://inspector.example")
	pre.Header.Set("Access-Control-Request-Method", "GET")
	pre.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, pre)
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Headers") != "mcp-protocol-version" {
		t.Errorf("preflight: %d %v", rec.Code, rec.Header())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, m.MetadataPath(), nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	(&Middleware{}).MetadataHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-protected-resource", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("without a resource: %d", rec.Code)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
