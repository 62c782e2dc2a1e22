package consent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

const (
	testHost   = "idp.example"
	cookieName = "sid"
	org        = "acme"
	// platform and otherPlatform are agent platforms (clients) approvals
	// can be for; platformName is how the pages name the first.
	platform      = "agent-plat"
	platformName  = "Agent Platform Inc."
	otherPlatform = "other-plat"
)

// sloppySessions reads the session cookie, whose value is the user id. It
// also (wrongly) accepts "Authorization: Bearer <user>", as a careless host
// might: the handler must not let that bearer token through.
var sloppySessions = testkit.Sessions{Cookie: cookieName, AlsoBearer: true}

var catalog = scope.NewCatalog(
	scope.Entry{Name: "docs:read", Description: "Read your documents"},
	scope.Entry{Name: "docs:write", Description: "Edit and delete your documents", Write: true},
	scope.Entry{Name: "issues:read", Description: "Read issues"},
	scope.Entry{Name: "issues:write", Description: "Open and close issues", Write: true},
	scope.Entry{Name: "admin:write", Description: "Administer the organization", Write: true},
)

// users is who holds what; "mallory" is disabled.
var users = testkit.NewDirectory().
	Set("alice", org, "docs:read", "docs:write", "issues:read", "issues:write").
	Set("alice", "other", "docs:read").
	Set("bob", org, "docs:read", "issues:read").
	Set("mallory", org).Disable("mallory")

type env struct {
	s     *storage.Store
	h     http.Handler
	clock *testkit.Clock
}

func newEnv(t testing.TB, s *storage.Store, mod func(*consent.Config)) *env {
	t.Helper()
	c := testkit.NewClock(time.Now().UTC().Truncate(time.Second))
	cfg := consent.Config{
		Store:     s,
		Directory: users,
		Sessions:  sloppySessions,
		Catalog:   catalog,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Clock:     c.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := consent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	createPlatforms(t, s)
	return &env{s: s, h: h, clock: c}
}

// createPlatforms stores the agent platforms approvals name (once per
// store: several envs may share one).
func createPlatforms(t testing.TB, s *storage.Store) {
	t.Helper()
	ctx := context.Background()
	for id, name := range map[string]string{platform: platformName, otherPlatform: "Other Platform"} {
		if _, err := s.Client(ctx, id); err == nil {
			continue
		}
		c := &storage.Client{ID: id, Name: name, GrantTypes: []string{"urn:deputy:params:oauth:grant-type:agent-token"},
			Scopes: []string{"docs:read", "docs:write"}, TokenEndpointAuthMethod: "client_secret_basic"}
		if err := s.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
}

// req describes one request; the zero value is a same-origin JSON POST with
// no session.
type req struct {
	method, path string
	user         string // session cookie
	body         string
	ctype        string
	header       map[string]string
}

func (e *env) do(t testing.TB, q req) *httptest.ResponseRecorder {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodPost
	}
	if q.path == "" {
		q.path = "/agent/approve"
	}
	r := httptest.NewRequest(q.method, "https://"+testHost+q.path, strings.NewReader(q.body))
	if q.body != "" || q.method == http.MethodPost {
		ct := q.ctype
		if ct == "" {
			ct = "application/json"
		}
		r.Header.Set("Content-Type", ct)
	}
	if q.method != http.MethodGet {
		// What a browser sends from the consent page itself.
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		r.Header.Set("Origin", "https://"+testHost)
	}
	if q.user != "" {
		r.AddCookie(&http.Cookie{Name: cookieName, Value: q.user})
	}
	for k, v := range q.header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func approveJSON(session string, decision string, scopes ...string) string {
	return approveJSONFor(platform, session, decision, scopes...)
}

// approveJSONFor is approveJSON for another client.
func approveJSONFor(client, session string, decision string, scopes ...string) string {
	b, _ := json.Marshal(map[string]any{"organization": org, "clientId": client, "sessionId": session, "scopes": scopes, "decision": decision})
	return string(b)
}

type grantJSON struct {
	Decision     string    `json:"decision"`
	ID           string    `json:"id"`
	Organization string    `json:"organization"`
	ClientID     string    `json:"clientId"`
	ClientName   string    `json:"clientName"`
	SessionID    string    `json:"sessionId"`
	Scopes       []string  `json:"scopes"`
	ExpiresAt    time.Time `json:"expiresAt"`
	NotGranted   []string  `json:"notGranted"`
}

func decode[T any](t testing.TB, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", w.Body.String(), err)
	}
	return v
}

func wantStatus(t testing.TB, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body: %s", w.Code, status, w.Body.String())
	}
}

