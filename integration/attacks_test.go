package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// attackEnv is what every attack row starts from on one target: alice and
// bob signed in, an agent platform that may refresh, alice's user token and
// an agent token of hers for demoOrg, an owned app of each.
type attackEnv struct {
	tg         *target
	alice, bob *browser
	plat       *platform
	user       *oauth2.Token
	session    string
	agent      *agentToken
	aliceApp   *ownedApp
	bobApp     *ownedApp
	// expiring is an agent token signed by the server's own key that
	// expires a second after setup (see newExpiringAgentToken).
	expiring *agentToken
}

// attack is one row: what it tries, the protection it checks, and the
// check, which fails the test if the attack succeeds.
type attack struct {
	name       string
	protection string
	run        func(t *testing.T, e *attackEnv)
}

// TestAttacks runs every attack against a real deputy-idp on each dialect.
// Each row says, in a comment, what would happen without its protection
// and how that was checked. "Checked by removing" means the protection was
// taken out of the production code locally and the row was seen to fail;
// "checked by reasoning" means the row's assertion is exactly what the
// attack achieves without it.
func TestAttacks(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *target) {
		e := newAttackEnv(t, tg)
		for _, a := range attacks {
			t.Run(a.name, func(t *testing.T) {
				t.Logf("protection: %s", a.protection)
				a.run(t, e)
			})
		}
	})
}

func newAttackEnv(t *testing.T, tg *target) *attackEnv {
	t.Helper()
	e := &attackEnv{tg: tg}
	e.alice = newBrowser(t, tg.URL)
	e.alice.login("alice", alicePassword)
	e.bob = newBrowser(t, tg.URL)
	e.bob.login("bob", bobPassword)
	e.plat = newRefreshingPlatform(t, tg)
	e.user = e.plat.userToken(t, newBrowser(t, tg.URL), "alice", alicePassword, "projects:read", "projects:write")
	e.session = randomName("sess-")
	e.agent = e.plat.mint(t, e.user.AccessToken, e.session, demoOrg)
	callAPI(t, tg.URL, http.MethodGet, demoOrg, e.agent.Raw).wantStatus(t, "control: alice's agent token reads", http.StatusOK)
	e.aliceApp = createOwnedApp(t, e.alice, "projects:read")
	e.bobApp = createOwnedApp(t, e.bob, "projects:read")
	e.expiring = newExpiringAgentToken(t, tg, e)
	return e
}

// newRefreshingPlatform is newPlatform whose client may also ask for
// offline_access, so that its users' tokens come with a refresh token.
func newRefreshingPlatform(t testing.TB, tg *target) *platform {
	t.Helper()
	return platformWithScopes(t, tg, "projects:read projects:write members:read offline_access")
}

// newExpiringAgentToken signs, with the server's own active key (read from
// its database with its system secret, as a second replica would), an
// agent token for alice's session that lives one second. The server has no
// setting for a shorter agent-token lifespan than a minute, and a token
// cannot be backdated without the key, so this is the real thing: a token
// the server itself would have issued, replayed after its exp.
func newExpiringAgentToken(t *testing.T, tg *target, e *attackEnv) *agentToken {
	t.Helper()
	if tg.databaseURL == "" || tg.secret == "" {
		t.Fatal("the expiry row needs the target's database URL and system secret")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := storage.Open(ctx, tg.databaseURL)
	if err != nil {
		t.Fatalf("open the target's database: %v", err)
	}
	defer st.Close()
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{Store: st, SystemSecret: []byte(tg.secret)})
	if err != nil {
		t.Fatalf("keyring: %v", err)
	}
	sub, _ := e.agent.Claims["sub"].(string)
	m := &agenttoken.Minter{
		Keys: keys, Store: st, Catalog: scope.NewCatalog(), Issuer: tg.URL, Lifespan: time.Second,
		Directory: testkit.NewDirectory().Set(sub, testkit.AnyOrg, "projects:read"),
		// For the sample API's resource, as the server mints them.
		Audience: tg.URL + "/api",
	}
	tok, err := m.Mint(ctx, agenttoken.MintRequest{
		UserID: sub, Organization: demoOrg, AgentSessionID: e.session, ClientID: e.plat.ID,
		SubjectScopes: []string{"projects:read"},
	})
	if err != nil {
		t.Fatalf("mint a short-lived agent token: %v", err)
	}
	at := parseAgentToken(t, (&oauth2.Token{AccessToken: tok.Token}).WithExtra(map[string]any{"scope": scope.Join(tok.Scopes)}))
	// Control: before it expires the server takes it, so the later refusal
	// is the expiry and nothing else.
	callAPI(t, tg.URL, http.MethodGet, demoOrg, at.Raw).wantStatus(t, "control: the short-lived token before expiry", http.StatusOK)
	return at
}

