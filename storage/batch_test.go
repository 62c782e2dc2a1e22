package storage_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestBatchedAccessTokens: access tokens inserted while another insert is
// in flight are written in one statement, and each caller still gets its
// own row's outcome: a stale client pin refuses only the rows of that
// client (ErrStaleClient, nothing stored), a duplicate signature only its
// own row (ErrConflict), and every other row is stored as given. Both
// dialects; removing the pin's subquery from the batched statement, or the
// rewrite of a failed batch row by row, fails it.
func TestBatchedAccessTokens(t *testing.T) {
	t.Parallel()
	type row struct {
		sig, client string
		pinned      bool
		want        error // nil, ErrStaleClient or ErrConflict
	}
	tests := []struct {
		name   string
		pinned bool
		rows   []row
	}{
		{"unpinned", false, []row{
			{"u1", "current", false, nil}, {"u2", "current", false, nil}, {"u3", "changed", false, nil},
			{"u4", "current", false, nil}, {"u5", "changed", false, nil},
		}},
		{"pinned, all current", true, []row{
			{"p1", "current", true, nil}, {"p2", "current", true, nil}, {"p3", "current", true, nil},
		}},
		{"pinned, one client changed", true, []row{
			{"s1", "current", true, nil}, {"s2", "changed", true, storage.ErrStaleClient}, {"s3", "current", true, nil},
			{"s4", "changed", true, storage.ErrStaleClient}, {"s5", "current", true, nil},
		}},
		{"duplicate signature", false, []row{
			{"d1", "current", false, nil}, {"taken", "current", false, storage.ErrConflict}, {"d2", "current", false, nil},
		}},
		{"pinned, duplicate signature", true, []row{
			{"e1", "current", true, nil}, {"taken", "current", true, storage.ErrConflict}, {"e2", "changed", true, storage.ErrStaleClient},
		}},
	}
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx := context.Background()
				s, qc := b.OpenCounted(t)
				var err error
				future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
				read := map[string]*storage.Client{}
				for _, id := range []string{"current", "changed"} {
					if err := s.CreateClient(ctx, &storage.Client{ID: id, Scopes: []string{"docs:read"}}); err != nil {
						t.Fatal(err)
					}
					if read[id], err = s.Client(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
				if err := s.CreateAccessTokenSession(ctx, "taken", batchRequest(read["current"], "taken-req", "someone", future)); err != nil {
					t.Fatal(err)
				}
				// "changed" changes after it was read: a pin on that read is stale.
				changed := *read["changed"]
				changed.Name = "renamed"
				if err := s.UpdateClient(ctx, &changed); err != nil {
					t.Fatal(err)
				}

				before := s.Health()
				queued, release := s.HoldAccessTokenInserts(tt.pinned)
				errs := make([]error, len(tt.rows))
				var wg sync.WaitGroup
				for i, r := range tt.rows {
					ctx := ctx
					if r.pinned {
						ctx = storage.WithClientPin(ctx)
						storage.PinClient(ctx, read[r.client])
					}
					wg.Go(func() {
						errs[i] = s.CreateAccessTokenSession(ctx, r.sig, batchRequest(read[r.client], r.sig+"-req", "user-"+r.sig, future))
					})
				}
				waitFor(t, func() bool { return queued() == len(tt.rows) })
				counts := qc.Measure(func() {
					release()
					wg.Wait()
				})
				failures, conflicts := 0, uint64(0)
				for i, r := range tt.rows {
					if r.want == storage.ErrConflict {
						conflicts++
					}
					if r.want == nil {
						if errs[i] != nil {
							t.Errorf("%s: %v, want stored", r.sig, errs[i])
							continue
						}
						got, err := s.GetAccessTokenSession(ctx, r.sig, &fosite.DefaultSession{})
						if err != nil {
							t.Errorf("%s: lookup: %v", r.sig, err)
							continue
						}
						if got.GetID() != r.sig+"-req" || got.GetClient().GetID() != r.client ||
							got.GetSession().GetSubject() != "user-"+r.sig || !got.GetSession().GetExpiresAt(fosite.AccessToken).Equal(future) {
							t.Errorf("%s: stored %s by %s for %q until %v", r.sig, got.GetID(), got.GetClient().GetID(),
								got.GetSession().GetSubject(), got.GetSession().GetExpiresAt(fosite.AccessToken))
						}
						continue
					}
					failures++
					if !errors.Is(errs[i], r.want) {
						t.Errorf("%s: %v, want %v", r.sig, errs[i], r.want)
					}
					if r.sig == "taken" {
						continue // the earlier row stays
					}
					if _, err := s.GetAccessTokenSession(ctx, r.sig, &fosite.DefaultSession{}); !errors.Is(err, storage.ErrNotFound) {
						t.Errorf("%s: refused, yet stored: lookup %v", r.sig, err)
					}
				}
				// One statement for the batch, and one more per row when it
				// failed (each row written alone).
				want := int64(1)
				if failures > 0 {
					want += int64(len(tt.rows))
				}
				if got := counts.StmtExec; got != want {
					t.Errorf("%d statements for %d rows, want %d (%v)", got, len(tt.rows), want, counts)
				}
				// The store's failure counts are per request: the failed
				// batch is not one, and a stale pin is no database failure.
				after := s.Health()
				if got := after.Conflict - before.Conflict; got != conflicts {
					t.Errorf("conflicts counted: %d, want %d", got, conflicts)
				}
				if other, invalid := after.Other-before.Other, after.InvalidInput-before.InvalidInput; other != 0 || invalid != 0 {
					t.Errorf("failures counted: other %d, invalid input %d; want none", other, invalid)
				}
			})
		}
	})
}

