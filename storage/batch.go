package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/deputyauth/deputy/internal/batch"
)

// Concurrent inserts of access tokens are written together (internal/batch):
// while one statement is in flight, the tokens that arrive meanwhile queue,
// and the first of them writes the whole queue in one multi-row INSERT when
// the statement ahead of it returns. Each token request still waits for its
// own row to be committed before it is answered; what it saves is the
// statement, the round trip and the commit it would have paid alone, the
// larger part of a client_credentials token's cost on both sides of the
// connection. One statement of each shape is in flight at a time: on
// PostgreSQL, with 8 clients, that wrote more tokens a second than allowing
// two or four (which make smaller batches), docs/performance.md change 9;
// SQLite's pool has one connection anyway.
//
// A batch is all or nothing: if its statement fails for any reason (a
// client pin gone stale, a duplicate signature, the leader's context ending)
// every row in it is written again alone, so each caller gets the outcome
// its own row would have had by itself.

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

// clientAtRevision is the pinned client's id while its row still has the
// pinned revision, and no row once it has changed; lock is the flavor's
// shareLock. With user, the pinned user (PinUser) must also still be at
// its pinned revision (userAtRevision): two more arguments.
//
// FOR SHARE (PostgreSQL) closes the window between the statement's
// snapshot and its commit: a secret's or an app's deletion, which bumps
// the row first and then deletes the tokens, either waits for this insert
// to commit and then deletes its token too, or has bumped the row first,
// and then this statement, having waited for it, reads the new revision
// and inserts nothing. Without the lock a token inserted in that window
// outlived its secret. One shared lock per statement, so per batch of
// tokens: concurrent lockers of one client row (and so PostgreSQL's
// MultiXacts, change 1) come only from other processes' batches and from
// inserts inside transactions. The user's row needs no lock: a user's
// change deletes no token (each use re-checks the user), so a token whose
// statement began before the change committed was issued before it.
func clientAtRevision(lock string, user bool) string {
	q := `SELECT id FROM clients WHERE id = ? AND revision = ?`
	if user {
		q += ` AND ` + userAtRevision
	}
	return q + lock
}

// pinnedInsert is the statement of one request row into t that goes in
// only while its client (and with user, the pinned user) is at the pinned
// revision: the thirteen columns, then the client's id and revision (then
// the user's id and revision). Refused by a clause, not an error, so that
// a stale pin is told apart from a failure.
func pinnedInsert(t requestTable, lock string, user bool) string {
	return `INSERT INTO ` + string(t) + ` (` + requestColumns + `) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
		WHERE EXISTS (` + clientAtRevision(lock, user) + `)`
}

// accessTokenRow is one row of a batched access-token insert: unpinned,
// the thirteen columns; pinned (pinnedAccessTokenRow), client_id is read
// from clients at the pinned revision, NULL (and so refused: the column is
// NOT NULL) once the client (or the pinned user) has changed.
const accessTokenRow = `?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`

func pinnedAccessTokenRow(lock string, user bool) string {
	return `?, ?, (` + clientAtRevision(lock, user) + `), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?`
}

// insertAccessToken writes an access token outside a transaction, together
// with the concurrent ones (insertBatcher). pin is nil, or the client's id
// and revision, or those and the pinned user's id and revision.
func (s *Store) insertAccessToken(ctx context.Context, row *requestRow, args []any, pin []any) error {
	// The span names the statement the row would have had alone; it
	// covers the wait for the batch ahead too.
	b, exec, query := &s.accessInserts, s.execAccessTokens, accessTokenInserts[1]
	switch len(pin) {
	case 2:
		b, exec, query = &s.pinnedAccessInserts, s.execPinnedAccessTokens, pinnedAccessTokenInserts[s.flavor][1]
	case 4:
		b, exec, query = &s.userPinnedAccessInserts, s.execUserPinnedAccessTokens, userPinnedAccessTokenInserts[s.flavor][1]
	}
	args = append(args, pin...) // the lone statement's order
	ctx, span := s.startSpan(ctx, query)
	err := b.Do(ctx, args, exec)
	if errors.Is(err, ErrConflict) {
		err = fmt.Errorf("storage: %s: %w", accessTable, ErrConflict)
	}
	s.observe(span, err)
	return err
}

