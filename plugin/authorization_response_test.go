package plugin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// publicClient stores a public authorization-code client (no secret,
// token_endpoint_auth_method none), as a host or dynamic registration
// would, and returns its x/oauth2 configuration.
func (e *env) publicClient(redirect string, scopes ...string) oauth2.Config {
	e.t.Helper()
	c := &storage.Client{
		ID: "public-" + storage.NewID(6), Name: "public", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		Scopes: scopes, TokenEndpointAuthMethod: "none", Public: true,
	}
	if err := e.store.CreateClient(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	return oauth2.Config{
		ClientID: c.ID, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInParams},
	}
}

// TestAuthorizationResponseIssAndState: RFC 9207 (iss in every
// authorization response, success and error) and RFC 9700 §2.1 (state may
// be left out when PKCE S256 protects the flow; a state that is sent is
// echoed), in kit mode (examples/existing-idp proves plugin mode).
func TestAuthorizationResponseIssAndState(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		const redirect = "http://127.0.0.1:9/cb"
		cfg := e.publicClient(redirect, "docs:read", "offline_access")
		verifier := oauth2.GenerateVerifier()
		s256 := oauth2.S256ChallengeOption(verifier)
		plain := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("code_challenge", verifier), oauth2.SetAuthURLParam("code_challenge_method", "plain")}
		iss := e.p.Config().Issuer
		// set replaces one parameter of an authorization URL.
		set := func(raw, k, v string) string {
			u, _ := url.Parse(raw)
			q := u.Query()
			q.Set(k, v)
			u.RawQuery = q.Encode()
			return u.String()
		}

		for _, tc := range []struct {
			name  string
			url   string
			error string // "" for a code
			state string // the state the response must carry; "-" for none at all
		}{
			{"PKCE S256 and a state", cfg.AuthCodeURL("state-0123456789", s256), "", "state-0123456789"},
			{"PKCE S256 without state", cfg.AuthCodeURL("", s256), "", "-"},
			{"PKCE S256 with an empty state", set(cfg.AuthCodeURL("", s256), "state", ""), "", "-"},
			// Without PKCE S256, state is the only CSRF protection: still
			// required, with fosite's minimum length. Without the pkceS256
			// condition in WrapProvider these pass the state check.
			{"no PKCE, no state", cfg.AuthCodeURL(""), "invalid_state", "-"},
			{"PKCE plain, no state", cfg.AuthCodeURL("", plain...), "invalid_state", "-"},
			// A state that is sent keeps fosite's rule, and is echoed.
			{"PKCE S256, short state", cfg.AuthCodeURL("abc", s256), "invalid_state", "abc"},
			// Errors after the request was parsed carry iss too.
			{"PKCE S256 without state, scope not allowed", set(cfg.AuthCodeURL("", s256), "scope", "docs:write"), "invalid_scope", "-"},
			{"PKCE S256 and a state, scope not allowed", set(cfg.AuthCodeURL("state-0123456789", s256), "scope", "docs:write"), "invalid_scope", "state-0123456789"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := e.authorize("alice", tc.url)
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil || resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), redirect) {
					t.Fatalf("%d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
				}
				q := loc.Query()
				if got := q.Get("iss"); got != iss || len(q["iss"]) != 1 {
					t.Errorf("iss = %q, want %q (%v)", got, iss, q)
				}
				if tc.error == "" && q.Get("code") == "" || q.Get("error") != tc.error {
					t.Errorf("error %q code %q, want error %q (%v)", q.Get("error"), q.Get("code"), tc.error, q)
				}
				switch state, sent := q["state"]; {
				case tc.state == "-" && sent:
					t.Errorf("state %q in the response to a request without one", state)
				case tc.state != "-" && (len(state) != 1 || state[0] != tc.state):
					t.Errorf("state %q, want %q", state, tc.state)
				}
			})
		}

		// A state-less public client gets its tokens, and can refresh.
		resp := e.authorize("alice", cfg.AuthCodeURL("", s256))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		tok, err := cfg.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if tok.RefreshToken == "" {
			t.Errorf("no refresh token for offline_access: %+v", tok)
		}
		if _, err := cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
			t.Errorf("refresh: %v", err)
		}

		// A redirect URI the client did not register: no redirect at all.
		resp = e.authorize("alice", set(cfg.AuthCodeURL("", s256), "redirect_uri", "https://evil.example/cb"))
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("foreign redirect: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// TestMetadataForMCPClients: what an MCP client reads in the RFC 8414
// metadata before it starts.
func TestMetadataForMCPClients(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		resp, err := http.Get(e.srv.URL + plugin.MetadataPath)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m struct {
			Iss       bool     `json:"authorization_response_iss_parameter_supported"`
			Scopes    []string `json:"scopes_supported"`
			TokenAuth []string `json:"token_endpoint_auth_methods_supported"`
			Revoke    []string `json:"revocation_endpoint_auth_methods_supported"`
			PKCE      []string `json:"code_challenge_methods_supported"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		if !m.Iss {
			t.Error("authorization_response_iss_parameter_supported is not true")
		}
		for _, want := range []string{"docs:read", "docs:write", "admin:read", "offline_access"} {
			if !slices.Contains(m.Scopes, want) {
				t.Errorf("scopes_supported %v lacks %s", m.Scopes, want)
			}
		}
		for name, methods := range map[string][]string{"token": m.TokenAuth, "revocation": m.Revoke} {
			if !slices.Contains(methods, "none") || !slices.Contains(methods, "client_secret_basic") {
				t.Errorf("%s_endpoint_auth_methods_supported = %v, want none and client_secret_basic", name, methods)
			}
		}
		if !slices.Equal(m.PKCE, []string{"S256"}) {
			t.Errorf("code_challenge_methods_supported = %v", m.PKCE)
		}
	})
}

// TestCORSOnMachineEndpoints: the metadata, JWKS, token and revocation
// endpoints answer any web origin without credentials, preflights
// included; introspection (for resource servers) does not.
func TestCORSOnMachineEndpoints(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		const origin = "https://inspector.example"
		for _, tc := range []struct {
			method, path string
			cors         bool
		}{
			{http.MethodGet, plugin.MetadataPath, true},
			{http.MethodGet, plugin.JWKSPath, true},
			{http.MethodPost, plugin.TokenPath, true},
			{http.MethodPost, plugin.RevocationPath, true},
			{http.MethodPost, plugin.IntrospectionPath, false},
		} {
			t.Run(tc.method+" "+tc.path, func(t *testing.T) {
				req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader("token=x&grant_type=client_credentials"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("Origin", origin)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if got := resp.Header.Get("Access-Control-Allow-Origin"); (got == "*") != tc.cors {
					t.Errorf("%d: Access-Control-Allow-Origin %q, want CORS %v", resp.StatusCode, got, tc.cors)
				}
				if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != "" {
					t.Errorf("Access-Control-Allow-Credentials %q", got)
				}

				pre, _ := http.NewRequest(http.MethodOptions, e.srv.URL+tc.path, nil)
				pre.Header.Set("Origin", origin)
				pre.Header.Set("Access-Control-Request-Method", tc.method)
				pre.Header.Set("Access-Control-Request-Headers", "authorization, content-type, mcp-protocol-version")
				resp, err = http.DefaultClient.Do(pre)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				ok := resp.StatusCode == http.StatusNoContent && resp.Header.Get("Access-Control-Allow-Origin") == "*" &&
					strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), tc.method) &&
					strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "authorization")
				if ok != tc.cors {
					t.Errorf("preflight: %d %v, want CORS %v", resp.StatusCode, resp.Header, tc.cors)
				}
			})
		}
	})
}
