package plugin_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestRepeatedParameters: a parameter included twice is invalid_request
// at the token, introspection, revocation and authorization endpoints
// (RFC 6749 §3.1, §3.2), and nothing happens: fosite alone would act on the
// first value. After each refusal the same request without the repeat
// succeeds, so the refusal wrote nothing (a code or refresh token is still
// unspent, a token still active).
func TestRepeatedParameters(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		invalidRequest := func(what string, st int, body []byte) {
			t.Helper()
			var out struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &out); st != http.StatusBadRequest || err != nil || out.Error != "invalid_request" {
				t.Errorf("%s: %d %s, want 400 invalid_request", what, st, body)
			}
		}

		// Token endpoint, client_credentials.
		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		cc := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}}
		for _, f := range []url.Values{
			testkit.Twice(cc, "grant_type", "refresh_token"),
			testkit.Twice(cc, "scope", "docs:write"),
			testkit.Twice(cc, "organization", "globex"),
		} {
			st, body := e.form(plugin.TokenPath, app.ID, sec.Secret, f)
			invalidRequest("client_credentials "+f.Encode(), st, body)
		}
		post := url.Values{"grant_type": {"client_credentials"}, "client_id": {app.ID}, "client_secret": {sec.Secret}}
		for _, f := range []url.Values{testkit.Twice(post, "client_id", "someone-else"), testkit.Twice(post, "client_secret", "dpy_cs_other")} {
			st, body := e.form(plugin.TokenPath, "", "", f)
			invalidRequest("client_secret_post "+f.Encode(), st, body)
		}
		if st, body := e.form(plugin.TokenPath, "", "", post); st != http.StatusOK {
			t.Fatalf("control: client_secret_post: %d %s", st, body)
		}

		// Token endpoint, authorization_code then refresh_token.
		cfg := e.codeClient("http://127.0.0.1:9/cb", "docs:read", "offline_access")
		verifier := oauth2.GenerateVerifier()
		code := e.code("alice", "acme", cfg, oauth2.S256ChallengeOption(verifier))
		exchange := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {cfg.RedirectURL}, "code_verifier": {verifier}}
		for key, second := range map[string]string{"grant_type": "client_credentials", "code": "dpy_ac_x.y", "redirect_uri": "http://127.0.0.1:8765/cb", "code_verifier": oauth2.GenerateVerifier()} {
			st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, testkit.Twice(exchange, key, second))
			invalidRequest("code exchange with "+key+" twice", st, body)
		}
		st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, exchange)
		var tok struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		e.must(http.StatusOK, st, body, &tok)
		refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
		for key, second := range map[string]string{"refresh_token": "dpy_rt_x.y", "scope": "docs:read", "grant_type": "refresh_token"} {
			st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, testkit.Twice(refresh, key, second))
			invalidRequest("refresh with "+key+" twice", st, body)
		}
		if st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, refresh); st != http.StatusOK {
			t.Fatalf("control: refresh: %d %s", st, body)
		}

		// Introspection and revocation.
		at := e.mustToken(app.ID, sec.Secret, "acme", "docs:read").AccessToken
		st, body = e.form(plugin.IntrospectionPath, rs.id, rs.secret, url.Values{"token": {at, "dpy_at_x.y"}})
		invalidRequest("introspection with token twice", st, body)
		st, body = e.form(plugin.RevocationPath, app.ID, sec.Secret, url.Values{"token": {at, "dpy_at_x.y"}})
		invalidRequest("revocation with token twice", st, body)
		if in := e.introspect(rs, at); !in.Active {
			t.Error("the token was revoked by a refused revocation request")
		}

		// Authorization endpoint: refused before anything else, answered
		// to the browser (no redirect, no code).
		authURL := cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier))
		for _, extra := range []string{"client_id=other", "redirect_uri=" + url.QueryEscape("http://127.0.0.1:8765/cb"), "scope=docs:write", "state=another-state-value", "response_type=code", "code_challenge=x"} {
			resp := e.authorize("alice", authURL+"&"+extra)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("authorize with %s: %d, Location %q; want 400, no redirect", strings.SplitN(extra, "=", 2)[0]+" twice", resp.StatusCode, resp.Header.Get("Location"))
			}
		}
		if resp := e.authorize("alice", authURL); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("control: authorize: %d", resp.StatusCode)
		}
	})
}
