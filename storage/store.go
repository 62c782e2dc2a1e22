// Package storage is deputy's persistence: fosite's storage interfaces, apps
// and their secrets, signing keys, agent grants and the audit log, over sqlx on
// PostgreSQL (lib/pq) or SQLite (modernc.org/sqlite). It knows nothing of HTTP.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"  // registers "postgres"
	_ "modernc.org/sqlite" // registers "sqlite"

	"github.com/deputyauth/deputy/internal/batch"
)

// Store is one handle on a deputy database. It is safe for concurrent use.
type Store struct {
	db     *sqlx.DB
	flavor *flavor

	rebound sync.Map // query text → query text in the dialect's placeholder style

	// stmts holds the prepared statements of the hot path, by query text
	// (see prepared). database/sql prepares each on a connection the first
	// time it runs there and reuses it after.
	stmts  sync.Map // query text → *sqlx.Stmt
	stmtMu sync.Mutex

	health health // failures seen, for Health (observe.go)

	// accessInserts, pinnedAccessInserts and userPinnedAccessInserts
	// write concurrent access tokens together (batch.go).
	accessInserts, pinnedAccessInserts, userPinnedAccessInserts batch.Batcher[[]any]
	// checkpoints copies a file SQLite database's log into it in the
	// background (checkpoint.go); nil otherwise.
	checkpoints *checkpointer

	// grantLookups reads the subject tokens of concurrent agent mints
	// together (batch.go).
	grantLookups batch.Batcher[*grantLookup]
}

// Open connects to the database named by dsn and returns a Store. It does not
// migrate; call Migrate.
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL via lib/pq
//	sqlite:/path/to/deputy.db                        SQLite file via modernc.org/sqlite
//	sqlite::memory:                                  private in-memory SQLite (tests)
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	f, driverDSN, err := flavorOf(dsn)
	if err != nil {
		return nil, err
	}
	var db *sqlx.DB
	if o.connector == nil {
		db, err = sqlx.Open(f.driver, driverDSN)
	} else {
		var c driver.Connector
		if c, err = o.connector(f.driver, driverDSN); err == nil {
			db = sqlx.NewDb(sql.OpenDB(c), f.driver)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", f.dialect, err)
	}
	db.SetMaxOpenConns(f.pool.maxOpen)
	db.SetMaxIdleConns(f.pool.maxIdle)
	db.SetConnMaxIdleTime(f.pool.idleTime)
	db.SetConnMaxLifetime(f.pool.lifetime)
	if err := f.ping(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("storage: connect %s: %w", f.dialect, f.classify(err))
	}
	s := &Store{db: db, flavor: f}
	if f.dialect == SQLite && strings.TrimPrefix(dsn, "sqlite:") != ":memory:" {
		if s.checkpoints, err = startCheckpointer(ctx, f.driver, driverDSN, checkpointInterval, db.DB); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: open %s: %w", f.dialect, err)
		}
	}
	return s, nil
}

// An Option changes how Open builds the store.
type Option func(*options)

type options struct {
	connector func(driverName, dsn string) (driver.Connector, error)
}

// WithConnector makes Open build its pool on the connector that connect
// returns for the driver's name and the driver's own DSN (after deputy's
// defaults are added), instead of on the driver's own: the seam for
// instrumentation between the pool and the driver (storage/querycount counts
// round trips through it). The pool settings stay the dialect's.
func WithConnector(connect func(driverName, dsn string) (driver.Connector, error)) Option {
	return func(o *options) { o.connector = connect }
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
func (s *Store) Dialect() Dialect { return s.flavor.dialect }

// DB exposes the pool, for what Exec, Get and Select cannot do (a
// dedicated connection, the pool's statistics). Errors from it are the
// driver's own, unclassified; queries on it must use the dialect's
// placeholders.
func (s *Store) DB() *sqlx.DB { return s.db }

// rebind rewrites "?" placeholders into the dialect's style, caching the result.
func (s *Store) rebind(query string) string {
	if s.flavor.bind == sqlx.QUESTION {
		return query // as written
	}
	if q, ok := s.rebound.Load(query); ok {
		return q.(string)
	}
	q := sqlx.Rebind(s.flavor.bind, query)
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
	if s.checkpoints != nil {
		s.checkpoints.Close()
	}
	return s.db.Close()
}

// Ping checks the database answers: readiness (deputy-idp's /readyz,
// Plugin.Ready for a host) uses it.
func (s *Store) Ping(ctx context.Context) error {
	err := s.flavor.classify(s.db.PingContext(ctx))
	s.observe(nil, err)
	return err
}

// Exec, Get and Select run a host's queries on its own tables beside
// deputy's (the demo IdP keeps its users there) the way the store runs its
// own: written with "?" placeholders, inside the transaction ctx carries
// (InTx), and with errors classified (ErrUnavailable, ErrInvalidInput,
// ErrConflict). Get returns sql.ErrNoRows when there is no row.

// Exec runs a statement.
func (s *Store) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.exec(ctx, query, args...)
}

// Get scans one row into dest.
func (s *Store) Get(ctx context.Context, dest any, query string, args ...any) error {
	return s.get(ctx, dest, query, args...)
}

// Select scans every row into dest, a pointer to a slice.
func (s *Store) Select(ctx context.Context, dest any, query string, args ...any) error {
	return s.selectAll(ctx, dest, query, args...)
}

