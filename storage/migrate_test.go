package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// hostSet is a host's migration set of the given files, in PostgreSQL's
// flavour (TIMESTAMPTZ and BYTEA are rewritten for SQLite).
func hostSet(files map[string]string) storage.MigrationSet {
	fsys := fstest.MapFS{}
	for name, body := range files {
		fsys["db/"+name] = &fstest.MapFile{Data: []byte(body)}
	}
	return storage.MigrationSet{Name: "host", Files: fsys, Dir: "db"}
}

var hostFiles = map[string]string{
	"0001_things.sql": `CREATE TABLE host_things (id TEXT PRIMARY KEY, at TIMESTAMPTZ NOT NULL, blob BYTEA)`,
	"0002_index.sql":  `CREATE INDEX host_things_at_idx ON host_things (at)`,
}

func hostVersions(t *testing.T, s *storage.Store) string {
	t.Helper()
	var vs []int
	if err := s.Select(context.Background(), &vs, `SELECT version FROM host_schema_migrations ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(vs)
}

// A host's set is applied once, version by version, recorded apart from
// deputy's, and a later release's new versions only are applied.
func TestMigrateSet(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		before, err := s.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := s.MigrateSet(ctx, hostSet(hostFiles)); err != nil {
				t.Fatal(err)
			}
		}
		if got := hostVersions(t, s); got != "[1 2]" {
			t.Fatalf("host versions %s", got)
		}
		if _, err := s.Exec(ctx, `INSERT INTO host_things (id, at) VALUES (?, ?)`, "t1", "2026-01-01T00:00:00Z"); err != nil {
			t.Fatal(err)
		}
		// 0001 has no IF NOT EXISTS: applying it again would fail.
		next := map[string]string{"0003_more.sql": `ALTER TABLE host_things ADD COLUMN note TEXT NOT NULL DEFAULT ''`}
		for k, v := range hostFiles {
			next[k] = v
		}
		if err := s.MigrateSet(ctx, hostSet(next)); err != nil {
			t.Fatal(err)
		}
		if got := hostVersions(t, s); got != "[1 2 3]" {
			t.Fatalf("host versions %s", got)
		}
		var note string
		if err := s.Get(ctx, &note, `SELECT note FROM host_things WHERE id = ?`, "t1"); err != nil || note != "" {
			t.Fatalf("row after the new version: %q, %v", note, err)
		}
		if after, err := s.SchemaVersion(ctx); err != nil || after != before {
			t.Fatalf("deputy's schema version moved with the host's: %d → %d, %v", before, after, err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("deputy's migrations after the host's: %v", err)
		}
	})
}

// A version that fails leaves nothing behind and is not recorded; once
// fixed it applies.
func TestMigrateSetFailureRollsBack(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		files := map[string]string{
			"0001_things.sql": hostFiles["0001_things.sql"],
			"0002_broken.sql": `CREATE TABLE host_partial (id TEXT); SELECT * FROM no_such_table`,
		}
		err := s.MigrateSet(ctx, hostSet(files))
		if err == nil || !strings.Contains(err.Error(), "0002_broken") {
			t.Fatalf("broken migration: %v", err)
		}
		for _, kind := range []error{storage.ErrUnavailable, storage.ErrInvalidInput, storage.ErrConflict} {
			if errors.Is(err, kind) {
				t.Errorf("a broken migration classified as %v", kind)
			}
		}
		if got := hostVersions(t, s); got != "[1]" {
			t.Fatalf("host versions after a failure: %s", got)
		}
		if _, err := s.Exec(ctx, `SELECT * FROM host_partial`); err == nil {
			t.Fatal("the failed version's first statement was kept")
		}
		files["0002_broken.sql"] = `CREATE TABLE host_partial (id TEXT)`
		if err := s.MigrateSet(ctx, hostSet(files)); err != nil {
			t.Fatal(err)
		}
		if got := hostVersions(t, s); got != "[1 2]" {
			t.Fatalf("host versions after the fix: %s", got)
		}
	})
}

func TestMigrateSetRejects(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	ctx := context.Background()
	for _, name := range []string{"", "Host", "1host", "host;drop", "host-x", strings.Repeat("h", 42)} {
		set := hostSet(hostFiles)
		set.Name = name
		if err := s.MigrateSet(ctx, set); err == nil {
			t.Errorf("set name %q accepted", name)
		}
	}
	for _, files := range []map[string]string{
		{"things.sql": "SELECT 1"},
		{"0001-things.sql": "SELECT 1"},
		{"0001_things.txt": "SELECT 1"},
		{"0000_things.sql": "SELECT 1"},
		{"0001_a.sql": "SELECT 1", "001_b.sql": "SELECT 1"},
	} {
		if err := s.MigrateSet(ctx, hostSet(files)); err == nil {
			t.Errorf("files %v accepted", files)
		}
	}
}

// TestMigrateConcurrently starts several "replicas" migrating one database at
// once, deputy's set and a host's; the advisory lock (PostgreSQL) or the
// single writer (SQLite) must let exactly one apply each migration.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		dsn := b.NewDSN(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := storage.Open(context.Background(), dsn)
				if err != nil {
					errs <- err
					return
				}
				defer s.Close()
				if err := s.Migrate(context.Background()); err != nil {
					errs <- err
					return
				}
				errs <- s.MigrateSet(context.Background(), hostSet(hostFiles))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		s := storagetest.OpenDSN(t, dsn)
		v, err := s.SchemaVersion(context.Background())
		if err != nil || v < 2 {
			t.Fatalf("schema version %d, %v", v, err)
		}
		if got := hostVersions(t, s); got != "[1 2]" {
			t.Fatalf("host versions %s", got)
		}
	})
}