// snapshot renders every row of agent_grants and audit_events, so a test
// can assert that a refused request changed nothing at all.
func snapshot(t testing.TB, s *storage.Store) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	rows, err := s.DB().QueryContext(ctx, `SELECT id, organization, user_id, client_id, agent_session_id, scopes, updated_at, expires_at FROM agent_grants ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, o, u, c, sess, sc string
		var up, exp time.Time
		if err := rows.Scan(&id, &o, &u, &c, &sess, &sc, &up, &exp); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "grant %s %s %s %s %s %s %s %s\n", id, o, u, c, sess, sc, up.UTC(), exp.UTC())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "audit %d\n", n)
	return b.String()
}

func countGrants(t testing.TB, s *storage.Store) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM agent_grants`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestApproveJSON(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		w := e.do(t, req{user: "alice", body: approveJSON("sess-1", "approve", "docs:write", "docs:read")})
		wantStatus(t, w, http.StatusOK)
		g := decode[grantJSON](t, w)
		if g.Decision != "approve" || g.ID == "" || g.Organization != org || g.SessionID != "sess-1" ||
			fmt.Sprint(g.Scopes) != "[docs:read docs:write]" || len(g.NotGranted) != 0 {
			t.Fatalf("grant = %+v", g)
		}
		if want := e.clock.Now().Add(protocol.DefaultGrantLifespan); !g.ExpiresAt.Equal(want) {
			t.Fatalf("expiresAt = %v, want %v", g.ExpiresAt, want)
		}
		got, err := s.AgentGrantScopes(context.Background(), org, "alice", platform, "sess-1", time.Now())
		if err != nil || fmt.Sprint(got) != "[docs:read docs:write]" {
			t.Fatalf("stored scopes = %v, %v", got, err)
		}
		// Unknown fields are ignored; the approver in the body is not an approver.
		w = e.do(t, req{user: "bob", body: `{"organization":"acme","clientId":"agent-plat","sessionId":"sess-2","scopes":["docs:read"],"decision":"approve","user":"alice","userId":"alice","extra":{"x":[1]}}`})
		wantStatus(t, w, http.StatusOK)
		if got, _ := s.AgentGrantScopes(context.Background(), org, "bob", platform, "sess-2", time.Now()); fmt.Sprint(got) != "[docs:read]" {
			t.Fatalf("bob's grant = %v", got)
		}
		if got, _ := s.AgentGrantScopes(context.Background(), org, "alice", platform, "sess-2", time.Now()); got != nil {
			t.Fatalf("body named alice and got her a grant: %v", got)
		}
	})
}

func TestConcurrentApprovalsMerge(t *testing.T) {
	t.Parallel()
	const n = 50
	var all []string
	for i := range n {
		all = append(all, fmt.Sprintf("s%02d", i))
	}
	dir := testkit.NewDirectory().Set("alice", org, all...)
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		// An empty catalog: any well-formed scope may be requested.
		e := newEnv(t, s, func(c *consent.Config) { c.Directory = dir; c.Catalog = nil })
		var wg sync.WaitGroup
		codes := make([]int, n)
		bodies := make([]string, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := e.do(t, req{user: "alice", body: approveJSON("agent-run", "approve", all[i])})
				codes[i], bodies[i] = w.Code, w.Body.String()
			}()
		}
		wg.Wait()
		for i := range n {
			if codes[i] != http.StatusOK {
				t.Fatalf("approval %d: %d %s", i, codes[i], bodies[i])
			}
		}
		if c := countGrants(t, s); c != 1 {
			t.Fatalf("%d grant rows, want 1", c)
		}
		got, err := s.AgentGrantScopes(context.Background(), org, "alice", platform, "agent-run", time.Now())
		if err != nil || fmt.Sprint(got) != fmt.Sprint(all) {
			t.Fatalf("scopes = %v (%v), want the union of all %d", got, err, n)
		}
		ev, err := s.ListAudit(context.Background(), "alice")
		if err != nil || len(ev) != n {
			t.Fatalf("%d audit events (%v), want %d", len(ev), err, n)
		}
	})
}

func TestBearerTokenIsNeverASession(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		// A grant of bob's for the revoke attempts below.
		wantStatus(t, e.do(t, req{user: "bob", body: approveJSON("b", "approve", "docs:read")}), http.StatusOK)
		gs, _ := s.ListAgentGrants(context.Background(), "bob", time.Now())
		before := snapshot(t, s)
		for _, tc := range []struct {
			name string
			q    req
		}{
			{"agent token approves", req{body: approveJSON("sess", "approve", "docs:read"), header: map[string]string{"Authorization": "Bearer alice"}}},
			{"agent token denies", req{body: approveJSON("sess", "deny", "docs:read"), header: map[string]string{"Authorization": "Bearer alice"}}},
			{"agent token form post", req{ctype: "application/x-www-form-urlencoded",
				body: "organization=acme&clientId=agent-plat&sessionId=sess&scopes=docs:read&decision=approve", header: map[string]string{"Authorization": "Bearer alice"}}},
			{"token beside a session", req{user: "alice", body: approveJSON("sess", "approve", "docs:read"), header: map[string]string{"Authorization": "Bearer alice"}}},
			{"agent token revokes", req{method: http.MethodDelete, path: "/agent/grants/" + gs[0].ID, header: map[string]string{"Authorization": "Bearer bob"}}},
			{"agent token lists", req{method: http.MethodGet, path: "/agent/grants", header: map[string]string{"Authorization": "Bearer bob"}}},
			{"basic auth", req{body: approveJSON("sess", "approve", "docs:read"), header: map[string]string{"Authorization": "Basic YWxpY2U6eA=="}}},
			{"nothing at all", req{body: approveJSON("sess", "approve", "docs:read")}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				w := e.do(t, tc.q)
				if w.Code != http.StatusUnauthorized && w.Code != http.StatusForbidden {
					t.Fatalf("status = %d, want 401/403; body %s", w.Code, w.Body.String())
				}
				if m := decode[map[string]string](t, w)["message"]; m == "" {
					t.Fatalf("no message in %s", w.Body.String())
				}
			})
		}
		if after := snapshot(t, s); after != before {
			t.Fatalf("refused requests changed rows:\n%s\n→\n%s", before, after)
		}
		// The page never treats a bearer token as a login either.
		w := e.do(t, req{method: http.MethodGet, path: "/agent/approve?organization=acme&client=agent-plat&session=sess&scope=docs:read",
			header: map[string]string{"Authorization": "Bearer alice"}})
		wantStatus(t, w, http.StatusSeeOther)
	})
}

