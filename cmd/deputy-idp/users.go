package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/deputyauth/deputy/internal/batch"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// The demo IdP keeps its users beside deputy's tables but outside deputy's
// migrations: a real IdP already has a user store, and deputy must not own
// it. Its tables are its own versioned migration set (migrations/), applied
// by the store under deputy's migration lock and recorded in
// idp_schema_migrations.
//
//go:embed migrations/*.sql
var hostMigrationFiles embed.FS

var hostMigrations = storage.MigrationSet{Name: "idp", Files: hostMigrationFiles, Dir: "migrations"}

// Errors of the user store.
var (
	errUsernameTaken   = errors.New("username already taken")
	errBadUsername     = errors.New("username must be 1–64 characters of letters, digits, '.', '_' or '-'")
	errPasswordTooWeak = errors.New("password must be at least 8 characters")
)

// bcryptCost is bcrypt's default; tests lower it to keep the suite quick.
var bcryptCost = bcrypt.DefaultCost

// users is the host's user directory: accounts, organization memberships and
// browser sessions.
type users struct {
	st *storage.Store
	// directory runs concurrent Directory reads as one query (UserScopes).
	directory batch.Batcher[*directoryCall]
}

// user is one account.
type user struct {
	ID           string    `db:"id" json:"id"`
	Username     string    `db:"username" json:"username"`
	PasswordHash string    `db:"password_hash" json:"-"`
	Disabled     bool      `db:"disabled" json:"disabled"`
	Admin        bool      `db:"admin" json:"admin"`
	CreatedAt    time.Time `db:"created_at" json:"createdAt"`
}

// membership is a user's authority in one organization.
type membership struct {
	UserID       string `db:"user_id" json:"-"`
	Organization string `db:"organization" json:"organization"`
	Scopes       string `db:"scopes" json:"-"`
}

func (m membership) scopeList() []string { return scope.Parse(m.Scopes) }

// migrate applies the host's migrations the database has not seen yet.
func (u *users) migrate(ctx context.Context) error {
	return u.st.MigrateSet(ctx, hostMigrations)
}

func validUsername(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}

