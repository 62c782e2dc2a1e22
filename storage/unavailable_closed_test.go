package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestIsUnavailableClosedDB: a Store whose *sql.DB is closed answers
// "sql: database is closed", which database/sql does not export; it is
// unavailability (a 503), not a bug (a 500). Without isDBClosed the first
// assertion fails: checked by removing it.
func TestIsUnavailableClosedDB(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := s.Client(context.Background(), "nope")
		if err == nil || !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("closed DB: %v is not ErrUnavailable", err)
		}
		if !errors.Is(fmt.Errorf("wrapped twice: %w", fmt.Errorf("storage: %w", err)), storage.ErrUnavailable) {
			t.Error("wrapped closed-DB error not recognised")
		}
		if errors.Is(storage.Classify(s.Dialect(), errors.New("a message quoting sql: database is closed")), storage.ErrUnavailable) {
			t.Error("a message that merely quotes the text counts as unavailability")
		}
	})
}

// TestIsInvalidInputNUL: a NUL byte in a lookup is refused by PostgreSQL
// (22021) and is simply not found in SQLite; either way it is the
// request's fault, never a 500.
func TestIsInvalidInputNUL(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		_, err := s.Client(context.Background(), "a\x00b")
		if !errors.Is(err, storage.ErrNotFound) && !errors.Is(err, storage.ErrInvalidInput) {
			t.Fatalf("lookup with a NUL byte: %v", err)
		}
		if errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("a NUL byte counted as unavailability: %v", err)
		}
		if s.Dialect() == storage.Postgres && !errors.Is(err, storage.ErrInvalidInput) {
			t.Errorf("PostgreSQL refuses a NUL byte in text (22021): %v", err)
		}
	})
}
