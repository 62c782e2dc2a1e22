package main

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
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
)

// database is one fresh, migrated deputy database of the run, opened with
// the query counter, and removed when the run ends.
type database struct {
	Backend string // "postgres" or "sqlite"
	Store   *storage.Store
	Counter *querycount.Counter
	drop    func()
}

func (d *database) Close() {
	d.Store.Close()
	if d.drop != nil {
		d.drop()
	}
}

// newPostgres makes a fresh schema on the server at base and opens a
// migrated store on it; Close drops the schema.
func newPostgres(ctx context.Context, base string) (*database, error) {
	dsn, drop, err := createSchema(ctx, base, appName)
	if err != nil {
		return nil, err
	}
	d, err := openDatabase(ctx, "postgres", dsn)
	if err != nil {
		drop()
		return nil, err
	}
	d.drop = drop
	return d, nil
}

// scratchKind is what createScratch makes on the server: a schema (deputy's
// tables, found through search_path) or a database (Hydra keeps its tables
// in its database's default schema).
type scratchKind int

const (
	scratchSchema scratchKind = iota
	scratchDatabase
)

// createSchema makes a fresh, empty schema on the server at base and
// returns the URL of a connection whose search_path is that schema and
// whose application_name is app, and the function that drops the schema.
func createSchema(ctx context.Context, base, app string) (string, func(), error) {
	return createScratch(ctx, base, app, scratchSchema)
}

// createScratch makes a fresh, empty schema or database on the server at
// base (the latter needs the CREATEDB privilege) and returns the URL of a
// connection to it named app, and the function that drops it.
func createScratch(ctx context.Context, base, app string, kind scratchKind) (string, func(), error) {
	if err := checkURLLoopback(ctx, base); err != nil {
		return "", nil, fmt.Errorf("-postgres: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, err
	}
	admin, err := sql.Open("postgres", base)
	if err != nil {
		return "", nil, err
	}
	defer admin.Close()
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	name := "deputy_bench_" + hex.EncodeToString(rnd[:])
	object, drop := "SCHEMA", `DROP SCHEMA `+name+` CASCADE`
	if kind == scratchDatabase {
		// FORCE (PostgreSQL 13) ends the connections a server left behind.
		object, drop = "DATABASE", `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`
	}
	if _, err := admin.ExecContext(ctx, `CREATE `+object+` `+name); err != nil {
		return "", nil, fmt.Errorf("postgres at %s: create %s: %w", redact(base), strings.ToLower(object), err)
	}
	dropIt := func() {
		db, err := sql.Open("postgres", base)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, drop); err != nil {
			fmt.Fprintf(os.Stderr, "deputy-bench: %s: %v\n", drop, err)
		}
	}
	q := u.Query()
	if kind == scratchDatabase {
		u.Path = "/" + name
	} else {
		q.Set("search_path", name)
	}
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String(), dropIt, nil
}

// newSQLite makes a database file in a fresh temporary directory; Close
// removes the directory.
func newSQLite(ctx context.Context) (*database, error) {
	dir, err := os.MkdirTemp("", "deputy-bench-")
	if err != nil {
		return nil, err
	}
	d, err := openDatabase(ctx, "sqlite", "sqlite:"+filepath.Join(dir, "deputy.db"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	d.drop = func() { os.RemoveAll(dir) }
	return d, nil
}

func openDatabase(ctx context.Context, backend, dsn string) (*database, error) {
	s, qc, err := querycount.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return &database{Backend: backend, Store: s, Counter: qc}, nil
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// The floor: one INSERT of a token-sized row per request, over the store's
// own pool, with the token table's column types and a primary key and
// nothing else (no foreign key, no secondary index, no lookup before it).
// No design that stores its tokens can issue them faster on this database.
const floorDDL = `CREATE TABLE bench_floor_tokens (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL,
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL,
    granted_scopes     TEXT NOT NULL,
    requested_audience TEXT NOT NULL,
    granted_audience   TEXT NOT NULL,
    form_data          TEXT NOT NULL,
    session_data       TEXT NOT NULL,
    active             BOOLEAN NOT NULL
)`

const floorInsert = `INSERT INTO bench_floor_tokens (signature, request_id, client_id, subject,
	requested_at, expires_at, requested_scopes, granted_scopes, requested_audience, granted_audience,
	form_data, session_data, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// The row's text is what a client_credentials token of deputy stores.
const (
	floorScopes  = `["projects:read"]`
	floorForm    = `{"grant_type":["client_credentials"],"organization":["acme"],"scope":["projects:read"]}`
	floorSession = `{"subject":"bench-owner","organization":"acme","expires_at":{"access_token":"2026-01-01T00:00:00Z"},"username":"","extra":null}`
)

func setupFloor(ctx context.Context, d *database) error {
	_, err := d.Store.Exec(ctx, floorDDL)
	return err
}

func floorOp(d *database) op {
	return func(ctx context.Context, _ *worker) error {
		var sig, rid [32]byte
		if _, err := rand.Read(sig[:]); err != nil {
			return err
		}
		if _, err := rand.Read(rid[:16]); err != nil {
			return err
		}
		now := time.Now().UTC()
		_, err := d.Store.Exec(ctx, floorInsert,
			base64.RawURLEncoding.EncodeToString(sig[:]), hex.EncodeToString(rid[:16]), "bench-app-0123456789ab", "bench-owner",
			now, now.Add(time.Hour), floorScopes, floorScopes, "[]", "[]", floorForm, floorSession, true)
		return err
	}
}
