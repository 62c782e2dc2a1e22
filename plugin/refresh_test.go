package plugin_test

import (
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestRefreshRechecksUser: the refresh grant asks the Directory, as every
// other use of a stored token does. Scopes the user lost are dropped from
// the new pair for good (regaining them later does not bring them back into
// this grant), and a disabled or deleted user's refresh token is
// invalid_grant, not a new pair.
func TestRefreshRechecksUser(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		e.dir.Set("dave", "acme", "docs:read", "docs:write")
		cfg := e.codeClient("http://127.0.0.1:9/cb", "docs:read", "docs:write", "offline_access")
		verifier := oauth2.GenerateVerifier()
		tok, err := cfg.Exchange(t.Context(), e.code("dave", "acme", cfg, oauth2.S256ChallengeOption(verifier)), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		refresh := func(rt string) (int, map[string]any) {
			t.Helper()
			st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
			var out map[string]any
			e.must(st, st, body, &out)
			return st, out
		}

		// Control: a refresh while dave holds everything keeps everything.
		st, out := refresh(tok.RefreshToken)
		if st != http.StatusOK || out["scope"] != "docs:read docs:write offline_access" {
			t.Fatalf("control refresh: %d %v", st, out)
		}

		// dave loses docs:write: the next pair is issued without it, and
		// keeps it lost when he regains it.
		e.dir.Set("dave", "acme", "docs:read")
		st, out = refresh(out["refresh_token"].(string))
		if st != http.StatusOK || out["scope"] != "docs:read offline_access" {
			t.Fatalf("refresh after losing docs:write: %d %v", st, out)
		}
		e.dir.Set("dave", "acme", "docs:read", "docs:write")
		if in := e.introspect(rs, out["access_token"].(string)); in.Scope != "docs:read offline_access" {
			t.Errorf("the narrowed token after dave regains docs:write: %+v", in)
		}
		st, out = refresh(out["refresh_token"].(string))
		if st != http.StatusOK || out["scope"] != "docs:read offline_access" {
			t.Fatalf("refresh after regaining docs:write: %d %v", st, out)
		}

		// dave is disabled: no new pair.
		e.dir.Disable("dave")
		rt := out["refresh_token"].(string)
		if st, out := refresh(rt); st != http.StatusBadRequest || out["error"] != "invalid_grant" {
			t.Errorf("refresh for a disabled user: %d %v, want 400 invalid_grant", st, out)
		}
		// dave is gone: no new pair either.
		e.dir.Remove("dave")
		if st, out := refresh(rt); st != http.StatusBadRequest || out["error"] != "invalid_grant" {
			t.Errorf("refresh for a deleted user: %d %v, want 400 invalid_grant", st, out)
		}
	})
}