func batchRequest(c fosite.Client, id, subject string, expires time.Time) *fosite.Request {
	return &fosite.Request{ID: id, Client: c, RequestedAt: time.Now().UTC().Truncate(time.Second),
		GrantedScope: fosite.Arguments{"docs:read"},
		Session: &fosite.DefaultSession{Subject: subject,
			ExpiresAt: map[fosite.TokenType]time.Time{fosite.AccessToken: expires}}}
}

// waitFor polls cond until it holds, failing t after a generous while.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
	}
}

// TestBatchedGrantLookups: the agent mint's subject-token lookups (with the
// grant prefetch) made while one is in flight are answered by one query,
// and each gets what it got alone: its own token (or ErrNotFound), and its
// own binding's grant (organization, the token's user, the pinned
// platform, session), ErrStaleClient for a platform changed since it was
// pinned. Both dialects.
func TestBatchedGrantLookups(t *testing.T) {
	t.Parallel()
	type lookup struct {
		name, sig, platform, org, session string
		wantSubject                       string // "" for no token
		want                              []string
		wantErr                           error // of AgentGrantScopes
	}
	lookups := []lookup{
		{"alice's binding", "tok-alice", "plat", "acme", "sess", "alice", []string{"docs:write"}, nil},
		{"aaron's binding", "tok-aaron", "plat", "acme", "sess", "aaron", []string{"docs:read"}, nil},
		{"another platform", "tok-alice", "other", "acme", "sess", "alice", []string{"admin:read"}, nil},
		{"another organization", "tok-alice", "plat", "globex", "sess", "alice", nil, nil},
		{"another session", "tok-alice", "plat", "acme", "sess-2", "alice", []string{"docs:delete"}, nil},
		{"no grant", "tok-aaron", "plat", "acme", "sess-2", "aaron", nil, nil},
		{"platform changed since it was read", "tok-alice", "changed", "acme", "sess", "alice", nil, storage.ErrStaleClient},
		{"no such token", "tok-nobody", "plat", "acme", "sess", "", nil, nil},
		{"alice's binding again", "tok-alice", "plat", "acme", "sess", "alice", []string{"docs:write"}, nil},
	}
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		ctx := context.Background()
		s, qc := b.OpenCounted(t)
		var err error
		future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		read := map[string]*storage.Client{}
		for _, id := range []string{"web", "plat", "other", "changed"} {
			if err := s.CreateClient(ctx, &storage.Client{ID: id}); err != nil {
				t.Fatal(err)
			}
			if read[id], err = s.Client(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range []struct {
			user, client, session, scope string
		}{
			{"aaron", "plat", "sess", "docs:read"}, {"alice", "other", "sess", "admin:read"},
			{"alice", "plat", "sess", "docs:write"}, {"alice", "plat", "sess-2", "docs:delete"},
			{"alice", "changed", "sess", "docs:write"},
		} {
			if _, err := s.ApproveAgentGrant(ctx, "acme", g.user, g.client, g.session, []string{g.scope}, future); err != nil {
				t.Fatal(err)
			}
		}
		for _, user := range []string{"alice", "aaron"} {
			if err := s.CreateAccessTokenSession(ctx, "tok-"+user, batchRequest(read["web"], "req-"+user, user, future)); err != nil {
				t.Fatal(err)
			}
		}
		changed := *read["changed"]
		changed.Name = "renamed"
		if err := s.UpdateClient(ctx, &changed); err != nil {
			t.Fatal(err)
		}

		type outcome struct {
			subject  string
			lookup   error
			scopes   []string
			grantErr error
		}
		// The token lookup with its prefetch; the grant asked for after.
		look := func(l lookup) (context.Context, func() outcome) {
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read[l.platform])
			storage.PrefetchAgentGrant(pinned, l.org, l.session)
			var o outcome
			return pinned, func() outcome {
				req, err := s.GetAccessTokenSession(pinned, l.sig, &fosite.DefaultSession{})
				if err != nil {
					o.lookup = err
					return o
				}
				o.subject = req.GetSession().GetSubject()
				return o
			}
		}
		grant := func(pinned context.Context, l lookup, o *outcome) {
			if o.lookup == nil {
				o.scopes, o.grantErr = s.AgentGrantScopes(pinned, l.org, o.subject, l.platform, l.session, time.Now())
			}
		}
		check := func(how string, l lookup, o outcome) {
			t.Helper()
			switch {
			case l.wantSubject == "":
				if !errors.Is(o.lookup, storage.ErrNotFound) {
					t.Errorf("%s, %s: lookup %v, want ErrNotFound", how, l.name, o.lookup)
				}
			case o.lookup != nil || o.subject != l.wantSubject:
				t.Errorf("%s, %s: lookup %q, %v; want %q", how, l.name, o.subject, o.lookup, l.wantSubject)
			case !errors.Is(o.grantErr, l.wantErr) || !slices.Equal(o.scopes, l.want):
				t.Errorf("%s, %s: grant %q, %v; want %q, %v", how, l.name, o.scopes, o.grantErr, l.want, l.wantErr)
			}
		}
		for _, l := range lookups {
			pinned, run := look(l)
			o := run()
			grant(pinned, l, &o)
			check("alone", l, o)
		}

		for round := range 2 { // the first may prepare the statement
			queued, release := s.HoldGrantLookups()
			outcomes := make([]outcome, len(lookups))
			ctxs := make([]context.Context, len(lookups))
			var wg sync.WaitGroup
			for i, l := range lookups {
				pinned, run := look(l)
				ctxs[i] = pinned
				wg.Go(func() { outcomes[i] = run() })
			}
			waitFor(t, func() bool { return queued() == len(lookups) })
			counts := qc.Measure(func() {
				release()
				wg.Wait()
			})
			if round == 1 && counts.RoundTrips() != 1 {
				t.Errorf("%d lookups: %v, want one query", len(lookups), counts)
			}
			for i, l := range lookups {
				grant(ctxs[i], l, &outcomes[i])
				check("in a batch", l, outcomes[i])
			}
		}
	})
}

