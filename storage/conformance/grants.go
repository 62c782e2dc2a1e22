package conformance

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
)

func testAgentGrants(t *testing.T, s Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	exp := now.Add(time.Hour)

	g1, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "sess", []string{"b:write", "a:read"}, exp)
	if err != nil {
		t.Fatal(err)
	}
	if g1.ID == "" || g1.Organization != "acme" || g1.UserID != "alice" || g1.ClientID != "plat" || g1.AgentSessionID != "sess" ||
		fmt.Sprint(g1.ScopeList()) != "[a:read b:write]" || !g1.ExpiresAt.Equal(exp) {
		t.Fatalf("first approval = %+v", g1)
	}

	// A second approval merges into the same row and moves the expiry, even
	// backwards: the latest approval decides how long it lasts.
	g2, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "sess", []string{"c:write", "a:read"}, exp.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID != g1.ID || fmt.Sprint(g2.ScopeList()) != "[a:read b:write c:write]" || !g2.ExpiresAt.Equal(exp.Add(time.Minute)) {
		t.Fatalf("second approval = %+v", g2)
	}

	// The binding is (organization, user, client, session): each part
	// separates.
	for _, b := range [][4]string{{"other", "alice", "plat", "sess"}, {"acme", "bob", "plat", "sess"}, {"acme", "alice", "other-plat", "sess"}, {"acme", "alice", "plat", "sess2"}} {
		if _, err := s.ApproveAgentGrant(ctx, b[0], b[1], b[2], b[3], []string{"z:read"}, exp); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.AgentGrantScopes(ctx, "acme", "alice", "plat", "sess", now)
	if err != nil || fmt.Sprint(got) != "[a:read b:write c:write]" {
		t.Fatalf("AgentGrantScopes = %v, %v", got, err)
	}
	if got, err := s.AgentGrantScopes(ctx, "acme", "carol", "plat", "sess", now); err != nil || got != nil {
		t.Fatalf("no grant: %v, %v", got, err)
	}
	// Another platform using the same session id sees only its own grant;
	// one with no grant, and no client at all, see nothing.
	if got, err := s.AgentGrantScopes(ctx, "acme", "alice", "other-plat", "sess", now); err != nil || fmt.Sprint(got) != "[z:read]" {
		t.Fatalf("another client's grant: %v, %v", got, err)
	}
	if got, err := s.AgentGrantScopes(ctx, "acme", "alice", "third-plat", "sess", now); err != nil || got != nil {
		t.Fatalf("a client with no grant: %v, %v", got, err)
	}
	if got, err := s.AgentGrantScopes(ctx, "acme", "alice", "", "sess", now); err != nil || got != nil {
		t.Fatalf("no client: %v, %v", got, err)
	}
	if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "", "sess", []string{"z:read"}, exp); err == nil {
		t.Fatal("an approval without a client was stored")
	}
	// At or after expiry the mint sees nothing.
	if got, err := s.AgentGrantScopes(ctx, "acme", "alice", "plat", "sess", exp.Add(time.Minute)); err != nil || got != nil {
		t.Fatalf("at expiry: %v, %v", got, err)
	}

	list, err := s.ListAgentGrants(ctx, "alice", now)
	if err != nil || len(list) != 4 {
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
	if got, _ := s.AgentGrantScopes(ctx, "acme", "alice", "plat", "sess", now); got != nil {
		t.Fatalf("revoked grant still answers %v", got)
	}
	if err := s.RevokeAgentGrant(ctx, "alice", g1.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}

	// The audit log: alice's five approvals, then her revocation, each
	// naming the client.
	ev, err := s.ListAudit(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range ev {
		kinds = append(kinds, e.Event)
	}
	if fmt.Sprint(kinds) != "[approved approved approved approved approved revoked]" {
		t.Fatalf("alice's audit = %v", kinds)
	}
	if first := ev[0]; first.ClientID != "plat" {
		t.Fatalf("approval event = %+v", first)
	}
	if last := ev[len(ev)-1]; last.GrantID != g1.ID || last.ClientID != "plat" || fmt.Sprint(last.Scopes) != "[a:read b:write c:write]" {
		t.Fatalf("revocation event = %+v", last)
	}
	if all, _ := s.ListAudit(ctx, ""); len(all) != 7 {
		t.Fatalf("%d events in all, want 7", len(all))
	}
}

// testAgentGrantExpiredScopes: the scopes of an expired grant do not carry
// over into a new approval of the same binding.
func testAgentGrantExpiredScopes(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "s", []string{"old:write"}, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	g, err := s.ApproveAgentGrant(ctx, "acme", "alice", "plat", "s", []string{"new:read"}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(g.ScopeList()) != "[new:read]" {
		t.Fatalf("an expired approval's scopes came back: %v", g.ScopeList())
	}
}

// testAudit: the log keeps every field, stamps the time, answers oldest
// first, and filters by actor.
func testAudit(t *testing.T, s Store) {
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	events := []*storage.AuditEvent{
		{Event: storage.AuditDenied, ActorUserID: "alice", Organization: "acme", ClientID: "plat", AgentSessionID: "s1", Scopes: []string{"a:write"}},
		{Event: storage.AuditApproved, ActorUserID: "bob", Organization: "acme", ClientID: "plat", AgentSessionID: "s2", Scopes: []string{"a:read"}, GrantID: "g2"},
		{Event: storage.AuditRevoked, ActorUserID: "alice", Organization: "other", AgentSessionID: "s3", Scopes: []string{"b:read", "b:write"}, GrantID: "g3"},
	}
	for _, e := range events {
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.CreatedAt.Before(before) || e.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Fatalf("event stamped %v", e.CreatedAt)
		}
	}
	all, err := s.ListAudit(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("all events: %d, %v", len(all), err)
	}
	for i, got := range all {
		want := events[i]
		if got.ID == 0 || got.Event != want.Event || got.ActorUserID != want.ActorUserID || got.Organization != want.Organization || got.ClientID != want.ClientID ||
			got.AgentSessionID != want.AgentSessionID || fmt.Sprint(got.Scopes) != fmt.Sprint(want.Scopes) ||
			got.GrantID != want.GrantID || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("event %d = %+v, want %+v", i, got, want)
		}
		if i > 0 && got.ID <= all[i-1].ID {
			t.Errorf("events out of order: %d after %d", got.ID, all[i-1].ID)
		}
	}
	alice, err := s.ListAudit(ctx, "alice")
	if err != nil || len(alice) != 2 || alice[0].Event != storage.AuditDenied || alice[1].Event != storage.AuditRevoked {
		t.Fatalf("alice's events: %+v, %v", alice, err)
	}
	if none, err := s.ListAudit(ctx, "carol"); err != nil || len(none) != 0 {
		t.Fatalf("carol's events: %+v, %v", none, err)
	}
}
