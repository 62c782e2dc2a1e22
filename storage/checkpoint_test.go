package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestSQLiteCheckpointsInBackground: a file SQLite store's own connection
// leaves the write-ahead log's checkpoints to a background connection (it
// checkpoints itself only past a backstop of 30000 pages, not SQLite's
// 1000), and the background connection does copy the log into the
// database. PostgreSQL and in-memory SQLite stores run none.
func TestSQLiteCheckpointsInBackground(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storagetest.SQLite.Open(t)
	var pages int
	if err := s.DB().QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != 30000 {
		t.Errorf("the store's connection checkpoints every %d pages, want the 30000-page backstop", pages)
	}
	c := newApp(t, s)
	for i := range 200 {
		writeToken(ctx, t, s, c, i)
	}
	for deadline := time.Now().Add(10 * time.Second); s.BackgroundCheckpoints() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no background checkpoint copied the log (%d)", s.BackgroundCheckpoints())
		}
	}
	if _, err := s.GetAccessTokenSession(ctx, "sig-199", &fosite.DefaultSession{}); err != nil {
		t.Fatalf("after checkpoints: %v", err)
	}

	for name, other := range map[string]*storage.Store{
		"postgres":      storagetest.Postgres.Open(t),
		"sqlite memory": storagetest.OpenDSN(t, "sqlite::memory:"),
	} {
		if n := other.BackgroundCheckpoints(); n != -1 {
			t.Errorf("%s: background checkpoints %d, want none (-1)", name, n)
		}
	}
}

// TestSQLiteLogRewoundUnderSteadyWrites: while a writer never pauses, the
// background checkpoint, running beside it, rarely copies the whole log,
// and SQLite rewinds the log only after one that did; the checkpointer
// then finishes a checkpoint while holding the store's connection. Once it
// has, the next write starts the log again from its beginning. Without the
// finish the log only grows until the backstop checkpoints inside a commit.
func TestSQLiteLogRewoundUnderSteadyWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c := sqliteWithApp(t)
	write := func(i int) { t.Helper(); writeToken(ctx, t, s, c, i) }
	i := 0
	for deadline := time.Now().Add(30 * time.Second); s.FinishedCheckpoints() < 1; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d writes in a row no checkpoint was finished on the store's connection", i)
		}
		write(i)
	}
	write(i)
	var busy, logFrames, copied int
	if err := s.DB().QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied); err != nil {
		t.Fatal(err)
	}
	if logFrames >= storage.RewindAbove {
		t.Errorf("after a finished checkpoint and one write the log holds %d pages, want it rewound (fewer than %d)", logFrames, storage.RewindAbove)
	}
}

// TestCheckpointerNeverCreatesADatabase: the background connection opens
// only a database that exists: where the file is gone it fails, and no
// empty database appears in its place for it to checkpoint.
func TestCheckpointerNeverCreatesADatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "gone.db")
	if err := storage.StartCheckpointer(context.Background(), "sqlite:"+path); err == nil {
		t.Error("started on a database that does not exist")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the checkpointer created %s: %v", path, err)
	}
}

// TestIdleLogLeftAlone: a long log that a background checkpoint copied
// whole is rewound by the store's next write anyway, so the checkpointer
// does not take the store's connection for it: an idle store after one
// large commit sees background checkpoints and no finishing ones.
func TestIdleLogLeftAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, c := sqliteWithApp(t)
	err := s.InTx(ctx, func(ctx context.Context) error {
		for i := range 30000 {
			writeToken(ctx, t, s, c, i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var busy, logFrames, copied int
	if err := s.DB().QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied); err != nil {
		t.Fatal(err)
	}
	if logFrames <= storage.RewindAbove {
		t.Fatalf("the commit left %d pages of log, want more than %d for this test", logFrames, storage.RewindAbove)
	}
	before := s.BackgroundCheckpoints()
	waitFor(t, func() bool { return s.BackgroundCheckpoints() >= before+3 })
	if n := s.FinishedCheckpoints(); n != 0 {
		t.Errorf("an idle store's log copied whole: %d finishing checkpoints, want none", n)
	}
}

// sqliteWithApp opens a file SQLite store holding one client.
func sqliteWithApp(t *testing.T) (*storage.Store, *storage.Client) {
	t.Helper()
	s := storagetest.SQLite.Open(t)
	return s, newApp(t, s)
}

// newApp creates the client "app" in s.
func newApp(t *testing.T, s *storage.Store) *storage.Client {
	t.Helper()
	c := &storage.Client{ID: "app"}
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// writeToken stores access token i of c (in the transaction ctx carries,
// if any).
func writeToken(ctx context.Context, t *testing.T, s *storage.Store, c *storage.Client, i int) {
	t.Helper()
	if err := s.CreateAccessTokenSession(ctx, fmt.Sprint("sig-", i), batchRequest(c, fmt.Sprint("req-", i), "alice", time.Now().Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
}
