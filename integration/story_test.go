package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ownedApp is an app created through the apps API, and one secret of it.
type ownedApp struct {
	ID, SecretID, Secret string
}

// createOwnedApp creates a client-credentials app owned by the user signed
// in on b, and one secret for it, through the JSON apps API.
func createOwnedApp(t testing.TB, b *browser, scopes ...string) *ownedApp {
	t.Helper()
	var app map[string]any
	status, body := b.jsonCall(http.MethodPost, "/api/apps", map[string]any{
		"name":       randomName("ci-bot-"),
		"grantTypes": []string{"client_credentials"},
		"scopes":     scopes,
	}, &app)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("POST /api/apps: status %d\n%s", status, body)
	}
	a := &ownedApp{ID: str(t, app, "id")}
	a.SecretID, a.Secret = createSecret(t, b, a.ID)
	return a
}

// createSecret adds a secret to an app and returns its id and its value,
// which the API shows this once.
func createSecret(t testing.TB, b *browser, appID string) (id, secret string) {
	t.Helper()
	var out map[string]any
	status, body := b.jsonCall(http.MethodPost, "/api/apps/"+url.PathEscape(appID)+"/secrets", struct{}{}, &out)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Fatalf("POST /api/apps/%s/secrets: status %d\n%s", appID, status, body)
	}
	secret, _ = out["secret"].(string)
	if !strings.HasPrefix(secret, "dpy_cs_") {
		t.Fatalf("new secret not in the answer: %s", body)
	}
	return str(t, out, "id"), secret
}

func (a *ownedApp) config(base string, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{
		ClientID:     a.ID,
		ClientSecret: a.Secret,
		TokenURL:     base + "/oauth2/token",
		AuthStyle:    oauth2.AuthStyleInHeader,
		Scopes:       scopes,
	}
}

// approve posts a JSON approval, for session of the agent platform client,
// as the user signed in on b.
func approve(b *browser, org, client, session string, scopes ...string) (int, map[string]any, []byte) {
	var out map[string]any
	status, body := b.jsonCall(http.MethodPost, "/agent/approve", map[string]any{
		"organization": org,
		"clientId":     client,
		"sessionId":    session,
		"scopes":       scopes,
		"decision":     "approve",
	}, &out)
	return status, out, body
}

// grants lists the agent grants of the user signed in on b.
func grants(t testing.TB, b *browser) []map[string]any {
	t.Helper()
	var out struct {
		Grants []map[string]any `json:"grants"`
	}
	if status, body := b.jsonCall(http.MethodGet, "/agent/grants", nil, &out); status != http.StatusOK {
		t.Fatalf("GET /agent/grants: status %d\n%s", status, body)
	}
	return out.Grants
}

func grantFor(gs []map[string]any, session string) map[string]any {
	for _, g := range gs {
		if g["sessionId"] == session {
			return g
		}
	}
	return nil
}

