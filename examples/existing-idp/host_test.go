package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ory/fosite"
	"go.opentelemetry.io/otel"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

var testSecret = []byte("test-only-system-secret-0123456789abcdef")

// idp is the example IdP running on a loopback server, with deputy added
// (withDeputy) or not.
type idp struct {
	t   *testing.T
	h   *host
	p   *plugin.Plugin
	srv *httptest.Server
	url string
}

func startIdP(t *testing.T, st *storage.Store, opts ...func(*plugin.Config)) *idp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	h := newHost(base, slog.New(slog.NewTextHandler(io.Discard, nil)))
	e := &idp{t: t, h: h, url: base}
	if st != nil {
		p, err := addDeputy(context.Background(), h, st, testSecret, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.p = p
	}
	h.compose()
	e.srv = httptest.NewUnstartedServer(h.mux)
	e.srv.Listener.Close()
	e.srv.Listener = ln
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

// browser is a signed-in user of the IdP.
type browser struct {
	e    *idp
	name string
	c    *http.Client
}

func (e *idp) signIn(name, password string) *browser {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(e.url+"/login", url.Values{"username": {name}, "password": {password}})
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("login %s: %d", name, resp.StatusCode)
	}
	return &browser{e: e, name: name, c: c}
}

// json calls deputy's JSON API as the browser, from the IdP's own origin.
func (b *browser) json(method, path string, in, out any) int {
	b.e.t.Helper()
	var body io.Reader
	if in != nil {
		raw, _ := json.Marshal(in)
		body = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, b.e.url+path, body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", b.e.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			b.e.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	if resp.StatusCode >= 300 {
		b.e.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

// authorize runs the code flow for host-web as the browser, ticking only
// ticked on the consent screen, and returns the token.
func (b *browser) authorize(requested, ticked []string) *oauth2.Token {
	b.e.t.Helper()
	return b.authorizeWith(b.e.webClient(), requested, ticked)
}

// authorizeWith is authorize for the client conf.
func (b *browser) authorizeWith(conf *oauth2.Config, requested, ticked []string) *oauth2.Token {
	b.e.t.Helper()
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(verifier))
	u, _ := url.Parse(authURL)
	q := u.Query()
	q.Set("scope", strings.Join(requested, " "))
	u.RawQuery = q.Encode()
	resp, err := b.c.Get(u.String())
	if err != nil {
		b.e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.e.t.Fatalf("consent page: %d", resp.StatusCode)
	}
	resp, err = b.c.PostForm(u.String(), url.Values{"grant_scope": ticked})
	if err != nil {
		b.e.t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		b.e.t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := conf.Exchange(context.Background(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		b.e.t.Fatal(err)
	}
	return tok
}

func (e *idp) webClient() *oauth2.Config {
	return &oauth2.Config{
		ClientID: "host-web", ClientSecret: "host-web-secret",
		Endpoint:    oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL: "http://localhost:3846/callback",
	}
}

func (e *idp) ccToken(id, secret string, scopes ...string) (*oauth2.Token, error) {
	c := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: e.url + "/oauth2/token", Scopes: scopes, AuthStyle: oauth2.AuthStyleInHeader}
	return c.Token(context.Background())
}

// introspection is the RFC 7662 answer of the IdP's own endpoint, asked by
// its own client host-cc.
type introspection struct {
	Active   bool   `json:"active"`
	Scope    string `json:"scope"`
	Sub      string `json:"sub"`
	ClientID string `json:"client_id"`
}

func (e *idp) introspect(token string) introspection {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("host-cc", "host-cc-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out introspection
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// readerApp creates an owned client_credentials app of b's for
// projects:read, with one secret.
func (b *browser) readerApp() (plugin.App, plugin.Secret) {
	b.e.t.Helper()
	var app plugin.App
	if c := b.json(http.MethodPost, "/deputy/api/apps", map[string]any{
		"name": b.name + "'s exporter", "grantTypes": []string{"client_credentials"}, "scopes": []string{"projects:read"},
	}, &app); c != http.StatusCreated {
		b.e.t.Fatalf("create app: %d", c)
	}
	var sec plugin.Secret
	if c := b.json(http.MethodPost, "/deputy/api/apps/"+app.ID+"/secrets", nil, &sec); c != http.StatusCreated {
		b.e.t.Fatalf("create secret: %d", c)
	}
	return app, sec
}

// api calls the sample API with token and returns the status and body.
func (e *idp) api(method, token string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+"/api/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// prefix is a token's kind prefix: "ory_at_", "dpy_agt_".
func prefix(tok string) string { return tokenPrefix.FindString(tok) }

var tokenPrefix = regexp.MustCompile(`^[a-z]+_[a-z]+_`)

// TestHostFlowsUnchanged: with deputy added, the IdP's own clients, code
// flow, refresh and introspection answer as they did without it, with the
// same token format.
func TestHostFlowsUnchanged(t *testing.T) {
	t.Parallel()
	plain := startIdP(t, nil)
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		with := startIdP(t, st)
		for _, e := range []*idp{plain, with} {
			cc, err := e.ccToken("host-cc", "host-cc-secret", "projects:write", "reports:read")
			if err != nil {
				t.Fatalf("host cc: %v", err)
			}
			if got := e.introspect(cc.AccessToken); !got.Active || got.Scope != "projects:write reports:read" || got.ClientID != "host-cc" {
				t.Errorf("host cc token introspects %+v", got)
			}
			if _, err := e.ccToken("host-cc", "wrong", "projects:read"); err == nil {
				t.Errorf("host cc with a wrong secret got a token")
			}
			tok := e.signIn("alice", "alice-password").authorize([]string{"projects:read", "offline"}, []string{"projects:read", "offline"})
			if got := e.introspect(tok.AccessToken); !got.Active || got.Sub != "alice" || got.Scope != "projects:read offline" {
				t.Errorf("code-flow token introspects %+v", got)
			}
			refreshed, err := e.webClient().TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil || refreshed.AccessToken == tok.AccessToken {
				t.Fatalf("refresh: %v", err)
			}
		}
		a, _ := plain.ccToken("host-cc", "host-cc-secret")
		b, _ := with.ccToken("host-cc", "host-cc-secret")
		if prefix(a.AccessToken) != "ory_at_" || prefix(b.AccessToken) != "ory_at_" || len(a.AccessToken) != len(b.AccessToken) {
			t.Errorf("token formats differ: %q and %q", a.AccessToken, b.AccessToken)
		}
	})
}

// TestOwnedAppInHost: bob's owned app acts as bob, capped at what bob
// holds although the IdP's token endpoint grants every requested scope;
// removing its secret, disabling bob or deleting the app makes its tokens
// inactive at the IdP's introspection and 401 at deputy's middleware.
func TestOwnedAppInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		bob := e.signIn("bob", "bob-password")
		var app plugin.App
		if c := bob.json(http.MethodPost, "/deputy/api/apps", map[string]any{
			"name": "bob's exporter", "grantTypes": []string{"client_credentials"},
			"scopes": []string{"projects:read", "projects:write"},
		}, &app); c != http.StatusCreated {
			t.Fatalf("create app: %d", c)
		}
		newSecret := func() plugin.Secret {
			var s plugin.Secret
			if c := bob.json(http.MethodPost, "/deputy/api/apps/"+app.ID+"/secrets", nil, &s); c != http.StatusCreated {
				t.Fatalf("create secret: %d", c)
			}
			return s
		}
		s1 := newSecret()

		// The escalation: the IdP grants projects:write, which bob lacks.
		// Without the re-cap when the token is issued, the token has it.
		// MemoryStore has no count; requests here are sequential, so
		// nothing writes the map while it is read.
		stored := func() int { return len(e.h.store.AccessTokens) }
		before := stored()
		tok, err := e.ccToken(app.ID, s1.Secret, "projects:read", "projects:write")
		if err != nil {
			t.Fatalf("owned app token: %v", err)
		}
		// Without HostClientsOnly, fosite's own client_credentials handler
		// also serves the app and stores a second token: uncapped, acting
		// for nobody, never handed out but live. Checked by removing it.
		if n := stored() - before; n != 1 {
			t.Errorf("one token request stored %d access tokens, want 1", n)
		}
		if got := tok.Extra("scope"); got != "projects:read" {
			t.Errorf("token scope %q, want projects:read (capped at bob's)", got)
		}
		if got := e.introspect(tok.AccessToken); !got.Active || got.Sub != "bob" || got.Scope != "projects:read" {
			t.Errorf("owned app token introspects %+v, want bob with projects:read", got)
		}
		if c, _ := e.api(http.MethodGet, tok.AccessToken); c != http.StatusOK {
			t.Errorf("GET with the app's token: %d", c)
		}
		if c, _ := e.api(http.MethodPost, tok.AccessToken); c != http.StatusForbidden {
			t.Errorf("POST with the app's token: %d, want 403", c)
		}

		dead := func(what, token string) {
			t.Helper()
			if got := e.introspect(token); got.Active {
				t.Errorf("%s: token still active: %+v", what, got)
			}
			if c, _ := e.api(http.MethodGet, token); c != http.StatusUnauthorized {
				t.Errorf("%s: middleware answered %d, want 401", what, c)
			}
		}
		// A removed secret: its tokens die, the other secret's live on.
		// Without the secret stamp and flows.AppTokens' check, the tokens
		// live in the host's store until they expire; checked by removing
		// the check.
		s2 := newSecret()
		tok2, err := e.ccToken(app.ID, s2.Secret, "projects:read")
		if err != nil {
			t.Fatal(err)
		}
		if c := bob.json(http.MethodDelete, "/deputy/api/apps/"+app.ID+"/secrets/"+s1.ID, nil, nil); c != http.StatusNoContent {
			t.Fatalf("delete secret: %d", c)
		}
		dead("deleted secret", tok.AccessToken)
		if _, err := e.ccToken(app.ID, s1.Secret, "projects:read"); err == nil {
			t.Errorf("the deleted secret still authenticates")
		}
		if got := e.introspect(tok2.AccessToken); !got.Active {
			t.Errorf("the remaining secret's token died with the other secret")
		}
		// A disabled owner.
		e.h.mu.Lock()
		e.h.users["bob"].disabled = true
		e.h.mu.Unlock()
		dead("disabled owner", tok2.AccessToken)
		if _, err := e.ccToken(app.ID, s2.Secret, "projects:read"); err == nil {
			t.Errorf("a disabled owner's app got a token")
		}
		e.h.mu.Lock()
		e.h.users["bob"].disabled = false
		e.h.mu.Unlock()
		if got := e.introspect(tok2.AccessToken); !got.Active {
			t.Fatalf("re-enabled owner: token inactive")
		}
		// A deleted app. Without flows.AppTokens' lookup the token, in the
		// host's store, stays active; checked by removing it.
		if c := bob.json(http.MethodDelete, "/deputy/api/apps/"+app.ID, nil, nil); c != http.StatusNoContent {
			t.Fatalf("delete app: %d", c)
		}
		dead("deleted app", tok2.AccessToken)
	})
}

