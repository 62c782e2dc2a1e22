package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL flavour a Store speaks.
type Dialect string

const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// flavor is every difference between the dialects, in one value: the rest
// of the package has one SQL body, written in PostgreSQL's flavour with "?"
// placeholders, and asks the store's flavor whenever a dialect matters. A
// third dialect is a third value in flavors, not a branch in every file.
type flavor struct {
	dialect Dialect
	// driver is the database/sql driver name; schemes the DSN prefixes the
	// flavor answers to.
	driver  string
	schemes []string
	// driverDSN turns deputy's DSN into the driver's own.
	driverDSN func(dsn string) (string, error)
	// pool is how many connections the pool keeps, and for how long.
	pool poolSettings
	// bind is the sqlx placeholder style queries are rebound to.
	bind int
	// ddl rewrites PostgreSQL's DDL into the dialect's. Queries (as opposed
	// to DDL) need no rewrite beyond placeholder binding: both dialects accept
	// ON CONFLICT … DO UPDATE, RETURNING and boolean literals.
	ddl []rewrite
	// shareLock is the clause that share-locks the rows a sub-SELECT reads
	// until the statement's transaction ends (storage/batch.go's
	// clientAtRevision), or "" where a write cannot race one: SQLite takes
	// its one write lock as a write statement begins, before it reads.
	shareLock string
	// ping checks a new pool can connect.
	ping func(ctx context.Context, db *sqlx.DB) error
	// lock holds the lock that serialises migrations across processes, on
	// conn, until unlock is called.
	lock func(ctx context.Context, conn *sqlx.Conn, key int64) (unlock func(), err error)
	// errorKind classifies an error of the driver: ErrUnavailable,
	// ErrInvalidInput, ErrConflict, or nil for any other.
	errorKind func(err error) error
}

type poolSettings struct {
	maxOpen, maxIdle   int
	idleTime, lifetime time.Duration
}

type rewrite struct {
	from *regexp.Regexp
	to   string
}

// flavors are the dialects Open knows, by DSN scheme.
var flavors = []*flavor{postgresFlavor, sqliteFlavor}

var postgresFlavor = &flavor{
	dialect:   Postgres,
	driver:    "postgres",
	schemes:   []string{"postgres://", "postgresql://"},
	driverDSN: postgresDSN,
	// Enough connections to keep both cores busy while requests wait on the
	// network, few enough that several replicas fit under PostgreSQL's
	// default max_connections of 100.
	pool:      poolSettings{maxOpen: 20, maxIdle: 20, idleTime: 5 * time.Minute, lifetime: 30 * time.Minute},
	bind:      sqlx.DOLLAR,
	shareLock: " FOR SHARE",
	ping:      func(ctx context.Context, db *sqlx.DB) error { return db.PingContext(ctx) },
	// Replicas migrating one schema at start take an advisory lock: the
	// first applies, the rest wait and then find nothing to do. The key is
	// mixed with the schema's name, because advisory locks are per
	// database: deputies in other schemas of the same database (a test
	// suite's hundreds) must not queue behind each other.
	lock: func(ctx context.Context, conn *sqlx.Conn, key int64) (func(), error) {
		const schemaKey = `($1::bigint # hashtext(current_schema())::bigint)`
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock`+schemaKey, key); err != nil {
			return nil, err
		}
		return func() {
			conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock`+schemaKey, key) //nolint:errcheck // the session ends with the connection anyway
		}, nil
	},
	errorKind: pqErrorKind,
}

var sqliteFlavor = &flavor{
	dialect:   SQLite,
	driver:    "sqlite",
	schemes:   []string{"sqlite:"},
	driverDSN: sqliteDSN,
	// SQLite has one writer. One connection serialises writers in Go instead
	// of in SQLite's busy loop, and keeps ":memory:" one database.
	pool: poolSettings{maxOpen: 1, maxIdle: 1},
	bind: sqlx.QUESTION,
	ping: sqlitePing,
	ddl: []rewrite{
		{regexp.MustCompile(`(?i)\btimestamptz\b`), "timestamp"},
		{regexp.MustCompile(`(?i)\bbytea\b`), "blob"},
		{regexp.MustCompile(`(?i)\bbigserial\b`), "integer"},
	},
	// Every transaction is BEGIN IMMEDIATE (sqliteDSN's _txlock), which takes
	// the database's one write lock: a migration's check and apply cannot
	// interleave with another process's. Nothing more to hold.
	lock:      func(context.Context, *sqlx.Conn, int64) (func(), error) { return func() {}, nil },
	errorKind: sqliteErrorKind,
}

// flavorOf picks the flavor a DSN names and returns it with the driver's DSN.
func flavorOf(dsn string) (*flavor, string, error) {
	for _, f := range flavors {
		for _, scheme := range f.schemes {
			if strings.HasPrefix(dsn, scheme) {
				d, err := f.driverDSN(dsn)
				return f, d, err
			}
		}
	}
	return nil, "", fmt.Errorf("storage: unsupported DSN %q: want postgres://… or sqlite:PATH", redactDSN(dsn))
}

