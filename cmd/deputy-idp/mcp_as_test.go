package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestCORSOnlyOnMachineEndpoints: browser-based clients (an MCP host in a
// page, the MCP Inspector) read the metadata and JWKS and call the token
// and revocation endpoints from other origins; the authorization endpoint,
// the pages and the cookie-authenticated APIs never answer another origin.
func TestCORSOnlyOnMachineEndpoints(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	alice := idp.loggedIn(t, "alice", demoAlicePassword)
	for _, tc := range []struct {
		method, path string
		cors         bool
	}{
		{http.MethodGet, "/.well-known/oauth-authorization-server", true},
		{http.MethodGet, "/.well-known/jwks.json", true},
		{http.MethodGet, "/.well-known/oauth-protected-resource/api", true},
		{http.MethodGet, "/.well-known/oauth-protected-resource/mcp", true},
		{http.MethodPost, "/oauth2/token", true},
		{http.MethodPost, "/oauth2/revoke", true},
		{http.MethodPost, "/oauth2/introspect", false},
		{http.MethodGet, "/oauth2/auth?client_id=x&response_type=code", false},
		{http.MethodPost, "/oauth2/auth", false},
		{http.MethodGet, "/", false},
		{http.MethodGet, "/login", false},
		{http.MethodGet, "/settings/apps", false},
		{http.MethodGet, "/api/apps", false},
		{http.MethodGet, "/agent/grants", false},
		{http.MethodGet, "/agent/approve?organization=acme&client=x&session=s&scope=projects:write", false},
	} {
		for _, method := range []string{tc.method, http.MethodOptions} {
			req, _ := http.NewRequest(method, idp.URL+tc.path, strings.NewReader("token=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", "https://inspector.example")
			if method == http.MethodOptions {
				req.Header.Set("Access-Control-Request-Method", tc.method)
			}
			resp, err := alice.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("Access-Control-Allow-Origin")
			if (got == "*") != tc.cors || got != "" && got != "*" {
				t.Errorf("%s %s: %d, Access-Control-Allow-Origin %q, want CORS %v", method, tc.path, resp.StatusCode, got, tc.cors)
			}
			if c := resp.Header.Get("Access-Control-Allow-Credentials"); c != "" {
				t.Errorf("%s %s: Access-Control-Allow-Credentials %q", method, tc.path, c)
			}
		}
	}
}

// TestProtectedResources: the demo's two resources (RFC 8707), the sample
// API and the MCP server, each with its RFC 9728 metadata, listed in the
// authorization server's metadata; a token for one is refused by the
// other.
func TestProtectedResources(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		api, mcp := idp.URL+APIResourcePath, idp.URL+MCPPath

		for _, res := range []string{api, mcp} {
			u := strings.Replace(res, idp.URL, idp.URL+"/.well-known/oauth-protected-resource", 1)
			resp, body := get(t, http.DefaultClient, u)
			var doc struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				Scopes               []string `json:"scopes_supported"`
				Bearer               []string `json:"bearer_methods_supported"`
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil || doc.Resource != res ||
				!slices.Equal(doc.AuthorizationServers, []string{idp.URL}) || !slices.Contains(doc.Scopes, "projects:write") ||
				!slices.Contains(doc.Scopes, "offline_access") || !slices.Equal(doc.Bearer, []string{"header"}) {
				t.Errorf("%s: %d %s", u, resp.StatusCode, body)
			}
		}
		_, body := get(t, http.DefaultClient, idp.URL+"/.well-known/oauth-authorization-server")
		var as struct {
			ProtectedResources []string `json:"protected_resources"`
		}
		if json.Unmarshal([]byte(body), &as) != nil || !slices.Equal(as.ProtectedResources, []string{api, mcp}) {
			t.Errorf("protected_resources in %s", body)
		}

		oc := testClient(t, idp, true)
		oc.Scopes = []string{"projects:read"}
		forAPI := userToken(t, idp, oc, "alice", demoAlicePassword, oauth2.SetAuthURLParam("resource", api))
		forMCP := userToken(t, idp, oc, "alice", demoAlicePassword, oauth2.SetAuthURLParam("resource", mcp))
		// No resource: the default, the sample API.
		byDefault := userToken(t, idp, oc, "alice", demoAlicePassword)
		// Agent tokens inherit their subject token's resource; /mcp takes
		// no agent tokens (they are bound to an organization it does not
		// name), so they are tried at the API only (mcp 0).
		agentForAPI, _ := mintAgentToken(t, idp, oc, forAPI.AccessToken, "sess-api")
		agentForMCP, _ := mintAgentToken(t, idp, oc, forMCP.AccessToken, "sess-mcp")
		tools := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		for _, tc := range []struct {
			name  string
			token string
			api   int
			mcp   int
		}{
			{"for the API", forAPI.AccessToken, http.StatusOK, http.StatusUnauthorized},
			{"for the MCP server", forMCP.AccessToken, http.StatusUnauthorized, http.StatusOK},
			{"for no named resource", byDefault.AccessToken, http.StatusOK, http.StatusUnauthorized},
			{"an agent token for the API", agentForAPI, http.StatusOK, 0},
			{"an agent token for the MCP server", agentForMCP, http.StatusUnauthorized, 0},
		} {
			if resp, body := callAPI(t, idp, http.MethodGet, tc.token); resp.StatusCode != tc.api {
				t.Errorf("%s at the API: %d %s", tc.name, resp.StatusCode, body)
			}
			if tc.mcp == 0 {
				continue
			}
			resp := postMCP(t, idp, tc.token, tools)
			if resp.StatusCode != tc.mcp {
				t.Errorf("%s at /mcp: %d %q", tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
			if tc.mcp == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `resource_metadata="`+idp.URL+`/.well-known/oauth-protected-resource/mcp"`) {
				t.Errorf("%s at /mcp: challenge %q", tc.name, resp.Header.Get("WWW-Authenticate"))
			}
		}

		// An unknown resource is invalid_target, before any page.
		c := idp.loggedIn(t, "alice", demoAlicePassword)
		resp, _ := get(t, c, oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("resource", "https://evil.example/mcp")))
		if q := callback(t, resp); q.Get("error") != "invalid_target" || q.Get("iss") != idp.URL {
			t.Errorf("unknown resource: %v", q)
		}
	})
}