// create adds an account. The id is random and never shown to the user as a
// login name, so that renaming an account cannot hand its tokens to another.
//
// Usernames are kept in lower case and looked up case-insensitively, so that
// "Alice" cannot be registered beside "alice" to impersonate her.
func (u *users) create(ctx context.Context, username, password string, admin bool) (*user, error) {
	username = strings.ToLower(username)
	if !validUsername(username) {
		return nil, errBadUsername
	}
	if len(password) < 8 {
		return nil, errPasswordTooWeak
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	nu := &user{
		ID:           "usr_" + storage.NewID(12),
		Username:     username,
		PasswordHash: string(hash),
		Admin:        admin,
		CreatedAt:    time.Now().UTC().Truncate(time.Microsecond),
	}
	_, err = u.st.Exec(ctx, `INSERT INTO idp_users (id, username, password_hash, disabled, admin, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, nu.ID, nu.Username, nu.PasswordHash, false, nu.Admin, nu.CreatedAt)
	if errors.Is(err, storage.ErrConflict) {
		return nil, errUsernameTaken // the id is random: the name is what collided
	}
	if err != nil {
		return nil, fmt.Errorf("insert user: %w", err)
	}
	return nu, nil
}

// setMembership gives the user exactly scopes in org, replacing what they had.
// Like every change to what a user holds, it moves the user's revision on
// in the same transaction (storage.UserRevisions): the token endpoints of
// every replica then stop using the scopes they kept (plugin
// Config.UserScopesCacheTTL).
func (u *users) setMembership(ctx context.Context, userID, org string, scopes []string) error {
	return u.st.InTx(ctx, func(ctx context.Context) error {
		_, err := u.st.Exec(ctx, `INSERT INTO idp_memberships (user_id, organization, scopes)
			VALUES (?, ?, ?) ON CONFLICT (user_id, organization) DO UPDATE SET scopes = excluded.scopes`,
			userID, org, scope.Join(scope.Normalize(scopes)))
		if err != nil {
			return fmt.Errorf("set membership: %w", err)
		}
		return u.st.BumpUserRevision(ctx, userID)
	})
}

// setDisabled disables or re-enables an account. Disabling also ends its
// browser sessions; its tokens stop working through the Directory.
// The user's revision moves on in the same transaction (setMembership).
func (u *users) setDisabled(ctx context.Context, userID string, disabled bool) error {
	return u.st.InTx(ctx, func(ctx context.Context) error {
		res, err := u.st.Exec(ctx, `UPDATE idp_users SET disabled = ? WHERE id = ?`, disabled, userID)
		if err != nil {
			return fmt.Errorf("disable user: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return scope.ErrUserNotFound
		}
		if disabled {
			if _, err := u.st.Exec(ctx, `DELETE FROM idp_sessions WHERE user_id = ?`, userID); err != nil {
				return fmt.Errorf("end sessions: %w", err)
			}
		}
		return u.st.BumpUserRevision(ctx, userID)
	})
}

// byID loads an account; scope.ErrUserNotFound when there is none.
func (u *users) byID(ctx context.Context, id string) (*user, error) {
	return u.one(ctx, `SELECT id, username, password_hash, disabled, admin, created_at FROM idp_users WHERE id = ?`, id)
}

// byUsername loads an account by login name; scope.ErrUserNotFound when there is none.
func (u *users) byUsername(ctx context.Context, username string) (*user, error) {
	return u.one(ctx, `SELECT id, username, password_hash, disabled, admin, created_at FROM idp_users WHERE username = ?`, strings.ToLower(username))
}

// lookup accepts an id or a username, for the CLI's --owner.
func (u *users) lookup(ctx context.Context, idOrName string) (*user, error) {
	if usr, err := u.byID(ctx, idOrName); err == nil || !errors.Is(err, scope.ErrUserNotFound) {
		return usr, err
	}
	return u.byUsername(ctx, idOrName)
}

func (u *users) one(ctx context.Context, query string, arg any) (*user, error) {
	var usr user
	err := u.st.Get(ctx, &usr, query, arg)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, scope.ErrUserNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	usr.CreatedAt = usr.CreatedAt.UTC()
	return &usr, nil
}

// memberships lists the user's organizations, by name.
func (u *users) memberships(ctx context.Context, userID string) ([]membership, error) {
	var ms []membership
	err := u.st.Select(ctx, &ms, `SELECT user_id, organization, scopes
		FROM idp_memberships WHERE user_id = ? ORDER BY organization`, userID)
	if err != nil {
		return nil, fmt.Errorf("load memberships: %w", err)
	}
	return ms, nil
}

// dummyHash makes a failed lookup cost as much as a wrong password, so that
// the login's timing does not tell which usernames exist.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("deputy-timing-equaliser"), bcrypt.DefaultCost)

// errBadCredentials is the one answer to any failed login.
var errBadCredentials = errors.New("invalid username or password")

// checkPassword returns the account for a correct username and password of
// an enabled account, and errBadCredentials otherwise, whichever part failed.
func (u *users) checkPassword(ctx context.Context, username, password string) (*user, error) {
	usr, err := u.byUsername(ctx, username)
	if errors.Is(err, scope.ErrUserNotFound) {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password)) //nolint:errcheck // timing only
		return nil, errBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if bcrypt.CompareHashAndPassword([]byte(usr.PasswordHash), []byte(password)) != nil || usr.Disabled {
		return nil, errBadCredentials
	}
	return usr, nil
}

// Directory is deputy's view of the host's users: scopes come from
// memberships, read fresh on every call so that a removed scope or a
// disabled account takes effect at the next token request or introspection.
type Directory struct{ users *users }

// The Directory's one query per call, on every token: the account (none:
// not found; disabled) with its memberships (all of them, or the one of
// org), through a prepared statement. One snapshot, so a membership and the
// account's state cannot be read from two different moments either.
const (
	directoryAllOrgs = `SELECT u.disabled, m.organization, m.scopes
		FROM idp_users u LEFT JOIN idp_memberships m ON m.user_id = u.id
		WHERE u.id = ?`
	directoryOneOrg = `SELECT u.disabled, m.organization, m.scopes
		FROM idp_users u LEFT JOIN idp_memberships m ON m.user_id = u.id AND m.organization = ?
		WHERE u.id = ?`
)

// directoryCall is one UserScopes call: its arguments, and the rows its
// query would have returned.
type directoryCall struct {
	userID, org string
	rows        []directoryRow
}

// directoryOfUsers reads the accounts of several concurrent UserScopes calls
// with all their memberships, in one query (the ids 2 to batch.Max
// distinct ones); each call's rows are picked from it. A call is still
// answered from a read made after it was made: the batch's query is sent
// only once every call in it has arrived.
var directoryOfUsers [batch.Max + 1]string

func init() {
	for n := 2; n <= batch.Max; n++ {
		directoryOfUsers[n] = `SELECT u.id AS user_id, u.disabled, m.organization, m.scopes
		FROM idp_users u LEFT JOIN idp_memberships m ON m.user_id = u.id
		WHERE u.id IN (?` + strings.Repeat(", ?", n-1) + `)`
	}
}

// directoryUserRow is a row of directoryOfUsers.
type directoryUserRow struct {
	UserID string `db:"user_id"`
	directoryRow
}

// readDirectory answers calls, concurrent UserScopes calls (internal/batch),
// with one query: a lone call's own, several calls' directoryOfUsers.
func (u *users) readDirectory(ctx context.Context, calls []*directoryCall) error {
	if len(calls) == 1 {
		c := calls[0]
		c.rows = nil
		if c.org == "" {
			return u.st.SelectPrepared(ctx, &c.rows, directoryAllOrgs, c.userID)
		}
		return u.st.SelectPrepared(ctx, &c.rows, directoryOneOrg, c.org, c.userID)
	}
	ids := make([]any, 0, len(calls))
	seen := make(map[string]bool, len(calls))
	for _, c := range calls {
		if !seen[c.userID] {
			seen[c.userID] = true
			ids = append(ids, c.userID)
		}
	}
	var rows []directoryUserRow
	if len(ids) == 1 {
		// One user: its memberships in every organization, as the union's query.
		var one []directoryRow
		if err := u.st.SelectPrepared(ctx, &one, directoryAllOrgs, ids...); err != nil {
			return err
		}
		for _, r := range one {
			rows = append(rows, directoryUserRow{UserID: calls[0].userID, directoryRow: r})
		}
	} else if err := u.st.SelectPrepared(ctx, &rows, directoryOfUsers[len(ids)], ids...); err != nil {
		return err
	}
	for _, c := range calls {
		// What c's own query would have returned: the account with each
		// membership that matches (all of them for org ""), or the account
		// alone with NULLs when none does; nothing for no account.
		c.rows = nil
		found, disabled := false, false
		for _, r := range rows {
			if r.UserID != c.userID {
				continue
			}
			found, disabled = true, r.Disabled
			if r.Organization.Valid && (c.org == "" || r.Organization.String == c.org) {
				c.rows = append(c.rows, r.directoryRow)
			}
		}
		if found && len(c.rows) == 0 {
			c.rows = []directoryRow{{Disabled: disabled}}
		}
	}
	return nil
}

// directoryRow is one row of the Directory's query: the account's state and
// one membership, or none (NULLs) when it has none that matched.
type directoryRow struct {
	Disabled     bool           `db:"disabled"`
	Organization sql.NullString `db:"organization"`
	Scopes       sql.NullString `db:"scopes"`
}

// UserScopes implements scope.Directory. org "" is the union over every
// organization the user belongs to: a user token from the authorization-code
// flow is not bound to one organization, and the agent-token grant narrows it
// to one later.
func (d Directory) UserScopes(ctx context.Context, userID, org string) ([]string, error) {
	call := &directoryCall{userID: userID, org: org}
	var err error
	if d.users.st.InTransaction(ctx) { // a transaction's reads are its own
		err = d.users.readDirectory(ctx, []*directoryCall{call})
	} else {
		err = d.users.directory.Do(ctx, call, d.users.readDirectory)
	}
	if err != nil {
		return nil, fmt.Errorf("load user scopes: %w", err)
	}
	rows := call.rows
	if len(rows) == 0 {
		return nil, scope.ErrUserNotFound
	}
	if rows[0].Disabled {
		return nil, scope.ErrUserDisabled
	}
	var sets [][]string
	for _, r := range rows {
		if r.Organization.Valid {
			sets = append(sets, scope.Parse(r.Scopes.String))
		}
	}
	out := scope.Union(sets...)
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// isAdmin backs plugin.Config.IsAdmin: an enabled admin account.
func (u *users) isAdmin(ctx context.Context, userID string) bool {
	usr, err := u.byID(ctx, userID)
	return err == nil && usr.Admin && !usr.Disabled
}

// userName is the username of userID, for deputy's pages; "" when unknown.
func (u *users) userName(ctx context.Context, userID string) string {
	usr, err := u.byID(ctx, userID)
	if err != nil {
		return ""
	}
	return usr.Username
}

// Sessions: the cookie carries 32 random bytes; the table keeps only their
// SHA-256, so a leaked database (or backup) logs nobody in.

// newSessionToken returns the cookie value and the id stored for it.
func newSessionToken() (token, id string) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, sessionID(token)
}

func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// createSession starts a browser session for userID and returns the token to
// put in the cookie.
func (u *users) createSession(ctx context.Context, userID string, ttl time.Duration) (string, time.Time, error) {
	token, id := newSessionToken()
	now := time.Now().UTC().Truncate(time.Microsecond)
	exp := now.Add(ttl)
	// Sweeping the user's expired sessions here keeps the table from growing
	// without a background job.
	if _, err := u.st.Exec(ctx, `DELETE FROM idp_sessions WHERE user_id = ? AND expires_at < ?`, userID, now); err != nil {
		return "", time.Time{}, fmt.Errorf("sweep sessions: %w", err)
	}
	_, err := u.st.Exec(ctx, `INSERT INTO idp_sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		id, userID, now, exp)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("create session: %w", err)
	}
	return token, exp, nil
}

// sessionUser resolves a session token to an enabled user's id.
func (u *users) sessionUser(ctx context.Context, token string) (string, error) {
	if token == "" || len(token) > 128 {
		return "", errNoSession
	}
	var userID string
	err := u.st.Get(ctx, &userID, `SELECT s.user_id FROM idp_sessions s
		JOIN idp_users u ON u.id = s.user_id
		WHERE s.id = ? AND s.expires_at > ? AND u.disabled = ?`, sessionID(token), time.Now().UTC(), false)
	if errors.Is(err, sql.ErrNoRows) {
		return "", errNoSession
	}
	if err != nil {
		return "", fmt.Errorf("load session: %w", err)
	}
	return userID, nil
}

// deleteSession ends the session whose token is given; unknown tokens are fine.
func (u *users) deleteSession(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	_, err := u.st.Exec(ctx, `DELETE FROM idp_sessions WHERE id = ?`, sessionID(token))
	return err
}
