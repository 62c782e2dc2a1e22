package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/deputyauth/deputy/storage"
)

// testPinnedUser: a Backend that keeps user revisions (storage.UserRevisions)
// moves a user's on with every bump, inside the caller's transaction, and
// issues a token whose request pinned a user (storage.PinUser) only while
// that user is still at the pinned revision, alone or in a batch; an agent
// mint's prefetching lookup reads the subject's revision
// (storage.PrefetchUserRevision). A Backend without user revisions gets no
// user-scope cache (plugin.Config.UserScopesCacheTTL) and skips this.
func testPinnedUser(t *testing.T, s Store) {
	revs, ok := s.(storage.UserRevisions)
	if !ok || !revs.ChecksUserPins() {
		t.Skip("the Backend does not check user pins: kit mode will not keep users' scopes over it")
	}
	ctx := context.Background()
	revision := func(user string) int64 {
		t.Helper()
		r, err := revs.UserRevision(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := revision("up-nobody"); r != 0 {
		t.Fatalf("revision of a user never bumped = %d, want 0", r)
	}
	for want := int64(1); want <= 2; want++ {
		if err := revs.BumpUserRevision(ctx, "up-alice"); err != nil {
			t.Fatal(err)
		}
		if r := revision("up-alice"); r != want {
			t.Fatalf("revision after %d bumps = %d", want, r)
		}
	}
	if r := revision("up-bob"); r != 0 {
		t.Fatalf("another user's bump moved bob's revision to %d", r)
	}
	// Inside a transaction the bump is the transaction's: gone with it.
	rollback := errors.New("roll back")
	if err := s.InTx(ctx, func(ctx context.Context) error {
		if err := revs.BumpUserRevision(ctx, "up-alice"); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if r := revision("up-alice"); r != 2 {
		t.Fatalf("a rolled-back bump left revision %d, want 2", r)
	}

	c := newOwnedClient(t, s, "up-app", "up-alice")
	read, err := s.Client(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if storage.PinUser(storage.WithClientPin(ctx), "up-alice", 2) {
		t.Fatal("PinUser without a client pin reported a pin")
	}

	// Eight concurrent inserts (batched together where they meet), every
	// other one pinned to a revision the user has left: each gets its own
	// row's outcome, and the stale ones store nothing.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)
			pinnedAt := int64(2)
			if i%2 == 1 {
				pinnedAt = 1
			}
			if !storage.PinUser(pinned, "up-alice", pinnedAt) {
				errs[i] = errors.New("PinUser refused")
				return
			}
			errs[i] = s.CreateAccessTokenSession(pinned, fmt.Sprintf("up-sig-%d", i), newRequest(read, fmt.Sprintf("up-req-%d", i), "up-alice", future))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		_, lookupErr := s.GetAccessTokenSession(ctx, fmt.Sprintf("up-sig-%d", i), session())
		if i%2 == 0 {
			if err != nil || lookupErr != nil {
				t.Errorf("token %d pinned at the current revision: insert %v, lookup %v", i, err, lookupErr)
			}
			continue
		}
		if !errors.Is(err, storage.ErrStaleClient) {
			t.Errorf("token %d pinned at a past revision: %v, want ErrStaleClient", i, err)
		}
		if !errors.Is(lookupErr, storage.ErrNotFound) {
			t.Errorf("token %d pinned at a past revision was stored: lookup %v", i, lookupErr)
		}
	}

	// In a transaction (not batched) the same.
	for _, at := range []int64{2, 1} {
		err := s.InTx(ctx, func(ctx context.Context) error {
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)
			storage.PinUser(pinned, "up-alice", at)
			return s.CreateAccessTokenSession(pinned, fmt.Sprintf("up-tx-sig-%d", at), newRequest(read, fmt.Sprintf("up-tx-req-%d", at), "up-alice", future))
		})
		if stale := errors.Is(err, storage.ErrStaleClient); stale != (at == 1) || !stale && err != nil {
			t.Errorf("insert in a transaction pinned at %d: %v", at, err)
		}
	}

	// A user never bumped is at 0; a bump after the pin is a stale pin.
	pinned := storage.WithClientPin(ctx)
	storage.PinClient(pinned, read)
	if !storage.PinUser(pinned, "up-carol", 0) {
		t.Fatal("PinUser refused")
	}
	if storage.PinUser(pinned, "up-dave", 0) {
		t.Fatal("a second user pinned over the first")
	}
	if storage.PinUser(pinned, "up-carol", 1) {
		t.Fatal("the user pinned again at another revision")
	}
	// A token of another client than the pinned one, in a request that
	// pinned a user, is not checked by the client's clause: refused.
	other := newOwnedClient(t, s, "up-other", "up-carol")
	if err := s.CreateAccessTokenSession(pinned, "up-other-1", newRequest(other, "up-other-req-1", "up-carol", future)); !errors.Is(err, storage.ErrStaleClient) {
		t.Fatalf("token of another client under a user pin: %v, want ErrStaleClient", err)
	}
	if err := s.CreateAccessTokenSession(pinned, "up-carol-1", newRequest(read, "up-carol-req-1", "up-carol", future)); err != nil {
		t.Fatalf("token of a user at revision 0: %v", err)
	}
	if err := revs.BumpUserRevision(ctx, "up-carol"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(pinned, "up-carol-2", newRequest(read, "up-carol-req-2", "up-carol", future)); !errors.Is(err, storage.ErrStaleClient) {
		t.Fatalf("token after the user's first bump: %v, want ErrStaleClient", err)
	}

	// The agent mint's lookup reads the subject's revision with the grant.
	web := newClient(t, s, "up-web")
	if err := s.CreateAccessTokenSession(ctx, "up-subject", newRequest(web, "up-subject-req", "up-alice", future)); err != nil {
		t.Fatal(err)
	}
	// Concurrent lookups, batched together where they meet, some asking
	// for the revision and some not: each gets its own answer.
	var lookups sync.WaitGroup
	lookupErrs := make([]error, 8)
	for i := range lookupErrs {
		lookups.Add(1)
		go func() {
			defer lookups.Done()
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)
			storage.PrefetchAgentGrant(pinned, "acme", "up-sess")
			if i%2 == 0 {
				storage.PrefetchUserRevision(pinned)
			}
			if _, err := s.GetAccessTokenSession(pinned, "up-subject", session()); err != nil {
				lookupErrs[i] = err
				return
			}
			got, ok := storage.PrefetchedUserRevision(pinned, "up-alice")
			if want := i%2 == 0; ok != want || ok && got != 2 {
				lookupErrs[i] = fmt.Errorf("PrefetchedUserRevision = %d, %v; want 2, %v", got, ok, want)
			}
		}()
	}
	lookups.Wait()
	for i, err := range lookupErrs {
		if err != nil {
			t.Errorf("concurrent lookup %d: %v", i, err)
		}
	}

	for _, tt := range []struct {
		name     string
		withUser bool
		user     string
		want     int64
		ok       bool
	}{
		{"asked, the subject", true, "up-alice", 2, true},
		{"asked, another user", true, "up-bob", 0, false},
		{"not asked", false, "up-alice", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pinned := storage.WithClientPin(ctx)
			storage.PinClient(pinned, read)
			storage.PrefetchAgentGrant(pinned, "acme", "up-sess")
			if tt.withUser {
				storage.PrefetchUserRevision(pinned)
			}
			if _, err := s.GetAccessTokenSession(pinned, "up-subject", session()); err != nil {
				t.Fatal(err)
			}
			got, ok := storage.PrefetchedUserRevision(pinned, tt.user)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("PrefetchedUserRevision = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
