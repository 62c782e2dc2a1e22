package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	agentTokenGrant  = "urn:deputy:params:oauth:grant-type:agent-token"
	accessTokenType  = "urn:ietf:params:oauth:token-type:access_token"
	platformRedirect = "http://127.0.0.1/agent-platform/callback"
)

// httpClient bounds every request the tests make, so that a hung server
// fails a test instead of hanging it.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// browser is a user agent: a cookie jar, and no automatic redirects, so the
// tests see and check each hop.
type browser struct {
	t    testing.TB
	base string
	c    *http.Client
}

func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, base: base, c: &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// abs resolves a path or URL against the server's base.
func (b *browser) abs(ref string) string {
	b.t.Helper()
	base, _ := url.Parse(b.base + "/")
	u, err := base.Parse(ref)
	if err != nil {
		b.t.Fatalf("bad URL %q: %v", ref, err)
	}
	return u.String()
}

// do sends a request as a page of this origin would: with the session
// cookie and a same-origin Origin header on anything but GET.
func (b *browser) do(method, ref, contentType string, body io.Reader) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.abs(ref), body)
	if err != nil {
		b.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Origin", b.base)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, ref, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", method, ref, err)
	}
	return resp, data
}

// getPage fetches an HTML page as a browser would ask for it.
func (b *browser) getPage(ref string) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.abs(ref), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("GET %s: %v", ref, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// postForm submits a form the way an HTML page does.
func (b *browser) postForm(ref string, form url.Values) (*http.Response, []byte) {
	b.t.Helper()
	return b.do(http.MethodPost, ref, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
}

// jsonCall sends v as JSON (nil for no body) and decodes the JSON answer
// into out when out is not nil. It returns the status.
func (b *browser) jsonCall(method, ref string, v, out any) (int, []byte) {
	b.t.Helper()
	var body io.Reader
	ct := ""
	if v != nil {
		raw, err := json.Marshal(v)
		if err != nil {
			b.t.Fatal(err)
		}
		body, ct = bytes.NewReader(raw), "application/json"
	}
	resp, data := b.do(method, ref, ct, body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			b.t.Fatalf("%s %s: answer is not the JSON expected: %v\n%s", method, ref, err, data)
		}
	}
	return resp.StatusCode, data
}

// login signs in through the password form and checks that a session
// cookie came back.
func (b *browser) login(username, password string) {
	b.t.Helper()
	resp, body := b.postForm("/login", url.Values{"username": {username}, "password": {password}, "return_to": {"/"}})
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
		b.t.Fatalf("login as %s: status %d, want a redirect\n%s", username, resp.StatusCode, body)
	}
	if !b.hasSession() {
		b.t.Fatalf("login as %s: no session cookie set", username)
	}
}

func (b *browser) hasSession() bool {
	u, _ := url.Parse(b.base)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "deputy_session" && c.Value != "" {
			return true
		}
	}
	return false
}

var returnToInput = regexp.MustCompile(`name="return_to"[^>]*value="([^"]*)"|value="([^"]*)"[^>]*name="return_to"`)

// authorize walks the authorization-code flow as a browser would, from the
// client's authorization URL to the redirect back to the client, signing in
// on the way if the IdP asks. It returns the redirect URL the client gets.
func (b *browser) authorize(authURL, redirectURI, username, password string) *url.URL {
	b.t.Helper()
	next := authURL
	for hop := 0; hop < 10; hop++ {
		if strings.HasPrefix(next, redirectURI) {
			u, err := url.Parse(next)
			if err != nil {
				b.t.Fatal(err)
			}
			return u
		}
		resp, body := b.getPage(next)
		switch {
		case resp.StatusCode/100 == 3:
			next = b.abs(resp.Header.Get("Location"))
		case resp.StatusCode == http.StatusOK && resp.Request.URL.Path == "/login":
			returnTo := resp.Request.URL.Query().Get("return_to")
			if m := returnToInput.FindSubmatch(body); m != nil {
				returnTo = htmlUnescape(string(m[1]) + string(m[2]))
			}
			lresp, lbody := b.postForm("/login", url.Values{"username": {username}, "password": {password}, "return_to": {returnTo}})
			if lresp.StatusCode/100 != 3 {
				b.t.Fatalf("login during authorization: status %d\n%s", lresp.StatusCode, lbody)
			}
			next = b.abs(lresp.Header.Get("Location"))
		default:
			b.t.Fatalf("authorization flow stopped at %s with status %d\n%s", next, resp.StatusCode, truncate(body))
		}
	}
	b.t.Fatalf("authorization flow did not reach %s within 10 hops", redirectURI)
	return nil
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">", "&#34;", `"`, "&quot;", `"`, "&#39;", "'", "&#x2F;", "/", "&#43;", "+", "&#61;", "=").Replace(s)
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// oauthCtx makes golang.org/x/oauth2 use the tests' bounded client.
func oauthCtx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, httpClient)
}

// platform is an agent platform: a confidential client allowed the
// authorization-code flow and the agent-token grant.
type platform struct {
	ID, Secret string
	base       string
}

// newPlatform registers an agent platform with the admin CLI.
func newPlatform(t testing.TB, tg *target) *platform {
	t.Helper()
	return platformWithScopes(t, tg, "projects:read projects:write members:read")
}

// platformWithScopes registers an agent platform that may ask for scopes.
func platformWithScopes(t testing.TB, tg *target, scopes string) *platform {
	t.Helper()
	out := tg.cli(t, "clients", "create",
		"--name", randomName("agent-platform-"),
		"--grant", "authorization_code",
		"--grant", "refresh_token",
		"--grant", agentTokenGrant,
		"--redirect-uri", platformRedirect,
		"--scope", scopes,
		"--first-party")
	return &platform{ID: str(t, out, "client_id"), Secret: str(t, out, "client_secret"), base: tg.URL}
}

