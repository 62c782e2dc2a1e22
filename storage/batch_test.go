package storage_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
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
				s, qc, err := querycount.Open(ctx, b.NewDSN(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				if err := s.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
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
