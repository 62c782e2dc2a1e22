package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

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
		resp, err = b.c.PostForm(authURL, url.Values{"grant_scope": strings.Fields(u.Query().Get("scope"))})
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

// withResources is authURL naming resources (RFC 8707).
func withResources(authURL string, resources ...string) string {
	u, _ := url.Parse(authURL)
	q := u.Query()
	for _, r := range resources {
		q.Add("resource", r)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// audience introspects token at the IdP's own endpoint and returns its aud
// ("-" when inactive).
func (e *idp) audience(token string) []string {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("host-cc", "host-cc-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Active bool     `json:"active"`
		Aud    []string `json:"aud"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	if !out.Active {
		return []string{"-"}
	}
	return out.Aud
}

// refresh posts a refresh request of host-web naming resources.
func (e *idp) refresh(rt string, resources ...string) (status int, access, refresh, errorCode string) {
	e.t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
	form["resource"] = resources
	req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("host-web", "host-web-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		Error        string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.AccessToken, out.RefreshToken, out.Error
}

// TestResourceIndicatorsInHost: RFC 8707 in plugin mode. The IdP's own
// authorization code, refresh and client-credentials handlers issue tokens
// whose audience is the resource named (or the default one); an unknown
// resource is invalid_target before the consent screen; a refresh narrows,
// never widens; the sample API refuses a token for another resource.
func TestResourceIndicatorsInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		api := e.url + apiResourcePath
		alice := e.signIn("alice", "alice-password")
		conf := e.webClient()
		conf.Scopes = []string{"projects:read", "offline"}
		code := func(resources ...string) (access, refresh string) {
			t.Helper()
			verifier := oauth2.GenerateVerifier()
			q := alice.authorizeAs(withResources(conf.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)), resources...))
			tok, err := conf.Exchange(t.Context(), q.Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange for %v: %v (%v)", resources, err, q)
			}
			return tok.AccessToken, tok.RefreshToken
		}

		for _, tc := range []struct {
			name      string
			resources []string
			aud       []string
			api       int
		}{
			{"the API", []string{api}, []string{api}, http.StatusOK},
			{"the API, spelt otherwise", []string{strings.ToUpper(e.url[:4]) + e.url[4:] + "/api/"}, []string{api}, http.StatusOK},
			{"no resource: the default", nil, []string{api}, http.StatusOK},
			// Attack: a token the user gave a client for the reports
			// service, replayed at the API. Without the middleware's
			// audience check it is accepted.
			{"the reports service", []string{reportsResource}, []string{reportsResource}, http.StatusUnauthorized},
			{"both", []string{api, reportsResource}, []string{api, reportsResource}, http.StatusOK},
		} {
			t.Run(tc.name, func(t *testing.T) {
				access, _ := code(tc.resources...)
				if got := e.audience(access); !slices.Equal(got, tc.aud) {
					t.Errorf("aud %v, want %v", got, tc.aud)
				}
				if status, body := e.api(http.MethodGet, access); status != tc.api {
					t.Errorf("sample API: %d %s, want %d", status, body, tc.api)
				}
			})
		}

		t.Run("an unknown resource", func(t *testing.T) {
			resp, err := alice.c.Get(withResources(conf.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "https://evil.example"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("error") != "invalid_target" || loc.Query().Get("iss") != e.url {
				t.Errorf("%d %q, want a redirect with invalid_target (no consent page)", resp.StatusCode, resp.Header.Get("Location"))
			}
		})

		t.Run("refresh keeps or narrows, never widens", func(t *testing.T) {
			_, rt := code(api, reportsResource)
			status, access, rt, _ := e.refresh(rt, reportsResource)
			if status != http.StatusOK || !slices.Equal(e.audience(access), []string{reportsResource}) {
				t.Fatalf("narrowing refresh: %d, aud %v", status, e.audience(access))
			}
			// Attack: the narrowed refresh token asks for the API back.
			// Without ResourceIndicatorHandler's check it gets it.
			if status, _, _, code := e.refresh(rt, api); code != "invalid_target" {
				t.Errorf("widening refresh: %d %s, want invalid_target", status, code)
			}
			status, access, _, _ = e.refresh(rt)
			if status != http.StatusOK || !slices.Equal(e.audience(access), []string{reportsResource}) {
				t.Errorf("refresh without resource: %d, aud %v", status, e.audience(access))
			}
		})

		t.Run("the IdP's client credentials", func(t *testing.T) {
			c := clientcredentials.Config{ClientID: "host-cc", ClientSecret: "host-cc-secret", TokenURL: e.url + "/oauth2/token",
				Scopes: []string{"reports:read"}, AuthStyle: oauth2.AuthStyleInHeader, EndpointParams: url.Values{"resource": {reportsResource}}}
			tok, err := c.Token(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got := e.audience(tok.AccessToken); !slices.Equal(got, []string{reportsResource}) {
				t.Errorf("aud %v", got)
			}
			c.EndpointParams = url.Values{"resource": {"https://evil.example"}}
			if _, err := c.Token(t.Context()); err == nil || !strings.Contains(err.Error(), "invalid_target") {
				t.Errorf("unknown resource: %v", err)
			}
		})
	})
}

// TestProtectedResourceMetadataInHost: the sample API's RFC 9728 metadata,
// and its challenges pointing there.
func TestProtectedResourceMetadataInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		metadata := e.url + "/.well-known/oauth-protected-resource/api"
		resp, err := http.Get(metadata)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
		}
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || doc.Resource != e.url+apiResourcePath || !slices.Equal(doc.AuthorizationServers, []string{e.url}) ||
			resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("metadata %+v (%v)", doc, err)
		}
		req, _ := http.NewRequest(http.MethodGet, e.url+"/api/projects", nil)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := `Bearer scope="offline_access projects:read", resource_metadata="` + metadata + `"`; resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != want {
			t.Errorf("no token: %d %q, want %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
		}
	})
}