// The statements of insertAccessToken, by number of rows; the pinned ones
// by flavor too (its shareLock).
var (
	accessTokenInserts           [batch.Max + 1]string
	pinnedAccessTokenInserts     = map[*flavor]*[batch.Max + 1]string{}
	userPinnedAccessTokenInserts = map[*flavor]*[batch.Max + 1]string{}
)

func init() {
	accessTokenInserts[1] = multiRowInsert(string(accessTable), requestColumns, accessTokenRow, 1)
	for k := 2; k <= batch.Max; k++ {
		accessTokenInserts[k] = multiRowInsert(string(accessTable), requestColumns, accessTokenRow, k)
	}
	for _, f := range flavors {
		for user, m := range map[bool]map[*flavor]*[batch.Max + 1]string{false: pinnedAccessTokenInserts, true: userPinnedAccessTokenInserts} {
			var pinned [batch.Max + 1]string
			pinned[1] = pinnedInsert(accessTable, f.shareLock, user)
			for k := 2; k <= batch.Max; k++ {
				pinned[k] = multiRowInsert(string(accessTable), requestColumns, pinnedAccessTokenRow(f.shareLock, user), k)
			}
			m[f] = &pinned
		}
	}
}

func (s *Store) execAccessTokens(ctx context.Context, rows [][]any) error {
	return s.execRows(ctx, accessTokenInserts[len(rows)], len(rows), concat(rows))
}

// concat is the arguments of rows, in order.
func concat(rows [][]any) []any {
	if len(rows) == 1 {
		return rows[0]
	}
	args := make([]any, 0, len(rows)*len(rows[0]))
	for _, r := range rows {
		args = append(args, r...)
	}
	return args
}

func (s *Store) execPinnedAccessTokens(ctx context.Context, rows [][]any) error {
	return s.execPinnedRows(ctx, pinnedAccessTokenInserts[s.flavor], rows)
}

func (s *Store) execUserPinnedAccessTokens(ctx context.Context, rows [][]any) error {
	return s.execPinnedRows(ctx, userPinnedAccessTokenInserts[s.flavor], rows)
}

