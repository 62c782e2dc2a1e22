package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func TestMain(m *testing.M) {
	// Password hashing at full cost would dominate the suite's time and
	// prove nothing more.
	bcryptCost = bcrypt.MinCost
	os.Exit(m.Run())
}

// hostUsers opens the host tables on s.
func hostUsers(t *testing.T, s *storage.Store) *users {
	t.Helper()
	u := &users{st: s}
	if err := u.migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second start (or replica) must not fail.
	if err := u.migrate(context.Background()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	return u
}

func mustUser(t *testing.T, u *users, name string, admin bool, memberships map[string][]string) *user {
	t.Helper()
	ctx := context.Background()
	nu, err := u.create(ctx, name, name+"-password", admin)
	if err != nil {
		t.Fatal(err)
	}
	for org, sc := range memberships {
		if err := u.setMembership(ctx, nu.ID, org, sc); err != nil {
			t.Fatal(err)
		}
	}
	return nu
}

func TestDirectoryUserScopes(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		dir := Directory{users: u}
		carol := mustUser(t, u, "carol", false, map[string][]string{
			"acme":   {"projects:read", "projects:write"},
			"globex": {"members:read", "projects:read"},
		})
		dave := mustUser(t, u, "dave", false, nil)
		eve := mustUser(t, u, "eve", false, map[string][]string{"acme": {"projects:read"}})
		frank := mustUser(t, u, "frank", false, nil)
		for _, id := range []string{eve.ID, frank.ID} {
			if err := u.setDisabled(ctx, id, true); err != nil {
				t.Fatal(err)
			}
		}

		tests := []struct {
			name    string
			user    string
			org     string
			want    []string
			wantErr error
		}{
			{"one org", carol.ID, "acme", []string{"projects:read", "projects:write"}, nil},
			{"other org", carol.ID, "globex", []string{"members:read", "projects:read"}, nil},
			{"empty org is the union", carol.ID, "", []string{"members:read", "projects:read", "projects:write"}, nil},
			{"not a member", carol.ID, "initech", []string{}, nil},
			{"no memberships", dave.ID, "", []string{}, nil},
			{"unknown user", "usr_nobody", "acme", nil, scope.ErrUserNotFound},
			{"username is not an id", "carol", "acme", nil, scope.ErrUserNotFound},
			{"disabled user", eve.ID, "acme", nil, scope.ErrUserDisabled},
			{"disabled user, union", eve.ID, "", nil, scope.ErrUserDisabled},
			{"disabled user, not a member there", eve.ID, "globex", nil, scope.ErrUserDisabled},
			{"disabled user without memberships", frank.ID, "acme", nil, scope.ErrUserDisabled},
		}
		check := func(how, name string, got []string, err error, want []string, wantErr error) {
			t.Helper()
			if !errors.Is(err, wantErr) {
				t.Errorf("%s, %s: err = %v, want %v", how, name, err, wantErr)
			} else if wantErr == nil && !reflect.DeepEqual(got, want) {
				t.Errorf("%s, %s: scopes = %q, want %q", how, name, got, want)
			}
		}
		for _, tt := range tests {
			got, err := dir.UserScopes(ctx, tt.user, tt.org)
			check("alone", tt.name, got, err, tt.want, tt.wantErr)
		}
		// Concurrent calls are answered by one query (internal/batch); each
		// gets what it got alone: every case at once (several users), and
		// carol's cases at once (one user).
		for _, batch := range [][]int{{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {0, 1, 2, 3}} {
			queued, release := u.directory.Hold()
			got := make([][]string, len(batch))
			errs := make([]error, len(batch))
			var wg sync.WaitGroup
			for i, k := range batch {
				wg.Go(func() { got[i], errs[i] = dir.UserScopes(ctx, tests[k].user, tests[k].org) })
			}
			for deadline := time.Now().Add(10 * time.Second); queued() < len(batch); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("calls did not queue")
				}
			}
			release()
			wg.Wait()
			for i, k := range batch {
				check(fmt.Sprintf("in a batch of %d", len(batch)), tests[k].name, got[i], errs[i], tests[k].want, tests[k].wantErr)
			}
		}

		// A membership change is seen at once: nothing is cached.
		if err := u.setMembership(ctx, carol.ID, "acme", []string{"projects:read"}); err != nil {
			t.Fatal(err)
		}
		got, err := dir.UserScopes(ctx, carol.ID, "acme")
		if err != nil || !reflect.DeepEqual(got, []string{"projects:read"}) {
			t.Errorf("after removing projects:write: %q, %v", got, err)
		}
		// And so is disabling the account, and enabling it again.
		for _, disabled := range []bool{true, false} {
			if err := u.setDisabled(ctx, carol.ID, disabled); err != nil {
				t.Fatal(err)
			}
			_, err := dir.UserScopes(ctx, carol.ID, "acme")
			if disabled != errors.Is(err, scope.ErrUserDisabled) {
				t.Errorf("disabled=%v: err = %v", disabled, err)
			}
		}
	})
}

