package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestHealth: the store counts its failures by class (deputy's metrics
// export them) and remembers whether the last call reached the database
// (deputy's readiness and its availability gauge read it). A missing row is
// no failure.
func TestHealth(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		if h := s.Health(); h != (storage.Health{Available: true}) {
			t.Fatalf("fresh store: %+v", h)
		}
		if _, err := s.Client(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing client: %v", err)
		}
		c := &storage.Client{ID: "c1", Name: "one", GrantTypes: []string{"client_credentials"}}
		c.SetOwner("u1")
		if err := s.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateClient(ctx, c); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate client: %v", err)
		}
		if h := s.Health(); h != (storage.Health{Conflict: 1, Available: true}) {
			t.Errorf("after a conflict: %+v", h)
		}
		s.Close()
		if err := s.Ping(ctx); !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("ping after close: %v", err)
		}
		if _, err := s.Client(ctx, "c1"); !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("lookup after close: %v", err)
		}
		if h := s.Health(); h != (storage.Health{Conflict: 1, Unavailable: 2, Available: false}) {
			t.Errorf("closed: %+v", h)
		}
	})
}

func TestDescribeStatement(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ query, name, verb, table string }{
		{"SELECT id, name FROM clients WHERE id = ?", "SELECT clients", "SELECT", "clients"},
		{"\n\t\tselect 1", "SELECT", "SELECT", ""},
		{"INSERT INTO access_tokens(signature, request_id) VALUES (?, ?)", "INSERT access_tokens", "INSERT", "access_tokens"},
		{"UPDATE client_secrets SET last_used_at = ? WHERE hash = ?", "UPDATE client_secrets", "UPDATE", "client_secrets"},
		{"DELETE FROM agent_grants WHERE id = ?", "DELETE agent_grants", "DELETE", "agent_grants"},
		{"WITH x AS (SELECT 1) SELECT * FROM x", "WITH", "WITH", ""},
		{"", "SQL", "", ""},
	} {
		name, verb, table := storage.Describe(tt.query)
		if name != tt.name || verb != tt.verb || table != tt.table {
			t.Errorf("%q: %q %q %q, want %q %q %q", tt.query, name, verb, table, tt.name, tt.verb, tt.table)
		}
	}
}
