package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jmoiron/sqlx"
)

// Concurrent inserts of access tokens are written together: while one
// statement is in flight, the tokens that arrive meanwhile queue, and the
// first of them writes the whole queue in one multi-row INSERT when the
// statement ahead of it returns. Each token request still waits for its own
// row to be committed before it is answered; what it saves is the statement,
// the round trip and the commit it would have paid alone, the larger part of
// a client_credentials token's cost on both sides of the connection.
//
// A batch is all or nothing: if its statement fails for any reason (a
// client pin gone stale, a duplicate signature, the leader's context ending)
// every row in it is written again alone, so each caller gets the outcome
// its own row would have had by itself.

// maxBatch caps the rows of one statement (15 parameters each).
const maxBatch = 32

// insertBatcher groups the inserts of one statement shape. One statement of
// each shape is in flight at a time: on PostgreSQL, with 8 clients, that
// wrote more tokens a second than allowing two or four (which make smaller
// batches), docs/performance.md change 9; SQLite's pool has one connection.
type insertBatcher struct {
	mu    sync.Mutex
	busy  bool // a statement is in flight
	queue []*pendingInsert
}

// pendingInsert is one caller's row and where its outcome is delivered.
type pendingInsert struct {
	ctx  context.Context
	args []any
	done chan batchOutcome
}

// batchOutcome is what a waiting caller is told: its row's error, or that
// it must write its row alone, or that it leads the next batch.
type batchOutcome struct {
	err   error
	alone bool
	lead  []*pendingInsert
}

// insert writes p's row through exec, with the rows of concurrent callers
// when there are any. exec writes the rows of its batch in one statement,
// run with the given context, and returns nil only if every row went in.
func (b *insertBatcher) insert(p *pendingInsert, exec func(context.Context, []*pendingInsert) error) error {
	b.mu.Lock()
	if !b.busy {
		b.busy = true
		b.mu.Unlock()
		return b.lead(p, []*pendingInsert{p}, exec)
	}
	p.done = make(chan batchOutcome, 1)
	b.queue = append(b.queue, p)
	b.mu.Unlock()
	out := <-p.done
	switch {
	case out.lead != nil:
		return b.lead(p, out.lead, exec)
	case out.alone:
		return exec(p.ctx, []*pendingInsert{p})
	default:
		return out.err
	}
}

// lead runs batch (self's row among them), hands the queue that built up
// meanwhile to its first caller, and tells every other caller its outcome.
func (b *insertBatcher) lead(self *pendingInsert, batch []*pendingInsert, exec func(context.Context, []*pendingInsert) error) (err error) {
	defer func() {
		b.handOver()
		alone := err != nil && len(batch) > 1
		for _, q := range batch {
			if q != self {
				q.done <- batchOutcome{err: err, alone: alone}
			}
		}
		if alone {
			err = exec(self.ctx, []*pendingInsert{self})
		}
	}()
	err = errBatchAborted // what the others hear if exec panics
	return exec(self.ctx, batch)
}

// errBatchAborted is a batch's outcome when its statement never returned.
var errBatchAborted = errors.New("storage: batched insert aborted")

// handOver starts the next batch from the queue, or frees the slot.
func (b *insertBatcher) handOver() {
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	if n == 0 {
		b.busy = false
		b.mu.Unlock()
		return
	}
	next := make([]*pendingInsert, n)
	copy(next, b.queue)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.mu.Unlock()
	next[0].done <- batchOutcome{lead: next}
}

// multiRowInsert is an INSERT of rows rows of row into table's columns.
func multiRowInsert(table, columns, row string, rows int) string {
	var q strings.Builder
	q.Grow(len(table) + len(columns) + 32 + rows*(len(row)+3))
	q.WriteString("INSERT INTO ")
	q.WriteString(table)
	q.WriteString(" (")
	q.WriteString(columns)
	q.WriteString(") VALUES ")
	for i := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(")
		q.WriteString(row)
		q.WriteString(")")
	}
	return q.String()
}

// accessTokenRow is one row of a batched access-token insert: unpinned,
// the thirteen columns; pinned, client_id is read from clients at the
// pinned revision, NULL (and so refused: the column is NOT NULL) once the
// client has changed.
const (
	accessTokenRow       = `?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`
	pinnedAccessTokenRow = `?, ?, (SELECT id FROM clients WHERE id = ? AND revision = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`
)

