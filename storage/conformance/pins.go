package conformance

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// testClientRevisions: every change to a client or its secrets moves its
// revision on, and nothing else does.
func testClientRevisions(t *testing.T, s Store) {
	ctx := context.Background()
	c := newOwnedClient(t, s, "rev-app", "alice")
	revision := func() int64 {
		t.Helper()
		got, err := s.Client(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Revision
	}
	if got := revision(); got <= 0 || got != c.Revision {
		t.Fatalf("a new client: revision %d (CreateClient set %d), want the same, above 0", got, c.Revision)
	}
	var secretID string
	steps := []struct {
		name   string
		change func() error
		bumps  bool
	}{
		{"UpdateClient", func() error { c.Scopes = []string{"docs:read", "docs:write"}; return s.UpdateClient(ctx, c) }, true},
		{"CreateClientSecret", func() error {
			cs, err := s.CreateClientSecret(ctx, c.ID, []byte("rev-hash-1"), "dpy_cs_r")
			if cs != nil {
				secretID = cs.ID
			}
			return err
		}, true},
		{"TouchClientSecret", func() error { return s.TouchClientSecret(ctx, []byte("rev-hash-1"), time.Now()) }, false},
		{"MarkClientUsed", func() error { return s.MarkClientUsed(ctx, c.ID) }, false},
		{"CreateAccessTokenSession", func() error {
			return s.CreateAccessTokenSession(ctx, "rev-sig", newRequest(c, "rev-req", "alice", future))
		}, false},
		{"DeleteClientSecret", func() error { return s.DeleteClientSecret(ctx, c.ID, secretID) }, true},
	}
	for _, step := range steps {
		before := revision()
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		after := revision()
		if step.bumps && after <= before {
			t.Errorf("%s: revision %d → %d, want it moved on", step.name, before, after)
		}
		if !step.bumps && after != before {
			t.Errorf("%s: revision %d → %d, want it unchanged", step.name, before, after)
		}
	}
	// A failed change (no such secret, no such client) moves nothing.
	before := revision()
	if err := s.DeleteClientSecret(ctx, c.ID, "no-such-secret"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("DeleteClientSecret of an unknown secret: %v", err)
	}
	if _, err := s.CreateClientSecret(ctx, "no-such-client", []byte("rev-hash-2"), "dpy_cs_x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("CreateClientSecret for an unknown client: %v", err)
	}
	if got := revision(); got != before {
		t.Errorf("failed changes moved the revision %d → %d", before, got)
	}
	cs, err := s.ListClients(ctx, "alice")
	if err != nil || len(cs) != 1 || cs[0].Revision != before {
		t.Errorf("ListClients: %d clients, err %v; want the one at revision %d", len(cs), err, before)
	}
}

// testPinnedClient: a request that pinned its client (storage.PinClient)
// issues a token, or finds the client's agent grant, only while the
// client's row still has the revision it read; after any change through
// any connection it gets storage.ErrStaleClient and nothing is written.
func testPinnedClient(t *testing.T, s Store) {
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(t *testing.T, c *storage.Client, secretID string)
		stale  bool
	}{
		{"unchanged", func(*testing.T, *storage.Client, string) {}, false},
		{"scopes narrowed", func(t *testing.T, c *storage.Client, _ string) {
			u := *c
			u.Scopes = []string{"docs:read"}
			if err := s.UpdateClient(ctx, &u); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"secret deleted", func(t *testing.T, c *storage.Client, secretID string) {
			if err := s.DeleteClientSecret(ctx, c.ID, secretID); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"secret added", func(t *testing.T, c *storage.Client, _ string) {
			if _, err := s.CreateClientSecret(ctx, c.ID, []byte(c.ID+"-second"), "dpy_cs_2"); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"client deleted", func(t *testing.T, c *storage.Client, _ string) {
			if err := s.DeleteClient(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"client created again under the same id, with the same secret", func(t *testing.T, c *storage.Client, _ string) {
			if err := s.DeleteClient(ctx, c.ID); err != nil {
				t.Fatal(err)
			}
			// The same steps as the first time (create, update, secret), so
			// that a revision counted from the same start would match.
			again := *c
			if err := s.CreateClient(ctx, &again); err != nil {
				t.Fatal(err)
			}
			if err := s.UpdateClient(ctx, &again); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateClientSecret(ctx, c.ID, []byte(c.ID+"-first"), "dpy_cs_1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", c.ID, "sess", []string{"docs:write"}, future); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "pin-" + string(rune('a'+i))
			c := newOwnedClient(t, s, id, "alice")
			c.GrantTypes = []string{"client_credentials", "urn:deputy:params:oauth:grant-type:agent-token"}
			c.Scopes = []string{"docs:read", "docs:write"}
			if err := s.UpdateClient(ctx, c); err != nil {
				t.Fatal(err)
			}
			secret, err := s.CreateClientSecret(ctx, id, []byte(id+"-first"), "dpy_cs_1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", id, "sess", []string{"docs:write"}, future); err != nil {
				t.Fatal(err)
			}
			read, err := s.Client(ctx, id) // what a cache would hold
			if err != nil {
				t.Fatal(err)
			}
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)

			tt.change(t, read, secret.ID)

			err = s.CreateAccessTokenSession(pinned, id+"-sig", newRequest(read, id+"-req", "alice", future))
			_, lookupErr := s.GetAccessTokenSession(ctx, id+"-sig", session())
			scopes, grantErr := s.AgentGrantScopes(pinned, "acme", "alice", id, "sess", time.Now())
			if !tt.stale {
				if err != nil || lookupErr != nil {
					t.Fatalf("token of an unchanged pinned client: insert %v, lookup %v", err, lookupErr)
				}
				if grantErr != nil || len(scopes) != 1 || scopes[0] != "docs:write" {
					t.Fatalf("grant of an unchanged pinned client: %v, %v; want [docs:write]", scopes, grantErr)
				}
				// No grant for the session: nil, not stale.
				if got, err := s.AgentGrantScopes(pinned, "acme", "alice", id, "other-sess", time.Now()); got != nil || err != nil {
					t.Fatalf("no grant, pinned client unchanged: %v, %v; want nil, nil", got, err)
				}
				return
			}
			if !errors.Is(err, storage.ErrStaleClient) {
				t.Fatalf("token insert after the client changed: %v, want ErrStaleClient", err)
			}
			if !errors.Is(lookupErr, storage.ErrNotFound) {
				t.Fatalf("the refused token was stored: lookup %v", lookupErr)
			}
			if !errors.Is(grantErr, storage.ErrStaleClient) || scopes != nil {
				t.Fatalf("grant lookup after the client changed: %v, %v; want ErrStaleClient", scopes, grantErr)
			}
			// Unpinned (a fresh read), the same calls answer as usual.
			if got, err := s.AgentGrantScopes(ctx, "acme", "alice", id, "sess", time.Now()); err != nil {
				t.Fatalf("unpinned grant lookup: %v, %v", got, err)
			}
			// A pin after a fresh read is current again.
			if fresh, err := s.Client(ctx, id); err == nil {
				storage.ForgetPin(pinned)
				storage.PinClient(pinned, fresh)
				if err := s.CreateAccessTokenSession(pinned, id+"-sig2", newRequest(fresh, id+"-req2", "alice", future)); err != nil {
					t.Fatalf("token after a fresh read: %v", err)
				}
			}
		})
	}

	// A pin names one client: another client's writes are not checked
	// against it, and a context without a pin checks nothing.
	other := newOwnedClient(t, s, "pin-other", "bob")
	pinned := storage.WithClientPin(ctx)
	storage.PinClient(pinned, &storage.Client{ID: "pin-a", Revision: 999})
	if err := s.CreateAccessTokenSession(pinned, "pin-other-sig", newRequest(other, "pin-other-req", "bob", future)); err != nil {
		t.Fatalf("token of a client the pin does not name: %v", err)
	}
	storage.PinClient(ctx, &storage.Client{ID: "pin-other", Revision: 999}) // no WithClientPin: no effect
	if err := s.CreateAccessTokenSession(ctx, "pin-other-sig2", newRequest(other, "pin-other-req2", "bob", future)); err != nil {
		t.Fatalf("token without a pin: %v", err)
	}
}

// testPrefetchedGrant: an agent-token grant's subject-token lookup with a
// prefetch (storage.PrefetchAgentGrant) returns the same token, and
// AgentGrantScopes answers as it would have on its own: the binding's
// scopes, nil for none or expired, ErrStaleClient for a platform changed or
// deleted since it was pinned, and for any other binding (another user's
// grant on the same platform and session, another platform's grant for the
// same user and session) that binding's own grant.
func testPrefetchedGrant(t *testing.T, s Store) {
	ctx := context.Background()
	web := newClient(t, s, "pf-web")
	const sess = "pf-sess"
	tests := []struct {
		name    string
		setup   func(t *testing.T, plat *storage.Client)
		other   bool // ask for the other platform, not the pinned one
		org     string
		user    string
		session string
		want    []string
		wantErr error
	}{
		{"the binding", nil, false, "acme", "alice", sess, []string{"docs:write"}, nil},
		{"another user's grant on the platform", nil, false, "acme", "aaron", sess, []string{"docs:read"}, nil},
		{"another platform's grant", nil, true, "acme", "alice", sess, []string{"admin:read"}, nil},
		{"no grant in that organization", nil, false, "globex", "alice", sess, nil, nil},
		{"another session", nil, false, "acme", "alice", "other", nil, nil},
		{"platform changed", func(t *testing.T, plat *storage.Client) {
			u := *plat
			if err := s.UpdateClient(ctx, &u); err != nil {
				t.Fatal(err)
			}
		}, false, "acme", "alice", sess, nil, storage.ErrStaleClient},
		{"platform deleted", func(t *testing.T, plat *storage.Client) {
			if err := s.DeleteClient(ctx, plat.ID); err != nil {
				t.Fatal(err)
			}
		}, false, "acme", "alice", sess, nil, storage.ErrStaleClient},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			suffix := string(rune('a' + i))
			plat := newOwnedClient(t, s, "pf-plat-"+suffix, "alice")
			other := newOwnedClient(t, s, "pf-other-"+suffix, "alice")
			for _, g := range []struct {
				user, client string
				scopes       []string
			}{
				// The others first, and aaron sorts before alice, so that
				// a lookup that ignored the user or the client would find
				// theirs before alice's, by insertion or by index order.
				{"aaron", plat.ID, []string{"docs:read"}},
				{"alice", other.ID, []string{"admin:read"}},
				{"alice", plat.ID, []string{"docs:write"}},
			} {
				if _, err := s.ApproveAgentGrant(ctx, "acme", g.user, g.client, sess, g.scopes, future); err != nil {
					t.Fatal(err)
				}
			}
			sig := "pf-sig-" + suffix
			want := newRequest(web, "pf-req-"+suffix, "alice", future)
			if err := s.CreateAccessTokenSession(ctx, sig, want); err != nil {
				t.Fatal(err)
			}
			read, err := s.Client(ctx, plat.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, read)
			}
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)
			storage.PrefetchAgentGrant(pinned, "acme", sess)
			got, err := s.GetAccessTokenSession(pinned, sig, session())
			if err != nil {
				t.Fatal(err)
			}
			checkRequest(t, got, want)
			asked := plat.ID
			if tt.other {
				asked = other.ID
			}
			scopes, err := s.AgentGrantScopes(pinned, tt.org, tt.user, asked, tt.session, time.Now())
			if !errors.Is(err, tt.wantErr) || fmt.Sprint(scopes) != fmt.Sprint(tt.want) || (tt.want == nil) != (scopes == nil) {
				t.Fatalf("AgentGrantScopes = %#v, %v; want %#v, %v", scopes, err, tt.want, tt.wantErr)
			}
			// Past the grants' expiry nothing is unlocked.
			if tt.wantErr == nil {
				if late, err := s.AgentGrantScopes(pinned, tt.org, tt.user, asked, tt.session, future.Add(time.Minute)); err != nil || late != nil {
					t.Fatalf("AgentGrantScopes after expiry = %v, %v; want nil", late, err)
				}
			}
		})
	}
}
