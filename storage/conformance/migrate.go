package conformance

import (
	"context"
	"testing"
)

// testMigrationsIdempotent: migrating a migrated store again changes
// nothing and keeps its rows.
func testMigrationsIdempotent(t *testing.T, s Store) {
	ctx := context.Background()
	v, err := s.SchemaVersion(ctx)
	if err != nil || v < 1 {
		t.Fatalf("schema version of a migrated store: %d, %v", v, err)
	}
	newClient(t, s, "c1")
	for range 2 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrating again: %v", err)
		}
	}
	if again, err := s.SchemaVersion(ctx); err != nil || again != v {
		t.Fatalf("schema version after migrating again: %d, %v, want %d", again, err, v)
	}
	if _, err := s.Client(ctx, "c1"); err != nil {
		t.Fatalf("a row after migrating again: %v", err)
	}
}
