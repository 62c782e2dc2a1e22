package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered file under migrations/, named NNNN_what.sql and
// written in PostgreSQL's flavour.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, rest, ok := strings.Cut(e.Name(), "_")
		if !ok || !strings.HasSuffix(rest, ".sql") {
			return nil, fmt.Errorf("storage: migration %q is not named NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("storage: migration %q: %w", e.Name(), err)
		}
		body, err := fs.ReadFile(migrationFiles, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(rest, ".sql"), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("storage: two migrations numbered %d", out[i].version)
		}
	}
	return out, nil
}

// migrationLockKey is the PostgreSQL advisory lock that serialises replicas
// migrating one database at start: the first applies, the rest wait and then
// find nothing to do.
const migrationLockKey = 0x6465707574790001 // "deputy" + 1

// Migrate applies every embedded migration the database has not seen yet,
// each in its own transaction. It is safe to call from several processes at once.
func (s *Store) Migrate(ctx context.Context) error {
	return s.flavor.classify(s.migrate(ctx))
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("storage: migrate: %w", err)
	}
	defer conn.Close()
	unlock, err := s.flavor.lock(ctx, conn, migrationLockKey)
	if err != nil {
		return fmt.Errorf("storage: migrate: lock: %w", err)
	}
	defer unlock()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TIMESTAMP NOT NULL
	)`); err != nil {
		return fmt.Errorf("storage: migrate: %w", err)
	}
	for _, m := range ms {
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			return fmt.Errorf("storage: migrate %04d: %w", m.version, err)
		}
		var seen int
		if err := tx.GetContext(ctx, &seen, s.rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.version); err != nil {
			tx.Rollback()
			return fmt.Errorf("storage: migrate %04d: %w", m.version, err)
		}
		if seen > 0 {
			tx.Rollback()
			continue
		}
		if _, err := tx.ExecContext(ctx, s.flavor.translateDDL(m.sql)); err != nil {
			tx.Rollback()
			return fmt.Errorf("storage: migrate %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`), m.version, m.name, now()); err != nil {
			tx.Rollback()
			return fmt.Errorf("storage: migrate %04d: record: %w", m.version, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("storage: migrate %04d: commit: %w", m.version, err)
		}
	}
	return nil
}

// SchemaVersion is the highest migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.get(ctx, &v, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`)
	return v, err
}
