package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage/storagetest"
)

const testRedirect = "http://127.0.0.1:9/callback"

// testClient registers an unowned authorization-code client the way
// `clients create` does.
func testClient(t *testing.T, idp *testIdP, firstParty bool) *oauth2.Config {
	t.Helper()
	c, secret, err := idp.srv.apps().AdminCreate(context.Background(), apps.AdminInput{
		Input: apps.Input{
			Name:         "Agent Platform",
			GrantTypes:   []string{"authorization_code", "refresh_token", protocol.GrantTypeAgentToken},
			RedirectURIs: []string{testRedirect},
			Scopes:       []string{"projects:read", "projects:write", "members:read", "offline_access"},
		},
		FirstParty: firstParty,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &oauth2.Config{
		ClientID:     c.ID,
		ClientSecret: secret,
		RedirectURL:  testRedirect,
		Scopes:       []string{"projects:read", "projects:write", "offline_access"},
		Endpoint: oauth2.Endpoint{
			AuthURL:   idp.URL + "/oauth2/auth",
			TokenURL:  idp.URL + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
	}
}

// callback returns the query the IdP redirected to the client with.
func callback(t *testing.T, resp *http.Response) url.Values {
	t.Helper()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, testRedirect) {
		t.Fatalf("want a redirect to the client, got %d %q", resp.StatusCode, loc)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

func TestAuthorizeThirdPartyConsent(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		ctx := context.Background()
		oc := testClient(t, idp, false)
		verifier := oauth2.GenerateVerifier()
		authURL := oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier))

		// Not logged in: off to the login page, and back to the same request.
		bob := idp.browser(t)
		resp, _ := get(t, bob, authURL)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/login?return_to=") {
			t.Fatalf("anonymous authorize: %d %q", resp.StatusCode, loc)
		}
		rt, _ := url.Parse(loc)
		returnTo := rt.Query().Get("return_to")
		resp = postForm(t, bob, idp.URL+"/login", url.Values{"username": {"bob"}, "password": {demoBobPassword}, "return_to": {returnTo}})
		if resp.Header.Get("Location") != returnTo || !strings.HasPrefix(returnTo, "/oauth2/auth?") {
			t.Fatalf("login does not return to the authorize request: %q", resp.Header.Get("Location"))
		}

		// The consent page names the client and the scopes, and marks the
		// one bob does not hold.
		resp, body := get(t, bob, idp.URL+returnTo)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("consent page: %d", resp.StatusCode)
		}
		for _, want := range []string{"Agent Platform", "projects:read", "projects:write", `class="not-held"`, `value="allow"`, `value="deny"`} {
			if !strings.Contains(body, want) {
				t.Errorf("consent page lacks %q", want)
			}
		}

		// Deny: access_denied back to the client, no code.
		resp = postForm(t, bob, idp.URL+returnTo, url.Values{"decision": {"deny"}})
		if q := callback(t, resp); q.Get("error") != "access_denied" || q.Get("code") != "" || q.Get("state") != "state-12345" {
			t.Errorf("deny: %v", q)
		}

		// A cross-site Allow is refused: consent is the user's, not a page's.
		req, _ := http.NewRequest(http.MethodPost, idp.URL+returnTo, strings.NewReader("decision=allow"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if resp, err := bob.Do(req); err != nil {
			t.Fatal(err)
		} else if resp.Body.Close(); resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site allow: %d, want 403", resp.StatusCode)
		}

		// Allow: a code, exchanged with the PKCE verifier for tokens that
		// carry only what bob holds.
		resp = postForm(t, bob, idp.URL+returnTo, url.Values{"decision": {"allow"}})
		q := callback(t, resp)
		if q.Get("state") != "state-12345" || q.Get("code") == "" {
			t.Fatalf("allow: %v", q)
		}
		if _, err := oc.Exchange(ctx, q.Get("code")); err == nil {
			t.Errorf("a code exchanged without the PKCE verifier")
		}
		// fosite invalidates a code on a failed exchange; ask again.
		resp = postForm(t, bob, idp.URL+returnTo, url.Values{"decision": {"allow"}})
		tok, err := oc.Exchange(ctx, callback(t, resp).Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if got := scope.Join(scope.Parse(tok.Extra("scope").(string))); got != "offline_access projects:read" {
			t.Errorf("granted scope %q, want bob's: offline_access projects:read", got)
		}
		if !strings.HasPrefix(tok.AccessToken, "dpy_at_") || !strings.HasPrefix(tok.RefreshToken, "dpy_rt_") {
			t.Errorf("token prefixes: %q %q", tok.AccessToken[:7], tok.RefreshToken[:7])
		}

		// The user token reads the sample API as bob.
		api, apiBody := get(t, oc.Client(ctx, tok), idp.URL+"/api/orgs/acme/projects")
		if api.StatusCode != http.StatusOK || !strings.Contains(apiBody, `"kind": "access"`) {
			t.Errorf("API with bob's user token: %d %s", api.StatusCode, apiBody)
		}

		// Refresh rotates: the new refresh token differs and the old one is spent.
		tok.Expiry = tok.Expiry.Add(-24 * 365 * 60 * 60 * 1e9)
		fresh, err := oc.TokenSource(ctx, tok).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if fresh.RefreshToken == tok.RefreshToken || fresh.AccessToken == tok.AccessToken {
			t.Errorf("refresh did not rotate")
		}
		// bob sees the client under authorized apps and can revoke it.
		_, page := get(t, bob, idp.URL+"/settings/apps")
		if !strings.Contains(page, "Agent Platform") {
			t.Errorf("authorized apps does not list the client")
		}
		if resp := postForm(t, bob, idp.URL+"/settings/authorized-apps/"+oc.ClientID+"/revoke", nil); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("revoke: %d", resp.StatusCode)
		}
		if api, _ := get(t, oc.Client(ctx, &oauth2.Token{AccessToken: fresh.AccessToken}), idp.URL+"/api/orgs/acme/projects"); api.StatusCode != http.StatusUnauthorized {
			t.Errorf("revoked token: %d, want 401", api.StatusCode)
		}
		// Revoked refresh tokens are kept inactive, so a replay is refused.
		if _, err := oc.TokenSource(ctx, tok).Token(); err == nil {
			t.Errorf("a spent refresh token worked again")
		}
		if _, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: fresh.RefreshToken}).Token(); err == nil {
			t.Errorf("a revoked refresh token still works")
		}
	})
}

