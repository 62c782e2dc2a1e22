package storage

import (
	"context"
	"fmt"
	"testing/fstest"
)

// Classify is the classification of the store's errors on dialect d, for
// tests of the mapping from driver errors to sentinels.
func Classify(d Dialect, err error) error {
	for _, f := range flavors {
		if f.dialect == d {
			return f.classify(err)
		}
	}
	panic("storage: no flavor " + string(d))
}

// SQLiteCodeKind is the sentinel of a SQLite result code (the driver's
// error type has no constructor to build one in a test).
var SQLiteCodeKind = sqliteCodeKind

// MigrateTo applies deputy's migrations numbered up to version, so that a
// test can write rows the way an older deputy did and then see a later
// migration convert them.
func (s *Store) MigrateTo(ctx context.Context, version int) error {
	older := fstest.MapFS{}
	all, err := deputyMigrations.load()
	if err != nil {
		return err
	}
	for _, m := range all {
		if m.version <= version {
			older[fmt.Sprintf("%04d_%s.sql", m.version, m.name)] = &fstest.MapFile{Data: []byte(m.sql)}
		}
	}
	return s.migrate(ctx, MigrationSet{Name: deputyMigrations.Name, Files: older})
}

// Describe is how a statement's span is named.
func Describe(query string) (name, verb, table string) {
	op := describe(query)
	return op.name, op.verb, op.table
}

// AccessTokenRowBothWays reads the stored access token with signature sig
// as getRequest scans it (joinedRequestRow.fields) and as sqlx's
// reflection would, for a test that compares the two.
func (s *Store) AccessTokenRowBothWays(ctx context.Context, sig string) (byHand, byReflection any, err error) {
	var hand, refl joinedRequestRow
	q := getRequestQuery(accessTable)
	if err := s.run(ctx, q, true, func(st statement) error {
		return st.QueryRowxContext(ctx, sig).Scan(hand.fields()...)
	}); err != nil {
		return nil, nil, err
	}
	if err := s.get(ctx, &refl, q, sig); err != nil {
		return nil, nil, err
	}
	return hand, refl, nil
}

// HoldAccessTokenInserts makes the access-token inserts (pinned or not)
// made meanwhile queue; queued reports how many wait, release hands them on
// as one batch.
func (s *Store) HoldAccessTokenInserts(pinned bool) (queued func() int, release func()) {
	if pinned {
		return s.pinnedAccessInserts.Hold()
	}
	return s.accessInserts.Hold()
}

// HoldGrantLookups makes the agent mint's subject-token lookups made
// meanwhile queue; queued reports how many wait, release hands them on as
// one batch.
func (s *Store) HoldGrantLookups() (queued func() int, release func()) {
	return s.grantLookups.Hold()
}

// BackgroundCheckpoints is how many background checkpoints copied part of
// the SQLite log into the database; -1 when the store runs none.
func (s *Store) BackgroundCheckpoints() int64 {
	if s.checkpoints == nil {
		return -1
	}
	return s.checkpoints.copied.Load()
}

// FinishedCheckpoints is how many background checkpoints were finished
// while holding the store's connection, to rewind a log the writer kept
// growing; -1 when the store runs none.
func (s *Store) FinishedCheckpoints() int64 {
	if s.checkpoints == nil {
		return -1
	}
	return s.checkpoints.finished.Load()
}

// RewindAbove is the log's length, in pages, past which a background
// checkpoint is finished on the store's connection.
const RewindAbove = rewindAbove

// StartCheckpointer starts and stops a background checkpointer on the
// SQLite database dsn (deputy's form) names.
func StartCheckpointer(ctx context.Context, dsn string) error {
	driverDSN, err := sqliteDSN(dsn)
	if err != nil {
		return err
	}
	c, err := startCheckpointer(ctx, "sqlite", driverDSN, checkpointInterval, nil)
	if err != nil {
		return err
	}
	return c.Close()
}
