// Package storage is deputy's persistence: fosite's storage interfaces, apps
// and their secrets, signing keys, agent grants and the audit log, over sqlx on
// PostgreSQL (lib/pq) or SQLite (modernc.org/sqlite). It knows nothing of HTTP.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // registers "postgres"
	_ "modernc.org/sqlite" // registers "sqlite"
)

// ErrConflict reports a write that collides with an existing row.
var ErrConflict = errors.New("storage: conflict")

// Store is one handle on a deputy database. It is safe for concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect Dialect

	rebound sync.Map // query text → query text in the dialect's placeholder style

	// stmts holds the prepared statements of the hot path, by query text
	// (see prepared). database/sql prepares each on a connection the first
	// time it runs there and reuses it after.
	stmts  sync.Map // query text → *sqlx.Stmt
	stmtMu sync.Mutex
}

// Open connects to the database named by dsn and returns a Store. It does not
// migrate; call Migrate.
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL via lib/pq
//	sqlite:/path/to/deputy.db                        SQLite file via modernc.org/sqlite
//	sqlite::memory:                                  private in-memory SQLite (tests)
func Open(ctx context.Context, dsn string) (*Store, error) {
	return open(ctx, dsn, sqlx.Open)
}

// open is Open with the pool's constructor as a parameter, so that
// OpenCounting can put a counting driver under the very same pool settings.
// connect receives the driver name and the driver's own DSN.
func open(ctx context.Context, dsn string, connect func(driverName, dsn string) (*sqlx.DB, error)) (*Store, error) {
	var (
		db  *sqlx.DB
		d   Dialect
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		d = Postgres
		db, err = connect("postgres", postgresDSN(dsn))
		if err != nil {
			return nil, fmt.Errorf("storage: open postgres: %w", err)
		}
		// Enough connections to keep both cores busy while requests wait on
		// the network, few enough that several replicas fit under
		// PostgreSQL's default max_connections of 100.
		db.SetMaxOpenConns(20)
		db.SetMaxIdleConns(20)
		db.SetConnMaxIdleTime(5 * time.Minute)
		db.SetConnMaxLifetime(30 * time.Minute)
	case strings.HasPrefix(dsn, "sqlite:"):
		d = SQLite
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, errors.New("storage: sqlite DSN needs a path (sqlite:deputy.db, or sqlite::memory: for a private in-memory database)")
		}
		db, err = connect("sqlite", sqliteDSN(path))
		if err != nil {
			return nil, fmt.Errorf("storage: open sqlite: %w", err)
		}
		// SQLite has one writer. One connection serialises writers in Go
		// instead of in SQLite's busy loop, and keeps ":memory:" one database.
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
	default:
		return nil, fmt.Errorf("storage: unsupported DSN %q: want postgres://… or sqlite:PATH", redactDSN(dsn))
	}
	s := &Store{db: db, dialect: d}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: connect %s: %w", d, err)
	}
	return s, nil
}

// sqliteDSN adds the pragmas every connection needs: WAL so readers do not
// block the writer, a busy timeout instead of SQLITE_BUSY errors, foreign keys
// (off by default in SQLite), and a sortable time format so that timestamps
// compare correctly as text.
func sqliteDSN(path string) string {
	var b strings.Builder
	if path == ":memory:" {
		b.WriteString("file::memory:")
	} else {
		b.WriteString("file:")
		b.WriteString(path)
	}
	b.WriteString("?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_time_format=sqlite&_txlock=immediate")
	if path != ":memory:" {
		b.WriteString("&_pragma=journal_mode(WAL)")
	}
	return b.String()
}

// redactDSN hides a password in a DSN for error messages.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "@"); i > 0 {
		if j := strings.Index(dsn, "://"); j > 0 && j < i {
			return dsn[:j+3] + "…" + dsn[i:]
		}
	}
	return dsn
}

// Dialect reports which SQL flavour the store speaks.
func (s *Store) Dialect() Dialect { return s.dialect }

// DB exposes the pool for the host's own tables (the demo IdP keeps its users
// beside deputy's). Queries must use Rebind.
func (s *Store) DB() *sqlx.DB { return s.db }

// Rebind rewrites "?" placeholders into the dialect's style, caching the result.
func (s *Store) Rebind(query string) string {
	if s.dialect != Postgres {
		return query
	}
	if q, ok := s.rebound.Load(query); ok {
		return q.(string)
	}
	q := sqlx.Rebind(s.dialect.bindType(), query)
	s.rebound.Store(query, q)
	return q
}

// Close closes the prepared statements and the pool.
func (s *Store) Close() error {
	s.stmts.Range(func(k, v any) bool {
		v.(*sqlx.Stmt).Close()
		s.stmts.Delete(k)
		return true
	})
	return s.db.Close()
}

// Ping checks the database answers; /healthz uses it.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

type txKey struct{ s *Store }

// querier is what both *sqlx.DB and *sqlx.Tx offer.
type querier interface {
	sqlx.ExtContext
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

// q returns the transaction carried by ctx, if this store began one, or the pool.
func (s *Store) q(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{s}).(*sqlx.Tx); ok {
		return tx
	}
	return s.db
}