func TestAuthorizeFirstPartySkipsConsent(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	oc := testClient(t, idp, true)
	verifier := oauth2.GenerateVerifier()
	alice := idp.loggedIn(t, "alice", demoAlicePassword)
	resp, _ := get(t, alice, oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier)))
	q := callback(t, resp)
	tok, err := oc.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	if got := scope.Join(scope.Parse(tok.Extra("scope").(string))); got != "offline_access projects:read projects:write" {
		t.Errorf("granted %q", got)
	}
}

func TestAuthorizeRefusesBadRequests(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	oc := testClient(t, idp, false)
	alice := idp.loggedIn(t, "alice", demoAlicePassword)
	verifier := oauth2.GenerateVerifier()
	tests := []struct {
		name    string
		url     string
		toCient bool // the error goes back to the (valid) redirect URI
		errCode string
	}{
		{"no PKCE", oc.AuthCodeURL("state-12345"), true, "invalid_request"},
		{"plain PKCE", oc.AuthCodeURL("state-12345", oauth2.SetAuthURLParam("code_challenge", verifier), oauth2.SetAuthURLParam("code_challenge_method", "plain")), true, "invalid_request"},
		{"scope the client may not have", oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("scope", "admin:all")), true, "invalid_scope"},
		{"unknown client", strings.Replace(oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier)), oc.ClientID, "nope", 1), false, ""},
		{"foreign redirect", strings.Replace(oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier)), url.QueryEscape(testRedirect), url.QueryEscape("https://evil.example/cb"), 1), false, ""},
	}
	for _, tt := range tests {
		resp, body := get(t, alice, tt.url)
		loc := resp.Header.Get("Location")
		if tt.toCient {
			if q := callback(t, resp); q.Get("error") != tt.errCode || q.Get("code") != "" {
				t.Errorf("%s: %v", tt.name, q)
			}
			continue
		}
		// Without a trustworthy redirect URI the error is shown here, and
		// never sent to the attacker's URI.
		if strings.Contains(loc, "evil.example") || resp.StatusCode < 400 || strings.Contains(body, `value="allow"`) {
			t.Errorf("%s: %d %q", tt.name, resp.StatusCode, loc)
		}
	}
}

// TestAuthorizeAgentClientWritesAreAnApproval: an agent client's consent page
// says the write is an approval for the grant lifespan and where to revoke
// it, and allowing it lists the approval with the user's agent grants.
func TestAuthorizeAgentClientWritesAreAnApproval(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite, func(c *config) { c.GrantLifespan = 15 * time.Minute })
	oc := testClient(t, idp, false)
	c, err := idp.srv.st.Client(context.Background(), oc.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	c.Agent = true
	if err := idp.srv.st.UpdateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	alice := idp.loggedIn(t, "alice", demoAlicePassword)
	verifier := oauth2.GenerateVerifier()
	authURL := oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier))
	resp, body := get(t, alice, authURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("consent page: %d", resp.StatusCode)
	}
	for _, want := range []string{"write · for 15 minutes", "is an agent acting for you", "an approval that lasts 15 minutes", `href="/agent/grants"`} {
		if !strings.Contains(body, want) {
			t.Errorf("agent consent page lacks %q", want)
		}
	}
	q := callback(t, postForm(t, alice, authURL, url.Values{"decision": {"allow"}}))
	if _, err := oc.Exchange(context.Background(), q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, idp.URL+"/agent/grants", nil)
	req.Header.Set("Accept", "application/json")
	gresp, err := alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer gresp.Body.Close()
	var gl struct {
		Grants []struct {
			ClientID  string    `json:"clientId"`
			Scopes    []string  `json:"scopes"`
			ExpiresAt time.Time `json:"expiresAt"`
		} `json:"grants"`
	}
	if err := json.NewDecoder(gresp.Body).Decode(&gl); err != nil {
		t.Fatal(err)
	}
	if len(gl.Grants) != 1 || gl.Grants[0].ClientID != oc.ClientID || scope.Join(gl.Grants[0].Scopes) != "projects:write" ||
		gl.Grants[0].ExpiresAt.After(time.Now().Add(15*time.Minute)) {
		t.Errorf("alice's grants after approving the agent's write: %+v", gl)
	}
}

func TestHumanDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		time.Hour: "1 hour", 2 * time.Hour: "2 hours", 90 * time.Minute: "90 minutes",
		time.Minute: "1 minute", 5 * time.Second: "5 seconds", 1500 * time.Millisecond: "1.5s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