// TestAgentTokenFromHostToken: an agent platform exchanges a user token the
// IdP issued (ory_at_) for an agent token, read-only until the user
// approves a write through deputy's consent with the IdP's login.
func TestAgentTokenFromHostToken(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		platID, platSecret, err := e.p.CreateAgentPlatform(context.Background(), plugin.AgentPlatform{
			Name: "Example agents", Scopes: []string{"projects:read", "projects:write", "reports:read"},
		})
		if err != nil {
			t.Fatal(err)
		}
		alice := e.signIn("alice", "alice-password")
		user := alice.authorize([]string{"projects:read", "projects:write", "reports:read"}, []string{"projects:read", "projects:write", "reports:read"})
		if prefix(user.AccessToken) != "ory_at_" {
			t.Fatalf("user token %q is not the IdP's", user.AccessToken)
		}
		mint := func() (string, string) {
			t.Helper()
			form := url.Values{
				"grant_type":         {plugin.GrantTypeAgentToken},
				"subject_token":      {user.AccessToken},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"agent_session_id":   {"chat-42"},
				"organization":       {"acme"},
			}
			req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(platID, platSecret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out struct {
				AccessToken string `json:"access_token"`
				Scope       string `json:"scope"`
			}
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &out) != nil {
				t.Fatalf("agent grant: %d %s", resp.StatusCode, raw)
			}
			return out.AccessToken, out.Scope
		}
		agent, scopes := mint()
		if !strings.HasPrefix(agent, "dpy_agt_") || scopes != "projects:read reports:read" {
			t.Fatalf("agent token %.12s… with %q, want read-only", agent, scopes)
		}
		if c, _ := e.api(http.MethodGet, agent); c != http.StatusOK {
			t.Errorf("GET with the agent token: %d", c)
		}
		c, body := e.api(http.MethodPost, agent)
		if c != http.StatusForbidden || !strings.Contains(body, "approval_url") {
			t.Fatalf("POST with a read-only agent token: %d %s", c, body)
		}
		var denied struct {
			ApprovalURL string `json:"approval_url"`
		}
		_ = json.Unmarshal([]byte(body), &denied)
		if !strings.HasPrefix(denied.ApprovalURL, e.url+"/deputy/") {
			t.Errorf("approval URL %q is not under the IdP's mount point", denied.ApprovalURL)
		}
		// alice approves with the IdP's own login cookie.
		if c := alice.json(http.MethodPost, "/deputy/agent/approve", map[string]any{
			"organization": "acme", "clientId": platID, "sessionId": "chat-42",
			"scopes": []string{"projects:write"}, "decision": "approve",
		}, nil); c != http.StatusOK {
			t.Fatalf("approve: %d", c)
		}
		agent, scopes = mint()
		if !slices.Contains(scope.Parse(scopes), "projects:write") {
			t.Fatalf("after approval the agent token has %q", scopes)
		}
		if c, _ := e.api(http.MethodPost, agent); c != http.StatusOK {
			t.Errorf("POST after approval: %d", c)
		}
	})
}