func TestCrossOriginRefused(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("mine", "approve", "docs:read")}), http.StatusOK)
		gs, _ := s.ListAgentGrants(context.Background(), "alice", time.Now())
		before := snapshot(t, s)
		form := "organization=acme&clientId=agent-plat&sessionId=evil&scopes=docs:write&decision=approve"
		for _, tc := range []struct {
			name string
			q    req
		}{
			{"sec-fetch-site cross-site json", req{body: approveJSON("evil", "approve", "docs:write"),
				header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}},
			{"sec-fetch-site cross-site form", req{ctype: "application/x-www-form-urlencoded", body: form,
				header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}},
			{"sec-fetch-site same-site", req{ctype: "application/x-www-form-urlencoded", body: form,
				header: map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "https://sub." + testHost}}},
			{"old browser foreign origin", req{ctype: "text/plain", body: approveJSON("evil", "approve", "docs:write"),
				header: map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}}},
			{"old browser foreign origin form", req{ctype: "application/x-www-form-urlencoded", body: form,
				header: map[string]string{"Sec-Fetch-Site": "", "Origin": "http://" + testHost + ".evil.example"}}},
			{"cross-site revoke", req{method: http.MethodDelete, path: "/agent/grants/" + gs[0].ID,
				header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}},
			{"cross-site form revoke", req{path: "/agent/grants/" + gs[0].ID + "/revoke", ctype: "application/x-www-form-urlencoded",
				header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.q.user = "alice" // the victim's cookie rides along
				w := e.do(t, tc.q)
				wantStatus(t, w, http.StatusForbidden)
			})
		}
		if after := snapshot(t, s); after != before {
			t.Fatalf("cross-origin requests changed rows:\n%s\n→\n%s", before, after)
		}
	})
}

func TestTrustedOrigin(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, func(c *consent.Config) { c.TrustedOrigins = []string{"https://console.example"} })
		w := e.do(t, req{user: "alice", body: approveJSON("x", "approve", "docs:read"),
			header: map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://console.example"}})
		wantStatus(t, w, http.StatusOK)
	})
}

func TestApprovalCappedByUserScopes(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		w := e.do(t, req{user: "bob", body: approveJSON("b1", "approve", "docs:read", "docs:write", "admin:write")})
		wantStatus(t, w, http.StatusOK)
		g := decode[grantJSON](t, w)
		if fmt.Sprint(g.Scopes) != "[docs:read]" || fmt.Sprint(g.NotGranted) != "[admin:write docs:write]" {
			t.Fatalf("grant = %+v", g)
		}

		before := snapshot(t, s)
		for _, tc := range []struct{ name, user, org string }{
			{"holds none", "bob", org},
			{"other org", "alice", "other"},
			{"disabled user", "mallory", org},
			{"unknown user", "nobody", org},
		} {
			t.Run(tc.name, func(t *testing.T) {
				body := fmt.Sprintf(`{"organization":%q,"clientId":"agent-plat","sessionId":"b2","scopes":["docs:write","admin:write"],"decision":"approve"}`, tc.org)
				w := e.do(t, req{user: tc.user, body: body})
				wantStatus(t, w, http.StatusForbidden)
				if m := decode[map[string]string](t, w)["message"]; m == "" {
					t.Fatal("403 without a message")
				}
			})
		}
		if after := snapshot(t, s); after != before {
			t.Fatalf("403s changed rows:\n%s\n→\n%s", before, after)
		}
	})
}

func TestReapprovalMovesExpiryAndExpiredGrantIsIgnored(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, func(c *consent.Config) { c.GrantLifespan = 30 * time.Minute })
		ctx := context.Background()
		t0 := e.clock.Now()
		first := decode[grantJSON](t, e.do(t, req{user: "alice", body: approveJSON("r", "approve", "docs:read")}))
		e.clock.Set(t0.Add(10 * time.Minute))
		w := e.do(t, req{user: "alice", body: approveJSON("r", "approve", "issues:write")})
		wantStatus(t, w, http.StatusOK)
		second := decode[grantJSON](t, w)
		if second.ID != first.ID {
			t.Fatalf("re-approval made a new grant %s, want %s", second.ID, first.ID)
		}
		if !first.ExpiresAt.Equal(t0.Add(30*time.Minute)) || !second.ExpiresAt.Equal(t0.Add(40*time.Minute)) {
			t.Fatalf("expiry %v → %v, want %v → %v", first.ExpiresAt, second.ExpiresAt, t0.Add(30*time.Minute), t0.Add(40*time.Minute))
		}
		if fmt.Sprint(second.Scopes) != "[docs:read issues:write]" {
			t.Fatalf("scopes = %v, want the union", second.Scopes)
		}

		// An approval stamped two hours ago has expired: the mint's query
		// ignores it, and so does the list.
		e.clock.Set(time.Now().Add(-2 * time.Hour))
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("old", "approve", "docs:write")}), http.StatusOK)
		if got, err := s.AgentGrantScopes(ctx, org, "alice", platform, "old", time.Now()); err != nil || got != nil {
			t.Fatalf("expired grant scopes = %v, %v", got, err)
		}
		e.clock.Set(time.Now())
		list := decode[struct{ Grants []grantJSON }](t, e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice"}))
		if len(list.Grants) != 1 || list.Grants[0].SessionID != "r" {
			t.Fatalf("grants = %+v, want only r", list.Grants)
		}
	})
}

