package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// deputyMigrations is deputy's own set, recorded in schema_migrations.
var deputyMigrations = MigrationSet{Name: "", Files: migrationFiles, Dir: "migrations"}

// A MigrationSet is a host's versioned migrations, applied beside deputy's by
// Store.MigrateSet: the demo IdP's user tables are one. Files holds one file
// per version in Dir, named NNNN_what.sql and written in PostgreSQL's flavour
// (the dialect rewrites them as it does deputy's). The versions a
// database has seen are recorded in the table <Name>_schema_migrations, so
// the host's numbering is its own.
type MigrationSet struct {
	// Name is a lower-case SQL identifier: letters, digits and '_'.
	Name  string
	Files fs.FS  // an embed.FS, typically
	Dir   string // the directory of Files holding the migrations; "" for its root
}

// migration is one numbered file of a set.
type migration struct {
	version int
	name    string
	sql     string
}

var setName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,40}$`)

// table is where the set records the versions applied.
func (set MigrationSet) table() string {
	if set.Name == "" {
		return "schema_migrations" // deputy's own
	}
	return set.Name + "_schema_migrations"
}

func (set MigrationSet) load() ([]migration, error) {
	dir := set.Dir
	if dir == "" {
		dir = "."
	}
	entries, err := fs.ReadDir(set.Files, dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, rest, ok := strings.Cut(e.Name(), "_")
		if !ok || !strings.HasSuffix(rest, ".sql") {
			return nil, fmt.Errorf("migration %q is not named NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migration %q is not numbered from 1", e.Name())
		}
		body, err := fs.ReadFile(set.Files, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(rest, ".sql"), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("two migrations numbered %d", out[i].version)
		}
	}
	return out, nil
}

// migrationLockKey is the lock (on PostgreSQL an advisory lock) that
// serialises every set's migrations on one database: replicas starting
// together wait for the first, then find nothing to do.
const migrationLockKey = 0x6465707574790001 // "deputy" + 1

// Migrate applies every deputy migration the database has not seen yet,
// each in its own transaction. It is safe to call from several processes at once.
func (s *Store) Migrate(ctx context.Context) error {
	if err := s.migrate(ctx, deputyMigrations); err != nil {
		return fmt.Errorf("storage: migrate: %w", err)
	}
	return nil
}

// MigrateSet applies every migration of a host's set that the database has
// not seen yet, each in its own transaction, under the lock deputy's own
// migrations take. It is safe to call from several processes at once.
func (s *Store) MigrateSet(ctx context.Context, set MigrationSet) error {
	if !setName.MatchString(set.Name) {
		return fmt.Errorf("storage: migration set name %q: want a lower-case SQL identifier", set.Name)
	}
	if err := s.migrate(ctx, set); err != nil {
		return fmt.Errorf("storage: migrate %s: %w", set.Name, err)
	}
	return nil
}

func (s *Store) migrate(ctx context.Context, set MigrationSet) error {
	ms, err := set.load()
	if err != nil {
		return err
	}
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return s.flavor.classify(err)
	}
	defer conn.Close()
	unlock, err := s.flavor.lock(ctx, conn, migrationLockKey)
	if err != nil {
		return fmt.Errorf("lock: %w", s.flavor.classify(err))
	}
	defer unlock()
	table := set.table()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMP NOT NULL
	)`); err != nil {
		return s.flavor.classify(err)
	}
	for _, m := range ms {
		if err := s.apply(ctx, conn, table, m); err != nil {
			return fmt.Errorf("%04d_%s: %w", m.version, m.name, s.flavor.classify(err))
		}
	}
	return nil
}

// apply runs m in a transaction unless table records it already.
func (s *Store) apply(ctx context.Context, conn *sqlx.Conn, table string, m migration) error {
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var seen int
	if err := tx.GetContext(ctx, &seen, s.rebind(`SELECT COUNT(*) FROM `+table+` WHERE version = ?`), m.version); err != nil {
		return err
	}
	if seen > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, s.flavor.translateDDL(m.sql)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO `+table+` (version, name, applied_at) VALUES (?, ?, ?)`), m.version, m.name, now()); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return tx.Commit()
}

// SchemaVersion is the highest deputy migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.get(ctx, &v, `SELECT COALESCE(MAX(version), 0) FROM `+deputyMigrations.table())
	return v, err
}