// The Directory runs on every token request: one SQL round trip per call,
// whatever the user and the organization (make bench's deputy-idp cells
// hold it to at most one more than the plugin's).
func TestDirectoryOneQuery(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		ctx := context.Background()
		s, qc := b.OpenCounted(t)
		u := hostUsers(t, s)
		dir := Directory{users: u}
		carol := mustUser(t, u, "carol", false, map[string][]string{"acme": {"projects:read"}, "globex": {"members:read"}})
		for _, org := range []string{"acme", "", "initech"} {
			for _, user := range []string{carol.ID, "usr_nobody"} {
				dir.UserScopes(ctx, user, org)                             //nolint:errcheck // a first call may prepare the statement
				c := qc.Measure(func() { dir.UserScopes(ctx, user, org) }) //nolint:errcheck // counted, not checked
				if c.RoundTrips() != 1 {
					t.Errorf("UserScopes(%s, %q): %s, want one query", user, org, c)
				}
			}
		}
		// Concurrent calls, for two users and three organizations: one
		// query for all of them.
		for i := range 2 { // the first may prepare the statement
			queued, release := u.directory.Hold()
			var wg sync.WaitGroup
			for _, org := range []string{"acme", "", "initech"} {
				for _, user := range []string{carol.ID, "usr_nobody"} {
					wg.Go(func() { dir.UserScopes(ctx, user, org) }) //nolint:errcheck // counted, not checked
				}
			}
			for queued() < 6 {
				time.Sleep(time.Millisecond)
			}
			c := qc.Measure(func() { release(); wg.Wait() })
			if i == 1 && c.RoundTrips() != 1 {
				t.Errorf("6 concurrent calls: %s, want one query", c)
			}
		}
	})
}

func TestUsersCreateValidation(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		mustUser(t, u, "frank", false, nil)
		tests := []struct {
			name, username, password string
			want                     error
		}{
			{"taken", "frank", "long-enough", errUsernameTaken},
			{"taken in another case", "Frank", "long-enough", errUsernameTaken},
			{"empty", "", "long-enough", errBadUsername},
			{"space", "a b", "long-enough", errBadUsername},
			{"slash", "a/b", "long-enough", errBadUsername},
			{"short password", "grace", "short", errPasswordTooWeak},
		}
		for _, tt := range tests {
			if _, err := u.create(ctx, tt.username, tt.password, false); !errors.Is(err, tt.want) {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			}
		}
		// The stored password is a bcrypt hash, never the password.
		usr, err := u.byUsername(ctx, "frank")
		if err != nil {
			t.Fatal(err)
		}
		if usr.PasswordHash == "frank-password" || bcrypt.CompareHashAndPassword([]byte(usr.PasswordHash), []byte("frank-password")) != nil {
			t.Errorf("password_hash is not a bcrypt hash of the password")
		}
	})
}

