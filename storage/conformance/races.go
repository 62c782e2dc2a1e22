package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ory/fosite"
)

// The races: what fosite does when several requests present one refresh
// token or one authorization code at once. fosite reads the token before
// its transaction, so every request passes that read; the store's write is
// what must let exactly one through. Each is 20 transactions released
// together, five rounds over, so that a lucky schedule cannot pass.

const (
	raceWidth  = 20
	raceRounds = 5
)

// raceInTx runs fn raceWidth times at once, each in its own transaction,
// commits those for which fn returns nil, rolls back the others, and
// returns how many committed.
func raceInTx(t *testing.T, s Store, fn func(ctx context.Context, i int) error) int {
	t.Helper()
	start := make(chan struct{})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for i := range raceWidth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, err := s.BeginTX(context.Background())
			if err != nil {
				t.Errorf("begin %d: %v", i, err)
				return
			}
			if err := fn(ctx, i); err != nil {
				if err := s.Rollback(ctx); err != nil {
					t.Errorf("rollback %d: %v", i, err)
				}
				return
			}
			if err := s.Commit(ctx); err != nil {
				t.Errorf("commit %d: %v", i, err)
				return
			}
			mu.Lock()
			wins++
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return wins
}

// activeRefreshTokens counts which of sigs are active refresh tokens.
func activeRefreshTokens(t *testing.T, s Store, sigs ...string) int {
	t.Helper()
	n := 0
	for _, sig := range sigs {
		_, err := s.GetRefreshTokenSession(context.Background(), sig, session())
		switch {
		case err == nil:
			n++
		case !errors.Is(err, fosite.ErrInactiveToken) && !errors.Is(err, fosite.ErrNotFound):
			t.Fatalf("refresh token %s: %v", sig, err)
		}
	}
	return n
}

// testRaceRefreshRotation: of parallel rotations with one refresh token,
// each storing its successor in the same transaction as fosite does,
// exactly one commits; the others get fosite.ErrInactiveToken, and the
// family is left with one active token.
func testRaceRefreshRotation(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	for round := range raceRounds {
		id := fmt.Sprintf("r%d", round)
		req := newRequest(c, id, "alice", future)
		if err := s.CreateRefreshTokenSession(ctx, "rt-"+id, "", req); err != nil {
			t.Fatal(err)
		}
		successors := make([]string, raceWidth)
		wins := raceInTx(t, s, func(ctx context.Context, i int) error {
			if err := s.RotateRefreshToken(ctx, id, "rt-"+id); err != nil {
				if !errors.Is(err, fosite.ErrInactiveToken) {
					t.Errorf("losing rotation %d: %v, want ErrInactiveToken", i, err)
				}
				return err
			}
			successors[i] = fmt.Sprintf("rt-%s-%d", id, i)
			return s.CreateRefreshTokenSession(ctx, successors[i], "", req)
		})
		if wins != 1 {
			t.Fatalf("round %d: %d of %d parallel rotations of one token committed, want 1", round, wins, raceWidth)
		}
		if n := activeRefreshTokens(t, s, append(successors, "rt-"+id)...); n != 1 {
			t.Fatalf("round %d: %d active refresh tokens in one family, want 1", round, n)
		}
	}
}

// testRaceFamilyRevocation: what the losers of a refresh race do at once,
// and what replays of a family's old refresh tokens do: fosite's reuse
// detection (delete the presented token, then revoke the family) and the
// refresh grant's answer to a lost rotation (revoke the family). All of
// them succeed (a deadlock would not), and no token of the family is left
// active.
func testRaceFamilyRevocation(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	const olds = 4
	for round := range raceRounds {
		id := fmt.Sprintf("r%d", round)
		req := newRequest(c, id, "alice", future)
		var sigs []string
		for i := range olds + 1 {
			sig := fmt.Sprintf("rt-%s-%d", id, i)
			if err := s.CreateRefreshTokenSession(ctx, sig, "at-"+sig, req); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateAccessTokenSession(ctx, "at-"+sig, req); err != nil {
				t.Fatal(err)
			}
			sigs = append(sigs, sig)
			if i < olds { // rotated out: inactive, its access token gone
				if err := s.RevokeRefreshToken(ctx, id); err != nil {
					t.Fatal(err)
				}
				if err := s.RevokeAccessToken(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
		}
		raceInTx(t, s, func(ctx context.Context, i int) error {
			if i%2 == 0 {
				old := sigs[(i/2)%olds]
				if err := s.DeleteRefreshTokenSession(ctx, old); errors.Is(err, fosite.ErrNotFound) {
					return err // another request deleted it: fosite stops here
				} else if err != nil {
					t.Errorf("delete %d: %v", i, err)
					return err
				}
			}
			if err := s.RevokeRefreshToken(ctx, id); err != nil {
				t.Errorf("revoke refresh tokens %d: %v", i, err)
				return err
			}
			if err := s.RevokeAccessToken(ctx, id); err != nil {
				t.Errorf("revoke access tokens %d: %v", i, err)
				return err
			}
			return nil
		})
		if n := activeRefreshTokens(t, s, sigs...); n != 0 {
			t.Fatalf("round %d: %d refresh tokens of a revoked family active", round, n)
		}
		if _, err := s.GetAccessTokenSession(ctx, "at-"+sigs[olds], session()); !errors.Is(err, fosite.ErrNotFound) {
			t.Fatalf("round %d: access token of a revoked family: %v", round, err)
		}
	}
}

// testRaceCodeInvalidation: of parallel invalidations of one authorization
// code, exactly one commits; the others get
// fosite.ErrInvalidatedAuthorizeCode.
func testRaceCodeInvalidation(t *testing.T, s Store) {
	ctx := context.Background()
	c := newClient(t, s, "c1")
	for round := range raceRounds {
		sig := fmt.Sprintf("code%d", round)
		if err := s.CreateAuthorizeCodeSession(ctx, sig, newRequest(c, sig, "alice", future)); err != nil {
			t.Fatal(err)
		}
		wins := raceInTx(t, s, func(ctx context.Context, i int) error {
			err := s.InvalidateAuthorizeCodeSession(ctx, sig)
			if err != nil && !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
				t.Errorf("losing invalidation %d: %v, want ErrInvalidatedAuthorizeCode", i, err)
			}
			return err
		})
		if wins != 1 {
			t.Fatalf("round %d: %d of %d parallel invalidations of one code committed, want 1", round, wins, raceWidth)
		}
	}
}