// TestConsentTickedScopesNarrow: the IdP's consent screen decides; deputy
// then caps at what the user holds today.
func TestConsentTickedScopesNarrow(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		all := []string{"projects:read", "projects:write", "reports:read"}
		tok := e.signIn("alice", "alice-password").authorize(all, []string{"projects:read"})
		if got := tok.Extra("scope"); got != "projects:read" {
			t.Errorf("alice ticked projects:read, got %q", got)
		}
		tok = e.signIn("bob", "bob-password").authorize(all, all)
		if got := tok.Extra("scope"); got != "projects:read" {
			t.Errorf("bob ticked everything but holds projects:read; got %q", got)
		}
	})
}

// TestAuthorizeRequestChecked: the host's authorization endpoint vets what
// fosite accepted with plugin.CheckAuthorizeRequest (checkAuthorize), and
// its token endpoint runs behind TokenEndpointGuard: a confidential client
// registered with a loopback port gets its code only there (plain fosite
// sends it to any port), and a repeated parameter is invalid_request.
func TestAuthorizeRequestChecked(t *testing.T) {
	t.Parallel()
	plain := startIdP(t, nil)
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		with := startIdP(t, st)
		for _, e := range []*idp{plain, with} {
			e.h.mu.Lock()
			e.h.store.Clients["host-loopback"] = &fosite.DefaultClient{
				ID: "host-loopback", Secret: mustBcrypt("host-loopback-secret"),
				RedirectURIs: []string{"http://127.0.0.1:9/cb"}, ResponseTypes: []string{"code"},
				GrantTypes: []string{"authorization_code"}, Scopes: []string{"projects:read"},
			}
			e.h.mu.Unlock()
		}
		authorize := func(e *idp, query string) *http.Response {
			t.Helper()
			b := e.signIn("alice", "alice-password")
			resp, err := b.c.Get(e.url + "/oauth2/auth?" + query)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		q := url.Values{"response_type": {"code"}, "client_id": {"host-loopback"}, "scope": {"projects:read"},
			"state": {"state-123456789"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
			"code_challenge_method": {"S256"}, "redirect_uri": {"http://127.0.0.1:8765/cb"}}
		// Plain fosite shows the consent page for port 8765; with deputy,
		// 400 and no redirect.
		if resp := authorize(plain, q.Encode()); resp.StatusCode != http.StatusOK {
			t.Fatalf("control: plain fosite at another port: %d", resp.StatusCode)
		}
		if resp := authorize(with, q.Encode()); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("another port: %d %q, want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
		}
		q.Set("redirect_uri", "http://127.0.0.1:9/cb")
		if resp := authorize(with, q.Encode()); resp.StatusCode != http.StatusOK {
			t.Errorf("the registered port: %d, want the consent page", resp.StatusCode)
		}
		if resp := authorize(with, q.Encode()+"&state=another-state-value"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("state twice: %d, want 400", resp.StatusCode)
		}
		_, err := (&clientcredentials.Config{ClientID: "host-cc", ClientSecret: "host-cc-secret", TokenURL: with.url + "/oauth2/token",
			EndpointParams: url.Values{"scope": {"projects:read", "reports:read"}}}).Token(context.Background())
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_request" {
			t.Errorf("token request with scope twice: %v, want invalid_request", err)
		}
	})
}