// TestGrantLookupInTransaction: the mint's lookup made inside one of the
// store's transactions is not batched with other requests' lookups: it
// runs at once on its own transaction (even while a batch is held) and
// sees that transaction's uncommitted grant.
func TestGrantLookupInTransaction(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		for _, id := range []string{"web", "plat"} {
			if err := s.CreateClient(ctx, &storage.Client{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
		web, _ := s.Client(ctx, "web")
		plat, err := s.Client(ctx, "plat")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(ctx, "tok", batchRequest(web, "req", "alice", future)); err != nil {
			t.Fatal(err)
		}
		_, release := s.HoldGrantLookups()
		defer release()
		tx, err := s.BeginTX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Rollback(tx) //nolint:errcheck // the test's own
		if _, err := s.ApproveAgentGrant(tx, "acme", "alice", "plat", "sess", []string{"docs:write"}, future); err != nil {
			t.Fatal(err)
		}
		pinned := storage.WithClientPin(tx)
		storage.PinClient(pinned, plat)
		storage.PrefetchAgentGrant(pinned, "acme", "sess")
		done := make(chan error, 1)
		var scopes []string
		go func() {
			_, err := s.GetAccessTokenSession(pinned, "tok", &fosite.DefaultSession{})
			if err == nil {
				scopes, err = s.AgentGrantScopes(pinned, "acme", "alice", "plat", "sess", time.Now())
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil || !slices.Equal(scopes, []string{"docs:write"}) {
				t.Errorf("inside the transaction: %q, %v; want its own uncommitted grant", scopes, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a lookup inside a transaction waited for a batch")
		}
	})
}
