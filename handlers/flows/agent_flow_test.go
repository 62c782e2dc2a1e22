package flows

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// resourceServer is a sample API: GET needs projects:read, POST projects:write.
// The organization comes from the path, /orgs/{org}/projects.
func (e *env) resourceServer() http.Handler {
	m := &resource.Middleware{
		Agent: e.verifier,
		Org: func(r *http.Request) string {
			return r.PathValue("org")
		},
		ApprovalURL: func(org, client, session string, missing []string) string {
			return testIssuer + "/agent/approve?" + url.Values{"organization": {org}, "client": {client}, "session": {session}, "scope": {strings.Join(missing, " ")}}.Encode()
		},
	}
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := resource.IdentityFrom(r.Context())
		if !ok {
			http.Error(w, "no identity", http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(id)
	})
	mux := http.NewServeMux()
	mux.Handle("GET /orgs/{org}/projects", m.RequireScopes(readScope)(whoami))
	mux.Handle("POST /orgs/{org}/projects", m.RequireScopes(writeScope)(whoami))
	return mux
}

type apiResult struct {
	status    int
	challenge string
	body      map[string]any
	identity  resource.Identity
}

func call(t *testing.T, h http.Handler, method, org, token string) apiResult {
	t.Helper()
	req := httptest.NewRequest(method, "/orgs/"+org+"/projects", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := apiResult{status: rec.Code, challenge: rec.Header().Get("WWW-Authenticate")}
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.identity); err != nil {
			t.Fatalf("identity: %v", err)
		}
	} else if rec.Body.Len() > 0 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("403 body: %v", err)
		}
	}
	return res
}

