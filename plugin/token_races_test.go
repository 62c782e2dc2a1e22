package plugin_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestAuthorizationCodeRedeemedOnce races 20 redemptions of one code with
// PKCE off, so that nothing but the code decides: fosite reads the code
// before its transaction, so every redemption passes that read, and the
// storage's conditional invalidation picks one winner; the others get
// invalid_grant (not fosite's server_error) and, as for a code used twice,
// the winner's tokens are revoked. (With PKCE on, the PKCE session's delete
// decides first: the attack table's row on parallel redemptions.)
func TestAuthorizationCodeRedeemedOnce(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnvWith(t, s, func(p *plugin.Plugin) {
			p.FositeConfig().EnforcePKCE = false
			p.FositeConfig().EnforcePKCEForPublicClients = false
		})
		rs := e.resourceServer()
		cfg := e.codeClient("http://127.0.0.1:9/cb", "docs:read", "offline_access")
		for round := range 5 {
			code := e.code("alice", "acme", cfg)
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cfg.RedirectURL}}
			wins := testkit.RaceTokenRequests(t, http.DefaultClient, e.srv.URL+plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, form, 20, "invalid_grant")
			if len(wins) != 1 {
				t.Fatalf("round %d: %d of 20 parallel redemptions of one code succeeded, want 1", round, len(wins))
			}
			// The losers used the code again: what it was redeemed for is
			// revoked (RFC 6749 §4.1.2).
			if in := e.introspect(rs, wins[0].AccessToken); in.Active {
				t.Errorf("round %d: the winner's access token is active after the code was reused", round)
			}
		}
		// Control: PKCE really is off, and a code redeemed once works.
		tok, err := cfg.Exchange(t.Context(), e.code("alice", "acme", cfg))
		if err != nil {
			t.Fatal(err)
		}
		if in := e.introspect(rs, tok.AccessToken); !in.Active {
			t.Fatalf("control: %+v", in)
		}
	})
}