// TestAgentClientApprovalInHost: a client of deputy's that is an agent (as
// every dynamically registered MCP client is) authorizes through the IdP's
// own authorize endpoint and consent screen; the write scope the user ticks
// is an approval, listed on deputy's grants page. Revoking it there takes
// the write away from the IdP's live token at deputy's middleware and the
// IdP's introspection, and the IdP's refresh then issues read scopes only.
func TestAgentClientApprovalInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		redirect := e.webClient().RedirectURL
		c := &storage.Client{
			ID: "mcp-" + storage.NewID(6), Name: "an MCP client", RedirectURIs: []string{redirect},
			GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
			Scopes: []string{"projects:read", "projects:write", "offline"}, Public: true,
			TokenEndpointAuthMethod: "none", Agent: true,
		}
		if err := st.CreateClient(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		conf := &oauth2.Config{
			ClientID: c.ID, RedirectURL: redirect,
			Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
		}
		alice := e.signIn("alice", "alice-password")
		all := []string{"projects:read", "projects:write", "offline"}
		tok := alice.authorizeWith(conf, all, all)
		if prefix(tok.AccessToken) != "ory_at_" {
			t.Fatalf("the IdP's token format changed: %q", tok.AccessToken)
		}
		if code, body := e.api(http.MethodPost, tok.AccessToken); code != http.StatusOK {
			t.Fatalf("POST with the approval: %d %s", code, body)
		}
		var gl struct {
			Grants []struct {
				ID       string   `json:"id"`
				ClientID string   `json:"clientId"`
				Scopes   []string `json:"scopes"`
			} `json:"grants"`
		}
		if code := alice.json(http.MethodGet, "/deputy/agent/grants", nil, &gl); code != http.StatusOK {
			t.Fatalf("grants: %d", code)
		}
		if len(gl.Grants) != 1 || gl.Grants[0].ClientID != c.ID || strings.Join(gl.Grants[0].Scopes, " ") != "projects:write" {
			t.Fatalf("the approval is not among alice's grants: %+v", gl)
		}
		if code := alice.json(http.MethodDelete, "/deputy/agent/grants/"+gl.Grants[0].ID, nil, nil); code != http.StatusNoContent {
			t.Fatalf("revoke: %d", code)
		}
		if code, _ := e.api(http.MethodPost, tok.AccessToken); code != http.StatusForbidden {
			t.Errorf("POST after revoking the approval: %d, want 403", code)
		}
		if code, _ := e.api(http.MethodGet, tok.AccessToken); code != http.StatusOK {
			t.Errorf("GET after revoking the approval: %d, want 200", code)
		}
		if got := e.introspect(tok.AccessToken); !got.Active || scope.Join(scope.Parse(got.Scope)) != "offline projects:read" {
			t.Errorf("introspection after revoking the approval: %+v", got)
		}
		refreshed, err := conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if got, _ := refreshed.Extra("scope").(string); scope.Join(scope.Parse(got)) != "offline projects:read" {
			t.Errorf("refreshed after revoking the approval: scope %q", got)
		}
		if code, _ := e.api(http.MethodPost, refreshed.AccessToken); code != http.StatusForbidden {
			t.Errorf("POST with the refreshed token: %d, want 403", code)
		}
	})
}

