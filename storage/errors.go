package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"

	"github.com/ory/fosite"
)

// The errors a Store returns are classified where they happen: every query
// passes through the store's classify, which wraps the driver's error with
// one of these sentinels (keeping the driver's error in the chain for the
// log). Callers test with errors.Is, whatever wraps the error on the way up
// (fosite's RFC6749Error does).
var (
	// ErrNotFound is fosite's not-found error, so that fosite's handlers and
	// deputy's callers test for one value.
	ErrNotFound = fosite.ErrNotFound

	// ErrConflict reports a write that collides with an existing row: a
	// unique or primary-key constraint.
	ErrConflict = errors.New("storage: conflict")

	// ErrUnavailable reports that the database could not be reached or
	// could not serve the request right now: connection refused or reset, a
	// backend terminated by an administrator or a restart, a server shutting
	// down or out of connections, a database locked past its busy timeout,
	// a deadline passed waiting for it, a Store already closed. The same
	// request will work once the database is back (the pool reconnects on
	// its own): HTTP layers answer 503 with Retry-After, not 500. A cancelled
	// context is not unavailability: the caller went away.
	ErrUnavailable = errors.New("storage: database unavailable")

	// ErrInvalidInput reports a value the database cannot store or compare
	// at all, such as a NUL byte or invalid UTF-8 in PostgreSQL text (which
	// SQLite's text holds). It is the request's fault, not the server's:
	// HTTP layers answer 400 (or, for a lookup by id, 404), not 500.
	ErrInvalidInput = errors.New("storage: invalid input")
)

// classify wraps err with the sentinel it belongs to, if any. sql.ErrNoRows,
// an error already classified, and any other error pass unchanged.
func (f *flavor) classify(err error) error {
	if err == nil || errors.Is(err, sql.ErrNoRows) || classified(err) {
		return err
	}
	kind := f.errorKind(err)
	if kind == nil && unreachable(err) {
		kind = ErrUnavailable
	}
	if kind == nil {
		return err
	}
	return fmt.Errorf("%w: %w", kind, err)
}

func classified(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalidInput) || errors.Is(err, ErrConflict)
}

// unreachable reports the failures of any driver to reach its database, as
// database/sql, the net package and the kernel report them.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if isDBClosed(err) ||
		errors.Is(err, driver.ErrBadConn) ||
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
	// A *url.Error is a net.Error, but one from a DSN that does not parse
	// is no outage: only what it wraps can say whether a server was
	// unreachable.
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return unreachable(urlErr.Err)
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// errDBClosedText is database/sql's unexported errDBClosed.
const errDBClosedText = "sql: database is closed"

// isDBClosed finds database/sql's "database is closed" anywhere in err's
// chain: to the request, a closed pool is a database that is not there. The
// error is unexported, so it is matched by its text, on each link rather
// than the whole message so that a wrapping message quoting it does not
// count.
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
