package plugin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// raceForm posts form to the token endpoint n times at once, as clientID,
// and returns the access tokens of the answers that were 200. Every other
// answer must be a 400 with the error code loser.
func (e *env) raceForm(n int, clientID, secret string, form url.Values, loser string) []string {
	e.t.Helper()
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+plugin.TokenPath, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
			<-start
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers[i].err = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			answers[i] = answer{resp.StatusCode, string(body), err}
		}()
	}
	close(start)
	wg.Wait()
	var wins []string
	for i, a := range answers {
		var out struct {
			AccessToken string `json:"access_token"`
			Error       string `json:"error"`
		}
		_ = json.Unmarshal([]byte(a.body), &out)
		switch {
		case a.err != nil:
			e.t.Fatalf("request %d: %v", i, a.err)
		case a.status == http.StatusOK:
			wins = append(wins, out.AccessToken)
		case a.status != http.StatusBadRequest || out.Error != loser:
			e.t.Errorf("request %d: %d %s, want 200 or 400 %s", i, a.status, a.body, loser)
		}
	}
	return wins
}

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
			wins := e.raceForm(20, cfg.ClientID, cfg.ClientSecret, form, "invalid_grant")
			if len(wins) != 1 {
				t.Fatalf("round %d: %d of 20 parallel redemptions of one code succeeded, want 1", round, len(wins))
			}
			// The losers used the code again: what it was redeemed for is
			// revoked (RFC 6749 §4.1.2).
			if in := e.introspect(rs, wins[0]); in.Active {
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