func TestSessionAuthenticator(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		heidi := mustUser(t, u, "heidi", false, map[string][]string{"acme": {"projects:read"}})
		ivan := mustUser(t, u, "ivan", false, nil)
		auth := &SessionAuthenticator{users: u, ttl: time.Hour}

		// A login sets a cookie the authenticator resolves.
		rec := httptest.NewRecorder()
		if err := auth.login(rec, httptest.NewRequest(http.MethodPost, "/login", nil), heidi.ID); err != nil {
			t.Fatal(err)
		}
		cookies := rec.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Name != sessionCookie {
			t.Fatalf("cookies = %v", cookies)
		}
		c := cookies[0]
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure {
			t.Errorf("cookie attributes: HttpOnly=%v SameSite=%v Secure=%v; want HttpOnly, Lax, not Secure over http", c.HttpOnly, c.SameSite, c.Secure)
		}
		token := c.Value

		// Only the SHA-256 of the token is stored.
		var n int
		if err := s.Get(ctx, &n, `SELECT COUNT(*) FROM idp_sessions WHERE id = ?`, token); err != nil || n != 0 {
			t.Errorf("the raw session token is stored as an id (n=%d, err=%v)", n, err)
		}
		if err := s.Get(ctx, &n, `SELECT COUNT(*) FROM idp_sessions WHERE id = ?`, sessionID(token)); err != nil || n != 1 {
			t.Errorf("no session row under the token's hash (n=%d, err=%v)", n, err)
		}

		// An expired session of ivan's, written directly.
		expToken, expID := newSessionToken()
		past := time.Now().UTC().Add(-time.Hour)
		if _, err := s.Exec(ctx, `INSERT INTO idp_sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
			expID, ivan.ID, past.Add(-time.Hour), past); err != nil {
			t.Fatal(err)
		}

		req := func(mod func(r *http.Request)) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			mod(r)
			return r
		}
		tests := []struct {
			name    string
			r       *http.Request
			want    string
			wantErr error
		}{
			{"valid cookie", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token}) }), heidi.ID, nil},
			{"no cookie", req(func(*http.Request) {}), "", errNoSession},
			{"unknown token", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: "bogus"}) }), "", errNoSession},
			{"the stored hash is not a token", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: sessionID(token)}) }), "", errNoSession},
			{"expired", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: sessionCookie, Value: expToken}) }), "", errNoSession},
			// An agent holding its user's session token as a bearer token
			// must not pass for the user's browser.
			{"bearer header is never a session", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }), "", errNoSession},
			{"other cookie name", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: token}) }), "", errNoSession},
		}
		for _, tt := range tests {
			got, err := auth.Authenticate(tt.r)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("%s: Authenticate = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.wantErr)
			}
		}

		// Disabling the user ends the session.
		if err := u.setDisabled(ctx, heidi.ID, true); err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
		if got, err := auth.Authenticate(r); !errors.Is(err, errNoSession) {
			t.Errorf("disabled user: Authenticate = %q, %v; want errNoSession", got, err)
		}
	})
}

func TestSessionCookieSecureOverHTTPS(t *testing.T) {
	t.Parallel()
	a := &SessionAuthenticator{secure: true}
	c := a.cookie("v", time.Now().Add(time.Hour))
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Errorf("https cookie: %+v", c)
	}
}

func TestLogoutEndsSession(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		judy := mustUser(t, u, "judy", false, nil)
		auth := &SessionAuthenticator{users: u, ttl: time.Hour}
		rec := httptest.NewRecorder()
		if err := auth.login(rec, httptest.NewRequest(http.MethodPost, "/login", nil), judy.ID); err != nil {
			t.Fatal(err)
		}
		token := rec.Result().Cookies()[0].Value
		r := httptest.NewRequest(http.MethodPost, "/logout", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
		rec = httptest.NewRecorder()
		if err := auth.logout(rec, r); err != nil {
			t.Fatal(err)
		}
		if c := rec.Result().Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
			t.Errorf("logout does not clear the cookie: %v", c)
		}
		// The old token, replayed, is dead on the server side too.
		r = httptest.NewRequest(http.MethodGet, "/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
		if _, err := auth.Authenticate(r); !errors.Is(err, errNoSession) {
			t.Errorf("session survives logout: %v", err)
		}
	})
}

func TestCheckPassword(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		mallory := mustUser(t, u, "mallory", false, nil)
		mustUser(t, u, "niaj", false, nil)
		if err := u.setDisabled(ctx, mallory.ID, true); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name, user, pass string
			ok               bool
		}{
			{"right", "niaj", "niaj-password", true},
			{"wrong password", "niaj", "nope-nope-nope", false},
			{"unknown user", "oscar", "oscar-password", false},
			{"disabled", "mallory", "mallory-password", false},
			{"username is case-insensitive", "NIAJ", "niaj-password", true},
			{"password is not", "niaj", "NIAJ-PASSWORD", false},
		}
		for _, tt := range tests {
			_, err := u.checkPassword(ctx, tt.user, tt.pass)
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, errBadCredentials) {
				t.Errorf("%s: err = %v", tt.name, err)
			}
		}
	})
}

func TestSweepRemovesExpiredSessions(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		peggy := mustUser(t, u, "peggy", false, nil)
		live, _, err := u.createSession(ctx, peggy.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		_, oldID := newSessionToken()
		past := time.Now().UTC().Add(-time.Minute)
		if _, err := s.Exec(ctx, `INSERT INTO idp_sessions (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
			oldID, peggy.ID, past.Add(-time.Hour), past); err != nil {
			t.Fatal(err)
		}
		sweep(ctx, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
		var n int
		if err := s.Get(ctx, &n, `SELECT COUNT(*) FROM idp_sessions WHERE id = ?`, oldID); err != nil || n != 0 {
			t.Errorf("expired session survives the sweep (n=%d, err=%v)", n, err)
		}
		if id, err := u.sessionUser(ctx, live); err != nil || id != peggy.ID {
			t.Errorf("live session swept: %q, %v", id, err)
		}
	})
}

