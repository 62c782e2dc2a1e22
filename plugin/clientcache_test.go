package plugin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestClientCacheAcrossReplicas: two plugins on one database are two
// replicas, each with its own client cache. Replica B's cache is warmed
// with a client, the client changes through replica A (or straight in the
// database, as any other replica would change it), and B's next token
// request must see the change at once: a removed secret or app stops
// working, a narrowed app gets narrower tokens, a new secret works, a
// revoked grant unlocks nothing. Without the revision check in the token
// insert and the grant query (storage.PinClient) the stale copies would
// answer: each case fails then. integration's TestReplicas proves the same
// across processes.
func TestClientCacheAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type replicas struct {
		a, b *agentIdP
		app  plugin.App
		sec  plugin.Secret
	}
	// ccToken asks r for a client_credentials token of the app with secret
	// and returns the status and the granted scopes.
	ccToken := func(t *testing.T, r *agentIdP, appID, secret string) (int, string) {
		t.Helper()
		form := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"}}
		return grantedScope(t, r.postAs(appID, secret, form.Encode()))
	}
	mintWith := func(t *testing.T, r *agentIdP, subject, session string) (int, string) {
		t.Helper()
		form := url.Values{"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {subject},
			"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {session}, "organization": {"acme"}}
		return grantedScope(t, r.post(r.placeholders.Replace(form.Encode()), true))
	}
	mint := func(t *testing.T, r *agentIdP, session string) (int, string) {
		t.Helper()
		return mintWith(t, r, "__ACME__", session)
	}
	put := func(t *testing.T, r *agentIdP, appID string, scopes string) {
		t.Helper()
		body := []byte(`{"name":"robot","scopes":[` + scopes + `]}`)
		if w := r.do(http.MethodPut, "/api/apps/"+appID, "alice", "application/json", body); w.Code != http.StatusOK {
			t.Fatalf("change app: %d %s", w.Code, w.Body.String())
		}
	}

	// deletePlatformSecret deletes the agent platform's one secret, as
	// another replica would.
	deletePlatformSecret := func(t *testing.T, r replicas) {
		t.Helper()
		secrets, err := r.a.store.ListClientSecrets(ctx, fuzzAgentClient)
		if err != nil || len(secrets) != 1 {
			t.Fatalf("platform secrets: %v, %v", secrets, err)
		}
		if err := r.a.store.DeleteClientSecret(ctx, fuzzAgentClient, secrets[0].ID); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name   string
		warm   func(t *testing.T, r replicas) // on B, before the change
		change func(t *testing.T, r replicas)
		check  func(t *testing.T, r replicas) // on B, after
	}{
		{
			name: "secret deleted on A stops working on B",
			change: func(t *testing.T, r replicas) {
				if w := r.a.do(http.MethodDelete, "/api/apps/"+r.app.ID+"/secrets/"+r.sec.ID, "alice", "", nil); w.Code != http.StatusNoContent {
					t.Fatalf("delete secret on A: %d %s", w.Code, w.Body.String())
				}
			},
			check: func(t *testing.T, r replicas) {
				if st, _ := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusUnauthorized {
					t.Errorf("token on B with the deleted secret: %d, want 401", st)
				}
			},
		},
		{
			name: "app deleted on A stops working on B",
			change: func(t *testing.T, r replicas) {
				if w := r.a.do(http.MethodDelete, "/api/apps/"+r.app.ID, "alice", "", nil); w.Code != http.StatusNoContent {
					t.Fatalf("delete app on A: %d %s", w.Code, w.Body.String())
				}
			},
			check: func(t *testing.T, r replicas) {
				if st, _ := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusUnauthorized {
					t.Errorf("token on B of the deleted app: %d, want 401", st)
				}
			},
		},
		{
			name:   "app narrowed on A is narrow on B",
			change: func(t *testing.T, r replicas) { put(t, r.a, r.app.ID, `"docs:read"`) },
			check: func(t *testing.T, r replicas) {
				if st, got := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusOK || got != "docs:read" {
					t.Errorf("token on B after narrowing: %d %q, want 200 docs:read", st, got)
				}
			},
		},
		{
			// A copy behind on anything fosite checks before the token
			// insert (here the scopes it may ask for) must not answer.
			name: "app widened on A is wide on B",
			change: func(t *testing.T, r replicas) {
				put(t, r.a, r.app.ID, `"docs:read"`)
				if st, got := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusOK || got != "docs:read" {
					t.Fatalf("B after narrowing: %d %q", st, got)
				}
				put(t, r.a, r.app.ID, `"docs:read","docs:write"`)
			},
			check: func(t *testing.T, r replicas) {
				form := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"}, "scope": {"docs:write"}}
				if st, got := grantedScope(t, r.b.postAs(r.app.ID, r.sec.Secret, form.Encode())); st != http.StatusOK || got != "docs:write" {
					t.Errorf("docs:write on B after the app was widened on A: %d %q, want 200 docs:write", st, got)
				}
			},
		},
		{
			// A deleted secret is refused as such before anything else: a
			// copy in memory must not keep answering about subject tokens
			// (invalid_grant and its hints) for whoever holds the secret.
			name:   "agent platform's deleted secret is invalid_client on B, whatever else the request holds",
			change: deletePlatformSecret,
			check: func(t *testing.T, r replicas) {
				for _, subject := range []string{"dpy_at_not-a-token", "__EXPIRED__"} {
					w := r.b.post(r.b.placeholders.Replace(url.Values{"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {subject},
						"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {"s1"}, "organization": {"acme"}}.Encode()), true)
					if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"invalid_client"`) {
						t.Errorf("mint on B, deleted secret, subject %s: %d %s, want 401 invalid_client", subject, w.Code, w.Body.String())
					}
				}
			},
		},
		{
			name: "secret created on A works on B",
			change: func(t *testing.T, r replicas) {
				w := r.a.do(http.MethodPost, "/api/apps/"+r.app.ID+"/secrets", "alice", "", nil)
				var sec plugin.Secret
				if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &sec) != nil {
					t.Fatalf("create secret on A: %d %s", w.Code, w.Body.String())
				}
				if st, _ := ccToken(t, r.b, r.app.ID, sec.Secret); st != http.StatusOK {
					t.Errorf("token on B with the new secret: %d, want 200", st)
				}
			},
			check: func(t *testing.T, r replicas) {
				if st, _ := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusOK {
					t.Errorf("token on B with the old secret, still live: %d, want 200", st)
				}
			},
		},
		{
			name:   "agent platform's secret deleted stops its mints on B",
			change: deletePlatformSecret,
			check: func(t *testing.T, r replicas) {
				if st, _ := mint(t, r.b, "s1"); st != http.StatusUnauthorized {
					t.Errorf("mint on B with the platform's deleted secret: %d, want 401", st)
				}
			},
		},
		{
			name: "agent platform narrowed mints narrow on B",
			change: func(t *testing.T, r replicas) {
				c, err := r.a.store.Client(ctx, fuzzAgentClient)
				if err != nil {
					t.Fatal(err)
				}
				c.Scopes = []string{"docs:read"}
				if err := r.a.store.UpdateClient(ctx, c); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, r replicas) {
				if st, got := mint(t, r.b, "s1"); st != http.StatusOK || got != "docs:read" {
					t.Errorf("mint on B after narrowing the platform: %d %q, want 200 docs:read", st, got)
				}
			},
		},
		{
			name: "grant revoked on A unlocks nothing on B",
			change: func(t *testing.T, r replicas) {
				grants, err := r.a.store.ListAgentGrants(ctx, "alice", time.Now())
				if err != nil || len(grants) != 1 {
					t.Fatalf("grants: %v, %v", grants, err)
				}
				if w := r.a.do(http.MethodDelete, "/agent/grants/"+grants[0].ID, "alice", "", nil); w.Code/100 != 2 {
					t.Fatalf("revoke on A: %d %s", w.Code, w.Body.String())
				}
			},
			check: func(t *testing.T, r replicas) {
				if st, got := mint(t, r.b, "s1"); st != http.StatusOK || got != "docs:read" {
					t.Errorf("mint on B after the grant was revoked: %d %q, want 200 docs:read", st, got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storagetest.Each(t, func(t *testing.T, s *storage.Store) {
				var r replicas
				r.a = newAgentIdP(t, s)
				r.b = r.a.replica(t)
				r.app, r.sec = ownedAppWithSecret(t, r.a.fuzzIdP, `"docs:read","docs:write"`)
				if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", fuzzAgentClient, "s1", []string{"docs:write"}, time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				// B remembers both clients, and answers from memory.
				for range 2 {
					if st, got := ccToken(t, r.b, r.app.ID, r.sec.Secret); st != http.StatusOK || !scope.Contains(strings.Fields(got), "docs:write") {
						t.Fatalf("warm-up token on B: %d %q", st, got)
					}
					if st, got := mint(t, r.b, "s1"); st != http.StatusOK || !scope.Contains(strings.Fields(got), "docs:write") {
						t.Fatalf("warm-up mint on B: %d %q", st, got)
					}
				}
				tt.change(t, r)
				tt.check(t, r)
			})
		})
	}
}

// replica is a second plugin on a's database with the same configuration
// and system secret: another replica behind the same load balancer, with
// a client cache of its own.
func (a *agentIdP) replica(tb testing.TB) *agentIdP {
	tb.Helper()
	return &agentIdP{fuzzIdP: newFuzzIdP(tb, a.store, true), secret: a.secret, placeholders: a.placeholders}
}

// postAs sends body to the token endpoint authenticated as client id with
// secret (HTTP Basic).
func (a *agentIdP) postAs(id, secret, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, plugin.TokenPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, req)
	return w
}

// grantedScope returns a token answer's status and, for a 200, its scope;
// a 5xx fails the test.
func grantedScope(t *testing.T, w *httptest.ResponseRecorder) (int, string) {
	t.Helper()
	if w.Code >= 500 {
		t.Fatalf("token endpoint: %d %s", w.Code, w.Body.String())
	}
	var out struct {
		Scope string `json:"scope"`
	}
	if w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
	}
	return w.Code, out.Scope
}

// readCountingStore is a Backend that counts client reads and is not
// *storage.Store: it does not say it checks client pins
// (storage.ClientPinChecker); pinCheckingStore does.
type readCountingStore struct {
	storage.Backend
	mu    sync.Mutex
	reads int
}

func (s *readCountingStore) Client(ctx context.Context, id string) (*storage.Client, error) {
	s.mu.Lock()
	s.reads++
	s.mu.Unlock()
	return s.Backend.Client(ctx, id)
}

type pinCheckingStore struct{ *readCountingStore }

func (pinCheckingStore) ChecksClientPins() bool { return true }

// TestClientCacheOnlyWhenSafe: the token endpoint keeps clients in memory
// only over a Backend that checks client pins (it could not tell a stale
// copy otherwise), and not when Config.ClientCacheTTL turns it off; then
// it reads the client for every token.
func TestClientCacheOnlyWhenSafe(t *testing.T) {
	t.Parallel()
	const tokens = 3
	tests := []struct {
		name      string
		pins      bool
		ttl       time.Duration
		wantReads int
	}{
		{"store without pins", false, 0, tokens},
		{"store with pins", true, 0, 1},
		{"store with pins, cache off", true, -1, tokens},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storagetest.Each(t, func(t *testing.T, s *storage.Store) {
				counting := &readCountingStore{Backend: s}
				var store storage.Backend = counting
				if tt.pins {
					store = pinCheckingStore{counting}
				}
				p, _ := newPlugin(t, s, func(c *plugin.Config) { c.Store, c.ClientCacheTTL = store, tt.ttl })
				r := mux.NewRouter()
				mountKit(r, p)
				z := &agentIdP{fuzzIdP: &fuzzIdP{store: s, p: p, h: r}}
				app, sec := ownedAppWithSecret(t, z.fuzzIdP, `"docs:read"`)
				counting.mu.Lock()
				counting.reads = 0
				counting.mu.Unlock()
				for range tokens {
					form := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"}}
					if st, _ := grantedScope(t, z.postAs(app.ID, sec.Secret, form.Encode())); st != http.StatusOK {
						t.Fatalf("token: %d", st)
					}
				}
				counting.mu.Lock()
				defer counting.mu.Unlock()
				if counting.reads != tt.wantReads {
					t.Errorf("%d client reads for %d tokens, want %d", counting.reads, tokens, tt.wantReads)
				}
			})
		})
	}
}

// ownedAppWithSecret creates, through z's apps API, an app of alice's with
// scopes (JSON strings, comma-separated) and one secret.
func ownedAppWithSecret(t *testing.T, z *fuzzIdP, scopes string) (plugin.App, plugin.Secret) {
	t.Helper()
	var app plugin.App
	var sec plugin.Secret
	w := z.do(http.MethodPost, "/api/apps", "alice", "application/json", []byte(`{"name":"robot","scopes":[`+scopes+`]}`))
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &app) != nil {
		t.Fatalf("create app: %d %s", w.Code, w.Body.String())
	}
	w = z.do(http.MethodPost, "/api/apps/"+app.ID+"/secrets", "alice", "", nil)
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &sec) != nil {
		t.Fatalf("create secret: %d %s", w.Code, w.Body.String())
	}
	return app, sec
}