// exec runs a statement written with "?" placeholders.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.q(ctx).ExecContext(ctx, s.Rebind(query), args...)
}

// get scans one row into dest; sql.ErrNoRows when there is none.
func (s *Store) get(ctx context.Context, dest any, query string, args ...any) error {
	return s.q(ctx).GetContext(ctx, dest, s.Rebind(query), args...)
}

// selectAll scans every row into dest, a pointer to a slice.
func (s *Store) selectAll(ctx context.Context, dest any, query string, args ...any) error {
	return s.q(ctx).SelectContext(ctx, dest, s.Rebind(query), args...)
}

// prepared returns the prepared statement for query, preparing it on first
// use. Only the statements of the token endpoint's hot path go through it: a
// prepared statement skips PostgreSQL's parse and plan on every execution
// after the first on each connection.
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sqlx.Stmt), nil
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sqlx.Stmt), nil
	}
	st, err := s.db.PreparexContext(ctx, s.Rebind(query))
	if err != nil {
		return nil, err
	}
	s.stmts.Store(query, st)
	return st, nil
}

// withStmt runs fn with the prepared statement for query, bound to the
// transaction carried by ctx if there is one.
//
// Inside a transaction a statement not yet prepared is prepared on the
// transaction's connection only: preparing it on the pool would wait for a
// second connection, which SQLite's one-connection pool never has.
func (s *Store) withStmt(ctx context.Context, query string, fn func(st *sqlx.Stmt) error) error {
	tx, inTx := ctx.Value(txKey{s}).(*sqlx.Tx)
	if !inTx {
		st, err := s.prepared(ctx, query)
		if err != nil {
			return err
		}
		return fn(st)
	}
	var st *sqlx.Stmt
	if cached, ok := s.stmts.Load(query); ok {
		st = tx.StmtxContext(ctx, cached.(*sqlx.Stmt))
	} else {
		var err error
		if st, err = tx.PreparexContext(ctx, s.Rebind(query)); err != nil {
			return err
		}
	}
	defer st.Close() // the transaction's statement; the pool's stays
	return fn(st)
}

// execPrepared is exec through a prepared statement.
func (s *Store) execPrepared(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = s.withStmt(ctx, query, func(st *sqlx.Stmt) error {
		res, err = st.ExecContext(ctx, args...)
		return err
	})
	return res, err
}

// getPrepared is get through a prepared statement.
func (s *Store) getPrepared(ctx context.Context, dest any, query string, args ...any) error {
	return s.withStmt(ctx, query, func(st *sqlx.Stmt) error {
		return st.GetContext(ctx, dest, args...)
	})
}

// selectPrepared is selectAll through a prepared statement.
func (s *Store) selectPrepared(ctx context.Context, dest any, query string, args ...any) error {
	return s.withStmt(ctx, query, func(st *sqlx.Stmt) error {
		return st.SelectContext(ctx, dest, args...)
	})
}

// BeginTX starts a transaction carried by the returned context; the store's
// methods called with that context run inside it. It implements fosite's
// storage.Transactional, so fosite's refresh rotation is atomic.
func (s *Store) BeginTX(ctx context.Context) (context.Context, error) {
	if _, ok := ctx.Value(txKey{s}).(*sqlx.Tx); ok {
		return ctx, errors.New("storage: transaction already open in this context")
	}
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return ctx, fmt.Errorf("storage: begin: %w", err)
	}
	return context.WithValue(ctx, txKey{s}, tx), nil
}

// Commit commits the transaction in ctx.
func (s *Store) Commit(ctx context.Context) error {
	tx, ok := ctx.Value(txKey{s}).(*sqlx.Tx)
	if !ok {
		return errors.New("storage: no transaction in context")
	}
	return tx.Commit()
}

// Rollback aborts the transaction in ctx. Rolling back a finished transaction
// is not an error, so it is safe in a defer after Commit.
func (s *Store) Rollback(ctx context.Context) error {
	tx, ok := ctx.Value(txKey{s}).(*sqlx.Tx)
	if !ok {
		return errors.New("storage: no transaction in context")
	}
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}

// InTx runs fn in a transaction, committing when fn returns nil.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, ok := ctx.Value(txKey{s}).(*sqlx.Tx); ok {
		return fn(ctx) // already inside one: join it
	}
	txCtx, err := s.BeginTX(ctx)
	if err != nil {
		return err
	}
	defer s.Rollback(txCtx) //nolint:errcheck // a no-op after Commit
	if err := fn(txCtx); err != nil {
		return err
	}
	return s.Commit(txCtx)
}

// now is the store's clock, truncated to microseconds, the precision both
// dialects keep, so that a value read back equals the value written.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// postgresDSN turns on lib/pq's binary_parameters unless the DSN chooses:
// a statement with arguments then costs one network round trip (Parse, Bind
// and Execute sent together) instead of two (a Parse/Describe first), which
// halves the token endpoint's time waiting on PostgreSQL.
func postgresDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // lib/pq reports the error with its own message
	}
	q := u.Query()
	if q.Get("binary_parameters") == "" {
		q.Set("binary_parameters", "yes")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
