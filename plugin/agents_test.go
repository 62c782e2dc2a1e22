package plugin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestAgents walks the agent loop through what Config.Agents composes:
// a read-only mint, a 403 pointing at the approval page, an approval through
// the mounted consent API, a re-mint that writes; plus the JWKS and metadata
// it adds.
func TestAgents(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		p, _ := newPlugin(t, s, func(c *plugin.Config) { c.Agents = true })
		r := mux.NewRouter()
		mw := p.Middleware(func(r *http.Request) string { return mux.Vars(r)["org"] })
		ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
		r.Handle("/orgs/{org}/docs", mw.RequireScopes("docs:read")(ok)).Methods(http.MethodGet)
		r.Handle("/orgs/{org}/docs", mw.RequireScopes("docs:write")(ok)).Methods(http.MethodPost)
		mountKit(r, p)

		serve := func(req *http.Request) *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			return w
		}
		if !scope.Contains(p.Metadata().GrantTypesSupported, plugin.GrantTypeAgentToken) {
			t.Errorf("metadata grant types %v lack the agent-token grant", p.Metadata().GrantTypesSupported)
		}
		if w := serve(httptest.NewRequest(http.MethodGet, plugin.JWKSPath, nil)); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"kid"`) {
			t.Fatalf("JWKS: %d %s", w.Code, w.Body.String())
		}

		mint := func() *agenttoken.AgentToken {
			t.Helper()
			tok, err := p.Minter().Mint(ctx, agenttoken.MintRequest{
				UserID: "alice", Organization: "acme", AgentSessionID: "s1", ClientID: "platform",
			})
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		call := func(method, token string) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, "/orgs/acme/docs", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			return serve(req)
		}

		tok := mint()
		if got := scope.Join(tok.Scopes); got != "docs:read" {
			t.Fatalf("first mint scopes %q, want read-only docs:read", got)
		}
		if w := call(http.MethodGet, tok.Token); w.Code != http.StatusNoContent {
			t.Fatalf("read: %d %s", w.Code, w.Body.String())
		}
		w := call(http.MethodPost, tok.Token)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Fatalf("write before approval: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
		}
		var refusal struct {
			ApprovalURL string `json:"approval_url"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &refusal); err != nil {
			t.Fatal(err)
		}
		want := p.Config().Issuer + plugin.ApprovePath + "?client=platform&organization=acme&scope=docs%3Awrite&session=s1"
		if refusal.ApprovalURL != want {
			t.Fatalf("approval_url %q, want %q", refusal.ApprovalURL, want)
		}

		// alice approves, for this platform, through the consent API
		// Handler serves.
		if err := s.CreateClient(ctx, &storage.Client{ID: "platform", Name: "Platform", GrantTypes: []string{plugin.GrantTypeAgentToken}}); err != nil {
			t.Fatal(err)
		}
		body := `{"organization":"acme","clientId":"platform","sessionId":"s1","scopes":["docs:write"],"decision":"approve"}`
		req := httptest.NewRequest(http.MethodPost, plugin.ApprovePath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
		if w := serve(req); w.Code != http.StatusOK {
			t.Fatalf("approve: %d %s", w.Code, w.Body.String())
		}

		tok = mint()
		if !scope.Contains(tok.Scopes, "docs:write") {
			t.Fatalf("re-mint scopes %v lack the approved docs:write", tok.Scopes)
		}
		if w := call(http.MethodPost, tok.Token); w.Code != http.StatusNoContent {
			t.Fatalf("write after approval: %d %s", w.Code, w.Body.String())
		}
	})
}
