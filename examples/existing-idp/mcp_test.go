package main

import (
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// This file proves, in plugin mode, what MCP clients need of the IdP's
// authorization endpoint and of deputy's endpoints the IdP mounts.

// authorizeAs runs an authorization request as the browser: the consent
// page when the request is valid, then its Allow with every requested scope
// ticked. It returns the redirect's parameters.
func (b *browser) authorizeAs(authURL string) url.Values {
	b.e.t.Helper()
	resp, err := b.c.Get(authURL)
	if err != nil {
		b.e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK { // the consent page
		u, _ := url.Parse(authURL)
		resp, err = b.c.PostForm(authURL, url.Values{"grant_scope": {u.Query().Get("scope")}})
		if err != nil {
			b.e.t.Fatal(err)
		}
		resp.Body.Close()
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		b.e.t.Fatalf("authorize: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

// TestAuthorizationResponseIssAndStateInHost: RFC 9207's iss in every
// authorization response of the IdP's own endpoint, success and error, and
// state optional under PKCE S256 (RFC 9700 §2.1), through WrapProvider.
func TestAuthorizationResponseIssAndStateInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		alice := e.signIn("alice", "alice-password")
		conf := e.webClient()
		conf.Scopes = []string{"projects:read"}
		verifier := oauth2.GenerateVerifier()
		s256 := oauth2.S256ChallengeOption(verifier)
		for _, tc := range []struct {
			name  string
			url   string
			error string
			state string // "-" for none in the answer
		}{
			{"PKCE S256 and a state", conf.AuthCodeURL("state-0123456789", s256), "", "state-0123456789"},
			{"PKCE S256 without state", conf.AuthCodeURL("", s256), "", "-"},
			{"no PKCE, no state", conf.AuthCodeURL(""), "invalid_state", "-"},
			{"PKCE S256, short state", conf.AuthCodeURL("abc", s256), "invalid_state", "abc"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				q := alice.authorizeAs(tc.url)
				if q.Get("iss") != e.url {
					t.Errorf("iss = %q, want %q (%v)", q.Get("iss"), e.url, q)
				}
				if q.Get("error") != tc.error || tc.error == "" && q.Get("code") == "" {
					t.Errorf("answer %v, want error %q", q, tc.error)
				}
				switch state, sent := q["state"]; {
				case tc.state == "-" && sent:
					t.Errorf("state %q in the answer to a request without one", state)
				case tc.state != "-" && (len(state) != 1 || state[0] != tc.state):
					t.Errorf("state %q, want %q", state, tc.state)
				}
			})
		}
		// The state-less code is good at the IdP's token endpoint.
		q := alice.authorizeAs(conf.AuthCodeURL("", s256))
		if _, err := conf.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Errorf("exchange: %v", err)
		}
	})
}

// TestCORSOnDeputyJWKS: the JWKS deputy's Handler serves under the IdP's
// mount point answers any web origin, preflight included.
func TestCORSOnDeputyJWKS(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		for _, method := range []string{http.MethodGet, http.MethodOptions} {
			req, _ := http.NewRequest(method, e.url+"/deputy/.well-known/jwks.json", nil)
			req.Header.Set("Origin", "https://inspector.example")
			req.Header.Set("Access-Control-Request-Method", http.MethodGet)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 300 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("%s: %d, Access-Control-Allow-Origin %q", method, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
			}
		}
	})
}