// TestStory walks the whole delegation story the README tells, with the
// clients a user would use.
func TestStory(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *target) {
		alice := newBrowser(t, tg.URL)
		alice.login("alice", alicePassword)

		// An owned app: its client-credentials token acts as alice.
		app := createOwnedApp(t, alice, "projects:read")
		tok, err := app.config(tg.URL, "projects:read").Token(oauthCtx())
		if err != nil {
			t.Fatalf("client_credentials token for alice's app: %v", err)
		}
		if !strings.HasPrefix(tok.AccessToken, "dpy_at_") {
			t.Fatalf("app token %q lacks the dpy_at_ prefix", tok.AccessToken)
		}
		callAPI(t, tg.URL, http.MethodGet, demoOrg, tok.AccessToken).wantStatus(t, "list projects with the app's token", http.StatusOK)

		// An agent platform gets alice's user token through the
		// authorization-code flow with PKCE, signing her in on the way.
		plat := newPlatform(t, tg)
		agentBrowser := newBrowser(t, tg.URL)
		user := plat.userToken(t, agentBrowser, "alice", alicePassword, "projects:read", "projects:write")

		session := randomName("sess-")
		agt := plat.mint(t, user.AccessToken, session, demoOrg)
		if !agt.has("projects:read") || agt.has("projects:write") {
			t.Fatalf("first agent token scopes = %v, want projects:read without projects:write", agt.Scopes)
		}
		if agt.Claims["agent_session"] != session || agt.Claims["org"] != demoOrg {
			t.Errorf("agent token claims agent_session=%v org=%v, want %s %s", agt.Claims["agent_session"], agt.Claims["org"], session, demoOrg)
		}
		callAPI(t, tg.URL, http.MethodGet, demoOrg, agt.Raw).wantStatus(t, "read with the agent token", http.StatusOK)

		// A write needs alice's approval; the refusal says where to get it.
		w := callAPI(t, tg.URL, http.MethodPost, demoOrg, agt.Raw)
		w.wantStatus(t, "write with a read-only agent token", http.StatusForbidden)
		// The challenge asks for what the token holds and the write: an MCP
		// client re-authorizes with exactly that scope.
		if !strings.Contains(w.WWWAuthenticate, `error="insufficient_scope"`) || !strings.Contains(w.WWWAuthenticate, ` projects:write"`) {
			t.Errorf("WWW-Authenticate = %q, want insufficient_scope for projects:write", w.WWWAuthenticate)
		}
		var refusal any
		if err := json.Unmarshal(w.Body, &refusal); err != nil {
			t.Fatalf("403 body is not JSON: %v\n%s", err, w.Body)
		}
		approvalURL, ok := findString(refusal, func(s string) bool { return strings.Contains(s, "/agent/approve") })
		if !ok {
			t.Fatalf("403 body names no approval URL: %s", w.Body)
		}
		au, err := url.Parse(approvalURL)
		if err != nil {
			t.Fatalf("approval URL %q: %v", approvalURL, err)
		}
		if q := au.Query(); q.Get("session") != session || q.Get("client") != plat.ID || q.Get("organization") != demoOrg || !strings.Contains(q.Get("scope"), "projects:write") {
			t.Errorf("approval URL %q does not name session %s, client %s, organization %s and projects:write", approvalURL, session, plat.ID, demoOrg)
		}

		// The approval page, reached through that URL, names the session
		// and the platform.
		resp, page := alice.getPage(au.RequestURI())
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), session) || !strings.Contains(string(page), plat.ID) {
			t.Fatalf("approval page: status %d, mentions session: %v, platform: %v\n%s", resp.StatusCode,
				strings.Contains(string(page), session), strings.Contains(string(page), plat.ID), truncate(page))
		}

		// Someone else cannot approve for alice: bob holds no write scope,
		// and carol, who does, approves only for herself.
		bob := newBrowser(t, tg.URL)
		bob.login("bob", bobPassword)
		if status, _, body := approve(bob, demoOrg, plat.ID, session, "projects:write"); status != http.StatusForbidden {
			t.Errorf("bob approving projects:write: status %d, want 403\n%s", status, body)
		}
		carolName, carolPassword := randomName("carol-"), randomName("pw-")
		tg.cli(t, "users", "create", "--username", carolName, "--password", carolPassword,
			"--org", demoOrg, "--scope", "projects:read projects:write")
		carol := newBrowser(t, tg.URL)
		carol.login(carolName, carolPassword)
		if status, _, body := approve(carol, demoOrg, plat.ID, session, "projects:write"); status != http.StatusOK {
			t.Fatalf("carol approving her own binding: status %d\n%s", status, body)
		}
		if agt := plat.mint(t, user.AccessToken, session, demoOrg); agt.has("projects:write") {
			t.Fatalf("carol's approval reached alice's agent token: scopes %v", agt.Scopes)
		}
		if g := grantFor(grants(t, alice), session); g != nil {
			t.Fatalf("alice has a grant she never approved: %v", g)
		}

		// Alice approves; the re-minted token writes.
		status, grant, body := approve(alice, demoOrg, plat.ID, session, "projects:write")
		if status != http.StatusOK {
			t.Fatalf("alice approving: status %d\n%s", status, body)
		}
		grantID := str(t, grant, "id")
		agt = plat.mint(t, user.AccessToken, session, demoOrg)
		if !agt.has("projects:write") || !agt.has("projects:read") {
			t.Fatalf("agent token after approval: scopes %v, want projects:read and projects:write", agt.Scopes)
		}
		callAPI(t, tg.URL, http.MethodPost, demoOrg, agt.Raw).wantStatus(t, "write after approval", http.StatusCreated)
		// The approval was for this session only.
		if other := plat.mint(t, user.AccessToken, randomName("sess-"), demoOrg); other.has("projects:write") {
			t.Errorf("another session of alice got projects:write: %v", other.Scopes)
		}

		// Alice's grant list shows it; she revokes it; the next mint is
		// read-only again.
		g := grantFor(grants(t, alice), session)
		if g == nil || g["id"] != grantID {
			t.Fatalf("alice's grants lack %s for session %s: %v", grantID, session, g)
		}
		if scopes, _ := g["scopes"].([]any); !slices.Contains(scopes, any("projects:write")) {
			t.Errorf("grant scopes = %v, want projects:write", g["scopes"])
		}
		if status, body := bob.jsonCall(http.MethodDelete, "/agent/grants/"+url.PathEscape(grantID), nil, nil); status != http.StatusNotFound {
			t.Errorf("bob revoking alice's grant: status %d, want 404\n%s", status, body)
		}
		if status, body := alice.jsonCall(http.MethodDelete, "/agent/grants/"+url.PathEscape(grantID), nil, nil); status/100 != 2 {
			t.Fatalf("alice revoking: status %d\n%s", status, body)
		}
		if g := grantFor(grants(t, alice), session); g != nil {
			t.Fatalf("grant still listed after revocation: %v", g)
		}
		agt = plat.mint(t, user.AccessToken, session, demoOrg)
		if agt.has("projects:write") || !agt.has("projects:read") {
			t.Fatalf("agent token after revocation: scopes %v, want projects:read only", agt.Scopes)
		}
		callAPI(t, tg.URL, http.MethodPost, demoOrg, agt.Raw).wantStatus(t, "write after revocation", http.StatusForbidden)
		callAPI(t, tg.URL, http.MethodGet, demoOrg, agt.Raw).wantStatus(t, "read after revocation", http.StatusOK)
	})
}