// TestAgentLoop is the whole story: read-only by default, a 403 challenge
// naming what is missing, and the write unlocked only by a grant bound to
// exactly this (organization, user, client, session).
func TestAgentLoop(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		ctx := context.Background()
		api := e.resourceServer()
		subject := e.userToken(testUser, []string{readScope, writeScope, issuesReadScope}, time.Now().Add(time.Hour))

		tr := e.mint(subject, testSession, testOrg)
		if tr.IssuedTokenType != protocol.TokenTypeAccessToken || tr.TokenType != "Bearer" {
			t.Errorf("issued_token_type %q token_type %q", tr.IssuedTokenType, tr.TokenType)
		}
		if tr.ExpiresIn != int64(protocol.DefaultAgentTokenLifespan/time.Second) {
			t.Errorf("expires_in = %d", tr.ExpiresIn)
		}
		if tr.Scope != "issues:read projects:read" {
			t.Errorf("default scopes = %q, want the read-only ones", tr.Scope)
		}
		if !strings.HasPrefix(tr.AccessToken, protocol.AgentTokenPrefix) {
			t.Fatalf("token %q lacks the prefix", tr.AccessToken)
		}

		read := call(t, api, http.MethodGet, testOrg, tr.AccessToken)
		if read.status != http.StatusOK {
			t.Fatalf("read: %d %s", read.status, read.challenge)
		}
		want := resource.Identity{Subject: testUser, Organization: testOrg, AgentSession: testSession, ClientID: agentClientID,
			Scopes: []string{issuesReadScope, readScope}, Kind: resource.KindAgent}
		if fmt.Sprint(read.identity) != fmt.Sprint(want) {
			t.Errorf("identity = %+v, want %+v", read.identity, want)
		}

		write := call(t, api, http.MethodPost, testOrg, tr.AccessToken)
		assertInsufficient(t, write)

		// Grants for anything but this exact binding, or expired, change nothing.
		for _, g := range []struct{ org, user, client, session string }{
			{testOrg, testUser, agentClientID, "sess-2"},
			{testOrg, otherUser, agentClientID, testSession},
			{"globex", testUser, agentClientID, testSession},
			// Another platform's approval for the same session id.
			{testOrg, testUser, otherAgentID, testSession},
		} {
			if _, err := s.ApproveAgentGrant(ctx, g.org, g.user, g.client, g.session, []string{writeScope}, time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.ApproveAgentGrant(ctx, testOrg, testUser, agentClientID, "sess-expired", []string{writeScope}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		tr = e.mint(subject, testSession, testOrg)
		if tr.Scope != "issues:read projects:read" {
			t.Errorf("after unrelated grants, scopes = %q", tr.Scope)
		}
		assertInsufficient(t, call(t, api, http.MethodPost, testOrg, tr.AccessToken))
		// The other platform's approval is its own to use.
		if other := e.mintAs(otherAgentID, otherAgentPass, subject, testSession, testOrg); other.Scope != "issues:read projects:read projects:write" {
			t.Errorf("the other platform's own grant gave %q", other.Scope)
		}
		if expired := e.mint(subject, "sess-expired", testOrg); expired.Scope != "issues:read projects:read" {
			t.Errorf("an expired grant unlocked %q", expired.Scope)
		}

		// The user approves the write for this session; a re-mint carries it.
		if _, err := s.ApproveAgentGrant(ctx, testOrg, testUser, agentClientID, testSession, []string{writeScope}, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		tr = e.mint(subject, testSession, testOrg)
		if tr.Scope != "issues:read projects:read projects:write" {
			t.Errorf("after the grant, scopes = %q", tr.Scope)
		}
		// The approval is this platform's: a third platform presenting the
		// same user token and session id gets the read-only default.
		e.client("third-platform", "third-platform-secret", []string{protocol.GrantTypeAgentToken}, []string{readScope, writeScope, issuesReadScope})
		if third := e.mintAs("third-platform", "third-platform-secret", subject, testSession, testOrg); third.Scope != "issues:read projects:read" {
			t.Errorf("another platform with the same session id got %q", third.Scope)
		}
		if w := call(t, api, http.MethodPost, testOrg, tr.AccessToken); w.status != http.StatusOK {
			t.Fatalf("write after grant: %d %s", w.status, w.challenge)
		}
		// The same token is worthless in another organization.
		if w := call(t, api, http.MethodGet, "globex", tr.AccessToken); w.status != http.StatusUnauthorized || !strings.HasPrefix(w.challenge, `Bearer error="invalid_token"`) {
			t.Errorf("other org: %d %q", w.status, w.challenge)
		}

		// The grant never escalates past the user: once the user loses the
		// write scope, a re-mint drops it despite the grant.
		e.dir.Set(testUser, testOrg, readScope, issuesReadScope)
		if tr = e.mint(subject, testSession, testOrg); tr.Scope != "issues:read projects:read" {
			t.Errorf("user without write, scopes = %q", tr.Scope)
		}
	})
}

func assertInsufficient(t *testing.T, r apiResult) {
	t.Helper()
	if r.status != http.StatusForbidden {
		t.Fatalf("write without grant: status %d, want 403", r.status)
	}
	// The challenge's scope is what the token holds and what the write
	// needs: MCP clients re-authorize with exactly that.
	if want := `Bearer error="insufficient_scope", scope="issues:read projects:read projects:write"`; r.challenge != want {
		t.Errorf("challenge = %q, want %q", r.challenge, want)
	}
	if r.body["error"] != "insufficient_scope" || fmt.Sprint(r.body["missing_scopes"]) != "[projects:write]" {
		t.Errorf("403 body = %v", r.body)
	}
	u, _ := r.body["approval_url"].(string)
	if !strings.Contains(u, "organization=acme") || !strings.Contains(u, "client="+agentClientID) || !strings.Contains(u, "session=sess-1") || !strings.Contains(u, "scope=projects%3Awrite") {
		t.Errorf("approval_url = %q", u)
	}
}

// TestAgentTokenEndpointErrors: every refusal has its RFC 6749/8693 error.
func TestAgentTokenEndpointErrors(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		good := e.userToken(testUser, []string{readScope, writeScope}, time.Now().Add(time.Hour))
		expired := e.userToken(testUser, []string{readScope}, time.Now().Add(-time.Minute))
		noScopes := e.userToken(testUser, []string{}, time.Now().Add(time.Hour))
		globex := e.userTokenIn("globex", testUser, []string{readScope}, time.Now().Add(time.Hour))
		disabled := e.userToken("carol", []string{readScope}, time.Now().Add(time.Hour))
		e.dir.Set("carol", testOrg, readScope)
		e.dir.Disable("carol")
		agent := e.mint(good, testSession, testOrg).AccessToken
		// A token with a valid shape whose HMAC was never issued.
		forged := good[:len(good)-4] + "AAAA"

		with := func(mut func(url.Values)) url.Values {
			f := agentForm(good, testSession, testOrg)
			mut(f)
			return f
		}
		cases := []struct {
			name   string
			client string
			secret string
			form   url.Values
			status int
			err    string
		}{
			{"session id too long", agentClientID, agentSecret, with(func(f url.Values) { f.Set("agent_session_id", strings.Repeat("a", 129)) }), 400, "invalid_request"},
			{"session id bad character", agentClientID, agentSecret, with(func(f url.Values) { f.Set("agent_session_id", "sess 1") }), 400, "invalid_request"},
			{"session id missing", agentClientID, agentSecret, with(func(f url.Values) { f.Del("agent_session_id") }), 400, "invalid_request"},
			{"session id twice", agentClientID, agentSecret, with(func(f url.Values) { f.Add("agent_session_id", "sess-2") }), 400, "invalid_request"},
			{"organization missing", agentClientID, agentSecret, with(func(f url.Values) { f.Del("organization") }), 400, "invalid_request"},
			{"organization with a space", agentClientID, agentSecret, with(func(f url.Values) { f.Set("organization", "ac me") }), 400, "invalid_request"},
			{"organization with a no-break space", agentClientID, agentSecret, with(func(f url.Values) { f.Set("organization", "ac\u00a0me") }), 400, "invalid_request"},
			{"organization over 128 bytes", agentClientID, agentSecret, with(func(f url.Values) { f.Set("organization", strings.Repeat("o", 129)) }), 400, "invalid_request"},
			{"scope not a scope token", agentClientID, agentSecret, with(func(f url.Values) { f.Set("scope", readScope+` docs"x`) }), 400, "invalid_scope"},
			{"subject token type wrong", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt") }), 400, "invalid_request"},
			{"subject token missing", agentClientID, agentSecret, with(func(f url.Values) { f.Del("subject_token") }), 400, "invalid_request"},
			{"subject token garbage", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", "dpy_at_garbage") }), 400, "invalid_grant"},
			{"subject token forged", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", forged) }), 400, "invalid_grant"},
			{"subject token expired", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", expired) }), 400, "invalid_grant"},
			{"subject token is an agent token", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", agent) }), 400, "invalid_grant"},
			{"subject token bound to another org", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", globex) }), 400, "invalid_grant"},
			{"subject user disabled", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", disabled) }), 400, "invalid_grant"},
			{"client lacks the grant", plainClientID, plainSecret, agentForm(good, testSession, testOrg), 400, "unauthorized_client"},
			{"client secret wrong", agentClientID, "nope", agentForm(good, testSession, testOrg), 401, "invalid_client"},
			{"scope nobody holds", agentClientID, agentSecret, with(func(f url.Values) { f.Set("scope", "admin:write") }), 400, "invalid_scope"},
			{"subject token granted nothing", agentClientID, agentSecret, with(func(f url.Values) { f.Set("subject_token", noScopes) }), 400, "invalid_scope"},
			{"user holds nothing in the org", agentClientID, agentSecret, with(func(f url.Values) { f.Set("organization", "initech") }), 400, "invalid_scope"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tr := e.exchange(tc.client, tc.secret, tc.form)
				if tr.Status != tc.status || tr.Error != tc.err {
					t.Errorf("got %d %s (%s), want %d %s", tr.Status, tr.Error, tr.Description, tc.status, tc.err)
				}
				if tr.AccessToken != "" {
					t.Errorf("a refused request got a token")
				}
			})
		}

		bound := e.userTokenIn(testOrg, testUser, []string{readScope}, time.Now().Add(time.Hour))
		if tr := e.exchange(agentClientID, agentSecret, agentForm(bound, testSession, testOrg)); tr.Status != 200 || tr.Scope != readScope {
			t.Errorf("token bound to the requested org: %d %q %s", tr.Status, tr.Scope, tr.Description)
		}
		// A requested scope narrows; an audience the client may not use is refused.
		tr := e.exchange(agentClientID, agentSecret, with(func(f url.Values) { f.Set("scope", issuesReadScope+" "+readScope) }))
		if tr.Status != 200 || tr.Scope != "projects:read" {
			t.Errorf("narrowed: %d %q %s", tr.Status, tr.Scope, tr.Description)
		}
		tr = e.exchange(agentClientID, agentSecret, with(func(f url.Values) { f.Set("audience", "https://elsewhere.example") }))
		if tr.Status != 400 || tr.AccessToken != "" {
			t.Errorf("foreign audience: %d %s", tr.Status, tr.Error)
		}
	})
}

// TestMintGoAPI: a first-party agent minted from Go gets the same token.
func TestMintGoAPI(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		ctx := context.Background()
		tok, err := e.minter.Mint(ctx, agenttoken.MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: "first-party-agent"})
		if err != nil {
			t.Fatal(err)
		}
		if got := scope.Join(tok.Scopes); got != "issues:read projects:read" {
			t.Errorf("scopes = %q", got)
		}
		id, err := e.verifier.Verify(ctx, tok.Token, testOrg)
		if err != nil {
			t.Fatal(err)
		}
		if id.Subject != testUser || id.ClientID != "first-party-agent" || id.AgentSession != testSession {
			t.Errorf("identity = %+v", id)
		}
		// Lifetimes are capped at an hour.
		long, err := e.minter.Mint(ctx, agenttoken.MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: "a", Lifespan: 48 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if got := long.ExpiresAt.Sub(long.IssuedAt); got != protocol.MaxAgentTokenLifespan {
			t.Errorf("lifespan = %v", got)
		}
		for _, bad := range []agenttoken.MintRequest{
			{UserID: testUser, Organization: testOrg, AgentSessionID: "", ClientID: "a"},
			{UserID: testUser, Organization: testOrg, AgentSessionID: "a/b", ClientID: "a"},
			{UserID: testUser, Organization: "", AgentSessionID: testSession, ClientID: "a"},
			{UserID: "nobody", Organization: testOrg, AgentSessionID: testSession, ClientID: "a"},
			{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: "a", SubjectScopes: []string{}},
		} {
			if _, err := e.minter.Mint(ctx, bad); err == nil {
				t.Errorf("Mint(%+v) succeeded", bad)
			}
		}
	})
}

// TestAgentScopesFormula: the minted scopes never exceed U, R or C, whatever
// was granted, and a grant adds exactly the write scopes the others allow.
func TestAgentScopesFormula(t *testing.T) {
	t.Parallel()
	cat := scope.NewCatalog(scope.Entry{Name: "a:read"}, scope.Entry{Name: "b:write", Write: true}, scope.Entry{Name: "special", Write: false})
	const (
		ar = "a:read"
		bw = "b:write"
		cr = "c:read"  // not in the catalog: read-only by name
		cw = "c:write" // not in the catalog: writes
		sp = "special" // in the catalog as read-only despite its name
	)
	all := []string{ar, bw, cr, cw, sp}
	cases := []struct {
		name                   string
		u, g, r, c             []string
		want                   []string
		requestAll, clientNone bool
	}{
		{name: "read-only by default", u: all, c: all, requestAll: true, want: []string{ar, cr, sp}},
		{name: "grant unlocks a write", u: all, g: []string{bw}, c: all, requestAll: true, want: []string{ar, bw, cr, sp}},
		{name: "grant outside U ignored", u: []string{ar}, g: []string{bw, cw}, c: all, requestAll: true, want: []string{ar}},
		{name: "request narrows", u: all, g: []string{bw}, r: []string{bw}, c: all, want: []string{bw}},
		{name: "request cannot widen", u: []string{ar}, g: []string{bw}, r: []string{ar, bw, cw}, c: all, want: []string{ar}},
		{name: "client caps", u: all, g: []string{bw, cw}, c: []string{ar, cw}, requestAll: true, want: []string{ar, cw}},
		{name: "no client cap", u: []string{ar, bw}, g: []string{bw}, clientNone: true, requestAll: true, want: []string{ar, bw}},
		{name: "empty client", u: all, g: all, c: []string{}, requestAll: true, want: []string{}},
		{name: "empty U", u: []string{}, g: all, c: all, requestAll: true, want: []string{}},
		{name: "read-only scope needs no grant", u: []string{sp, cr}, c: all, requestAll: true, want: []string{cr, sp}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, c := tc.r, tc.c
			if tc.requestAll {
				r = nil
			}
			if tc.clientNone {
				c = nil
			}
			got := agenttoken.AgentScopes(cat, tc.u, tc.g, r, c)
			if !slices.Equal(got, scope.Normalize(tc.want)) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}

	// Exhaustively over every choice of subsets of five scopes for U, G, R
	// and C: the result is always within U, R and C.
	subsets := make([][]string, 0, 1<<len(all))
	for m := range 1 << len(all) {
		var s []string
		for i, n := range all {
			if m&(1<<i) != 0 {
				s = append(s, n)
			}
		}
		subsets = append(subsets, append([]string{}, s...))
	}
	for _, u := range subsets {
		for _, g := range subsets {
			for _, r := range subsets {
				for _, c := range subsets {
					got := agenttoken.AgentScopes(cat, u, g, r, c)
					for _, s := range got {
						if !slices.Contains(u, s) || (len(r) > 0 && !slices.Contains(r, s)) || !slices.Contains(c, s) {
							t.Fatalf("U=%v G=%v R=%v C=%v gave %v: %q escapes", u, g, r, c, got, s)
						}
						if cat.IsWrite(s) && !slices.Contains(g, s) {
							t.Fatalf("U=%v G=%v R=%v C=%v gave write %q without a grant", u, g, r, c, s)
						}
					}
				}
			}
		}
	}
}