// A database created before the host tables were versioned holds them
// already, with no record of any version: the first version adopts them as
// they are, rows and all, and records itself.
func TestHostMigrationsAdoptUnversionedTables(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		if _, err := s.Exec(ctx, `CREATE TABLE idp_users (
			id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT NOT NULL,
			disabled BOOLEAN NOT NULL DEFAULT FALSE, admin BOOLEAN NOT NULL DEFAULT FALSE, created_at TIMESTAMP NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Exec(ctx, `INSERT INTO idp_users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)`,
			"usr_old", "olduser", "x", time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		u := hostUsers(t, s)
		if usr, err := u.byUsername(ctx, "olduser"); err != nil || usr.ID != "usr_old" {
			t.Fatalf("the existing user after migrating: %+v, %v", usr, err)
		}
		var versions []int
		if err := s.Select(ctx, &versions, `SELECT version FROM idp_schema_migrations ORDER BY version`); err != nil || len(versions) == 0 || versions[0] != 1 {
			t.Fatalf("recorded versions %v, %v", versions, err)
		}
		mustUser(t, u, "newuser", false, map[string][]string{"acme": {"projects:read"}})
	})
}

// TestDirectoryInTransaction: a UserScopes call made inside one of the
// store's transactions is not batched with other requests' calls: it runs
// at once on its own transaction (even while a batch is held) and sees that
// transaction's uncommitted changes.
func TestDirectoryInTransaction(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		u := hostUsers(t, s)
		ctx := context.Background()
		dir := Directory{users: u}
		carol := mustUser(t, u, "carol", false, map[string][]string{"acme": {"projects:read"}})

		_, release := u.directory.Hold()
		defer release()
		tx, err := s.BeginTX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Rollback(tx) //nolint:errcheck // the test's own
		if err := u.setMembership(tx, carol.ID, "acme", []string{"projects:read", "projects:write"}); err != nil {
			t.Fatal(err)
		}
		got := make(chan []string, 1)
		go func() {
			scopes, err := dir.UserScopes(tx, carol.ID, "acme")
			if err != nil {
				t.Error(err)
			}
			got <- scopes
		}()
		select {
		case scopes := <-got:
			if !reflect.DeepEqual(scopes, []string{"projects:read", "projects:write"}) {
				t.Errorf("inside the transaction: %q, want its own uncommitted write", scopes)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a call inside a transaction waited for a batch")
		}
	})
}