// TestClientAuthLimitAtHostEndpoints: the IdP's own token, introspection
// and revocation endpoints sit behind deputy's TokenEndpointGuard but never
// tell deputy how a client authentication ended; the guard learns it from
// what deputy's secrets hasher and client lookup saw. Many successes, for
// the IdP's clients and deputy's apps, are never refused; wrong secrets and
// unknown client ids alike end in 429 (so a 429 says nothing about which
// ids exist). Without the guard's report every admitted request counts as
// a failure and the successes meet 429 after the allowance: checked by
// removing the Report call in TokenEndpointGuard.
func TestClientAuthLimitAtHostEndpoints(t *testing.T) {
	t.Parallel()
	e := startIdP(t, storagetest.SQLite.Open(t))
	bob := e.signIn("bob", "bob-password")
	app, sec := bob.readerApp()
	for i := range 40 {
		if _, err := e.ccToken("host-cc", "host-cc-secret", "projects:read"); err != nil {
			t.Fatalf("the IdP's client, success %d: %v", i, err)
		}
		if _, err := e.ccToken(app.ID, sec.Secret, "projects:read"); err != nil {
			t.Fatalf("deputy's app, success %d: %v", i, err)
		}
		if got := e.introspect("ory_at_nothing"); got.Active {
			t.Fatalf("introspection %d: %+v", i, got)
		}
		// Refused by the guard before any client is judged: not charged.
		req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/token", strings.NewReader("grant_type=client_credentials&scope=a&scope=b"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("host-cc", "wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("repeated parameter %d: %d, want 400", i, resp.StatusCode)
		}
	}
	for _, c := range []struct{ name, id, secret string }{
		{"the IdP's client, wrong secret", "host-web", "wrong"},
		{"deputy's app, wrong secret", app.ID, "dpy_cs_wrong"},
		{"an unknown client", "no-such-client", "whatever"},
	} {
		var last int
		for range 30 {
			req, _ := http.NewRequest(http.MethodPost, e.url+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(c.id, c.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if last = resp.StatusCode; last != http.StatusUnauthorized {
				break
			}
		}
		if last != http.StatusTooManyRequests {
			t.Errorf("%s: answered %d after repeated failures, want 429", c.name, last)
		}
	}
}

// TestReadinessInHost: the host's /readyz asks deputy (Plugin.Ready) and
// answers 503 once deputy's database is gone, and deputy's middleware
// answers a token of deputy's app 503 then, not 401: the client keeps a
// token that may be valid.
func TestReadinessInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		bob := e.signIn("bob", "bob-password")
		app, sec := bob.readerApp()
		tok, err := e.ccToken(app.ID, sec.Secret, "projects:read")
		if err != nil {
			t.Fatal(err)
		}
		ready := func() int {
			resp, err := http.Get(e.url + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if c := ready(); c != http.StatusOK {
			t.Fatalf("/readyz with the database up: %d", c)
		}
		if c, body := e.api(http.MethodGet, tok.AccessToken); c != http.StatusOK {
			t.Fatalf("API with bob's app's token: %d %s", c, body)
		}
		refusals := func() float64 {
			resp, err := http.Get(e.url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			return testkit.ParseMetrics(t, resp.Body)[`deputy_resource_refusals_total{reason="unavailable",token_kind="access"}`]
		}
		before := refusals()
		if err := st.DB().Close(); err != nil {
			t.Fatal(err)
		}
		if c := ready(); c != http.StatusServiceUnavailable {
			t.Errorf("/readyz with deputy's database closed: %d, want 503", c)
		}
		// The middleware's own 503: no challenge, RFC 6749's error code.
		status, challenge, body := apiAnswer(t, e.url, tok.AccessToken)
		if status != http.StatusServiceUnavailable || challenge != "" || !strings.Contains(body, `"error":"temporarily_unavailable"`) {
			t.Errorf("API with bob's app's token, deputy's database closed: %d %q %s, want the middleware's 503", status, challenge, body)
		}
		if d := refusals() - before; d != 1 {
			t.Errorf("refusals counted as unavailable: %v, want 1", d)
		}
		// Token text cannot buy a 503: a forged token fails its HMAC, and an
		// agent token with a kid nobody knows fails its key, before any
		// lookup; both are still 401 while the database is gone.
		unknownKid := "dpy_agt_" + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","kid":"0123456789abcdef01234567","typ":"at+jwt"}`)) + ".e30.AAAA"
		for _, forged := range []string{"ory_at_forged0123456789abcdef.forged0123456789abcdef", unknownKid} {
			if status, challenge, body := apiAnswer(t, e.url, forged); status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
				t.Errorf("forged token %.20s… with deputy's database closed: %d %q %s, want 401 invalid_token", forged, status, challenge, body)
			}
		}
	})
}