// translateDDL rewrites a migration written for PostgreSQL into the dialect.
func (f *flavor) translateDDL(sql string) string {
	for _, r := range f.ddl {
		sql = r.from.ReplaceAllString(sql, r.to)
	}
	return sql
}

// postgresDSN turns on lib/pq's binary_parameters unless the DSN chooses:
// a statement with arguments then costs one network round trip (Parse, Bind
// and Execute sent together) instead of two (a Parse/Describe first), which
// halves the token endpoint's time waiting on PostgreSQL.
func postgresDSN(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn, nil // lib/pq reports the error with its own message
	}
	q := u.Query()
	if q.Get("binary_parameters") == "" {
		q.Set("binary_parameters", "yes")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// sqliteDSN adds the pragmas every connection needs: WAL so readers do not
// block the writer, a busy timeout instead of SQLITE_BUSY errors, foreign keys
// (off by default in SQLite), a sortable time format so that timestamps
// compare correctly as text, and immediate transactions, which take the
// write lock at BEGIN rather than failing to upgrade to it halfway.
func sqliteDSN(dsn string) (string, error) {
	path := strings.TrimPrefix(dsn, "sqlite:")
	if path == "" {
		return "", errors.New("storage: sqlite DSN needs a path (sqlite:deputy.db, or sqlite::memory: for a private in-memory database)")
	}
	var b strings.Builder
	if path == ":memory:" {
		b.WriteString("file::memory:")
	} else {
		b.WriteString("file:")
		b.WriteString(path)
	}
	fmt.Fprintf(&b, "?_pragma=busy_timeout(%d)&", sqliteBusyTimeout.Milliseconds())
	b.WriteString("_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_time_format=sqlite&_txlock=immediate")
	if path != ":memory:" {
		fmt.Fprintf(&b, "&_pragma=journal_mode(WAL)&_pragma=wal_autocheckpoint(%d)", sqliteAutoCheckpoint)
	}
	return b.String(), nil
}

// sqlitePing connects, retrying while the database is busy. The first
// connections to a new file race to switch it to WAL, which takes the write
// lock; SQLite answers the losers SQLITE_BUSY at once, without waiting out the
// busy timeout (waiting could deadlock), so replicas starting together on one
// file would fail to open. The retries stop at the busy timeout.
func sqlitePing(ctx context.Context, db *sqlx.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := db.PingContext(ctx)
		var e *sqlite.Error
		if err == nil || !errors.As(err, &e) || e.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// sqliteBusyTimeout is how long a statement waits for another's lock.
const sqliteBusyTimeout = 5 * time.Second

// pqErrorKind classifies PostgreSQL's SQLSTATEs.
//
// Unavailable: class 08 (connection exception), 57P01–57P03 (admin_shutdown,
// crash_shutdown, cannot_connect_now), 53300 too_many_connections, 25006
// read_only_sql_transaction (a write that reached a standby during
// failover), and 55000 when it is FATAL, which is how PostgreSQL refuses a
// connection to a database that does not accept any right now (ALTER
// DATABASE … ALLOW_CONNECTIONS false, as during maintenance). A 55000 that is
// not FATAL (object_not_in_prerequisite_state in a statement) is the query's
// fault, not the database's. Also 40P01 deadlock_detected and 40001
// serialization_failure: PostgreSQL aborted the transaction to let another
// finish, and the same request tried again succeeds (a pinned token insert
// inside a transaction that already locked one of the client's tokens can
// meet the client's deletion that way: change 16 in docs/performance.md).
//
// Invalid input: class 22 (data exception), such as a NUL byte in a string
// (22021) or invalid UTF-8, which PostgreSQL's text type cannot hold though
// SQLite's can; and 54000 program_limit_exceeded, a value too large for an
// index entry.
//
// Conflict: 23505 unique_violation.
func pqErrorKind(err error) error {
	var e *pq.Error
	if !errors.As(err, &e) {
		return nil
	}
	code := string(e.Code)
	switch {
	case code == "55000" && e.Fatal(),
		strings.HasPrefix(code, "08"),
		code == "57P01", code == "57P02", code == "57P03", code == "53300", code == "25006",
		code == "40P01", code == "40001":
		return ErrUnavailable
	case strings.HasPrefix(code, "22"), code == "54000":
		return ErrInvalidInput
	case code == "23505":
		return ErrConflict
	}
	return nil
}

// sqliteErrorKind classifies SQLite's result codes.
//
// Unavailable: the primary codes BUSY and LOCKED (a lock held past the busy
// timeout), IOERR, CANTOPEN and FULL (the file or its disk). Invalid input:
// TOOBIG (a string or blob over SQLite's limit). Conflict: a unique or
// primary-key constraint.
func sqliteErrorKind(err error) error {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return nil
	}
	return sqliteCodeKind(e.Code())
}

func sqliteCodeKind(code int) error {
	switch code {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return ErrConflict
	}
	switch code & 0xff { // the primary result code
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL:
		return ErrUnavailable
	case sqlite3.SQLITE_TOOBIG:
		return ErrInvalidInput
	}
	return nil
}
