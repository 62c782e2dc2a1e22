package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// userToken drives the authorization-code flow for username with a
// first-party client and returns the user access token.
func userToken(t *testing.T, idp *testIdP, oc *oauth2.Config, username, password string, opts ...oauth2.AuthCodeOption) *oauth2.Token {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	b := idp.loggedIn(t, username, password)
	resp, _ := get(t, b, oc.AuthCodeURL("state-12345", append(opts, oauth2.S256ChallengeOption(verifier))...))
	tok, err := oc.Exchange(context.Background(), callback(t, resp).Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// mintAgentToken exchanges a user token for an agent token at the token endpoint.
func mintAgentToken(t *testing.T, idp *testIdP, oc *oauth2.Config, subject, session string) (string, string) {
	t.Helper()
	form := url.Values{
		"grant_type":         {protocol.GrantTypeAgentToken},
		"subject_token":      {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"agent_session_id":   {session},
		"organization":       {demoOrg},
	}
	req, _ := http.NewRequest(http.MethodPost, idp.URL+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(oc.ClientID), url.QueryEscape(oc.ClientSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || !strings.HasPrefix(out.AccessToken, "dpy_agt_") {
		t.Fatalf("agent-token grant: %d %s", resp.StatusCode, b)
	}
	return out.AccessToken, out.Scope
}

func callAPI(t *testing.T, idp *testIdP, method, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, idp.URL+"/api/orgs/"+demoOrg+"/projects", strings.NewReader(`{"name":"launch"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAgentLoop checks that the host composed the agent-token grant, the
// consent routes and the resource middleware into one working loop.
func TestAgentLoop(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		oc := testClient(t, idp, true)
		user := userToken(t, idp, oc, "alice", demoAlicePassword)

		agent, sc := mintAgentToken(t, idp, oc, user.AccessToken, "sess-1")
		if strings.Contains(sc, "projects:write") {
			t.Fatalf("first mint carries a write scope: %q", sc)
		}
		if resp, body := callAPI(t, idp, http.MethodGet, agent); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"agentSession": "sess-1"`) {
			t.Fatalf("agent read: %d %s", resp.StatusCode, body)
		}
		resp, body := callAPI(t, idp, http.MethodPost, agent)
		var refusal struct {
			Error       string   `json:"error"`
			Missing     []string `json:"missing_scopes"`
			ApprovalURL string   `json:"approval_url"`
		}
		if resp.StatusCode != http.StatusForbidden || json.Unmarshal([]byte(body), &refusal) != nil ||
			refusal.Error != "insufficient_scope" || !strings.HasPrefix(refusal.ApprovalURL, idp.URL+"/agent/approve?") {
			t.Fatalf("agent write before approval: %d %s", resp.StatusCode, body)
		}
		// The challenge asks for what the token holds (and offline_access)
		// with the write: MCP clients re-authorize with exactly that.
		if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_scope", scope="offline_access projects:read projects:write", resource_metadata="`+idp.URL+`/.well-known/oauth-protected-resource/api"` {
			t.Errorf("challenge %q", got)
		}

		// alice follows the approval URL and approves in her browser.
		alice := idp.loggedIn(t, "alice", demoAlicePassword)
		// The page names the platform the approval is for.
		if page, body := get(t, alice, refusal.ApprovalURL); page.StatusCode != http.StatusOK || !strings.Contains(body, "projects:write") ||
			!strings.Contains(body, "Agent Platform") || !strings.Contains(body, oc.ClientID) {
			t.Fatalf("approval page: %d", page.StatusCode)
		}
		approved := postForm(t, alice, idp.URL+"/agent/approve", url.Values{
			"organization": {demoOrg}, "clientId": {oc.ClientID}, "sessionId": {"sess-1"}, "scopes": {"projects:write"}, "decision": {"approve"},
		})
		if approved.StatusCode >= 400 {
			t.Fatalf("approve: %d", approved.StatusCode)
		}

		agent, sc = mintAgentToken(t, idp, oc, user.AccessToken, "sess-1")
		if !strings.Contains(sc, "projects:write") {
			t.Fatalf("re-mint after approval lacks projects:write: %q", sc)
		}
		if resp, body := callAPI(t, idp, http.MethodPost, agent); resp.StatusCode != http.StatusCreated {
			t.Errorf("agent write after approval: %d %s", resp.StatusCode, body)
		}
		// Another session of the same agent gets nothing from that approval.
		if _, sc := mintAgentToken(t, idp, oc, user.AccessToken, "sess-2"); strings.Contains(sc, "projects:write") {
			t.Errorf("approval leaked to another session: %q", sc)
		}
	})
}
