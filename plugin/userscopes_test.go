package plugin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// countingDirectory counts the questions that reach the host's Directory.
type countingDirectory struct {
	*testkit.Directory
	calls atomic.Int64
}

func (d *countingDirectory) UserScopes(ctx context.Context, userID, org string) ([]string, error) {
	d.calls.Add(1)
	return d.Directory.UserScopes(ctx, userID, org)
}

// newCountingDirectory is alice with docs:read and docs:write in acme.
func newCountingDirectory() *countingDirectory {
	return &countingDirectory{Directory: testkit.NewDirectory().Set("alice", "acme", "docs:read", "docs:write")}
}

// withUserScopesCache is a config change: dir as the Directory, users'
// scopes kept for a minute.
func withUserScopesCache(dir plugin.Directory) func(*plugin.Config) {
	return func(c *plugin.Config) {
		c.Directory = dir
		c.UserScopesCacheTTL = time.Minute
	}
}

// ccAs asks r for a client_credentials token in acme of the app with
// secret, for scope (all of the app's when ""), and returns the status and
// the granted scopes.
func ccAs(t *testing.T, r *agentIdP, app plugin.App, sec plugin.Secret, scope string) (int, string) {
	t.Helper()
	form := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return grantedScope(t, r.postAs(app.ID, sec.Secret, form.Encode()))
}

// mintAs asks r for an agent token in acme for session s1 with alice's
// token, and returns the status and the granted scopes.
func mintAs(t *testing.T, r *agentIdP) (int, string) {
	t.Helper()
	form := url.Values{"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {"__ACME__"},
		"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {"s1"}, "organization": {"acme"}}
	return grantedScope(t, r.post(r.placeholders.Replace(form.Encode()), true))
}

// TestUserScopesCacheAsksTheDirectoryOnce: with Config.UserScopesCacheTTL
// the token endpoint asks the Directory once for a user's
// client_credentials tokens and agent mints in one organization, and for
// every token without it, or over a Store that keeps no user revisions
// (it could not tell a stale answer then).
func TestUserScopesCacheAsksTheDirectoryOnce(t *testing.T) {
	t.Parallel()
	const tokens = 3 // of each grant
	tests := []struct {
		name      string
		ttl       time.Duration
		noRevs    bool
		wantCalls int64
	}{
		{"cache on", time.Minute, false, 1},
		{"cache off (the default)", 0, false, 2 * tokens},
		{"store without user revisions", time.Minute, true, 2 * tokens},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storagetest.Each(t, func(t *testing.T, s *storage.Store) {
				dir := newCountingDirectory()
				a := newAgentIdPConfig(t, s, func(c *plugin.Config) {
					c.Directory, c.UserScopesCacheTTL = dir, tt.ttl
					if tt.noRevs {
						c.Store = pinCheckingStore{&readCountingStore{Backend: s}}
					}
				})
				app, sec := ownedAppWithSecret(t, a.fuzzIdP, `"docs:read","docs:write"`)
				// The harness's first mint has asked already: a reported
				// change makes the next token ask again.
				if err := a.p.UserChanged(context.Background(), "alice"); err != nil {
					t.Fatal(err)
				}
				dir.calls.Store(0)
				for range tokens {
					if st, got := ccAs(t, a, app, sec, ""); st != http.StatusOK || got != "docs:read docs:write" {
						t.Fatalf("token: %d %q", st, got)
					}
					if st, got := mintAs(t, a); st != http.StatusOK || got != "docs:read" {
						t.Fatalf("mint: %d %q", st, got)
					}
				}
				if got := dir.calls.Load(); got != tt.wantCalls {
					t.Errorf("%d Directory calls for %d tokens and %d mints, want %d", got, tokens, tokens, tt.wantCalls)
				}
			})
		})
	}
}

