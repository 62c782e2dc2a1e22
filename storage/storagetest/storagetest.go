// Package storagetest gives every test its own database: a temporary SQLite
// file, or a fresh PostgreSQL schema dropped when the test ends. Tests in
// any package run against both dialects with Each.
//
// PostgreSQL tests run when DEPUTY_TEST_DATABASE_URL is set (for example
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable). With
// DEPUTY_REQUIRE_POSTGRES=1 a missing URL or server fails the test instead
// of skipping it; CI sets both.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
)

// Backend is one dialect a test can run on.
type Backend struct {
	Name string
	// NewDSN makes an empty database for t and returns its DSN; the database
	// is removed when t ends. Open it as often as a test needs (replicas).
	NewDSN func(t testing.TB) string
}

// Open makes a fresh, migrated store on b, closed when t ends.
func (b Backend) Open(t testing.TB) *storage.Store {
	t.Helper()
	return OpenDSN(t, b.NewDSN(t))
}

// OpenDSN opens and migrates a store on dsn, closed when t ends.
func OpenDSN(t testing.TB, dsn string) *storage.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := storage.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s
}

// SQLite is the embedded dialect, a temporary file per database.
var SQLite = Backend{
	Name: "sqlite",
	NewDSN: func(t testing.TB) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "deputy.db")
	},
}

// Postgres is the production dialect, a fresh schema per database.
var Postgres = Backend{
	Name:   "postgres",
	NewDSN: newPostgresSchema,
}

// Backends lists both dialects.
func Backends() []Backend { return []Backend{SQLite, Postgres} }

// Each runs fn as a subtest per dialect with a fresh store.
func Each(t *testing.T, fn func(t *testing.T, s *storage.Store)) {
	t.Helper()
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) {
			fn(t, b.Open(t))
		})
	}
}

// EachBackend runs fn as a subtest per dialect, leaving the opening to fn.
func EachBackend(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) { fn(t, b) })
	}
}

// PostgresURL returns the server URL tests use, skipping (or failing, when
// PostgreSQL is required) if there is none.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("DEPUTY_TEST_DATABASE_URL")
	if base == "" {
		if os.Getenv("DEPUTY_REQUIRE_POSTGRES") == "1" {
			t.Fatal("DEPUTY_REQUIRE_POSTGRES=1 but DEPUTY_TEST_DATABASE_URL is not set")
		}
		t.Skip("DEPUTY_TEST_DATABASE_URL not set; PostgreSQL tests skipped")
	}
	return base
}

func newPostgresSchema(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	admin, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		if os.Getenv("DEPUTY_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("postgres at %s unreachable: %v", base, err)
		}
		t.Skipf("postgres unreachable (%v); PostgreSQL tests skipped", err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	schema := "deputy_test_" + hex.EncodeToString(rnd[:])
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("postgres", base)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("DEPUTY_TEST_DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// catalog lists the tables of the store's schema, per dialect.
var catalog = map[storage.Dialect]string{
	storage.Postgres: `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`,
	storage.SQLite:   `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`,
}

// Dump renders every row of every table of s as text, by table, so that a
// test can search the whole database for a value that must not be stored:
// strings as they are, bytes as they are and also in hex and base64.
func Dump(t testing.TB, s *storage.Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	var tables []string
	if err := s.Select(ctx, &tables, catalog[s.Dialect()]); err != nil {
		t.Fatal(err)
	}
	if len(tables) < 5 {
		t.Fatalf("found only tables %v", tables)
	}
	out := map[string]string{}
	for _, table := range tables {
		rows, err := s.DB().QueryxContext(ctx, `SELECT * FROM `+table)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		var b strings.Builder
		for rows.Next() {
			vals, err := rows.SliceScan()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				switch v := v.(type) {
				case []byte:
					b.Write(v)
					b.WriteString(" " + hex.EncodeToString(v) + " " + base64.RawURLEncoding.EncodeToString(v) + " " + base64.StdEncoding.EncodeToString(v))
				default:
					fmt.Fprint(&b, v)
				}
				b.WriteByte('|')
			}
			b.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		rows.Close()
		out[table] = b.String()
	}
	return out
}

// OpenCounted makes a fresh, migrated store on b whose calls to the driver
// qc counts (storage/querycount), closed when t ends.
func (b Backend) OpenCounted(t testing.TB) (*storage.Store, *querycount.Counter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, qc, err := querycount.Open(ctx, b.NewDSN(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s, qc
}