func TestAuditTrail(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		ctx := context.Background()

		w := e.do(t, req{user: "alice", body: approveJSON("d", "deny", "docs:write")})
		wantStatus(t, w, http.StatusOK)
		if d := decode[map[string]string](t, w)["decision"]; d != "deny" {
			t.Fatalf("deny answered %s", w.Body.String())
		}
		if c := countGrants(t, s); c != 0 {
			t.Fatalf("deny wrote %d grants", c)
		}
		ev, _ := s.ListAudit(ctx, "alice")
		if len(ev) != 1 || ev[0].Event != storage.AuditDenied || ev[0].AgentSessionID != "d" || fmt.Sprint(ev[0].Scopes) != "[docs:write]" {
			t.Fatalf("after deny: %+v", ev)
		}

		g := decode[grantJSON](t, e.do(t, req{user: "alice", body: approveJSON("d", "approve", "docs:read")}))
		ev, _ = s.ListAudit(ctx, "alice")
		if len(ev) != 2 || ev[1].Event != storage.AuditApproved || ev[1].GrantID != g.ID {
			t.Fatalf("after approve: %+v", ev)
		}

		// Deny leaves an existing grant alone: revoking is its own act.
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("d", "deny", "docs:write")}), http.StatusOK)
		if got, _ := s.AgentGrantScopes(ctx, org, "alice", platform, "d", time.Now()); fmt.Sprint(got) != "[docs:read]" {
			t.Fatalf("deny touched the grant: %v", got)
		}

		wantStatus(t, e.do(t, req{method: http.MethodDelete, path: "/agent/grants/" + g.ID, user: "alice"}), http.StatusNoContent)
		ev, _ = s.ListAudit(ctx, "alice")
		if len(ev) != 4 || ev[3].Event != storage.AuditRevoked || ev[3].GrantID != g.ID {
			t.Fatalf("after revoke: %+v", ev)
		}
		if got, _ := s.AgentGrantScopes(ctx, org, "alice", platform, "d", time.Now()); got != nil {
			t.Fatalf("revoked grant still mints: %v", got)
		}
	})
}