// execPinnedRows writes rows, each the thirteen columns and then the pin's
// arguments, with statements, by number of rows.
func (s *Store) execPinnedRows(ctx context.Context, statements *[batch.Max + 1]string, rows [][]any) error {
	if len(rows) == 1 {
		// Alone, the row is refused by a clause and not by an error, so
		// that a stale pin is told apart from a failure.
		err := s.execRows(ctx, statements[1], 1, rows[0])
		if errors.Is(err, errRowsMissing) {
			return fmt.Errorf("storage: %s: client %q: %w", accessTable, rows[0][2], ErrStaleClient)
		}
		return err
	}
	// Each row's arguments in pinnedAccessTokenRow's order: the pin's (the
	// last ones) take client_id's place.
	args := make([]any, 0, len(rows)*len(rows[0]))
	for _, r := range rows {
		args = append(args, r[0], r[1])
		args = append(args, r[13:]...)
		args = append(args, r[3:13]...)
	}
	return s.execRows(ctx, statements[len(rows)], len(rows), args)
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

// InTransaction reports whether ctx carries a transaction of this store
// (BeginTX, InTx). A statement made in one must not be batched with other
// requests' (internal/batch): it would run on, and see, another request's
// transaction, or wait for the connection its own holds.
func (s *Store) InTransaction(ctx context.Context) bool {
	_, ok := ctx.Value(txKey{s}).(*sqlx.Tx)
	return ok
}

// The agent mint's one read (getAccessTokenWithGrant) is batched the same
// way: lookups that queue behind one in flight are answered by one query,
// sent after all of them were made, that joins a VALUES list of their
// arguments (the lookup's index, signature, organization, pinned client,
// session) to the tables exactly as a lone lookup's query does.

// grantLookup is one getAccessTokenWithGrant call and its row.
type grantLookup struct {
	signature string
	pin       *clientPin

	found        bool
	row          joinedRequestRow
	scopes       sql.Null[stringList]
	expires      sql.NullTime
	revision     sql.NullInt64
	userRevision sql.NullInt64 // withUser's statements only
}

// dest is where the columns of the lookup's row are scanned; withUser, the
// user's revision too.
func (l *grantLookup) dest(withUser bool) []any {
	d := append(l.row.fields(), &l.scopes, &l.expires, &l.revision)
	if withUser {
		d = append(d, &l.userRevision)
	}
	return d
}

// accessTokensWithGrant are the lookup's statements by whether they read
// the subject's user revision too (PrefetchUserRevision) and by number of
// lookups: [1] a lone lookup's, the others a batch's, whose first column
// is the index of the lookup a row answers.
var accessTokensWithGrant [2][batch.Max + 1]string

func init() {
	for withUser, qs := range []*[batch.Max + 1]string{&accessTokensWithGrant[0], &accessTokensWithGrant[1]} {
		columns := `r.signature, r.request_id, r.client_id, r.subject, r.requested_at, r.expires_at,
		r.requested_scopes, r.granted_scopes, r.requested_audience, r.granted_audience, r.form_data,
		r.session_data, r.active, ` + joinedClientColumns + `, g.scopes, g.expires_at, p.revision`
		userJoin := ""
		if withUser == 1 {
			columns += `, u.revision`
			userJoin = `
		LEFT JOIN user_revisions u ON u.user_id = r.subject`
		}
		qs[1] = `SELECT ` + columns + `
		FROM ` + string(accessTable) + ` r JOIN clients c ON c.id = r.client_id
		LEFT JOIN agent_grants g ON g.organization = ? AND g.user_id = r.subject AND g.client_id = ? AND g.agent_session_id = ?
		LEFT JOIN clients p ON p.id = ?` + userJoin + `
		WHERE r.signature = ?`
		for k := 2; k <= batch.Max; k++ {
			var q strings.Builder
			q.WriteString(`WITH q (i, signature, organization, client_id, agent_session_id) AS (VALUES `)
			for i := range k {
				if i > 0 {
					q.WriteString(", ")
				}
				fmt.Fprintf(&q, "(%d, ?, ?, ?, ?)", i)
			}
			q.WriteString(`)
		SELECT q.i, ` + columns + `
		FROM q JOIN ` + string(accessTable) + ` r ON r.signature = q.signature
		JOIN clients c ON c.id = r.client_id
		LEFT JOIN agent_grants g ON g.organization = q.organization AND g.user_id = r.subject
			AND g.client_id = q.client_id AND g.agent_session_id = q.agent_session_id
		LEFT JOIN clients p ON p.id = q.client_id` + userJoin)
			qs[k] = q.String()
		}
	}
}

// lookupStatements are the statements for ls: those that read the user's
// revision when any lookup asks for it.
func lookupStatements(ls []*grantLookup) (*[batch.Max + 1]string, bool) {
	for _, l := range ls {
		if l.pin.grant.withUser {
			return &accessTokensWithGrant[1], true
		}
	}
	return &accessTokensWithGrant[0], false
}

// boolIndex is 1 for true, 0 for false.
func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lookUpAccessTokensWithGrant runs the lookups of one batch. A lookup whose
// token does not exist is left not found.
func (s *Store) lookUpAccessTokensWithGrant(ctx context.Context, ls []*grantLookup) error {
	for _, l := range ls {
		l.found = false
	}
	statements, withUser := lookupStatements(ls)
	if len(ls) == 1 {
		l := ls[0]
		err := s.withStmt(ctx, statements[1], func(st *sqlx.Stmt) error {
			return st.QueryRowxContext(ctx, l.pin.grant.org, l.pin.id, l.pin.grant.sessionID, l.pin.id, l.signature).Scan(l.dest(withUser)...)
		})
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		l.found = err == nil
		return s.flavor.classify(err)
	}
	args := make([]any, 0, 4*len(ls))
	for _, l := range ls {
		args = append(args, l.signature, l.pin.grant.org, l.pin.id, l.pin.grant.sessionID)
	}
	err := s.withStmt(ctx, statements[len(ls)], func(st *sqlx.Stmt) error {
		rows, err := st.QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var (
			i       int
			scanned grantLookup
		)
		dest := append([]any{&i}, scanned.dest(withUser)...)
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			if i < 0 || i >= len(ls) || ls[i].found {
				return fmt.Errorf("storage: batched token lookup: unexpected row for lookup %d", i)
			}
			l := ls[i]
			l.found, l.row, l.scopes, l.expires, l.revision = true, scanned.row, scanned.scopes, scanned.expires, scanned.revision
			l.userRevision = scanned.userRevision
		}
		return rows.Err()
	})
	return s.flavor.classify(err)
}