// send makes a request with the browser's cookies and exactly the headers
// given (no Origin is added), and returns the answer.
func (b *browser) send(method, ref string, header map[string]string, body io.Reader) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.abs(ref), body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, ref, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// anon sends a request with no cookies.
func anon(t testing.TB, method, u string, header map[string]string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// no5xx fails t on any server error.
func no5xx(t testing.TB, what string, status int, body []byte) {
	t.Helper()
	if status >= 500 {
		t.Errorf("%s: status %d, a server error\n%s", what, status, truncate(body))
	}
}

// want4xx fails t unless status is a client error (never a success, never a
// server error).
func want4xx(t testing.TB, what string, status int, body []byte, allowed ...int) {
	t.Helper()
	if status < 400 || status >= 500 || len(allowed) > 0 && !slices.Contains(allowed, status) {
		t.Errorf("%s: status %d, want %v\n%s", what, status, allowed, truncate(body))
	}
}

// mintScopes mints for alice's session and returns the scopes, or fails.
func (e *attackEnv) mintScopes(t testing.TB, session string) []string {
	t.Helper()
	return e.plat.mint(t, e.user.AccessToken, session, demoOrg).Scopes
}

// jsonBody marshals v.
func jsonBody(t testing.TB, v any) io.Reader {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(raw)
}

// tokenForm posts a form to the token endpoint with HTTP Basic client auth.
func tokenForm(t testing.TB, base, clientID, secret string, form url.Values) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// ccToken asks for a client-credentials token and returns the error code
// ("" on success).
func ccToken(base string, a *ownedApp, secret string) (*oauth2.Token, string) {
	c := a.config(base, "projects:read")
	c.ClientSecret = secret
	tok, err := c.Token(oauthCtx())
	return tok, tokenError(err)
}

// jwtSeg base64url-encodes v as JSON.
func jwtSeg(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// jwks fetches the server's published keys.
func jwks(t testing.TB, base string) []map[string]any {
	t.Helper()
	resp, body := anon(t, http.MethodGet, base+"/.well-known/jwks.json", nil, nil)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &set) != nil || len(set.Keys) == 0 {
		t.Fatalf("JWKS: %d %s", resp.StatusCode, body)
	}
	return set.Keys
}

// authorizeStep sends the browser to an authorization URL once and
// returns the answer without following it.
func authorizeStep(b *browser, authURL string) (*http.Response, []byte) {
	b.t.Helper()
	return b.getPage(authURL)
}

// codeFor runs the authorization-code flow to the redirect and returns the
// code (no exchange).
func (e *attackEnv) codeFor(t testing.TB, conf *oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	t.Helper()
	b := newBrowser(t, e.tg.URL)
	state := randomName("state-")
	back := b.authorize(conf.AuthCodeURL(state, opts...), platformRedirect, "alice", alicePassword)
	if back.Query().Get("error") != "" || back.Query().Get("code") == "" {
		t.Fatalf("authorization: %s", back)
	}
	return back.Query().Get("code")
}

var attacks = []attack{
	{
		name:       "agent self-approval with its own bearer token",
		protection: "consent.mustSession: approvals take a first-party session only; an Authorization header is refused",
		// Without mustSession's Authorization check: the host authenticator
		// (cookie only) still finds no session, so the answer would be 401,
		// never an approval; the row asserts a 4xx and, what matters, that
		// no grant appears. Checked by reasoning, and by consent's own unit
		// test with an authenticator that (wrongly) accepts bearer tokens.
		run: func(t *testing.T, e *attackEnv) {
			for _, tok := range []string{e.agent.Raw, e.user.AccessToken} {
				resp, body := anon(t, http.MethodPost, e.tg.URL+"/agent/approve", map[string]string{
					"Authorization": "Bearer " + tok, "Content-Type": "application/json", "Origin": e.tg.URL,
				}, jsonBody(t, map[string]any{"organization": demoOrg, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{"projects:write"}, "decision": "approve"}))
				want4xx(t, "approval with a bearer token", resp.StatusCode, body, http.StatusUnauthorized, http.StatusForbidden)
			}
			if s := e.mintScopes(t, e.session); slices.Contains(s, "projects:write") {
				t.Fatalf("the agent approved itself: scopes %v", s)
			}
		},
	},
	{
		name:       "approval body naming another user",
		protection: "consent: the approver is the session's user, never a field of the body",
		// Without it: carol's approval naming alice would land on alice's
		// binding and alice's agent would mint projects:write; checked by
		// reasoning (the story test covers the same binding from the
		// other side).
		run: func(t *testing.T, e *attackEnv) {
			name, pw := randomName("carol-"), randomName("pw-")
			e.tg.cli(t, "users", "create", "--username", name, "--password", pw, "--org", demoOrg, "--scope", "projects:read projects:write")
			carol := newBrowser(t, e.tg.URL)
			carol.login(name, pw)
			aliceID, _ := e.agent.Claims["sub"].(string)
			var out map[string]any
			status, body := carol.jsonCall(http.MethodPost, "/agent/approve", map[string]any{
				"organization": demoOrg, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{"projects:write"}, "decision": "approve",
				"userId": aliceID, "user_id": aliceID, "user": "alice", "username": "alice", "approver": aliceID,
			}, &out)
			no5xx(t, "approval naming alice", status, body)
			if status == http.StatusOK && out["userId"] == aliceID {
				t.Fatalf("the grant was written for alice: %s", body)
			}
			if s := e.mintScopes(t, e.session); slices.Contains(s, "projects:write") {
				t.Fatalf("carol's approval reached alice's agent: %v", s)
			}
			if g := grantFor(grants(t, e.alice), e.session); g != nil {
				t.Fatalf("alice has a grant she never gave: %v", g)
			}
		},
	},
	{
		name:       "an agent client writing after its user revoked the approval",
		protection: "flows.Approvals: an agent client's write scopes count only while the approval (an agent grant bound to the authorization) lasts: at the middleware, at introspection and at every refresh",
		// Without it: alice revokes, on her grants page, the write she
		// approved for an MCP client, and the client keeps writing with its
		// live access token and with every token it refreshes, for as long
		// as the refresh token lives (30 days). Checked by making
		// Approvals.Cap return its input unchanged: the row fails at the
		// live token's write after the revocation, on both dialects.
		run: func(t *testing.T, e *attackEnv) {
			c := e.tg.cli(t, "clients", "create", "--name", randomName("mcp-client-"), "--grant", "authorization_code",
				"--grant", "refresh_token", "--redirect-uri", platformRedirect,
				"--scope", "projects:read projects:write offline_access", "--public", "--agent")
			conf := &oauth2.Config{
				ClientID: str(t, c, "client_id"), RedirectURL: platformRedirect,
				Scopes:   []string{"projects:read", "projects:write", "offline_access"},
				Endpoint: oauth2.Endpoint{AuthURL: e.tg.URL + "/oauth2/auth", TokenURL: e.tg.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
			}
			verifier := oauth2.GenerateVerifier()
			authURL := conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(verifier))
			if resp, page := e.alice.getPage(authURL); resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "approval that lasts") {
				t.Fatalf("consent page for an agent client: %d\n%s", resp.StatusCode, truncate(page))
			}
			resp, body := e.alice.postForm(authURL, url.Values{"decision": {"allow"}})
			back, err := url.Parse(resp.Header.Get("Location"))
			if resp.StatusCode/100 != 3 || err != nil || back.Query().Get("code") == "" {
				t.Fatalf("allow: %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), truncate(body))
			}
			tok, err := conf.Exchange(context.Background(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			// Control: with the approval, it writes.
			callAPI(t, e.tg.URL, http.MethodPost, demoOrg, tok.AccessToken).wantStatus(t, "writing with the approval", http.StatusCreated)
			var grantID string
			for _, g := range grants(t, e.alice) {
				if g["clientId"] == conf.ClientID {
					grantID, _ = g["id"].(string)
				}
			}
			if grantID == "" {
				t.Fatalf("the approval is not among alice's grants: %v", grants(t, e.alice))
			}
			if status, body := e.alice.jsonCall(http.MethodDelete, "/agent/grants/"+url.PathEscape(grantID), nil, nil); status != http.StatusNoContent {
				t.Fatalf("revoking the approval: %d %s", status, body)
			}
			callAPI(t, e.tg.URL, http.MethodPost, demoOrg, tok.AccessToken).wantStatus(t, "the live token writing after the revocation", http.StatusForbidden)
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "the live token reading after the revocation", http.StatusOK)
			fresh, err := conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if s, _ := fresh.Extra("scope").(string); slices.Contains(scope.Parse(s), "projects:write") {
				t.Fatalf("refreshed after the revocation with %q", s)
			}
			callAPI(t, e.tg.URL, http.MethodPost, demoOrg, fresh.AccessToken).wantStatus(t, "a refreshed token writing after the revocation", http.StatusForbidden)
		},
	},
	{
		name:       "another agent platform reusing an approved session id",
		protection: "grants bound to (organization, user, client, session): storage.AgentGrantScopes matches the minting client",
		// Without it: alice approves projects:write for her platform's
		// session, and any other platform allowed the agent grant that
		// names the same session id for her mints projects:write and
		// writes (the grant was keyed by organization, user and session).
		// Checked by removing "client_id = ?" from AgentGrantScopes' query
		// (the parameter bound to a tautology): the row fails with
		// projects:write minted for the other platform, on both dialects.
		run: func(t *testing.T, e *attackEnv) {
			session := randomName("sess-")
			other := newPlatform(t, e.tg)
			otherUser := other.userToken(t, newBrowser(t, e.tg.URL), "alice", alicePassword, "projects:read", "projects:write")
			status, grant, body := approve(e.alice, demoOrg, e.plat.ID, session, "projects:write")
			if status != http.StatusOK || grant["clientId"] != e.plat.ID {
				t.Fatalf("alice approving for her platform: %d %s", status, body)
			}
			// Control: the platform she approved writes.
			if s := e.mintScopes(t, session); !slices.Contains(s, "projects:write") {
				t.Fatalf("control: the approved platform minted %v", s)
			}
			// The other platform, alice's own token, the same session id.
			agt := other.mint(t, otherUser.AccessToken, session, demoOrg)
			if agt.has("projects:write") {
				t.Fatalf("another platform minted alice's approval: scopes %v", agt.Scopes)
			}
			r := callAPI(t, e.tg.URL, http.MethodPost, demoOrg, agt.Raw)
			r.wantStatus(t, "the other platform writing", http.StatusForbidden)
			// Its refusal sends alice to approve that platform, by name.
			var refusal struct {
				ApprovalURL string `json:"approval_url"`
			}
			if err := json.Unmarshal(r.Body, &refusal); err != nil {
				t.Fatalf("403 body: %v\n%s", err, r.Body)
			}
			au, err := url.Parse(refusal.ApprovalURL)
			if err != nil || au.Query().Get("client") != other.ID || au.Query().Get("session") != session {
				t.Fatalf("approval URL %q does not name client %s and session %s", refusal.ApprovalURL, other.ID, session)
			}
			resp, page := e.alice.getPage(au.RequestURI())
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), other.ID) || strings.Contains(string(page), e.plat.ID) {
				t.Fatalf("approval page for the other platform: %d, names it: %v\n%s", resp.StatusCode, strings.Contains(string(page), other.ID), truncate(page))
			}
			// An approval for a client that does not exist is refused.
			status, _, body = approve(e.alice, demoOrg, randomName("no-such-platform-"), session, "projects:write")
			want4xx(t, "approval for an unknown client", status, body, http.StatusBadRequest)
			// Alice's grants name the platform each is for.
			if g := grantFor(grants(t, e.alice), session); g == nil || g["clientId"] != e.plat.ID {
				t.Fatalf("alice's grant for %s: %v", session, g)
			}
		},
	},
	{
		name:       "cross-site approval POST",
		protection: "net/http.CrossOriginProtection on the consent POST routes",
		// Without it: the cookie rides along and the POST is an approval
		// alice never made (200, projects:write minted). Checked by
		// removing the guard in consent.Register: the row fails with 200.
		run: func(t *testing.T, e *attackEnv) {
			session := randomName("sess-")
			body := approveBodyJSON(t, e.plat.ID, session, "projects:write")
			for _, h := range []map[string]string{
				{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", "Content-Type": "application/json"},
				{"Origin": "https://evil.example", "Content-Type": "application/json"},
				{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/x-www-form-urlencoded"},
			} {
				var rd io.Reader = bytes.NewReader(body)
				if h["Content-Type"] != "application/json" {
					rd = strings.NewReader(url.Values{"organization": {demoOrg}, "clientId": {e.plat.ID}, "sessionId": {session}, "scopes": {"projects:write"}, "decision": {"approve"}}.Encode())
				}
				resp, data := e.alice.send(http.MethodPost, "/agent/approve", h, rd)
				want4xx(t, fmt.Sprintf("cross-site approval %v", h), resp.StatusCode, data, http.StatusForbidden)
			}
			if s := e.mintScopes(t, session); slices.Contains(s, "projects:write") {
				t.Fatalf("a cross-site POST approved: %v", s)
			}
			// Control: the same request from the site itself is accepted.
			resp, data := e.alice.send(http.MethodPost, "/agent/approve", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": e.tg.URL, "Content-Type": "application/json"}, bytes.NewReader(body))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("control: same-origin approval: %d %s", resp.StatusCode, data)
			}
		},
	},
	{
		name:       "framed consent page",
		protection: "X-Frame-Options DENY and CSP frame-ancestors 'none' on every page (secheaders.SetSecurityHeaders)",
		// Without it: another site frames the Approve button under a decoy
		// (clickjacking). Checked by emptying secheaders.SetSecurityHeaders:
		// the row fails on every page, host's and consent's.
		run: func(t *testing.T, e *attackEnv) {
			q := url.Values{"organization": {demoOrg}, "client": {e.plat.ID}, "session": {e.session}, "scope": {"projects:write"}}
			pages := []string{"/agent/approve?" + q.Encode(), "/agent/grants", "/login", "/", "/settings/apps"}
			for _, p := range pages {
				resp, body := e.alice.getPage(p)
				no5xx(t, p, resp.StatusCode, body)
				h := resp.Header
				csp := h.Get("Content-Security-Policy")
				if h.Get("X-Frame-Options") != "DENY" || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
					t.Errorf("%s: X-Frame-Options %q, CSP %q", p, h.Get("X-Frame-Options"), csp)
				}
				if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" {
					t.Errorf("%s: nosniff %q, Referrer-Policy %q", p, h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
				}
			}
		},
	},
	{
		name:       "scope escalation in approval",
		protection: "consent.approve grants the intersection of the request with what the approver holds today",
		// Without it: bob (projects:read) would grant projects:write and his
		// agent would write. Checked by replacing the intersection in
		// consent.approve with the request: the row fails (200, and a grant
		// holding projects:write).
		run: func(t *testing.T, e *attackEnv) {
			session := randomName("sess-")
			status, _, body := approve(e.bob, demoOrg, e.plat.ID, session, "projects:write")
			want4xx(t, "bob approving projects:write", status, body, http.StatusForbidden)
			status, out, body := approve(e.bob, demoOrg, e.plat.ID, session, "projects:read", "projects:write")
			if status != http.StatusOK {
				t.Fatalf("bob approving read+write: %d %s", status, body)
			}
			if sc, _ := out["scopes"].([]any); slices.Contains(sc, any("projects:write")) || !slices.Contains(sc, any("projects:read")) {
				t.Fatalf("bob's grant: %s", body)
			}
			g := grantFor(grants(t, e.bob), session)
			if g == nil {
				t.Fatal("bob's grant is not listed")
			}
			if sc, _ := g["scopes"].([]any); slices.Contains(sc, any("projects:write")) {
				t.Fatalf("stored grant holds projects:write: %v", g)
			}
		},
	},
	{
		name:       "agent token for org A used on org B",
		protection: "AgentVerifier.checkClaims: the token's org must be the request's",
		// Without it: alice's acme token reads globex's projects (200).
		// Checked by removing the org comparison in checkClaims: the row
		// fails with 200.
		run: func(t *testing.T, e *attackEnv) {
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, e.agent.Raw).wantStatus(t, "control: own org", http.StatusOK)
			for _, org := range []string{"globex", "ACME", demoOrg + "x"} {
				r := callAPI(t, e.tg.URL, http.MethodGet, org, e.agent.Raw)
				r.wantStatus(t, "agent token on "+org, http.StatusUnauthorized)
				if !strings.Contains(r.WWWAuthenticate, "invalid_token") {
					t.Errorf("%s: WWW-Authenticate %q", org, r.WWWAuthenticate)
				}
			}
		},
	},
	{
		name:       "alg:none, HS256 with the public key, kid injection",
		protection: "AgentVerifier: the key named by kid decides the algorithm; a signature by that key is required",
		// Without it: a token with alg none, or HMAC'd with the published
		// key, would be taken as alice's (200). Checked by reasoning; the
		// control shows the payload itself is valid.
		run: func(t *testing.T, e *attackEnv) {
			parts := strings.Split(strings.TrimPrefix(e.agent.Raw, "dpy_agt_"), ".")
			payload := parts[1]
			keys := jwks(t, e.tg.URL)
			var pub []byte
			var pubJSON []byte
			for _, k := range keys {
				if k["kid"] == e.agent.Kid {
					x, _ := k["x"].(string)
					pub, _ = base64.RawURLEncoding.DecodeString(x)
					pubJSON, _ = json.Marshal(k)
				}
			}
			if pub == nil {
				t.Fatalf("the token's kid %q is not in the JWKS", e.agent.Kid)
			}
			attackerPub, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
			hs := func(key []byte, h string) string {
				m := hmac.New(sha256.New, key)
				m.Write([]byte(h + "." + payload))
				return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
			}
			ed := func(h string) string {
				return base64.RawURLEncoding.EncodeToString(ed25519.Sign(attackerKey, []byte(h+"."+payload)))
			}
			forged := map[string]string{}
			for _, alg := range []string{"none", "None", "NONE"} {
				h := jwtSeg(map[string]any{"alg": alg, "typ": "at+jwt", "kid": e.agent.Kid})
				forged["alg "+alg] = h + "." + payload + "."
			}
			hsHeader := jwtSeg(map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": e.agent.Kid})
			forged["HS256 keyed with the raw public key"] = hsHeader + "." + payload + "." + hs(pub, hsHeader)
			forged["HS256 keyed with the JWK JSON"] = hsHeader + "." + payload + "." + hs(pubJSON, hsHeader)
			forged["HS256 keyed with x"] = hsHeader + "." + payload + "." + hs([]byte(base64.RawURLEncoding.EncodeToString(pub)), hsHeader)
			for _, kid := range []string{"../../../../dev/null", "' OR '1'='1", `x" OR 1=1 --`, "", e.agent.Kid + "'; DROP TABLE signing_keys; --"} {
				h := jwtSeg(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": kid})
				forged["kid "+kid] = h + "." + payload + "." + ed(h)
			}
			jwk := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(attackerPub), "kid": "attacker"}
			h := jwtSeg(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker", "jwk": jwk})
			forged["embedded jwk"] = h + "." + payload + "." + ed(h)
			h = jwtSeg(map[string]any{"alg": "EdDSA", "typ": "at+jwt", "kid": e.agent.Kid})
			forged["real kid, attacker's signature"] = h + "." + payload + "." + ed(h)
			for name, tok := range forged {
				r := callAPI(t, e.tg.URL, http.MethodGet, demoOrg, "dpy_agt_"+tok)
				if r.Status != http.StatusUnauthorized {
					t.Errorf("%s: status %d, want 401\n%s", name, r.Status, r.Body)
				}
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, e.agent.Raw).wantStatus(t, "control: the real token", http.StatusOK)
			if len(jwks(t, e.tg.URL)) != len(keys) {
				t.Error("the key set changed under kid injection")
			}
		},
	},
	{
		name:       "a deleted secret, another app's secret, a secret differing in one byte",
		protection: "client authentication: SHA-256 of the presented secret against the app's live secrets",
		// Without it: any of these secrets would mint alice's app a token.
		// Checked by reasoning; the control shows the app's other secret
		// still works, so each refusal is the secret's.
		run: func(t *testing.T, e *attackEnv) {
			a := createOwnedApp(t, e.alice, "projects:read")
			_, second := createSecret(t, e.alice, a.ID)
			if status, body := e.alice.jsonCall(http.MethodDelete, "/api/apps/"+a.ID+"/secrets/"+a.SecretID, nil, nil); status != http.StatusNoContent {
				t.Fatalf("delete secret: %d %s", status, body)
			}
			flip := []byte(second)
			flip[len(flip)-1] ^= 1
			for name, s := range map[string]string{"deleted": a.Secret, "another app's": e.bobApp.Secret, "one byte off": string(flip), "prefix only": second[:len(second)-1], "with a byte more": second + "A"} {
				if _, code := ccToken(e.tg.URL, a, s); code != "invalid_client" {
					t.Errorf("%s secret: %q, want invalid_client", name, code)
				}
			}
			if _, code := ccToken(e.tg.URL, a, second); code != "" {
				t.Fatalf("control: the live secret: %s", code)
			}
		},
	},
	{
		name:       "a token after its app was deleted",
		protection: "app deletion cascades to its tokens; token lookup is by stored row",
		// Without the cascade: the deleted app's token keeps reading alice's
		// projects (200). Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			a := createOwnedApp(t, e.alice, "projects:read")
			tok, code := ccToken(e.tg.URL, a, a.Secret)
			if code != "" {
				t.Fatalf("token: %s", code)
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "control: before deletion", http.StatusOK)
			if status, body := e.alice.jsonCall(http.MethodDelete, "/api/apps/"+a.ID, nil, nil); status != http.StatusNoContent {
				t.Fatalf("delete app: %d %s", status, body)
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "token of a deleted app", http.StatusUnauthorized)
			if _, code := ccToken(e.tg.URL, a, a.Secret); code != "invalid_client" {
				t.Errorf("new token for a deleted app: %q", code)
			}
		},
	},
	{
		name:       "a client-credentials token after its owner was disabled",
		protection: "OpaqueVerifier and the owned client-credentials grant re-check the owner with the Directory on every use (the token endpoint's kept answer only while the user's revision, moved on by users disable, is unchanged)",
		// Without the re-check: the disabled user's robot keeps acting for
		// them (200) until the token expires. Without the revision moved on
		// by the CLI (a second process), the server's kept answer issued
		// the new token: checked by removing it (the test failed).
		run: func(t *testing.T, e *attackEnv) {
			name, pw := randomName("dave-"), randomName("pw-")
			e.tg.cli(t, "users", "create", "--username", name, "--password", pw, "--org", demoOrg, "--scope", "projects:read")
			dave := newBrowser(t, e.tg.URL)
			dave.login(name, pw)
			a := createOwnedApp(t, dave, "projects:read")
			tok, code := ccToken(e.tg.URL, a, a.Secret)
			if code != "" {
				t.Fatalf("token: %s", code)
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "control: before disabling", http.StatusOK)
			e.tg.cli(t, "users", "disable", "--username", name)
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "token of a disabled owner", http.StatusUnauthorized)
			if _, code := ccToken(e.tg.URL, a, a.Secret); code == "" {
				t.Error("a disabled owner's app still gets tokens")
			}
		},
	},
	{
		name:       "a disabled user's refresh token",
		protection: "flows.RefreshTokenGrantHandler re-checks the token's user with the Directory (EffectiveScopes), as every other use of a stored token does",
		// Without it: the disabled user's refresh token keeps minting token
		// pairs (200), the access tokens dead at the API but the refresh
		// chain alive, and live again the moment the account is re-enabled.
		// Checked by removing the re-check from HandleTokenEndpointRequest:
		// the row fails with 200 on both dialects (and plugin's
		// TestRefreshRechecksUser, which also covers lost scopes, fails).
		run: func(t *testing.T, e *attackEnv) {
			name, pw := randomName("erin-"), randomName("pw-")
			e.tg.cli(t, "users", "create", "--username", name, "--password", pw, "--org", demoOrg, "--scope", "projects:read")
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			tok := e.plat.userToken(t, newBrowser(t, e.tg.URL), name, pw, "projects:read", "offline_access")
			if tok.RefreshToken == "" {
				t.Fatal("no refresh token with offline_access")
			}
			tok, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil {
				t.Fatalf("control: refresh before disabling: %v", err)
			}
			e.tg.cli(t, "users", "disable", "--username", name)
			if _, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); tokenError(err) != "invalid_grant" {
				t.Errorf("refresh for a disabled user: %q, want invalid_grant", tokenError(err))
			}
		},
	},
	{
		name:       "authorization code used twice",
		protection: "fosite: a used code is refused, and the tokens issued for it are revoked (RFC 6749 §4.1.2)",
		// Without it: an intercepted code replayed later mints a second
		// token set, and the first set lives on. Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			v := oauth2.GenerateVerifier()
			code := e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
			first, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(v))
			if err != nil {
				t.Fatalf("first exchange: %v", err)
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, first.AccessToken).wantStatus(t, "control: first token", http.StatusOK)
			if _, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(v)); tokenError(err) != "invalid_grant" {
				t.Fatalf("second exchange: %q, want invalid_grant", tokenError(err))
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, first.AccessToken).wantStatus(t, "access token of a replayed code", http.StatusUnauthorized)
			if first.RefreshToken == "" {
				t.Fatal("no refresh token with offline_access")
			}
			if _, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: first.RefreshToken}).Token(); tokenError(err) != "invalid_grant" {
				t.Errorf("refresh token of a replayed code: %q, want invalid_grant", tokenError(err))
			}
		},
	},
	{
		name:       "refresh token used after rotation",
		protection: "fosite refresh rotation: a refresh token is single-use",
		// Without it: a stolen refresh token works alongside the client's
		// for ever. Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			v := oauth2.GenerateVerifier()
			code := e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
			tok, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(v))
			if err != nil || tok.RefreshToken == "" {
				t.Fatalf("exchange: %v (refresh token %q)", err, tok.RefreshToken)
			}
			next, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
			if err != nil || next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
				t.Fatalf("rotation: %v", err)
			}
			if _, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); tokenError(err) != "invalid_grant" {
				t.Fatalf("the rotated-out refresh token: %q, want invalid_grant", tokenError(err))
			}
		},
	},
	{
		name:       "parallel refreshes of one refresh token",
		protection: "storage.RotateRefreshToken retires only the presented token while it is still active (conditional UPDATE, row count checked); the refresh grant answers a lost rotation as reuse: invalid_grant, and the whole family revoked (RFC 9700 §4.14.2)",
		// Without the conditional rotation: several of the 20 (on
		// PostgreSQL up to all of them) answer 200 and as many refresh
		// tokens of one grant are active at once. Without the refresh
		// grant's handling of a lost rotation: the losers get fosite's
		// invalid_request and nothing is revoked, so the winner's pair
		// lives on. Checked by removing each: the row fails on both
		// dialects (several 200s; invalid_request and a live winner).
		run: func(t *testing.T, e *attackEnv) {
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			for round := range raceRounds {
				v := oauth2.GenerateVerifier()
				tok, err := conf.Exchange(oauthCtx(), e.codeFor(t, conf, oauth2.S256ChallengeOption(v)), oauth2.VerifierOption(v))
				if err != nil || tok.RefreshToken == "" {
					t.Fatalf("round %d: exchange: %v (refresh token %q)", round, err, tok.RefreshToken)
				}
				form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
				wins := testkit.RaceTokenRequests(t, httpClient, e.tg.URL+"/oauth2/token", e.plat.ID, e.plat.Secret, form, raceWidth, "invalid_grant")
				if len(wins) != 1 {
					t.Fatalf("round %d: %d of %d parallel refreshes of one token succeeded, want exactly 1", round, len(wins), raceWidth)
				}
				// The losers are reuse: the family, the winner's new pair
				// included, is revoked.
				won := wins[0]
				if _, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: won.RefreshToken}).Token(); tokenError(err) != "invalid_grant" {
					t.Errorf("round %d: the winner's refresh token after reuse: %q, want invalid_grant", round, tokenError(err))
				}
				callAPI(t, e.tg.URL, http.MethodGet, demoOrg, won.AccessToken).wantStatus(t, "the winner's access token after reuse", http.StatusUnauthorized)
			}
		},
	},
	{
		name:       "parallel redemptions of one authorization code",
		protection: "the authorization-code grant and PKCE: one redemption wins; a code already redeemed, or redeemed concurrently, is invalid_grant, never a 500",
		// Without it: fosite's PKCE handler answers the losers whose
		// DeletePKCERequestSession finds nothing with server_error (500):
		// 1 to 11 of 20 on both dialects. Checked by removing the PKCE
		// grant's mapping: the row fails with 500s on both dialects.
		run: func(t *testing.T, e *attackEnv) {
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			for round := range raceRounds {
				v := oauth2.GenerateVerifier()
				code := e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
				form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {platformRedirect}, "code_verifier": {v}}
				wins := testkit.RaceTokenRequests(t, httpClient, e.tg.URL+"/oauth2/token", e.plat.ID, e.plat.Secret, form, raceWidth, "invalid_grant")
				if len(wins) != 1 {
					t.Fatalf("round %d: %d of %d parallel redemptions of one code succeeded, want exactly 1", round, len(wins), raceWidth)
				}
			}
		},
	},
	{
		name:       "PKCE plain and a wrong verifier",
		protection: "fosite PKCE: S256 enforced, plain disabled, verifier checked",
		// Without it: a stolen code is redeemable without the verifier.
		// Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			conf := e.plat.oauth2Config("projects:read")
			v := oauth2.GenerateVerifier()
			plain := conf.AuthCodeURL(randomName("state-"), oauth2.SetAuthURLParam("code_challenge", v), oauth2.SetAuthURLParam("code_challenge_method", "plain"))
			resp, body := authorizeStep(e.alice, plain)
			no5xx(t, "PKCE plain", resp.StatusCode, body)
			if loc := resp.Header.Get("Location"); strings.Contains(loc, "code=") {
				t.Errorf("PKCE plain got a code: %s", loc)
			}
			code := e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
			if _, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(oauth2.GenerateVerifier())); tokenError(err) != "invalid_grant" {
				t.Errorf("wrong verifier: %q, want invalid_grant", tokenError(err))
			}
			code = e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
			if _, err := conf.Exchange(oauthCtx(), code); tokenError(err) != "invalid_grant" && tokenError(err) != "invalid_request" {
				t.Errorf("no verifier: %q", tokenError(err))
			}
			// No challenge at all is refused too (PKCE enforced).
			resp, body = authorizeStep(e.alice, conf.AuthCodeURL(randomName("state-")))
			no5xx(t, "no PKCE", resp.StatusCode, body)
			if loc := resp.Header.Get("Location"); strings.Contains(loc, "code=") {
				t.Errorf("no PKCE got a code: %s", loc)
			}
		},
	},
	{
		name:       "redirect URI differing by a trailing slash or case",
		protection: "fosite exact redirect URI matching",
		// Without it: the code goes to a URI the client never registered
		// (an open redirector or another origin). Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			for _, bad := range []string{platformRedirect + "/", strings.ToUpper(platformRedirect), strings.Replace(platformRedirect, "callback", "Callback", 1), platformRedirect + "?x=1", "http://127.0.0.1.evil.example/agent-platform/callback"} {
				conf := e.plat.oauth2Config("projects:read")
				conf.RedirectURL = bad
				resp, body := authorizeStep(e.alice, conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				no5xx(t, bad, resp.StatusCode, body)
				if loc := resp.Header.Get("Location"); loc != "" && !strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, e.tg.URL) {
					t.Errorf("redirect_uri %q: redirected to %s", bad, loc)
				}
				if resp.StatusCode/100 == 2 || resp.StatusCode/100 == 3 && strings.Contains(resp.Header.Get("Location"), "code=") {
					t.Errorf("redirect_uri %q: status %d", bad, resp.StatusCode)
				}
			}
		},
	},
	{
		name:       "a confidential client's loopback redirect at another port",
		protection: "plugin.CheckAuthorizeRequest (protocol.RedirectURIAllowed), in the host's authorization endpoint through plugin.NewAuthorizeRequest: a registered redirect URI matches exactly; RFC 8252's any-port loopback rule only for a public client that registered a loopback URI without a port",
		// Without it: fosite sends the code of a client registered at
		// http://127.0.0.1:9/cb to http://127.0.0.1:8765/cb, to whatever
		// listens on that port of the user's machine. Checked by removing
		// the check from CheckAuthorizeRequest: the row fails with a 303
		// carrying code= to port 8765 on both dialects.
		run: func(t *testing.T, e *attackEnv) {
			client := func(redirect string, public bool) *oauth2.Config {
				args := []string{"clients", "create", "--name", randomName("loopback-"), "--grant", "authorization_code",
					"--redirect-uri", redirect, "--scope", "projects:read", "--first-party"}
				if public {
					args = append(args, "--public")
				}
				out := e.tg.cli(t, args...)
				c := &oauth2.Config{ClientID: str(t, out, "client_id"), RedirectURL: redirect,
					Endpoint: oauth2.Endpoint{AuthURL: e.tg.URL + "/oauth2/auth", TokenURL: e.tg.URL + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
				if !public {
					c.ClientSecret = str(t, out, "client_secret")
				} else {
					c.Endpoint.AuthStyle = oauth2.AuthStyleInParams
				}
				return c
			}
			const other = "http://127.0.0.1:8765/cb"
			for _, tc := range []struct {
				name string
				conf *oauth2.Config
				use  string
				ok   bool
			}{
				{"confidential at :9, asked for :8765", client("http://127.0.0.1:9/cb", false), other, false},
				{"confidential without a port, asked for :8765", client("http://127.0.0.1/cb", false), other, false},
				{"public at :9, asked for :8765", client("http://127.0.0.1:9/cb", true), other, false},
				// Controls: the exact URI, and the native app's any-port rule.
				{"confidential at :9, exact", client("http://127.0.0.1:9/cb", false), "http://127.0.0.1:9/cb", true},
				{"public without a port, asked for :8765", client("http://127.0.0.1/cb", true), other, true},
			} {
				conf := *tc.conf
				conf.RedirectURL = tc.use
				v := oauth2.GenerateVerifier()
				resp, body := authorizeStep(e.alice, conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(v)))
				no5xx(t, tc.name, resp.StatusCode, body)
				loc := resp.Header.Get("Location")
				if !tc.ok {
					if strings.Contains(loc, "code=") || resp.StatusCode != http.StatusBadRequest {
						t.Errorf("%s: %d, Location %q; want 400 and no code", tc.name, resp.StatusCode, loc)
					}
					continue
				}
				u, err := url.Parse(loc)
				if err != nil || !strings.HasPrefix(loc, tc.use+"?") || u.Query().Get("code") == "" {
					t.Errorf("control %s: %d, Location %q", tc.name, resp.StatusCode, loc)
					continue
				}
				if _, err := conf.Exchange(oauthCtx(), u.Query().Get("code"), oauth2.VerifierOption(v)); err != nil {
					t.Errorf("control %s: exchange: %v", tc.name, err)
				}
			}
		},
	},
	{
		name:       "another user's app, secret or grant id on every route",
		protection: "apps.Service.Get (behind every apps API route) and consent's per-user grant lookup: anything not yours is 404",
		// Without it: bob reads, changes, deletes alice's app, mints
		// secrets for it, revokes her grant. Checked by removing the owner
		// check in apps.Service.Get: GET and PUT answer 200, DELETE 204.
		run: func(t *testing.T, e *attackEnv) {
			session := randomName("sess-")
			status, grant, body := approve(e.alice, demoOrg, e.plat.ID, session, "projects:write")
			if status != http.StatusOK {
				t.Fatalf("alice approving: %d %s", status, body)
			}
			grantID := str(t, grant, "id")
			app := "/api/apps/" + e.aliceApp.ID
			routes := []struct {
				method, path string
				body         any
			}{
				{http.MethodGet, app, nil},
				{http.MethodPut, app, map[string]any{"name": "owned by bob", "scopes": []string{"projects:read"}}},
				{http.MethodDelete, app, nil},
				{http.MethodGet, app + "/secrets", nil},
				{http.MethodPost, app + "/secrets", struct{}{}},
				{http.MethodDelete, app + "/secrets/" + e.aliceApp.SecretID, nil},
				{http.MethodDelete, "/api/apps/" + e.bobApp.ID + "/secrets/" + e.aliceApp.SecretID, nil},
				{http.MethodDelete, "/api/authorized-apps/" + e.plat.ID, nil},
				{http.MethodDelete, "/agent/grants/" + grantID, nil},
				{http.MethodPost, "/agent/grants/" + grantID + "/revoke", nil},
			}
			for _, r := range routes {
				status, body := e.bob.jsonCall(r.method, r.path, r.body, nil)
				if status != http.StatusNotFound {
					t.Errorf("bob %s %s: %d, want 404\n%s", r.method, r.path, status, body)
				}
			}
			// All of alice's things are intact.
			if _, code := ccToken(e.tg.URL, e.aliceApp, e.aliceApp.Secret); code != "" {
				t.Errorf("alice's app after bob's attempts: %s", code)
			}
			var a map[string]any
			if status, body := e.alice.jsonCall(http.MethodGet, app, nil, &a); status != http.StatusOK || a["name"] == "owned by bob" {
				t.Errorf("alice's app: %d %s", status, body)
			}
			if g := grantFor(grants(t, e.alice), session); g == nil {
				t.Error("alice's grant is gone")
			}
		},
	},
	{
		name:       "SQL metacharacters in every string field",
		protection: "bound parameters everywhere, and input validation",
		// Without it: a 500 (syntax error) or worse, rows of others read or
		// tables dropped. Checked by reasoning: the row asserts no 5xx and
		// that everything still works afterwards. It found a real 500: a
		// NUL byte makes PostgreSQL refuse the query (22021); without
		// storage.ErrInvalidInput in the internal-error paths the row fails
		// on PostgreSQL (grant id, app id, login username).
		run: func(t *testing.T, e *attackEnv) {
			evil := []string{`x'; DROP TABLE clients; --`, `' OR '1'='1`, `"; DELETE FROM agent_grants; --`, `\'; SELECT pg_sleep(0); --`, "a\x00b"}
			for _, s := range evil {
				// App name: stored verbatim or refused, never a 500.
				var app map[string]any
				var resp *http.Response
				status, body := e.alice.jsonCall(http.MethodPost, "/api/apps", map[string]any{"name": s, "scopes": []string{"projects:read"}}, &app)
				no5xx(t, "app name "+s, status, body)
				if status == http.StatusCreated {
					if app["name"] != strings.TrimSpace(s) {
						t.Errorf("app name stored as %q, sent %q", app["name"], s)
					}
					e.alice.jsonCall(http.MethodDelete, "/api/apps/"+str(t, app, "id"), nil, nil)
				}
				// Agent session id, organization, scope at the token endpoint.
				for _, form := range []url.Values{
					{"agent_session_id": {s}, "organization": {demoOrg}},
					{"agent_session_id": {e.session}, "organization": {s}},
					{"agent_session_id": {e.session}, "organization": {demoOrg}, "scope": {s}},
				} {
					form.Set("grant_type", agentTokenGrant)
					form.Set("subject_token", e.user.AccessToken)
					form.Set("subject_token_type", accessTokenType)
					resp, body = tokenForm(t, e.tg.URL, e.plat.ID, e.plat.Secret, form)
					want4xx(t, fmt.Sprintf("mint with %v", form), resp.StatusCode, body)
				}
				// Approval fields.
				for _, b := range []map[string]any{
					{"organization": s, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{"projects:read"}, "decision": "approve"},
					{"organization": demoOrg, "clientId": s, "sessionId": e.session, "scopes": []string{"projects:read"}, "decision": "approve"},
					{"organization": demoOrg, "clientId": e.plat.ID, "sessionId": s, "scopes": []string{"projects:read"}, "decision": "approve"},
					{"organization": demoOrg, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{s}, "decision": "approve"},
					{"organization": demoOrg, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{"projects:read"}, "decision": s},
				} {
					status, body := e.alice.jsonCall(http.MethodPost, "/agent/approve", b, nil)
					want4xx(t, fmt.Sprintf("approval %v", b), status, body)
				}
				// Client-credentials scope, API path org, grant id, app id.
				if _, err := e.aliceApp.config(e.tg.URL, s).Token(oauthCtx()); err == nil {
					t.Errorf("token with scope %q granted", s)
				} else if strings.Contains(tokenError(err), "status 5") {
					t.Errorf("token with scope %q: %v", s, err)
				}
				resp, body = tokenForm(t, e.tg.URL, s, s, url.Values{"grant_type": {"client_credentials"}})
				want4xx(t, "client_id "+s, resp.StatusCode, body)
				resp, body = tokenForm(t, e.tg.URL, e.aliceApp.ID, e.aliceApp.Secret, url.Values{"grant_type": {"client_credentials"}, "scope": {"projects:read"}, "organization": {s}})
				no5xx(t, "client-credentials organization "+s, resp.StatusCode, body)
				r := callAPI(t, e.tg.URL, http.MethodGet, s, e.agent.Raw)
				want4xx(t, "API org "+s, r.Status, r.Body)
				status, body = e.alice.jsonCall(http.MethodDelete, "/agent/grants/"+url.PathEscape(s), nil, nil)
				want4xx(t, "grant id "+s, status, body)
				status, body = e.alice.jsonCall(http.MethodGet, "/api/apps/"+url.PathEscape(s), nil, nil)
				want4xx(t, "app id "+s, status, body)
				// Username at login.
				b := newBrowser(t, e.tg.URL)
				resp, body = b.postForm("/login", url.Values{"username": {s}, "password": {s}, "return_to": {"/"}})
				no5xx(t, "login "+s, resp.StatusCode, body)
				if b.hasSession() {
					t.Errorf("login with username %q signed in", s)
				}
				resp, body = b.postForm("/login", url.Values{"username": {"alice" + s}, "password": {alicePassword}, "return_to": {"/"}})
				no5xx(t, "login alice"+s, resp.StatusCode, body)
				if b.hasSession() {
					t.Errorf("login with username alice%q signed in", s)
				}
			}
			// Tables intact: everything still works.
			newBrowser(t, e.tg.URL).login("alice", alicePassword)
			if _, code := ccToken(e.tg.URL, e.aliceApp, e.aliceApp.Secret); code != "" {
				t.Errorf("alice's app afterwards: %s", code)
			}
			if s := e.mintScopes(t, e.session); !slices.Contains(s, "projects:read") {
				t.Errorf("mint afterwards: %v", s)
			}
			grants(t, e.alice)
		},
	},
	{
		name:       "repeated parameters at every OAuth endpoint",
		protection: "plugin.TokenEndpointGuard (protocol.RepeatedParameter) before fosite at the token, introspection and revocation endpoints, and plugin.NewAuthorizeRequest (protocol.RepeatedAuthorizeParameter): a parameter included twice is invalid_request (RFC 6749 §3.1, §3.2)",
		// Without it: fosite acts on the first value and ignores the rest:
		// a code exchange, a refresh, a client-credentials token, an
		// introspection and a revocation all succeed with a second,
		// different value of grant_type, code, redirect_uri, code_verifier,
		// refresh_token, scope, client_id or token, and the authorization
		// endpoint issues a code. Checked by removing the check from
		// TokenEndpointGuard: the row fails on both dialects (a code
		// exchange with a second code or code_verifier answers 200; plugin's
		// TestRepeatedParameters fails at every token-endpoint case, and,
		// without the check in NewAuthorizeRequest, at every authorize case).
		run: func(t *testing.T, e *attackEnv) {
			invalidRequest := func(what string, resp *http.Response, body []byte) {
				t.Helper()
				var out struct {
					Error string `json:"error"`
				}
				if err := json.Unmarshal(body, &out); resp.StatusCode != http.StatusBadRequest || err != nil || out.Error != "invalid_request" {
					t.Errorf("%s: %d %s, want 400 invalid_request", what, resp.StatusCode, truncate(body))
				}
			}
			conf := e.plat.oauth2Config("projects:read", "offline_access")
			v := oauth2.GenerateVerifier()
			code := e.codeFor(t, conf, oauth2.S256ChallengeOption(v))
			exchange := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {platformRedirect}, "code_verifier": {v}}
			for key, second := range map[string]string{"grant_type": "client_credentials", "code": "dpy_ac_x.y", "redirect_uri": "http://127.0.0.1:8765/cb", "code_verifier": oauth2.GenerateVerifier(), "scope": "projects:write"} {
				resp, body := tokenForm(t, e.tg.URL, e.plat.ID, e.plat.Secret, testkit.Twice(exchange, key, second))
				invalidRequest("code exchange with "+key+" twice", resp, body)
			}
			tok, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(v))
			if err != nil || tok.RefreshToken == "" {
				t.Fatalf("control: the code is unspent: %v", err)
			}
			refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}}
			for key, second := range map[string]string{"refresh_token": "dpy_rt_x.y", "scope": "projects:read", "grant_type": "refresh_token"} {
				resp, body := tokenForm(t, e.tg.URL, e.plat.ID, e.plat.Secret, testkit.Twice(refresh, key, second))
				invalidRequest("refresh with "+key+" twice", resp, body)
			}
			if _, err := conf.TokenSource(oauthCtx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
				t.Fatalf("control: the refresh token is unspent: %v", err)
			}
			cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {e.aliceApp.ID}, "client_secret": {e.aliceApp.Secret}, "scope": {"projects:read"}}
			for key, second := range map[string]string{"scope": "projects:write", "client_id": e.bobApp.ID, "client_secret": e.bobApp.Secret, "grant_type": "client_credentials"} {
				resp, body := anon(t, http.MethodPost, e.tg.URL+"/oauth2/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, strings.NewReader(testkit.Twice(cc, key, second).Encode()))
				invalidRequest("client_credentials with "+key+" twice", resp, body)
			}
			at, code2 := ccToken(e.tg.URL, e.aliceApp, e.aliceApp.Secret)
			if code2 != "" {
				t.Fatalf("control: client_credentials: %s", code2)
			}
			for _, ep := range []string{"/oauth2/introspect", "/oauth2/revoke"} {
				req, _ := http.NewRequest(http.MethodPost, e.tg.URL+ep, strings.NewReader(url.Values{"token": {at.AccessToken, e.user.AccessToken}}.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(url.QueryEscape(e.plat.ID), url.QueryEscape(e.plat.Secret))
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				invalidRequest(ep+" with token twice", resp, body)
			}
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, at.AccessToken).wantStatus(t, "the token a refused revocation named first", http.StatusOK)
			authURL := conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(v))
			for _, extra := range []string{"client_id=" + e.bobApp.ID, "redirect_uri=" + url.QueryEscape("http://127.0.0.1:8765/cb"), "scope=projects:write", "state=" + randomName("state-"), "response_type=code", "code_challenge=" + oauth2.S256ChallengeFromVerifier(v)} {
				resp, body := authorizeStep(e.alice, authURL+"&"+extra)
				if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusBadRequest || strings.Contains(loc, "code=") {
					t.Errorf("authorize with %s twice: %d, Location %q\n%s", strings.SplitN(extra, "=", 2)[0], resp.StatusCode, loc, truncate(body))
				}
			}
		},
	},
	{
		name:       "oversized bodies and headers",
		protection: "body caps (64 KiB: MaxBytesReader, ClientAuthLimiter.MaxBody) and the server's MaxHeaderBytes",
		// Without them: memory for whatever a client sends, and a handler
		// error path that becomes a 500. Checked by reasoning.
		run: func(t *testing.T, e *attackEnv) {
			big := strings.Repeat("a", 100<<10)
			form := "grant_type=client_credentials&client_id=" + e.aliceApp.ID + "&pad=" + big
			resp, body := anon(t, http.MethodPost, e.tg.URL+"/oauth2/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, strings.NewReader(form))
			want4xx(t, "100 KiB token request", resp.StatusCode, body, http.StatusRequestEntityTooLarge, http.StatusBadRequest)
			resp, body = anon(t, http.MethodPost, e.tg.URL+"/oauth2/introspect", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, strings.NewReader("token="+big))
			want4xx(t, "100 KiB introspection request", resp.StatusCode, body, http.StatusRequestEntityTooLarge, http.StatusBadRequest, http.StatusUnauthorized)
			status, body := e.alice.jsonCall(http.MethodPost, "/api/apps", map[string]any{"name": big, "scopes": []string{"projects:read"}}, nil)
			want4xx(t, "100 KiB app", status, body, http.StatusRequestEntityTooLarge, http.StatusBadRequest)
			status, body = e.alice.jsonCall(http.MethodPost, "/agent/approve", map[string]any{"organization": demoOrg, "clientId": e.plat.ID, "sessionId": e.session, "scopes": []string{big}, "decision": "approve"}, nil)
			want4xx(t, "100 KiB approval", status, body, http.StatusRequestEntityTooLarge, http.StatusBadRequest)
			resp, body = newBrowser(t, e.tg.URL).postForm("/login", url.Values{"username": {big}, "password": {big}})
			want4xx(t, "100 KiB login", resp.StatusCode, body)
			for _, h := range []map[string]string{
				{"X-Padding": strings.Repeat("b", 100<<10)},
				{"Authorization": "Bearer dpy_agt_" + strings.Repeat("c", 100<<10)},
				{"Cookie": "deputy_session=" + strings.Repeat("d", 100<<10)},
			} {
				req, err := http.NewRequest(http.MethodGet, e.tg.URL+"/api/orgs/"+demoOrg+"/projects", nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range h {
					req.Header.Set(k, v)
				}
				resp, err := httpClient.Do(req)
				if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
					// The server closed the connection on the oversized
					// header before the client finished writing it: a
					// refusal, and certainly no 500.
					continue
				}
				if err != nil {
					t.Fatalf("100 KiB header: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want4xx(t, "100 KiB header", resp.StatusCode, body, http.StatusRequestHeaderFieldsTooLarge, http.StatusBadRequest)
			}
			// Just under the header cap but a huge token: refused, not a 500.
			r := callAPI(t, e.tg.URL, http.MethodGet, demoOrg, "dpy_agt_"+strings.Repeat("e", 32<<10))
			want4xx(t, "32 KiB bearer token", r.Status, r.Body, http.StatusUnauthorized)
		},
	},
	{
		name:       "repeated client-auth failures",
		protection: "ratelimit.ClientAuthLimiter on the token, introspection and revocation endpoints",
		// Without it: the 30 wrong secrets are 30 × 401 and guessing runs at
		// line speed. Checked by removing the limiter from registerOAuth2:
		// the row fails (no 429), as does the plugin's TestOAuthEndpointsWired.
		// (From the address that failed, the right secret waits too: the
		// limiter refuses before it could know the secret is right.)
		run: func(t *testing.T, e *attackEnv) {
			victim := createOwnedApp(t, e.alice, "projects:read")
			other := createOwnedApp(t, e.alice, "projects:read")
			var last *oauth2.RetrieveError
			for i := 0; i < 30; i++ {
				c := victim.config(e.tg.URL, "projects:read")
				c.ClientSecret = "dpy_cs_wrong"
				_, err := c.Token(oauthCtx())
				re, ok := err.(*oauth2.RetrieveError)
				if !ok {
					t.Fatalf("attempt %d: %v", i, err)
				}
				last = re
				if re.Response.StatusCode != http.StatusUnauthorized {
					break
				}
			}
			if last == nil || last.Response.StatusCode != http.StatusTooManyRequests || last.Response.Header.Get("Retry-After") == "" {
				t.Fatalf("after repeated failures: %+v", last)
			}
			// The right secret waits too: the bucket is checked first.
			if _, code := ccToken(e.tg.URL, victim, victim.Secret); code != "temporarily_unavailable" {
				t.Errorf("victim's right secret while limited: %q", code)
			}
			// Another client is unaffected.
			if _, code := ccToken(e.tg.URL, other, other.Secret); code != "" {
				t.Errorf("another client: %q", code)
			}
		},
	},
	{
		name:       "a burst of 300 wrong secrets from a stranger who knows only the client_id",
		protection: "ratelimit.ClientAuthLimiter reserves a failure before the secret comparison, from the client's shared allowance or its source's own; no debt; the outcome comes from fosite's error at the endpoint",
		// Without it: failures were charged when each answer was seen, with
		// no floor, and keyed by client_id alone, so guesses in flight
		// together were all compared and all charged, the debt grew with
		// every refused guess, and the client's right secret was refused
		// from everywhere for minutes (issue 13: 300 guesses, 3+ minutes on
		// PostgreSQL). Checked by putting back the previous limiter (with a
		// no-op Report): the row fails on both dialects (Retry-After of 40
		// and 289 s, the real client refused during and after the attack).
		// Admitting on tokens instead of free tokens (no reservation) fails
		// it on PostgreSQL with 300 × 401 (SQLite's single writer keeps the
		// burst serial); removing the per-source allowance fails it on both
		// with the real client refused during the attack.
		run: func(t *testing.T, e *attackEnv) {
			victim := createOwnedApp(t, e.alice, "projects:read")
			// The real client runs from its own address (127.0.0.2); the
			// stranger from the tests' usual 127.0.0.1. Against DEPUTY_URL
			// (docker's port forwarding) every request arrives from one
			// address, so that part is checked here only on our own
			// servers, and in internal/ratelimit's tests either way.
			ownAddress := os.Getenv("DEPUTY_URL") == ""
			real := sourceClient(t, "127.0.0.2")
			if ownAddress {
				if status, ra := postClientCredentials(t, real, e.tg.URL, victim.ID, victim.Secret); status != http.StatusOK {
					t.Fatalf("control: the real client before the burst: %d (Retry-After %q)", status, ra)
				}
			}

			const n = 300
			tr := loadTransport(n)
			tr.MaxConnsPerHost = 0
			stranger := &http.Client{Transport: tr, Timeout: 60 * time.Second}
			defer tr.CloseIdleConnections()
			statuses := make([]int, n)
			retry := make([]string, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			began := time.Now()
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					statuses[i], retry[i] = postClientCredentials(t, stranger, e.tg.URL, victim.ID, fmt.Sprintf("dpy_cs_guess-%d", i))
				}()
			}
			close(start)
			wg.Wait()
			elapsed := time.Since(began)

			// Every guess was compared only against a reserved failure: the
			// allowances (10 shared, 5 the stranger's own) and what they
			// earned back while the burst lasted, no more.
			counts := map[int]int{}
			longest := 0
			for i, st := range statuses {
				counts[st]++
				switch st {
				case http.StatusUnauthorized:
				case http.StatusTooManyRequests:
					secs, err := strconv.Atoi(retry[i])
					if err != nil {
						t.Fatalf("429 with Retry-After %q", retry[i])
					}
					longest = max(longest, secs)
				default:
					t.Fatalf("guess %d answered %d", i, st)
				}
			}
			charged := counts[http.StatusUnauthorized]
			bound := 10 + 5 + int(elapsed.Seconds()*(1+0.2)) + 1
			t.Logf("burst of %d in %v: %v; longest Retry-After %d s", n, elapsed.Round(time.Millisecond), counts, longest)
			if charged > bound {
				t.Errorf("%d wrong secrets were compared, want at most %d: failures were not reserved before the comparison", charged, bound)
			}
			// The longest refusal a stranger can cause: one second
			// (ratelimit.ClientAuthLimit.LongestRefusal, docs/security.md).
			if longest > 1 {
				t.Errorf("Retry-After %d s after the burst, want at most 1: failures left debt", longest)
			}
			// The stranger keeps failing, 20 guesses in flight at all times,
			// while the real client asks for tokens from its own address:
			// every one of them is granted, and the stranger's guesses stay
			// at what the allowances earn back.
			stop := make(chan struct{})
			var guessed, refusedLong atomic.Int64
			began = time.Now()
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						st, ra := postClientCredentials(t, stranger, e.tg.URL, victim.ID, fmt.Sprintf("dpy_cs_more-%d", i))
						if st == http.StatusUnauthorized {
							guessed.Add(1)
						}
						if secs, _ := strconv.Atoi(ra); secs > 1 {
							refusedLong.Add(1)
						}
					}
				}()
			}
			for i := range 10 {
				if ownAddress {
					if status, ra := postClientCredentials(t, real, e.tg.URL, victim.ID, victim.Secret); status != http.StatusOK {
						t.Errorf("the real client during the attack (%d): %d (Retry-After %q), want 200", i, status, ra)
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			elapsed = time.Since(began)
			if bound := int64(elapsed.Seconds()*(1+0.2)) + 2; guessed.Load() > bound {
				t.Errorf("%d wrong secrets compared in %v of sustained guessing, want at most %d", guessed.Load(), elapsed.Round(time.Millisecond), bound)
			}
			if refusedLong.Load() > 0 {
				t.Errorf("%d refusals asked to wait more than a second", refusedLong.Load())
			}
			// From the stranger's own address too, once the Retry-After it
			// was given has passed.
			time.Sleep(time.Duration(longest) * time.Second)
			if status, ra := postClientCredentials(t, stranger, e.tg.URL, victim.ID, victim.Secret); status != http.StatusOK {
				t.Errorf("the right secret from the stranger's address after %d s: %d (Retry-After %q), want 200", longest, status, ra)
			}
		},
	},
	{
		name:       "a body that ends before its Content-Length",
		protection: "each body reader classifies its own read error as the client's (consent.bodyError, the apps API's decode, fosite's form parsing): 400, never an outage",
		// Without it: the approval's io.ErrUnexpectedEOF fell through to
		// consent's internal: a 503 with Retry-After and "database
		// unavailable" at ERROR while storage.IsUnavailable (then a guess)
		// read
		// io.ErrUnexpectedEOF as a dropped connection (what the black-box
		// run found), a 500 since the store classifies its own errors. The
		// apps API and the OAuth endpoints already answered 400; their
		// cases keep it so. Checked by removing bodyError from
		// consent.readApproval: the row fails on both dialects, as does
		// consent's TestCutShortBodyIsTheClients.
		run: func(t *testing.T, e *attackEnv) {
			app := createOwnedApp(t, e.alice, "projects:read")
			basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(app.ID)+":"+url.QueryEscape(app.Secret)))
			cookie := e.alice.cookieHeader()
			for _, c := range []struct {
				path, ctype, body string
				header            map[string]string
			}{
				{"/agent/approve", "application/json", `{"organization":"` + demoOrg + `","sessionId":"` + e.session + `","scopes":["projects:write"],"decision":"appr`, map[string]string{"Cookie": cookie}},
				{"/agent/approve", "application/x-www-form-urlencoded", "organization=" + demoOrg + "&sessionId=" + e.session + "&scopes=projects:write&decision=appr", map[string]string{"Cookie": cookie}},
				{"/api/apps", "application/json", `{"name":"truncated","grantTypes":["client_credentials"],"scopes":["projects:re`, map[string]string{"Cookie": cookie}},
				{"/oauth2/token", "application/x-www-form-urlencoded", "grant_type=client_credentials&scope=projects:re", map[string]string{"Authorization": basic}},
				{"/oauth2/token", "application/x-www-form-urlencoded", "grant_type=client_credentials&client_id=" + app.ID + "&client_secret=" + app.Secret[:12], nil},
				{"/oauth2/introspect", "application/x-www-form-urlencoded", "token=" + e.user.AccessToken[:10], map[string]string{"Authorization": basic}},
				{"/oauth2/revoke", "application/x-www-form-urlencoded", "token=" + e.user.AccessToken[:10], map[string]string{"Authorization": basic}},
			} {
				h := map[string]string{"Content-Type": c.ctype, "Origin": e.tg.URL, "Sec-Fetch-Site": "same-origin", "Accept": "application/json"}
				for k, v := range c.header {
					h[k] = v
				}
				status, hdr, body := truncatedPost(t, e.tg.URL, c.path, h, c.body, len(c.body)+64)
				if status != http.StatusBadRequest || hdr.Get("Retry-After") != "" {
					t.Errorf("%s %s cut short: status %d, Retry-After %q; want 400 and none\n%s", c.path, c.ctype, status, hdr.Get("Retry-After"), truncate(body))
				}
			}
			if s := e.mintScopes(t, e.session); slices.Contains(s, "projects:write") {
				t.Fatalf("a cut-short approval approved: %v", s)
			}
			// Control: the endpoints are up; the same app authenticates.
			if _, code := ccToken(e.tg.URL, app, app.Secret); code != "" {
				t.Fatalf("control: the app's token: %q", code)
			}
		},
	},
	{
		name:       "another user's authorized-app revoke page",
		protection: "cmd/deputy-idp confirmRevokeApp: only an app holding tokens for the signed-in user has a revoke page; anything else is 404",
		// Without it: bob opens /settings/authorized-apps/{id}/revoke for
		// any app id and reads its name ("Revoke <name>'s access?", 200),
		// a probe for app ids and names. Checked by removing the
		// authorized-app lookup in confirmRevokeApp: the row fails with 200
		// and the platform's name on bob's page.
		run: func(t *testing.T, e *attackEnv) {
			var authorized []map[string]any
			if status, body := e.alice.jsonCall(http.MethodGet, "/api/authorized-apps", nil, &authorized); status != http.StatusOK {
				t.Fatalf("alice's authorized apps: %d %s", status, body)
			}
			var platName string
			for _, a := range authorized {
				if a["id"] == e.plat.ID {
					platName, _ = a["name"].(string)
				}
			}
			if platName == "" {
				t.Fatalf("the platform is not among alice's authorized apps: %v", authorized)
			}
			var own map[string]any
			if status, body := e.alice.jsonCall(http.MethodGet, "/api/apps/"+e.aliceApp.ID, nil, &own); status != http.StatusOK {
				t.Fatalf("alice's app: %d %s", status, body)
			}
			appName := str(t, own, "name")
			// Control: alice, whom the platform holds tokens for, sees it.
			resp, body := e.alice.getPage("/settings/authorized-apps/" + e.plat.ID + "/revoke")
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), platName) {
				t.Fatalf("control: alice's revoke page: %d\n%s", resp.StatusCode, truncate(body))
			}
			for id, name := range map[string]string{e.plat.ID: platName, e.aliceApp.ID: appName, randomName("no-such-app-"): "", "a\x00b": "", "\xff\xfe": ""} {
				resp, body := e.bob.getPage("/settings/authorized-apps/" + url.PathEscape(id) + "/revoke")
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("bob's revoke page for %q: status %d, want 404", id, resp.StatusCode)
				}
				if name != "" && strings.Contains(string(body), name) {
					t.Errorf("bob's revoke page for %q names the app %q", id, name)
				}
			}
		},
	},
	{
		name:       "introspection telling unknown client ids from known ones",
		protection: "plugin.introspect: every failed HTTP Basic client authentication gets the one invalid_client answer the token and revocation endpoints give",
		// Without it: fosite answers an unknown client id "Unable to find
		// OAuth 2.0 Client from HTTP basic authorization header." and a
		// known one with a wrong secret "OAuth 2.0 Client credentials are
		// invalid.", so anyone can test which client ids exist. Checked by
		// removing the rewrite in plugin.introspect: the row fails on the
		// differing bodies.
		run: func(t *testing.T, e *attackEnv) {
			app := createOwnedApp(t, e.alice, "projects:read")
			answer := func(endpoint, id, secret string) (int, string) {
				form := url.Values{"token": {e.user.AccessToken}, "grant_type": {"client_credentials"}}
				req, err := http.NewRequest(http.MethodPost, e.tg.URL+endpoint, strings.NewReader(form.Encode()))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", endpoint, err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			unknown := randomName("no-such-client-")
			for _, endpoint := range []string{"/oauth2/introspect", "/oauth2/revoke", "/oauth2/token"} {
				s1, b1 := answer(endpoint, unknown, "dpy_cs_guess")
				s2, b2 := answer(endpoint, app.ID, "dpy_cs_guess")
				if s1 != http.StatusUnauthorized || s1 != s2 || b1 != b2 {
					t.Errorf("%s: unknown client %d %s\nknown client, wrong secret %d %s\nwant one 401 answer for both", endpoint, s1, b1, s2, b2)
				}
				var oe struct{ Error string }
				if json.Unmarshal([]byte(b1), &oe); oe.Error != "invalid_client" {
					t.Errorf("%s: error %q, want invalid_client (RFC 7662 §2.3, RFC 6749 §5.2)", endpoint, oe.Error)
				}
			}
			// Control: the right secret introspects.
			if s, b := answer("/oauth2/introspect", app.ID, app.Secret); s != http.StatusOK || !strings.Contains(b, `"active":true`) {
				t.Fatalf("control: introspection with the right secret: %d %s", s, b)
			}
		},
	},
	{
		name:       "password guessing at /login",
		protection: "cmd/deputy-idp loginThrottle: failures per account and per source address are reserved before the password check; an exhausted limit is 429 with Retry-After of at most 30 s",
		// Without it: every guess is a 401 and guessing runs as fast as
		// bcrypt allows. Checked by removing the throttle from handleLogin:
		// the row fails (no 429 after the account's burst). The bounds for
		// the real user at another address are TestLoginThrottle's in
		// cmd/deputy-idp, which controls source addresses.
		run: func(t *testing.T, e *attackEnv) {
			name, pw := randomName("dave-"), randomName("pw-")
			e.tg.cli(t, "users", "create", "--username", name, "--password", pw, "--org", demoOrg, "--scope", "projects:read")
			var resp *http.Response
			var body []byte
			for i := 0; i < 20; i++ {
				resp, body = newBrowser(t, e.tg.URL).postForm("/login", url.Values{"username": {name}, "password": {fmt.Sprintf("guess-%d", i)}})
				if resp.StatusCode != http.StatusUnauthorized {
					break
				}
			}
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("after repeated wrong passwords: status %d, want 429\n%s", resp.StatusCode, truncate(body))
			}
			secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || secs < 1 || secs > 30 {
				t.Errorf("Retry-After %q: want 1–30 seconds", resp.Header.Get("Retry-After"))
			}
			// The right password waits too: the limit is checked before the
			// password, or a refusal would tell a right guess from a wrong one.
			b := newBrowser(t, e.tg.URL)
			resp, body = b.postForm("/login", url.Values{"username": {name}, "password": {pw}})
			if resp.StatusCode != http.StatusTooManyRequests || b.hasSession() {
				t.Errorf("the right password while throttled: status %d\n%s", resp.StatusCode, truncate(body))
			}
			// Another account from the same address is not held up.
			newBrowser(t, e.tg.URL).login("bob", bobPassword)
		},
	},
	{
		name:       "a self-registered client asking for client_credentials or the agent-token grant",
		protection: "registration.Policy: a client that registers itself (RFC 7591) gets authorization_code and refresh_token only, unowned; anything else is 400 invalid_client_metadata and nothing is stored",
		// Without it: anyone registers a client_credentials client (a
		// token that acts for nobody, or for whichever owner a later bug
		// assigns) or an agent platform, which mints agent tokens from any
		// user token it obtains. Checked by removing the grant check in
		// Policy.client: the row fails, authorization_code with
		// client_credentials registered (201, a client_secret issued).
		run: func(t *testing.T, e *attackEnv) {
			c := sourceClient(t, "127.0.0.7")
			for _, grants := range [][]string{
				{"client_credentials"},
				{"authorization_code", "client_credentials"},
				{"authorization_code", "urn:deputy:params:oauth:grant-type:agent-token"},
			} {
				status, out := register(t, c, e.tg.URL, map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "grant_types": grants})
				if status != http.StatusBadRequest || out["error"] != "invalid_client_metadata" || out["client_id"] != nil {
					t.Errorf("registering %v: %d %v", grants, status, out)
				}
			}
		},
	},
	{
		name:       "another client's registration read, changed or deleted with one's own registration token",
		protection: "registration.Handler.manage: RFC 7592 requests need the registration access token of that very client (SHA-256 compared in constant time); every refusal is the same 401",
		// Without it: whoever registered any client reads another's
		// metadata, points its redirect URIs at their own site (and gets
		// the next user's code) or deletes it. Checked by removing the
		// hash comparison in manage: the row fails, the GET with the
		// attacker's token answering 200 with the victim's metadata.
		run: func(t *testing.T, e *attackEnv) {
			c := sourceClient(t, "127.0.0.8")
			_, victim := register(t, c, e.tg.URL, map[string]any{"client_name": "victim", "redirect_uris": []string{"http://127.0.0.1/victim"}, "token_endpoint_auth_method": "none"})
			_, attacker := register(t, c, e.tg.URL, map[string]any{"redirect_uris": []string{"http://127.0.0.1/attacker"}, "token_endpoint_auth_method": "none"})
			uri, _ := victim["registration_client_uri"].(string)
			mine, _ := attacker["registration_access_token"].(string)
			if uri == "" || mine == "" {
				t.Fatalf("registrations: %v %v", victim, attacker)
			}
			steal := map[string]any{"client_id": victim["client_id"], "redirect_uris": []string{"https://evil.example/cb"}, "token_endpoint_auth_method": "none"}
			for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
				for _, token := range []string{mine, "", victim["client_id"].(string)} {
					header := map[string]string{"Content-Type": "application/json"}
					if token != "" {
						header["Authorization"] = "Bearer " + token
					}
					resp, body := anon(t, method, uri, header, jsonBody(t, steal))
					if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("%s with token %.12q…: %d %s", method, token, resp.StatusCode, truncate(body))
					}
				}
			}
			resp, body := anon(t, http.MethodGet, uri, map[string]string{"Authorization": "Bearer " + victim["registration_access_token"].(string)}, nil)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "http://127.0.0.1/victim") || strings.Contains(string(body), "evil.example") {
				t.Errorf("the victim's registration after the attempts: %d %s", resp.StatusCode, truncate(body))
			}
		},
	},
	{
		name:       "registrations flooding from one address",
		protection: "ratelimit.SourceLimiter in front of RFC 7591 registration: 10 in a row per source, then 10 an hour (ClientRegistration.Limit); refused requests count too",
		// Without it: one address creates clients at line speed, each a
		// row (swept only after a day unused). Checked by removing the
		// limiter's Take in register: the row fails, all 15 created.
		run: func(t *testing.T, e *attackEnv) {
			c := sourceClient(t, "127.0.0.9")
			var created, limited int
			for range 15 {
				status, _ := register(t, c, e.tg.URL, map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "token_endpoint_auth_method": "none"})
				switch status {
				case http.StatusCreated:
					created++
				case http.StatusTooManyRequests:
					limited++
				default:
					t.Fatalf("registration: %d", status)
				}
			}
			if created != 10 || limited != 5 {
				t.Errorf("%d created, %d refused; want 10 and 5", created, limited)
			}
			// Another address is not held up.
			if status, out := register(t, sourceClient(t, "127.0.0.10"), e.tg.URL, map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "token_endpoint_auth_method": "none"}); status != http.StatusCreated {
				t.Errorf("another address: %d %v", status, out)
			}
		},
	},
	{
		name:       "a client ID metadata document on the IdP's own machine",
		protection: "registration.guardedDialer: the address each connection is about to open is checked in net.Dialer.Control (loopback, private, link-local, metadata, unspecified and multicast refused, IPv4-mapped forms judged as IPv4); loopback only with --loopback-metadata-documents, which the binary does not have here",
		// Without it: anyone who can reach the authorization endpoint
		// makes the IdP fetch from its own network (127.0.0.1, a cloud
		// metadata service, an internal host), by IP or by a name that
		// resolves there. Checked by removing the Control hook: the row
		// fails, the listener below accepting the IdP's connection for
		// each of the three URLs.
		run: func(t *testing.T, e *attackEnv) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var accepted atomic.Int64
			go func() {
				for {
					conn, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					conn.Close()
				}
			}()
			t.Cleanup(func() { ln.Close() })
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			for _, host := range []string{"127.0.0.1", "localhost", "[::ffff:127.0.0.1]"} {
				id := "https://" + host + ":" + port + "/client.json"
				conf := &oauth2.Config{ClientID: id, RedirectURL: "http://127.0.0.1:9/cb", Scopes: []string{"projects:read"},
					Endpoint: oauth2.Endpoint{AuthURL: e.tg.URL + "/oauth2/auth"}}
				resp, body := authorizeStep(e.alice, conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
				no5xx(t, id, resp.StatusCode, body)
				if resp.StatusCode/100 != 4 || resp.Header.Get("Location") != "" {
					t.Errorf("%s: %d, Location %q; want a 4xx to the browser", id, resp.StatusCode, resp.Header.Get("Location"))
				}
			}
			if n := accepted.Load(); n != 0 {
				t.Errorf("the IdP connected to a loopback document %d times", n)
			}
		},
	},
	{
		name:       "a token for the MCP server replayed at the API",
		protection: "resource.Middleware.forThisResource: a token must name the middleware's resource (RFC 8707 audience)",
		// Without it: a token alice gave an MCP client for /mcp reads the
		// projects API (200), and one for the API works at /mcp. Checked by
		// removing the audience check in Middleware.authenticate: the row
		// fails with 200.
		run: func(t *testing.T, e *attackEnv) {
			forMCP := e.plat.resourceToken(t, e.alice, e.tg.URL+"/mcp", "projects:read")
			forAPI := e.plat.resourceToken(t, e.alice, e.tg.URL+"/api", "projects:read")
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, forAPI.AccessToken).wantStatus(t, "control: a token for the API", http.StatusOK)
			r := callAPI(t, e.tg.URL, http.MethodGet, demoOrg, forMCP.AccessToken)
			r.wantStatus(t, "a token for /mcp at the API", http.StatusUnauthorized)
			if !strings.Contains(r.WWWAuthenticate, `error="invalid_token"`) || !strings.Contains(r.WWWAuthenticate, `resource_metadata="`+e.tg.URL+`/.well-known/oauth-protected-resource/api"`) {
				t.Errorf("WWW-Authenticate %q", r.WWWAuthenticate)
			}
			// And an agent token exchanged for it is no better.
			agent := e.plat.mint(t, forMCP.AccessToken, randomName("sess-"), demoOrg)
			callAPI(t, e.tg.URL, http.MethodGet, demoOrg, agent.Raw).wantStatus(t, "an agent token from a /mcp token at the API", http.StatusUnauthorized)
		},
	},
	{
		name:       "a refresh that widens the audience",
		protection: "flows.ResourceIndicatorHandler.refresh: a refresh names only resources its refresh token carries (invalid_target)",
		// Without it: the refresh token of a /mcp authorization returns a
		// token for the API (200 at the API). Checked by removing the
		// granted-audience check in ResourceIndicatorHandler.refresh: the
		// row fails with a token.
		run: func(t *testing.T, e *attackEnv) {
			forMCP := e.plat.resourceToken(t, e.alice, e.tg.URL+"/mcp", "projects:read", "offline_access")
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {forMCP.RefreshToken}, "resource": {e.tg.URL + "/api"}}
			basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(e.plat.ID) + ":" + url.QueryEscape(e.plat.Secret)))
			resp, body := anon(t, http.MethodPost, e.tg.URL+"/oauth2/token",
				map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": "Basic " + basic}, strings.NewReader(form.Encode()))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_target") {
				t.Errorf("widening refresh: %d %s, want 400 invalid_target", resp.StatusCode, truncate(body))
			}
			if strings.Contains(string(body), "access_token") {
				t.Fatalf("a widening refresh issued a token: %s", truncate(body))
			}
		},
	},
	{
		// Last, so that the other rows run while the token ages.
		name:       "agent token replayed after expiry",
		protection: "AgentVerifier.checkClaims: exp (with DefaultLeeway)",
		// Without it: a leaked agent token works for ever (200). Checked by
		// removing the exp case in checkClaims: the row fails with 200; the
		// control at setup shows the same token was accepted before its exp.
		run: func(t *testing.T, e *attackEnv) {
			exp, _ := e.expiring.Claims["exp"].(float64)
			until := time.Unix(int64(exp), 0).Add(agenttoken.DefaultLeeway + time.Second)
			// Not a timing assertion: wait until the wall clock is past
			// exp + leeway, then replay.
			if d := time.Until(until); d > 0 {
				time.Sleep(d)
			}
			r := callAPI(t, e.tg.URL, http.MethodGet, demoOrg, e.expiring.Raw)
			r.wantStatus(t, "expired agent token", http.StatusUnauthorized)
			if !strings.Contains(r.WWWAuthenticate, "invalid_token") {
				t.Errorf("WWW-Authenticate %q", r.WWWAuthenticate)
			}
		},
	},
}