func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 129)
	huge := `{"organization":"acme","clientId":"agent-plat","sessionId":"s","decision":"approve","scopes":["docs:read"],"pad":"` + strings.Repeat("x", consent.MaxBodyBytes) + `"}`
	cases := []struct {
		name   string
		body   string
		ctype  string
		status int
	}{
		{"not json", `{`, "", 400},
		{"empty body", ``, "", 400},
		{"array body", `[]`, "", 400},
		{"string body", `"approve"`, "", 400},
		{"trailing data", approveJSON("s", "approve", "docs:read") + ` {}`, "", 400},
		{"missing organization", `{"clientId":"agent-plat","sessionId":"s","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"organization number", `{"organization":7,"clientId":"agent-plat","sessionId":"s","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"organization control char", `{"organization":"ac\u0000me","clientId":"agent-plat","sessionId":"s","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"missing session", `{"organization":"acme","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"empty session", approveJSON("", "approve", "docs:read"), "", 400},
		{"session 129 chars", approveJSON(long, "approve", "docs:read"), "", 400},
		{"session with space", approveJSON("a b", "approve", "docs:read"), "", 400},
		{"session with slash", approveJSON("a/b", "approve", "docs:read"), "", 400},
		{"session non-ascii", approveJSON("sé", "approve", "docs:read"), "", 400},
		{"session number", `{"organization":"acme","clientId":"agent-plat","sessionId":12,"scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"scopes not array", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":"docs:read","decision":"approve"}`, "", 400},
		{"scope number", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":[1],"decision":"approve"}`, "", 400},
		{"scope object", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":["docs:read",{}],"decision":"approve"}`, "", 400},
		{"scope null element", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":["docs:read",null],"decision":"approve"}`, "", 400},
		{"unknown scope", approveJSON("s", "approve", "docs:read", "nope:write"), "", 400},
		{"malformed scope", approveJSON("s", "approve", `docs "read"`), "", 400},
		{"no scopes", approveJSON("s", "approve"), "", 400},
		{"too many scopes", approveJSON("s", "approve", strings.Fields(strings.Repeat("docs:read ", consent.MaxScopes+1))...), "", 400},
		{"unknown decision", approveJSON("s", "maybe", "docs:read"), "", 400},
		{"missing decision", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":["docs:read"]}`, "", 400},
		{"decision bool", `{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":["docs:read"],"decision":true}`, "", 400},
		{"body over 64 KiB", huge, "", 413},
		{"form bad decision", "organization=acme&clientId=agent-plat&sessionId=s&scopes=docs:read&decision=yes", "application/x-www-form-urlencoded", 400},
		{"form bad session", "organization=acme&clientId=agent-plat&sessionId=%3Cx%3E&scopes=docs:read&decision=approve", "application/x-www-form-urlencoded", 400},
		{"form bad escape", "organization=acme&clientId=agent-plat&sessionId=s&scopes=%zz&decision=approve", "application/x-www-form-urlencoded", 400},
		{"form unknown scope", "organization=acme&clientId=agent-plat&sessionId=s&scopes=docs:read+root&decision=approve", "application/x-www-form-urlencoded", 400},
		{"form over 64 KiB", "organization=acme&clientId=agent-plat&sessionId=s&decision=approve&scopes=" + strings.Repeat("a", consent.MaxBodyBytes), "application/x-www-form-urlencoded", 413},
		{"missing client", `{"organization":"acme","sessionId":"s","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"client number", `{"organization":"acme","clientId":7,"sessionId":"s","scopes":["docs:read"],"decision":"approve"}`, "", 400},
		{"client control char", approveJSONFor("agent\x00plat", "s", "approve", "docs:read"), "", 400},
		{"client too long", approveJSONFor(strings.Repeat("c", protocol.MaxClientIDLen+1), "s", "approve", "docs:read"), "", 400},
		{"unknown client", approveJSONFor("no-such-platform", "s", "approve", "docs:read"), "", 400},
		{"unknown client denies", approveJSONFor("no-such-platform", "s", "deny", "docs:read"), "", 400},
		{"form missing client", "organization=acme&sessionId=s&scopes=docs:read&decision=approve", "application/x-www-form-urlencoded", 400},
		{"form unknown client", "organization=acme&clientId=nope&sessionId=s&scopes=docs:read&decision=approve", "application/x-www-form-urlencoded", 400},
		{"text/plain", approveJSON("s", "approve", "docs:read"), "text/plain", 415},
		{"no content type", approveJSON("s", "approve", "docs:read"), "-", 415},
	}
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		// An existing grant on the same binding: a partial write would show.
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("s", "approve", "docs:read")}), http.StatusOK)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := snapshot(t, s)
				q := req{user: "alice", body: tc.body, ctype: tc.ctype}
				if tc.ctype == "-" {
					q.ctype, q.header = "", map[string]string{"Content-Type": ""}
				}
				w := e.do(t, q)
				wantStatus(t, w, tc.status)
				var ae struct{ Error, Message string }
				if err := json.Unmarshal(w.Body.Bytes(), &ae); err != nil || ae.Error == "" || ae.Message == "" {
					t.Fatalf("error body %q: want JSON with error and message", w.Body.String())
				}
				if after := snapshot(t, s); after != before {
					t.Fatalf("rows changed:\n%s\n→\n%s", before, after)
				}
			})
		}
	})
}

func TestEmptyCatalogAllowsWellFormedScopes(t *testing.T) {
	t.Parallel()
	dir := testkit.NewDirectory().Set("alice", org, "anything:goes", "x")
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, func(c *consent.Config) { c.Catalog = scope.NewCatalog(); c.Directory = dir })
		w := e.do(t, req{user: "alice", body: approveJSON("s", "approve", "anything:goes", "never:held")})
		wantStatus(t, w, http.StatusOK)
		if g := decode[grantJSON](t, w); fmt.Sprint(g.Scopes) != "[anything:goes]" {
			t.Fatalf("scopes = %v", g.Scopes)
		}
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("s", "approve", "bad\x7fscope")}), http.StatusBadRequest)
	})
}

func approvePath(session string, scopes ...string) string {
	return approvePathFor(platform, session, scopes...)
}

func approvePathFor(client, session string, scopes ...string) string {
	return "/agent/approve?" + url.Values{"organization": {org}, "client": {client}, "session": {session}, "scope": {strings.Join(scopes, " ")}}.Encode()
}

func wantFrameHeaders(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	h := w.Header()
	if h.Get("X-Frame-Options") != "DENY" {
		t.Errorf("X-Frame-Options = %q", h.Get("X-Frame-Options"))
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP = %q", csp)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"} {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
}

func TestPagesNameTheUser(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		named := newEnv(t, s, func(c *consent.Config) {
			c.UserName = func(_ context.Context, id string) string { return "Bob the Builder (" + id + ")" }
		})
		for _, path := range []string{approvePath("agent-7.run", "docs:read"), "/agent/grants"} {
			w := named.do(t, req{method: http.MethodGet, user: "bob", path: path, header: map[string]string{"Accept": "text/html"}})
			wantStatus(t, w, http.StatusOK)
			if !strings.Contains(w.Body.String(), "Bob the Builder (bob)") {
				t.Errorf("%s does not name the user with Config.UserName", path)
			}
		}
	})
}

func TestApprovePage(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		t.Run("renders for the logged-in user", func(t *testing.T) {
			w := e.do(t, req{method: http.MethodGet, user: "bob", path: approvePath("agent-7.run", "docs:read", "docs:write")})
			wantStatus(t, w, http.StatusOK)
			wantFrameHeaders(t, w)
			body := w.Body.String()
			for _, want := range []string{
				"agent-7.run", "acme", "Read your documents", "Edit and delete your documents",
				`class="badge write"`, "you cannot grant this",
				`name="decision" value="approve"`, `name="decision" value="deny"`,
				`<form method="post" action="/agent/approve">`, `href="/agent/static/consent.css"`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if strings.Contains(body, "<script") || strings.Contains(body, "style=") {
				t.Error("page has inline script or style, which the CSP forbids")
			}
			// bob cannot grant docs:write: exactly one scope is marked.
			if n := strings.Count(body, "you cannot grant this"); n != 1 {
				t.Errorf("%d scopes marked ungrantable, want 1", n)
			}
		})
		t.Run("only deny when nothing is grantable", func(t *testing.T) {
			w := e.do(t, req{method: http.MethodGet, user: "bob", path: approvePath("s", "admin:write")})
			wantStatus(t, w, http.StatusOK)
			if strings.Contains(w.Body.String(), `value="approve"`) {
				t.Error("page offers Approve with nothing to grant")
			}
		})
		t.Run("redirects to login without a session", func(t *testing.T) {
			p := approvePath("s", "docs:read")
			w := e.do(t, req{method: http.MethodGet, path: p})
			wantStatus(t, w, http.StatusSeeOther)
			wantFrameHeaders(t, w)
			loc, err := url.Parse(w.Header().Get("Location"))
			if err != nil || loc.Path != "/login" || loc.Query().Get("return_to") != p || loc.Host != "" {
				t.Fatalf("Location = %q, want /login?return_to=%s", w.Header().Get("Location"), p)
			}
		})
		t.Run("login URL with its own query", func(t *testing.T) {
			e := newEnv(t, s, func(c *consent.Config) { c.LoginURL = "https://login.example/signin?app=idp" })
			w := e.do(t, req{method: http.MethodGet, path: approvePath("s", "docs:read")})
			wantStatus(t, w, http.StatusSeeOther)
			loc, _ := url.Parse(w.Header().Get("Location"))
			if loc.Host != "login.example" || loc.Query().Get("app") != "idp" || !strings.HasPrefix(loc.Query().Get("return_to"), "/agent/approve?") {
				t.Fatalf("Location = %q", loc)
			}
		})
		t.Run("escapes what the agent controls", func(t *testing.T) {
			p := "/agent/approve?" + url.Values{"organization": {`<img/src=x/onerror=alert(1)>`}, "client": {platform}, "session": {"s"}, "scope": {"docs:read"}}.Encode()
			w := e.do(t, req{method: http.MethodGet, user: "alice", path: p})
			wantStatus(t, w, http.StatusOK)
			if strings.Contains(w.Body.String(), "<img") {
				t.Fatal("organization rendered unescaped")
			}
		})
		for _, tc := range []struct{ name, path string }{
			{"bad session", approvePath("a b", "docs:read")},
			{"unknown scope", approvePath("s", "root")},
			{"no scope", approvePath("s")},
			{"no organization", "/agent/approve?client=agent-plat&session=s&scope=docs:read"},
		} {
			t.Run("400 "+tc.name, func(t *testing.T) {
				w := e.do(t, req{method: http.MethodGet, user: "alice", path: tc.path, header: map[string]string{"Accept": "text/html"}})
				wantStatus(t, w, http.StatusBadRequest)
				wantFrameHeaders(t, w)
				if !strings.Contains(w.Header().Get("Content-Type"), "text/html") {
					t.Errorf("Content-Type = %q", w.Header().Get("Content-Type"))
				}
			})
		}
		t.Run("stylesheet", func(t *testing.T) {
			w := e.do(t, req{method: http.MethodGet, path: "/agent/static/consent.css"})
			wantStatus(t, w, http.StatusOK)
			if !strings.HasPrefix(w.Header().Get("Content-Type"), "text/css") || w.Body.Len() == 0 {
				t.Fatalf("css: %q, %d bytes", w.Header().Get("Content-Type"), w.Body.Len())
			}
		})
	})
}

func TestFormFlow(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		form := "organization=acme&clientId=agent-plat&sessionId=f1&scopes=docs:read+docs:write&scopes=admin:write&decision=approve"
		w := e.do(t, req{user: "alice", ctype: "application/x-www-form-urlencoded", body: form})
		wantStatus(t, w, http.StatusSeeOther)
		loc := w.Header().Get("Location")
		if !strings.HasPrefix(loc, "/agent/approve/done?") {
			t.Fatalf("Location = %q", loc)
		}
		if got, _ := s.AgentGrantScopes(context.Background(), org, "alice", platform, "f1", time.Now()); fmt.Sprint(got) != "[docs:read docs:write]" {
			t.Fatalf("form grant = %v", got)
		}
		w = e.do(t, req{method: http.MethodGet, user: "alice", path: loc})
		wantStatus(t, w, http.StatusOK)
		wantFrameHeaders(t, w)
		if b := w.Body.String(); !strings.Contains(b, "Access approved") || !strings.Contains(b, "docs:read docs:write") {
			t.Fatalf("done page: %s", b)
		}

		w = e.do(t, req{user: "alice", ctype: "application/x-www-form-urlencoded", body: "organization=acme&clientId=agent-plat&sessionId=f2&scopes=docs:read&decision=deny"})
		wantStatus(t, w, http.StatusSeeOther)
		w = e.do(t, req{method: http.MethodGet, user: "alice", path: w.Header().Get("Location")})
		if !strings.Contains(w.Body.String(), "Access denied") {
			t.Fatalf("deny page: %s", w.Body.String())
		}

		// A browser's form error is a page, not JSON.
		w = e.do(t, req{user: "alice", ctype: "application/x-www-form-urlencoded", body: "organization=acme&clientId=agent-plat&sessionId=f3&scopes=admin:write&decision=approve",
			header: map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}})
		wantStatus(t, w, http.StatusForbidden)
		if !strings.Contains(w.Header().Get("Content-Type"), "text/html") {
			t.Fatalf("form error Content-Type = %q", w.Header().Get("Content-Type"))
		}
	})
}

func TestGrantsAreTheCallersOwn(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		ctx := context.Background()
		ga := decode[grantJSON](t, e.do(t, req{user: "alice", body: approveJSON("a1", "approve", "docs:read")}))
		gb := decode[grantJSON](t, e.do(t, req{user: "bob", body: approveJSON("b1", "approve", "docs:read")}))

		list := decode[struct{ Grants []grantJSON }](t, e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice"}))
		if len(list.Grants) != 1 || list.Grants[0].ID != ga.ID {
			t.Fatalf("alice sees %+v", list.Grants)
		}
		wantStatus(t, e.do(t, req{method: http.MethodGet, path: "/agent/grants"}), http.StatusUnauthorized)

		before := snapshot(t, s)
		for _, p := range []string{"/agent/grants/" + gb.ID, "/agent/grants/nope", "/agent/grants/" + strings.Repeat("x", 200)} {
			w := e.do(t, req{method: http.MethodDelete, path: p, user: "alice"})
			wantStatus(t, w, http.StatusNotFound)
		}
		w := e.do(t, req{path: "/agent/grants/" + gb.ID + "/revoke", user: "alice", ctype: "application/x-www-form-urlencoded"})
		wantStatus(t, w, http.StatusNotFound)
		if after := snapshot(t, s); after != before {
			t.Fatalf("another user's revoke changed rows:\n%s\n→\n%s", before, after)
		}
		if got, _ := s.AgentGrantScopes(ctx, org, "bob", platform, "b1", time.Now()); got == nil {
			t.Fatal("bob's grant is gone")
		}

		// The page, and its no-JS revoke.
		w = e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice",
			header: map[string]string{"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}})
		wantStatus(t, w, http.StatusOK)
		wantFrameHeaders(t, w)
		action := "/agent/grants/" + ga.ID + "/revoke"
		if !strings.Contains(w.Body.String(), `action="`+action+`"`) || strings.Contains(w.Body.String(), gb.ID) {
			t.Fatalf("grants page: %s", w.Body.String())
		}
		w = e.do(t, req{path: action, user: "alice", ctype: "application/x-www-form-urlencoded"})
		wantStatus(t, w, http.StatusSeeOther)
		if w.Header().Get("Location") != "/agent/grants" {
			t.Fatalf("Location = %q", w.Header().Get("Location"))
		}
		if got, _ := s.AgentGrantScopes(ctx, org, "alice", platform, "a1", time.Now()); got != nil {
			t.Fatalf("revoked grant still mints %v", got)
		}
		// The grants page without a session goes to login.
		w = e.do(t, req{method: http.MethodGet, path: "/agent/grants", header: map[string]string{"Accept": "text/html"}})
		wantStatus(t, w, http.StatusSeeOther)
	})
}

// TestPathPrefix: mounted under a prefix on the host's own router (here a
// net/http.ServeMux), the handler serves and links its pages there.
func TestPathPrefix(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	h, err := consent.New(consent.Config{Store: s, Directory: users, Sessions: sloppySessions, Catalog: catalog, PathPrefix: "/idp"})
	if err != nil {
		t.Fatal(err)
	}
	host := http.NewServeMux()
	host.Handle("/idp/agent/", h)
	createPlatforms(t, s)
	e := &env{s: s, h: host}
	w := e.do(t, req{method: http.MethodGet, user: "alice", path: "/idp" + approvePath("s", "docs:read")})
	wantStatus(t, w, http.StatusOK)
	for _, want := range []string{`action="/idp/agent/approve"`, `href="/idp/agent/static/consent.css"`} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	w = e.do(t, req{user: "alice", path: "/idp/agent/approve", body: approveJSON("s", "approve", "docs:read")})
	wantStatus(t, w, http.StatusOK)
	w = e.do(t, req{method: http.MethodGet, user: "alice", path: "/idp/agent/nothing-here"})
	wantStatus(t, w, http.StatusNotFound)
	w = e.do(t, req{method: http.MethodPut, user: "alice", path: "/idp/agent/approve"})
	wantStatus(t, w, http.StatusMethodNotAllowed)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	if _, err := consent.New(consent.Config{Store: s, Directory: users}); err == nil {
		t.Error("no Sessions accepted")
	}
	if _, err := consent.New(consent.Config{Store: s, Directory: users, Sessions: sloppySessions, TrustedOrigins: []string{"not a url"}}); err == nil {
		t.Error("bad trusted origin accepted")
	}
	for _, prefix := range []string{"idp", "/idp/", "/"} {
		if _, err := consent.New(consent.Config{Store: s, Directory: users, Sessions: sloppySessions, PathPrefix: prefix}); err == nil {
			t.Errorf("PathPrefix %q accepted", prefix)
		}
	}
	// A store that cannot look clients up needs Clients.
	grantsOnly := struct{ consent.Storage }{s}
	if _, err := consent.New(consent.Config{Store: grantsOnly, Directory: users, Sessions: sloppySessions}); err == nil {
		t.Error("no way to find agent platforms accepted")
	}
	if _, err := consent.New(consent.Config{Store: grantsOnly, Clients: s, Directory: users, Sessions: sloppySessions}); err != nil {
		t.Errorf("Clients beside a grants-only store: %v", err)
	}
}

func TestSessionCookie(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url    string
		secure bool
	}{
		{"http://localhost:8080/login", false},
		{"http://127.0.0.1:8080/login", false},
		{"http://[::1]:8080/login", false},
		{"http://idp.example/login", true},
		{"https://localhost/login", true},
	} {
		r := httptest.NewRequest(http.MethodPost, tc.url, nil)
		c := consent.SessionCookie(r, "sid", "v", time.Hour)
		if c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.MaxAge != 3600 {
			t.Errorf("%s: %+v", tc.url, c)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "http://idp.example/logout", nil)
	if c := consent.SessionCookie(r, "sid", "", -1); c.MaxAge >= 0 {
		t.Errorf("delete cookie MaxAge = %d", c.MaxAge)
	}
}

// TestApprovalBoundToPlatform: an approval is for one agent platform. The
// page names it (name and client id), the API takes it, the grant, the
// grants list and the audit log carry it, and another platform using the
// same session id for the same user is not covered by it.
func TestApprovalBoundToPlatform(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		ctx := context.Background()
		html := map[string]string{"Accept": "text/html"}

		w := e.do(t, req{method: http.MethodGet, user: "alice", path: approvePath("shared-run", "docs:write"), header: html})
		wantStatus(t, w, http.StatusOK)
		for _, want := range []string{platformName, "<code>" + platform + "</code>", `name="clientId" value="` + platform + `"`} {
			if !strings.Contains(w.Body.String(), want) {
				t.Errorf("approval page lacks %q", want)
			}
		}
		for _, p := range []string{approvePathFor("no-such-platform", "shared-run", "docs:write"), "/agent/approve?organization=acme&session=s&scope=docs:read"} {
			w := e.do(t, req{method: http.MethodGet, user: "alice", path: p, header: html})
			wantStatus(t, w, http.StatusBadRequest)
		}

		w = e.do(t, req{user: "alice", body: approveJSON("shared-run", "approve", "docs:write")})
		wantStatus(t, w, http.StatusOK)
		g := decode[grantJSON](t, w)
		if g.ClientID != platform {
			t.Fatalf("grant = %+v, want client %s", g, platform)
		}
		if got, _ := s.AgentGrantScopes(ctx, org, "alice", platform, "shared-run", time.Now()); fmt.Sprint(got) != "[docs:write]" {
			t.Fatalf("the platform's scopes = %v", got)
		}
		// The other platform, same user, same session id: nothing.
		if got, err := s.AgentGrantScopes(ctx, org, "alice", otherPlatform, "shared-run", time.Now()); err != nil || got != nil {
			t.Fatalf("another platform got %v, %v", got, err)
		}
		// Its own approval is a grant of its own; the first is untouched.
		w = e.do(t, req{user: "alice", body: approveJSONFor(otherPlatform, "shared-run", "approve", "docs:read")})
		wantStatus(t, w, http.StatusOK)
		if g2 := decode[grantJSON](t, w); g2.ID == g.ID || g2.ClientID != otherPlatform {
			t.Fatalf("the other platform's grant = %+v", g2)
		}
		if got, _ := s.AgentGrantScopes(ctx, org, "alice", platform, "shared-run", time.Now()); fmt.Sprint(got) != "[docs:write]" {
			t.Fatalf("the first platform's scopes after the second's approval = %v", got)
		}

		list := decode[struct{ Grants []grantJSON }](t, e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice"}))
		byClient := map[string]grantJSON{}
		for _, g := range list.Grants {
			byClient[g.ClientID] = g
		}
		if len(list.Grants) != 2 || byClient[platform].ClientName != platformName || byClient[otherPlatform].ClientName != "Other Platform" {
			t.Fatalf("grants API = %+v", list.Grants)
		}
		w = e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice", header: html})
		wantStatus(t, w, http.StatusOK)
		for _, want := range []string{"Agent platform", platformName, "<code>" + platform + "</code>", "<code>" + otherPlatform + "</code>"} {
			if !strings.Contains(w.Body.String(), want) {
				t.Errorf("grants page lacks %q", want)
			}
		}

		// The form flow's confirmation names it too.
		w = e.do(t, req{user: "alice", ctype: "application/x-www-form-urlencoded",
			body: "organization=acme&clientId=" + platform + "&sessionId=form-run&scopes=docs:read&decision=approve"})
		wantStatus(t, w, http.StatusSeeOther)
		w = e.do(t, req{method: http.MethodGet, user: "alice", path: w.Header().Get("Location")})
		wantStatus(t, w, http.StatusOK)
		if !strings.Contains(w.Body.String(), platformName) || !strings.Contains(w.Body.String(), "docs:read") {
			t.Fatalf("done page: %s", w.Body.String())
		}

		// Every audit row names the platform: approvals, a denial, a revocation.
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSONFor(otherPlatform, "denied-run", "deny", "docs:write")}), http.StatusOK)
		wantStatus(t, e.do(t, req{method: http.MethodDelete, path: "/agent/grants/" + g.ID, user: "alice"}), http.StatusNoContent)
		ev, err := s.ListAudit(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ev {
			got = append(got, e.Event+":"+e.ClientID+":"+e.AgentSessionID)
		}
		want := "[approved:agent-plat:shared-run approved:other-plat:shared-run approved:agent-plat:form-run denied:other-plat:denied-run revoked:agent-plat:shared-run]"
		if fmt.Sprint(got) != want {
			t.Fatalf("audit = %v\nwant    %s", got, want)
		}
	})
}