// TestUserScopesCacheAcrossReplicas: two plugins on one database are two
// replicas, each keeping users' scopes. B is warmed with alice's scopes,
// alice changes in the Directory, the change is reported through A
// (Plugin.UserChanged), and B's next client_credentials token and agent
// mint must reflect it at once: a disabled owner gets nothing, a narrowed
// one narrower tokens. Without the user's revision checked in the token
// insert and read by the mint's lookup (storage.PinUser,
// storage.PrefetchUserRevision), B's kept answers would issue them: those
// cases fail then. A scope given since is granted once reported; a refusal
// is never a kept answer's; a narrowing left unreported is not seen (the
// contract Config.UserScopesCacheTTL states, and what shows B answers from
// memory).
func TestUserScopesCacheAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type replicas struct {
		a, b *agentIdP
		dir  *countingDirectory
		app  plugin.App
		sec  plugin.Secret
	}
	report := func(t *testing.T, r replicas) {
		t.Helper()
		if err := r.a.p.UserChanged(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	// Each case checks one grant on B, on replicas of its own: a check of
	// the other grant first would refresh B's kept answer and hide a
	// missing check in this one.
	type grant int
	const (
		cc grant = iota
		mint
	)
	ask := func(t *testing.T, r replicas, g grant, scope string) (int, string) {
		t.Helper()
		if g == mint {
			return mintAs(t, r.b)
		}
		return ccAs(t, r.b, r.app, r.sec, scope)
	}
	tests := []struct {
		name   string
		grants []grant
		// clientTTL, when set, is B's Config.ClientCacheTTL.
		clientTTL time.Duration
		change    func(t *testing.T, r replicas)
		check     func(t *testing.T, r replicas, g grant) // on B
	}{
		{
			name:   "owner disabled, reported on A: nothing on B",
			grants: []grant{cc, mint},
			change: func(t *testing.T, r replicas) {
				r.dir.Disable("alice")
				report(t, r)
			},
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, ""); st == http.StatusOK {
					t.Errorf("token on B for a disabled user: %d %q", st, got)
				}
			},
		},
		{
			// The approval of docs:write no longer unlocks it either.
			name:   "membership narrowed, reported on A: narrow on B",
			grants: []grant{cc, mint},
			change: func(t *testing.T, r replicas) {
				r.dir.Set("alice", "acme", "docs:read")
				report(t, r)
			},
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, ""); st != http.StatusOK || got != "docs:read" {
					t.Errorf("token on B after narrowing: %d %q, want 200 docs:read", st, got)
				}
			},
		},
		{
			name:   "membership removed, reported on A: no scopes on B",
			grants: []grant{cc, mint},
			change: func(t *testing.T, r replicas) {
				r.dir.Set("alice", "acme")
				report(t, r)
			},
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, ""); st == http.StatusOK && got != "" {
					t.Errorf("token on B after the membership went: %d %q, want no scopes", st, got)
				}
			},
		},
		{
			name:   "scope given since, reported on A: granted on B",
			grants: []grant{cc},
			change: func(t *testing.T, r replicas) {
				r.dir.Set("alice", "acme", "docs:read")
				report(t, r)
				if st, got := ccAs(t, r.b, r.app, r.sec, ""); st != http.StatusOK || got != "docs:read" {
					t.Fatalf("B after narrowing: %d %q", st, got)
				}
				r.dir.Set("alice", "acme", "docs:read", "docs:write")
				report(t, r)
			},
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, "docs:write"); st != http.StatusOK || got != "docs:write" {
					t.Errorf("docs:write on B once given: %d %q, want 200 docs:write", st, got)
				}
			},
		},
		{
			// An answer from memory that fails the request (no scope left
			// to mint) is asked again of the Directory, reported or not,
			// even when the client itself was read afresh (no client kept).
			name:      "a refusal is never a kept answer's",
			grants:    []grant{mint},
			clientTTL: time.Nanosecond,
			change: func(t *testing.T, r replicas) {
				r.dir.Set("alice", "acme")
				report(t, r)
				if st, _ := mintAs(t, r.b); st == http.StatusOK {
					t.Fatal("B minted with no membership")
				}
				r.dir.Set("alice", "acme", "docs:read") // unreported
			},
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, ""); st != http.StatusOK || got != "docs:read" {
					t.Errorf("mint on B once the membership came back: %d %q, want 200 docs:read", st, got)
				}
			},
		},
		{
			name:   "narrowing left unreported: B still answers from memory",
			grants: []grant{cc, mint},
			change: func(t *testing.T, r replicas) { r.dir.Set("alice", "acme", "docs:read") },
			check: func(t *testing.T, r replicas, g grant) {
				if st, got := ask(t, r, g, ""); st != http.StatusOK || got != "docs:read docs:write" {
					t.Errorf("token on B, change unreported: %d %q, want the kept docs:read docs:write", st, got)
				}
			},
		},
	}
	for _, tt := range tests {
		for _, g := range tt.grants {
			t.Run(tt.name+[]string{"/client_credentials", "/mint"}[g], func(t *testing.T) {
				t.Parallel()
				storagetest.Each(t, func(t *testing.T, s *storage.Store) {
					r := replicas{dir: newCountingDirectory()}
					r.a = newAgentIdPConfig(t, s, withUserScopesCache(r.dir))
					modB := withUserScopesCache(r.dir)
					if tt.clientTTL != 0 {
						modB = func(c *plugin.Config) {
							withUserScopesCache(r.dir)(c)
							c.ClientCacheTTL = tt.clientTTL
						}
					}
					r.b = &agentIdP{fuzzIdP: newFuzzIdPConfig(t, s, true, modB), secret: r.a.secret, placeholders: r.a.placeholders}
					r.app, r.sec = ownedAppWithSecret(t, r.a.fuzzIdP, `"docs:read","docs:write"`)
					if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", fuzzAgentClient, "s1", []string{"docs:write"}, time.Now().Add(time.Hour)); err != nil {
						t.Fatal(err)
					}
					// B keeps alice's scopes, and answers from memory.
					for range 2 {
						if st, got := ask(t, r, g, ""); st != http.StatusOK || got != "docs:read docs:write" {
							t.Fatalf("warm-up on B: %d %q", st, got)
						}
					}
					before := r.dir.calls.Load()
					if st, _ := ask(t, r, g, ""); st != http.StatusOK || r.dir.calls.Load() != before {
						t.Fatalf("B asked the Directory again (%d calls, then %d): not answering from memory", before, r.dir.calls.Load())
					}
					tt.change(t, r)
					tt.check(t, r, g)
				})
			})
		}
	}
}

