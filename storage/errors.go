package storage

import (
	"errors"

	"github.com/lib/pq"
	"github.com/ory/fosite"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrNotFound is fosite's not-found error, so that fosite's handlers and
// deputy's callers test for one value with errors.Is.
var ErrNotFound = fosite.ErrNotFound

// isUniqueViolation reports a unique or primary-key constraint failure in
// either dialect.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		c := sqErr.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
