package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// A grant written before approvals named their client (migration 0003's
// schema) unlocks nothing after migration 0004: no client's mint finds it,
// whatever the session. It stays listed and revocable until it expires.
func TestAgentGrantMigrationBindsNoClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		s, err := storage.Open(ctx, b.NewDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.MigrateTo(ctx, 3); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if _, err := s.Exec(ctx, `INSERT INTO agent_grants
			(id, organization, user_id, agent_session_id, scopes, created_at, updated_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, "old-grant", "acme", "alice", "sess", `["docs:write"]`, now, now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Exec(ctx, `INSERT INTO audit_events
			(event, actor_user_id, organization, agent_session_id, scopes, grant_id, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, storage.AuditApproved, "alice", "acme", "sess", `["docs:write"]`, "old-grant", now); err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}

		for _, client := range []string{"plat", "other-plat", ""} {
			if got, err := s.AgentGrantScopes(ctx, "acme", "alice", client, "sess", now); err != nil || got != nil {
				t.Fatalf("client %q after the migration: %v, %v", client, got, err)
			}
		}
		list, err := s.ListAgentGrants(ctx, "alice", now)
		if err != nil || len(list) != 1 || list[0].ID != "old-grant" || list[0].ClientID != "" || fmt.Sprint(list[0].ScopeList()) != "[docs:write]" {
			t.Fatalf("the old grant is not listed as it was: %+v, %v", list, err)
		}
		ev, err := s.ListAudit(ctx, "alice")
		if err != nil || len(ev) != 1 || ev[0].ClientID != "" || ev[0].GrantID != "old-grant" {
			t.Fatalf("the old audit event: %+v, %v", ev, err)
		}

		// A new approval for a real client is a row of its own; the old one
		// still unlocks nothing, and can be revoked.
		g, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "sess", []string{"docs:read"}, now.Add(time.Hour))
		if err != nil || g.ID == "old-grant" || fmt.Sprint(g.ScopeList()) != "[docs:read]" {
			t.Fatalf("approval after the migration: %+v, %v", g, err)
		}
		if got, _ := s.AgentGrantScopes(ctx, "acme", "alice", "plat", "sess", now); fmt.Sprint(got) != "[docs:read]" {
			t.Fatalf("plat's scopes: %v", got)
		}
		if err := s.RevokeAgentGrant(ctx, "alice", "old-grant"); err != nil {
			t.Fatalf("revoke the old grant: %v", err)
		}
	})
}
