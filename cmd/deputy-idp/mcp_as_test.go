package main

import (
	"net/http"
	"strings"
	"testing"

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