// SelectPrepared is Select through a prepared statement, for a host query
// that runs on every token (a SQL Directory's): the statement is prepared
// once on each pooled connection and reused, which spares PostgreSQL its
// parse and plan per execution, as deputy's own token-path statements do.
// Each distinct query text is kept for the life of the Store, so query must
// be one of a fixed set of texts, never built from input. A migration that
// changes the columns a cached statement reads needs a restart, as for
// deputy's own (docs/performance.md).
func (s *Store) SelectPrepared(ctx context.Context, dest any, query string, args ...any) error {
	return s.selectPrepared(ctx, dest, query, args...)
}

type txKey struct{ s *Store }

// querier is what both *sqlx.DB and *sqlx.Tx offer.
type querier interface {
	sqlx.ExtContext
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

// statement is one query bound to where it runs: a prepared statement
// (*sqlx.Stmt), or the query's text on the pool or the transaction (direct).
type statement interface {
	ExecContext(ctx context.Context, args ...any) (sql.Result, error)
	GetContext(ctx context.Context, dest any, args ...any) error
	SelectContext(ctx context.Context, dest any, args ...any) error
	QueryRowxContext(ctx context.Context, args ...any) *sqlx.Row
}

type direct struct {
	q     querier
	query string
}

func (d direct) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return d.q.ExecContext(ctx, d.query, args...)
}

func (d direct) GetContext(ctx context.Context, dest any, args ...any) error {
	return d.q.GetContext(ctx, dest, d.query, args...)
}

func (d direct) SelectContext(ctx context.Context, dest any, args ...any) error {
	return d.q.SelectContext(ctx, dest, d.query, args...)
}

func (d direct) QueryRowxContext(ctx context.Context, args ...any) *sqlx.Row {
	return d.q.QueryRowxContext(ctx, d.query, args...)
}

// run is the one place every query of the store passes: it binds query
// (written with "?" placeholders) to the transaction ctx carries or to the
// pool, through its prepared statement when prepare is set, runs fn on it,
// and classifies the error.
func (s *Store) run(ctx context.Context, query string, prepare bool, fn func(statement) error) error {
	ctx, span := s.startSpan(ctx, query)
	var err error
	if prepare {
		err = s.withStmt(ctx, query, func(st *sqlx.Stmt) error { return fn(st) })
	} else {
		err = fn(direct{q: s.q(ctx), query: s.rebind(query)})
	}
	err = s.flavor.classify(err)
	s.observe(span, err)
	return err
}

// q returns the transaction carried by ctx, if this store began one, or the pool.
func (s *Store) q(ctx context.Context) querier {
	if tx, ok := ctx.Value(txKey{s}).(*sqlx.Tx); ok {
		return tx
	}
	return s.db
}

// exec runs a statement.
func (s *Store) exec(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = s.run(ctx, query, false, func(st statement) error {
		res, err = st.ExecContext(ctx, args...)
		return err
	})
	return res, err
}

// get scans one row into dest; sql.ErrNoRows when there is none.
func (s *Store) get(ctx context.Context, dest any, query string, args ...any) error {
	return s.run(ctx, query, false, func(st statement) error { return st.GetContext(ctx, dest, args...) })
}

// selectAll scans every row into dest, a pointer to a slice.
func (s *Store) selectAll(ctx context.Context, dest any, query string, args ...any) error {
	return s.run(ctx, query, false, func(st statement) error { return st.SelectContext(ctx, dest, args...) })
}

// execPrepared, getPrepared and selectPrepared are exec, get and selectAll
// through a prepared statement. Only the statements of the token endpoint's
// hot path use them: a prepared statement skips PostgreSQL's parse and plan
// on every execution after the first on each connection.
func (s *Store) execPrepared(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	err = s.run(ctx, query, true, func(st statement) error {
		res, err = st.ExecContext(ctx, args...)
		return err
	})
	return res, err
}

func (s *Store) getPrepared(ctx context.Context, dest any, query string, args ...any) error {
	return s.run(ctx, query, true, func(st statement) error { return st.GetContext(ctx, dest, args...) })
}

func (s *Store) selectPrepared(ctx context.Context, dest any, query string, args ...any) error {
	return s.run(ctx, query, true, func(st statement) error { return st.SelectContext(ctx, dest, args...) })
}

// prepared returns the pool's prepared statement for query, preparing it on
// first use. database/sql prepares it on a connection the first time it runs
// there and reuses it after.
func (s *Store) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sqlx.Stmt), nil
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sqlx.Stmt), nil
	}
	st, err := s.db.PreparexContext(ctx, s.rebind(query))
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
		if st, err = tx.PreparexContext(ctx, s.rebind(query)); err != nil {
			return err
		}
	}
	defer st.Close() // the transaction's statement; the pool's stays
	return fn(st)
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
		err = s.flavor.classify(err)
		s.observe(nil, err)
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
	err := s.flavor.classify(tx.Commit())
	s.observe(nil, err)
	return err
}

// Rollback aborts the transaction in ctx. Rolling back a finished transaction
// is not an error, so it is safe in a defer after Commit.
func (s *Store) Rollback(ctx context.Context) error {
	tx, ok := ctx.Value(txKey{s}).(*sqlx.Tx)
	if !ok {
		return errors.New("storage: no transaction in context")
	}
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		err = s.flavor.classify(err)
		s.observe(nil, err)
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