// insertAccessToken writes an access token outside a transaction, together
// with the concurrent ones (insertBatcher).
func (s *Store) insertAccessToken(ctx context.Context, row *requestRow, args []any, revision int64, pinned bool) error {
	ctx, span := s.startSpan(ctx, `INSERT INTO `+string(accessTable)+` (`+requestColumns+`) VALUES (?)`)
	b, exec := &s.accessInserts, s.execAccessTokens
	if pinned {
		b, exec = &s.pinnedAccessInserts, s.execPinnedAccessTokens
		args = append(args[:2:2], row.ClientID, revision)
		args = append(args, row.Subject, row.RequestedAt, row.ExpiresAt,
			row.RequestedScopes, row.GrantedScopes, row.RequestedAudience, row.GrantedAudience,
			row.FormData, row.SessionData, row.Active)
	}
	err := b.insert(&pendingInsert{ctx: ctx, args: args}, exec)
	if errors.Is(err, ErrConflict) {
		err = fmt.Errorf("storage: %s: %w", accessTable, ErrConflict)
	}
	s.observe(span, err)
	return err
}

// The statements of insertAccessToken, by number of rows.
var accessTokenInserts, pinnedAccessTokenInserts [maxBatch + 1]string

func init() {
	for k := 2; k <= maxBatch; k++ {
		accessTokenInserts[k] = multiRowInsert(string(accessTable), requestColumns, accessTokenRow, k)
		pinnedAccessTokenInserts[k] = multiRowInsert(string(accessTable), requestColumns, pinnedAccessTokenRow, k)
	}
	accessTokenInserts[1] = multiRowInsert(string(accessTable), requestColumns, accessTokenRow, 1)
	pinnedAccessTokenInserts[1] = `INSERT INTO ` + string(accessTable) + ` (` + requestColumns + `) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
		WHERE EXISTS (SELECT 1 FROM clients WHERE id = ? AND revision = ?)`
}

func (s *Store) execAccessTokens(ctx context.Context, batch []*pendingInsert) error {
	args := batch[0].args
	if len(batch) > 1 {
		args = make([]any, 0, len(batch)*len(batch[0].args))
		for _, p := range batch {
			args = append(args, p.args...)
		}
	}
	return s.execRows(ctx, accessTokenInserts[len(batch)], len(batch), args)
}

func (s *Store) execPinnedAccessTokens(ctx context.Context, batch []*pendingInsert) error {
	if len(batch) == 1 {
		// Alone, the row is refused by a clause and not by an error, so
		// that a stale pin is told apart from a failure.
		a := batch[0].args
		args := make([]any, 0, len(a)+1)
		args = append(args, a[0], a[1], a[2])
		args = append(args, a[4:]...)
		args = append(args, a[2], a[3])
		err := s.execRows(ctx, pinnedAccessTokenInserts[1], 1, args)
		if errors.Is(err, errRowsMissing) {
			return fmt.Errorf("storage: %s: client %q: %w", accessTable, a[2], ErrStaleClient)
		}
		return err
	}
	args := make([]any, 0, len(batch)*len(batch[0].args))
	for _, p := range batch {
		args = append(args, p.args...)
	}
	return s.execRows(ctx, pinnedAccessTokenInserts[len(batch)], len(batch), args)
}

// errRowsMissing: a statement inserted fewer rows than it was given.
var errRowsMissing = errors.New("storage: rows not inserted")

// execRows runs a prepared insert of want rows, without a span or a health
// record of its own: its caller has them.
func (s *Store) execRows(ctx context.Context, query string, want int, args []any) error {
	var res sql.Result
	err := s.withStmt(ctx, query, func(st *sqlx.Stmt) (err error) {
		res, err = st.ExecContext(ctx, args...)
		return err
	})
	if err != nil {
		return s.flavor.classify(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.flavor.classify(err)
	}
	if n != int64(want) {
		return errRowsMissing
	}
	return nil
}

// inTx reports whether ctx carries a transaction of this store.
func (s *Store) inTx(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{s}).(*sqlx.Tx)
	return ok
}
