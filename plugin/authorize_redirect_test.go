package plugin_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestAuthorizeRedirectURIExact: a registered redirect URI matches only
// exactly; RFC 8252's any-port loopback rule, which fosite grants every
// client, is kept for public clients that registered a loopback URI
// without a port. A refused redirect URI gets a 400 at the authorization
// endpoint, never a redirect to it.
func TestAuthorizeRedirectURIExact(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		public := func(redirect string) oauth2.Config {
			t.Helper()
			c := &storage.Client{
				ID: storage.NewID(16), Name: "native app", RedirectURIs: []string{redirect},
				GrantTypes: []string{"authorization_code"}, ResponseTypes: []string{"code"},
				Scopes: []string{"docs:read"}, Public: true, TokenEndpointAuthMethod: "none",
			}
			if err := s.CreateClient(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			return oauth2.Config{ClientID: c.ID, RedirectURL: redirect, Scopes: []string{"docs:read"},
				Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInParams}}
		}
		for _, tc := range []struct {
			name   string
			cfg    oauth2.Config
			use    string
			expect bool
		}{
			{"confidential, registered port, exact", e.codeClient("http://127.0.0.1:9/cb", "docs:read"), "http://127.0.0.1:9/cb", true},
			// The finding: fosite sent this client's code to another port.
			{"confidential, registered port, other port", e.codeClient("http://127.0.0.1:9/cb", "docs:read"), "http://127.0.0.1:8765/cb", false},
			{"confidential, no registered port, a port", e.codeClient("http://127.0.0.1/cb", "docs:read"), "http://127.0.0.1:8765/cb", false},
			{"confidential, no registered port, exact", e.codeClient("http://127.0.0.1/cb", "docs:read"), "http://127.0.0.1/cb", true},
			{"public, registered port, other port", public("http://127.0.0.1:9/cb"), "http://127.0.0.1:8765/cb", false},
			{"public, no registered port, any port", public("http://127.0.0.1/cb"), "http://127.0.0.1:8765/cb", true},
			{"public, no registered port, IPv6 any port", public("http://[::1]/cb"), "http://[::1]:51004/cb", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := tc.cfg
				cfg.RedirectURL = tc.use
				verifier := oauth2.GenerateVerifier()
				resp := e.authorize("alice", cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier))+"&organization=acme")
				loc := resp.Header.Get("Location")
				if !tc.expect {
					if resp.StatusCode != http.StatusBadRequest || loc != "" {
						t.Fatalf("redirect_uri %s: %d, Location %q; want 400 and no redirect", tc.use, resp.StatusCode, loc)
					}
					return
				}
				u, err := url.Parse(loc)
				if err != nil || resp.StatusCode != http.StatusSeeOther || u.Query().Get("code") == "" || !strings.HasPrefix(loc, tc.use+"?") {
					t.Fatalf("redirect_uri %s: %d, Location %q; want a code there", tc.use, resp.StatusCode, loc)
				}
				if _, err := cfg.Exchange(t.Context(), u.Query().Get("code"), oauth2.VerifierOption(verifier)); err != nil {
					t.Fatalf("exchange at %s: %v", tc.use, err)
				}
			})
		}
	})
}