func (p *platform) oauth2Config(scopes ...string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.ID,
		ClientSecret: p.Secret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   p.base + "/oauth2/auth",
			TokenURL:  p.base + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader,
		},
		RedirectURL: platformRedirect,
		Scopes:      scopes,
	}
}

// userToken runs the authorization-code flow with PKCE (S256) for the user
// signed in (or signing in) on b, and returns the user's access token.
func (p *platform) userToken(t testing.TB, b *browser, username, password string, scopes ...string) *oauth2.Token {
	t.Helper()
	conf := p.oauth2Config(scopes...)
	verifier := oauth2.GenerateVerifier()
	state := randomName("state-")
	back := b.authorize(conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), platformRedirect, username, password)
	q := back.Query()
	if e := q.Get("error"); e != "" {
		t.Fatalf("authorization refused: %s: %s", e, q.Get("error_description"))
	}
	if q.Get("state") != state {
		t.Fatalf("state came back as %q, sent %q", q.Get("state"), state)
	}
	tok, err := conf.Exchange(oauthCtx(), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange code: %v", err)
	}
	if !strings.HasPrefix(tok.AccessToken, "dpy_at_") {
		t.Fatalf("user access token %q lacks the dpy_at_ prefix", tok.AccessToken)
	}
	return tok
}

// agentConfig is the agent-token grant expressed through the standard
// clientcredentials package: the grant is a client-authenticated POST to the
// token endpoint whose answer is an ordinary token response.
func (p *platform) agentConfig(subject, session, org string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID:     p.ID,
		ClientSecret: p.Secret,
		TokenURL:     p.base + "/oauth2/token",
		AuthStyle:    oauth2.AuthStyleInHeader,
		EndpointParams: url.Values{
			"grant_type":         {agentTokenGrant},
			"subject_token":      {subject},
			"subject_token_type": {accessTokenType},
			"agent_session_id":   {session},
			"organization":       {org},
		},
	}
}

// mint exchanges a user's access token for an agent token.
func (p *platform) mint(t testing.TB, subject, session, org string) *agentToken {
	t.Helper()
	tok, err := p.agentConfig(subject, session, org).Token(oauthCtx())
	if err != nil {
		t.Fatalf("mint agent token: %v", err)
	}
	return parseAgentToken(t, tok)
}

// agentToken is a minted token with what the tests read from it.
type agentToken struct {
	Raw    string
	Scopes []string
	Kid    string
	Claims map[string]any
}

// parseAgentToken reads the JWS header and claims without verifying them:
// verification is the server's job, and the tests check that it does it.
func parseAgentToken(t testing.TB, tok *oauth2.Token) *agentToken {
	t.Helper()
	jws, ok := strings.CutPrefix(tok.AccessToken, "dpy_agt_")
	if !ok {
		t.Fatalf("agent token %q lacks the dpy_agt_ prefix", tok.AccessToken)
	}
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("agent token is not a compact JWS: %q", tok.AccessToken)
	}
	var header struct {
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	decodeSegment(t, parts[0], &header)
	if header.Typ != "at+jwt" {
		t.Errorf("agent token typ = %q, want at+jwt", header.Typ)
	}
	var claims map[string]any
	decodeSegment(t, parts[1], &claims)
	s, _ := claims["scope"].(string)
	at := &agentToken{Raw: tok.AccessToken, Scopes: strings.Fields(s), Kid: header.Kid, Claims: claims}
	if resp, _ := tok.Extra("scope").(string); resp != s {
		t.Errorf("token response scope %q differs from the token's scope claim %q", resp, s)
	}
	return at
}

func decodeSegment(t testing.TB, seg string, v any) {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWS segment: %v", err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("JWS segment: %v", err)
	}
}

func (a *agentToken) has(scope string) bool {
	for _, s := range a.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// apiResult is the sample API's answer.
type apiResult struct {
	Status          int
	WWWAuthenticate string
	Body            []byte
}

// callAPI calls the sample protected API with a bearer token.
func callAPI(t testing.TB, base, method, org, token string) apiResult {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"name":` + fmt.Sprintf("%q", randomName("project-")) + `}`)
	}
	req, err := http.NewRequest(method, base+"/api/orgs/"+url.PathEscape(org)+"/projects", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s projects: %v", method, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return apiResult{Status: resp.StatusCode, WWWAuthenticate: resp.Header.Get("WWW-Authenticate"), Body: data}
}

// wantStatus fails t unless r has the status.
func (r apiResult) wantStatus(t testing.TB, what string, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: status %d, want %d\nWWW-Authenticate: %s\n%s", what, r.Status, status, r.WWWAuthenticate, truncate(r.Body))
	}
}

// findString returns the first string anywhere in a decoded JSON value that
// satisfies ok. The tests look for the approval URL this way, so they do not
// depend on the name of the field that carries it.
func findString(v any, ok func(string) bool) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, ok(v)
	case map[string]any:
		for _, x := range v {
			if s, found := findString(x, ok); found {
				return s, true
			}
		}
	case []any:
		for _, x := range v {
			if s, found := findString(x, ok); found {
				return s, true
			}
		}
	}
	return "", false
}

// tokenError is the OAuth error code from a failed token request.
func tokenError(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.ErrorCode != "" {
			return re.ErrorCode
		}
		return fmt.Sprintf("status %d", re.Response.StatusCode)
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// decodeJSON decodes a 200 answer's JSON body into v.
func decodeJSON(resp *http.Response, v any) error {
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, truncate(data))
	}
	return json.Unmarshal(data, v)
}
