package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/lib/pq"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// IsUnavailable reports whether err, returned by a Store method, means the
// database could not be reached or could not serve the request right now
// (connection refused or reset, a backend terminated by an administrator or
// a restart, a server shutting down or out of connections, a database locked
// past its busy timeout, a deadline passed waiting for it) rather than that
// the request itself was wrong. HTTP layers answer it with 503 and a
// Retry-After instead of a 500: the same request will work once the
// database is back, and the pool reconnects on its own.
//
// A *sql.DB that has been closed ("sql: database is closed") counts too: to
// the request it is a database that is not there.
//
// A cancelled context is not unavailability: the caller went away.
func IsUnavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if isDBClosed(err) {
		return true
	}
	if errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) {
		return true
	}
	// A *url.Error is a net.Error, but most are a URL that does not parse
	// (fosite wraps the one of a malformed audience): only what it wraps
	// can say whether a server was unreachable.
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return IsUnavailable(urlErr.Err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqUnavailable(pqErr)
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL:
			return true
		}
	}
	return false
}

// IsInvalidInput reports whether err, returned by a Store method, means a
// value the caller passed cannot be stored or compared at all: a
// PostgreSQL data exception (SQLSTATE class 22), such as a NUL byte in a
// string (22021), which PostgreSQL's text type cannot hold though SQLite's
// can. It is the request's fault, not the server's: HTTP layers answer it
// 400 (or, for a lookup by id, 404) instead of 500.
func IsInvalidInput(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && strings.HasPrefix(string(pqErr.Code), "22")
}

// errDBClosedText is database/sql's unexported errDBClosed.
const errDBClosedText = "sql: database is closed"

// isDBClosed finds database/sql's "database is closed" anywhere in err's
// chain. The error is unexported, so it is matched by its text, on each
// link rather than the whole message so that a wrapping message quoting it
// does not count twice.
func isDBClosed(err error) bool {
	for _, e := range chain(err) {
		if e.Error() == errDBClosedText {
			return true
		}
	}
	return false
}

// chain lists err and every error it wraps, depth first, bounded so that a
// cyclic wrapper cannot loop.
func chain(err error) []error {
	var out []error
	stack := []error{err}
	for len(stack) > 0 && len(out) < 64 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if e == nil {
			continue
		}
		out = append(out, e)
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			stack = append(stack, u.Unwrap())
		case interface{ Unwrap() []error }:
			stack = append(stack, u.Unwrap()...)
		}
	}
	return out
}

// pqUnavailable classifies PostgreSQL SQLSTATEs: class 08 (connection
// exception), 57P01–57P03 (admin_shutdown, crash_shutdown,
// cannot_connect_now), 53300 too_many_connections, and 25006
// read_only_sql_transaction (a write that reached a standby during failover);
// and 55000 when it is FATAL, which is how PostgreSQL refuses a connection
// to a database that does not accept any right now (ALTER DATABASE …
// ALLOW_CONNECTIONS false, as during maintenance). A 55000 that is not
// FATAL (object_not_in_prerequisite_state in a statement) is the query's
// fault, not the database's.
func pqUnavailable(e *pq.Error) bool {
	code := string(e.Code)
	if code == "55000" && e.Fatal() {
		return true
	}
	switch {
	case strings.HasPrefix(code, "08"):
		return true
	}
	switch code {
	case "57P01", "57P02", "57P03", "53300", "25006":
		return true
	}
	return false
}