// apiAnswer calls the sample API with token and returns the status, the
// WWW-Authenticate challenge and the body.
func apiAnswer(t *testing.T, base, token string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(raw)
}

// TestSpansInHost: in plugin mode the host's own token endpoint, wrapped by
// deputy's guard, records deputy's span with fosite's and deputy's storage
// spans under it, from the global tracer provider the host set up, for
// deputy's app and for the host's own client alike. (Not parallel: it sets
// the process's tracer provider before the parallel tests run.)
func TestSpansInHost(t *testing.T) {
	t.Parallel()
	exp := testkit.RecordSpans()

	e := startIdP(t, storagetest.SQLite.Open(t))
	bob := e.signIn("bob", "bob-password")
	app, sec := bob.readerApp()
	tests := []struct {
		name, id, secret, want string
	}{
		{"deputy's app", app.ID, sec.Secret, "test.root\n" +
			"  deputy.oauth2.token\n" +
			"    Fosite.NewAccessRequest\n" +
			"      SELECT clients\n" +
			"    Fosite.NewAccessResponse\n"},
		// The host's storage answers first: its own clients never reach
		// deputy's database.
		{"the host's client", "host-cc", "host-cc-secret", "test.root\n" +
			"  deputy.oauth2.token\n" +
			"    Fosite.NewAccessRequest\n" +
			"    Fosite.NewAccessResponse\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, root := otel.Tracer("test").Start(context.Background(), "test.root")
			form := url.Values{"grant_type": {"client_credentials"}, "scope": {"projects:read"}}
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/oauth2/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(tt.id, tt.secret)
			w := httptest.NewRecorder()
			e.srv.Config.Handler.ServeHTTP(w, req)
			root.End()
			if w.Code != http.StatusOK {
				t.Fatalf("token: %d %s", w.Code, w.Body)
			}
			if got := testkit.SpanTree(exp.GetSpans(), root.SpanContext().TraceID()); got != tt.want {
				t.Errorf("span tree:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
