package storage_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func TestAgentGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		now := time.Now().UTC().Truncate(time.Second)
		exp := now.Add(time.Hour)

		g1, err := s.ApproveAgentGrant(ctx, "acme", "alice", "sess", []string{"b:write", "a:read"}, exp)
		if err != nil {
			t.Fatal(err)
		}
		if g1.ID == "" || g1.Organization != "acme" || g1.UserID != "alice" || g1.AgentSessionID != "sess" ||
			fmt.Sprint(g1.ScopeList()) != "[a:read b:write]" || !g1.ExpiresAt.Equal(exp) {
			t.Fatalf("first approval = %+v", g1)
		}

		// A second approval merges into the same row and moves the expiry,
		// even backwards: the latest approval decides how long it lasts.
		g2, err := s.ApproveAgentGrant(ctx, "acme", "alice", "sess", []string{"c:write", "a:read"}, exp.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if g2.ID != g1.ID || fmt.Sprint(g2.ScopeList()) != "[a:read b:write c:write]" || !g2.ExpiresAt.Equal(exp.Add(time.Minute)) {
			t.Fatalf("second approval = %+v", g2)
		}

		// The binding is (organization, user, session): each part separates.
		for _, b := range [][3]string{{"other", "alice", "sess"}, {"acme", "bob", "sess"}, {"acme", "alice", "sess2"}} {
			if _, err := s.ApproveAgentGrant(ctx, b[0], b[1], b[2], []string{"z:read"}, exp); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.AgentGrantScopes(ctx, "acme", "alice", "sess", now)
		if err != nil || fmt.Sprint(got) != "[a:read b:write c:write]" {
			t.Fatalf("AgentGrantScopes = %v, %v", got, err)
		}
		if got, err := s.AgentGrantScopes(ctx, "acme", "carol", "sess", now); err != nil || got != nil {
			t.Fatalf("no grant: %v, %v", got, err)
		}
		// At or after expiry the mint sees nothing.
		if got, err := s.AgentGrantScopes(ctx, "acme", "alice", "sess", exp.Add(time.Minute)); err != nil || got != nil {
			t.Fatalf("at expiry: %v, %v", got, err)
		}

		list, err := s.ListAgentGrants(ctx, "alice", now)
		if err != nil || len(list) != 3 {
			t.Fatalf("alice's grants: %d, %v", len(list), err)
		}
		for _, g := range list {
			if g.UserID != "alice" {
				t.Fatalf("list leaks %s's grant", g.UserID)
			}
		}
		if list, _ := s.ListAgentGrants(ctx, "alice", exp.Add(2*time.Minute)); len(list) != 0 {
			t.Fatalf("expired grants listed: %+v", list)
		}

		// Revoke: someone else's grant is not found, and stays.
		if err := s.RevokeAgentGrant(ctx, "bob", g1.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("bob revoking alice's grant: %v", err)
		}
		if err := s.RevokeAgentGrant(ctx, "alice", g1.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.AgentGrantScopes(ctx, "acme", "alice", "sess", now); got != nil {
			t.Fatalf("revoked grant still answers %v", got)
		}
		if err := s.RevokeAgentGrant(ctx, "alice", g1.ID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second revoke: %v", err)
		}

		// The audit log: alice's four approvals, then her revocation.
		ev, err := s.ListAudit(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range ev {
			kinds = append(kinds, e.Event)
		}
		if fmt.Sprint(kinds) != "[approved approved approved approved revoked]" {
			t.Fatalf("alice's audit = %v", kinds)
		}
		if last := ev[len(ev)-1]; last.GrantID != g1.ID || fmt.Sprint(last.Scopes) != "[a:read b:write c:write]" {
			t.Fatalf("revocation event = %+v", last)
		}
		if all, _ := s.ListAudit(ctx, ""); len(all) != 6 {
			t.Fatalf("%d events in all, want 6", len(all))
		}
	})
}

func TestAgentGrantExpiredScopesDoNotCarryOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "s", []string{"old:write"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		g, err := s.ApproveAgentGrant(ctx, "acme", "alice", "s", []string{"new:read"}, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(g.ScopeList()) != "[new:read]" {
			t.Fatalf("an expired approval's scopes came back: %v", g.ScopeList())
		}
	})
}

// Replicas approving the same binding at once, each on its own pool: the
// row lock (PostgreSQL) or the immediate transaction (SQLite) must keep
// every scope.
func TestAgentGrantConcurrentReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		dsn := b.NewDSN(t)
		replicas := []*storage.Store{storagetest.OpenDSN(t, dsn), storagetest.OpenDSN(t, dsn)}
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		want := make([]string, n)
		for i := range n {
			want[i] = fmt.Sprintf("s%02d:write", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = replicas[i%2].ApproveAgentGrant(ctx, "acme", "alice", "run", []string{want[i]}, time.Now().Add(time.Hour))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("approval %d: %v", i, err)
			}
		}
		got, err := replicas[0].AgentGrantScopes(ctx, "acme", "alice", "run", time.Now())
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("scopes = %v (%v), want all %d", got, err, n)
		}
		if list, _ := replicas[1].ListAgentGrants(ctx, "alice", time.Now()); len(list) != 1 {
			t.Fatalf("%d rows, want 1", len(list))
		}
	})
}