// register posts client metadata to the RFC 7591 endpoint through c and
// returns the status and the JSON answer.
func register(t testing.TB, c *http.Client, base string, md map[string]any) (int, map[string]any) {
	t.Helper()
	resp, err := c.Post(base+"/oauth2/register", "application/json", jsonBody(t, md))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func approveBodyJSON(t testing.TB, client, session string, scopes ...string) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"organization": demoOrg, "clientId": client, "sessionId": session, "scopes": scopes, "decision": "approve"})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// cookieHeader is the Cookie header the browser would send to its server.
func (b *browser) cookieHeader() string {
	b.t.Helper()
	u, _ := url.Parse(b.base)
	var parts []string
	for _, c := range b.c.Jar.Cookies(u) {
		parts = append(parts, c.Name+"="+c.Value)
	}
	if len(parts) == 0 {
		b.t.Fatal("the browser holds no cookies")
	}
	return strings.Join(parts, "; ")
}

// truncatedPost sends a POST whose Content-Length promises declared bytes
// but whose body stops after body, then half-closes the connection, as a
// client that dies mid-request (or an attacker) does. It returns the
// server's answer.
func truncatedPost(t testing.TB, base, path string, header map[string]string, body string, declared int) (int, http.Header, []byte) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	d := &net.Dialer{Timeout: 10 * time.Second}
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Scheme == "https" {
		conn, err = tls.DialWithDialer(d, "tcp", host, &tls.Config{ServerName: u.Hostname()})
	} else {
		conn, err = d.Dial("tcp", host)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", host, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n", path, u.Host, declared)
	for k, v := range header {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	req.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	switch c := conn.(type) {
	case *net.TCPConn:
		c.CloseWrite() //nolint:errcheck
	case *tls.Conn:
		c.CloseWrite() //nolint:errcheck
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: no answer to a cut-short body: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// The races are driven with real concurrency: raceWidth requests released
// together, raceRounds times, so that a lucky schedule cannot pass a row.
const (
	raceWidth  = 20
	raceRounds = 10
)

// sourceClient is an HTTP client whose connections come from ip, a
// loopback address other than the tests' usual 127.0.0.1: the server sees
// another source.
func sourceClient(t testing.TB, ip string) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr.DialContext = d.DialContext
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// postClientCredentials asks for a client_credentials token with HTTP Basic
// and returns the status and Retry-After. It never fails the test, so that
// goroutines may call it; a transport error is status 0.
func postClientCredentials(t testing.TB, c *http.Client, base, id, secret string) (int, string) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"projects:read"}}
	req, err := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // only the status matters
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// resourceToken runs the authorization-code flow (PKCE S256) for alice on
// b naming resource (RFC 8707), and returns her tokens.
func (p *platform) resourceToken(t testing.TB, b *browser, resource string, scopes ...string) *oauth2.Token {
	t.Helper()
	conf := p.oauth2Config(scopes...)
	verifier := oauth2.GenerateVerifier()
	back := b.authorize(conf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", resource)),
		platformRedirect, "alice", alicePassword)
	if e := back.Query().Get("error"); e != "" {
		t.Fatalf("authorization for %s refused: %s: %s", resource, e, back.Query().Get("error_description"))
	}
	tok, err := conf.Exchange(oauthCtx(), back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange code: %v", err)
	}
	return tok
}