// changingDirectory changes alice's scopes and reports it, once, while it
// answers the first question after armed: the change lands between the
// revision the cache read and the token's insert.
type changingDirectory struct {
	*countingDirectory
	armed  atomic.Bool
	change func(ctx context.Context)
}

func (d *changingDirectory) UserScopes(ctx context.Context, userID, org string) ([]string, error) {
	scopes, err := d.countingDirectory.UserScopes(ctx, userID, org)
	if d.armed.CompareAndSwap(true, false) {
		d.change(ctx)
	}
	return scopes, err
}

// TestUserScopesCacheChangeDuringTheQuestion: a change reported while the
// Directory answers a cache miss (after the cache read the user's
// revision, before the token is written) is not lost: the answer is kept
// at the revision read before, so the insert refuses it and the endpoint
// asks again. Without reading the revision first (keeping the answer at
// the revision after the change) the token would carry the old scopes.
func TestUserScopesCacheChangeDuringTheQuestion(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		dir := &changingDirectory{countingDirectory: newCountingDirectory()}
		a := newAgentIdPConfig(t, s, withUserScopesCache(dir))
		app, sec := ownedAppWithSecret(t, a.fuzzIdP, `"docs:read","docs:write"`)
		dir.change = func(ctx context.Context) {
			dir.Set("alice", "acme", "docs:read")
			if err := a.p.UserChanged(context.Background(), "alice"); err != nil {
				t.Error(err)
			}
		}
		if err := a.p.UserChanged(context.Background(), "alice"); err != nil {
			t.Fatal(err)
		}
		dir.armed.Store(true)
		if st, got := ccAs(t, a, app, sec, ""); st != http.StatusOK || got != "docs:read" {
			t.Errorf("token whose owner was narrowed while the Directory answered: %d %q, want 200 docs:read", st, got)
		}
		if st, got := ccAs(t, a, app, sec, ""); st != http.StatusOK || got != "docs:read" {
			t.Errorf("next token: %d %q, want 200 docs:read", st, got)
		}
	})
}

// TestUserScopesCacheOnlyAtTheTokenEndpoint: a kept answer serves only the
// token endpoint's client_credentials and agent-token requests. With alice
// narrowed in the Directory and the change left unreported (so that only
// a fresh question sees it), introspecting a token issued from the kept
// answer shows the narrowed scopes: introspection asks the Directory.
func TestUserScopesCacheOnlyAtTheTokenEndpoint(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		dir := newCountingDirectory()
		a := newAgentIdPConfig(t, s, withUserScopesCache(dir))
		app, sec := ownedAppWithSecret(t, a.fuzzIdP, `"docs:read","docs:write"`)
		form := url.Values{"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"}}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		for range 2 {
			w := a.postAs(app.ID, sec.Secret, form.Encode())
			if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &tok) != nil {
				t.Fatalf("token: %d %s", w.Code, w.Body.String())
			}
		}
		dir.Set("alice", "acme", "docs:read") // unreported
		if st, got := ccAs(t, a, app, sec, ""); st != http.StatusOK || got != "docs:read docs:write" {
			t.Fatalf("token endpoint, change unreported: %d %q, want the kept answer", st, got)
		}
		req := httptest.NewRequest(http.MethodPost, plugin.IntrospectionPath, strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(sec.Secret))
		w := httptest.NewRecorder()
		a.h.ServeHTTP(w, req)
		var in struct {
			Active bool   `json:"active"`
			Scope  string `json:"scope"`
		}
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &in) != nil {
			t.Fatalf("introspection: %d %s", w.Code, w.Body.String())
		}
		if !in.Active || in.Scope != "docs:read" {
			t.Errorf("introspection of a token issued from the kept answer: active %v, scope %q; want the Directory's docs:read", in.Active, in.Scope)
		}
	})
}
