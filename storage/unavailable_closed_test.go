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
		if err == nil || !storage.IsUnavailable(err) {
			t.Fatalf("closed DB: IsUnavailable(%v) = false", err)
		}
		if !storage.IsUnavailable(fmt.Errorf("wrapped twice: %w", fmt.Errorf("storage: %w", err))) {
			t.Error("wrapped closed-DB error not recognised")
		}
		if storage.IsUnavailable(errors.New("a message quoting sql: database is closed")) {
			t.Error("a message that merely quotes the text counts as unavailability")
		}
	})
}
