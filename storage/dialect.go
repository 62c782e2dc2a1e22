package storage

import (
	"regexp"

	"github.com/jmoiron/sqlx"
)

// Dialect names the SQL flavour a Store speaks. All SQL in this package is
// written once, in PostgreSQL's flavour with "?" placeholders; the few places
// where SQLite differs are the rewrites below and nowhere else.
type Dialect string

const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

type rewrite struct {
	from *regexp.Regexp
	to   string
}

// sqliteRewrites turns PostgreSQL DDL into SQLite DDL. Queries (as opposed to
// DDL) need no rewrite beyond placeholder binding: both dialects accept
// ON CONFLICT … DO UPDATE, RETURNING and boolean literals.
var sqliteRewrites = []rewrite{
	{regexp.MustCompile(`(?i)\btimestamptz\b`), "timestamp"},
	{regexp.MustCompile(`(?i)\bbytea\b`), "blob"},
	{regexp.MustCompile(`(?i)\bbigserial\b`), "integer"},
}

// translateDDL rewrites a migration for the dialect.
func (d Dialect) translateDDL(sql string) string {
	if d != SQLite {
		return sql
	}
	for _, r := range sqliteRewrites {
		sql = r.from.ReplaceAllString(sql, r.to)
	}
	return sql
}

// bindType is the sqlx placeholder style of the dialect.
func (d Dialect) bindType() int {
	if d == Postgres {
		return sqlx.DOLLAR
	}
	return sqlx.QUESTION
}
