package storage_test

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
	"testing"
	"time"

	"github.com/lib/pq"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestClassify: every error a Store returns is classified where it happens;
// this is the mapping, on the dialect whose driver produces each error (the
// generic ones on both).
func TestClassify(t *testing.T) {
	t.Parallel()
	both := []storage.Dialect{storage.Postgres, storage.SQLite}
	pg := []storage.Dialect{storage.Postgres}
	tests := []struct {
		name     string
		err      error
		dialects []storage.Dialect
		want     error // the sentinel, or nil for none
	}{
		{"nil", nil, both, nil},
		{"bad conn", fmt.Errorf("storage: get client: %w", driver.ErrBadConn), both, storage.ErrUnavailable},
		{"conn done", sql.ErrConnDone, both, storage.ErrUnavailable},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), both, storage.ErrUnavailable},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, both, storage.ErrUnavailable},
		{"connection reset", fmt.Errorf("x: %w", syscall.ECONNRESET), both, storage.ErrUnavailable},
		{"deadline waiting for the pool", fmt.Errorf("storage: %w", context.DeadlineExceeded), both, storage.ErrUnavailable},
		{"caller went away", fmt.Errorf("storage: %w", context.Canceled), both, nil},
		{"admin_shutdown 57P01", &pq.Error{Code: "57P01"}, pg, storage.ErrUnavailable},
		{"crash_shutdown 57P02", &pq.Error{Code: "57P02"}, pg, storage.ErrUnavailable},
		{"cannot_connect_now 57P03", &pq.Error{Code: "57P03"}, pg, storage.ErrUnavailable},
		{"connection_failure 08006", &pq.Error{Code: "08006"}, pg, storage.ErrUnavailable},
		{"connection_exception 08000", &pq.Error{Code: "08000"}, pg, storage.ErrUnavailable},
		{"too_many_connections 53300", &pq.Error{Code: "53300"}, pg, storage.ErrUnavailable},
		{"read-only standby 25006", &pq.Error{Code: "25006"}, pg, storage.ErrUnavailable},
		{"database not accepting connections 55000 FATAL", &pq.Error{Code: "55000", Severity: "FATAL"}, pg, storage.ErrUnavailable},
		{"object_not_in_prerequisite_state 55000 ERROR", &pq.Error{Code: "55000", Severity: "ERROR"}, pg, nil},
		{"unique violation 23505", &pq.Error{Code: "23505"}, pg, storage.ErrConflict},
		{"NUL byte 22021", &pq.Error{Code: "22021"}, pg, storage.ErrInvalidInput},
		{"invalid text representation 22P02", &pq.Error{Code: "22P02"}, pg, storage.ErrInvalidInput},
		{"index row too large 54000", &pq.Error{Code: "54000"}, pg, storage.ErrInvalidInput},
		{"syntax error 42601", &pq.Error{Code: "42601"}, pg, nil},
		{"query_canceled 57014", &pq.Error{Code: "57014"}, pg, nil},
		{"not found", storage.ErrNotFound, both, nil},
		{"no rows", sql.ErrNoRows, both, nil},
		{"other", errors.New("boom"), both, nil},
		{"a message quoting sql: database is closed", errors.New("a message quoting sql: database is closed"), both, nil},
		{"URL that does not parse", fmt.Errorf("dsn: %w", &url.Error{Op: "parse", URL: "%", Err: url.EscapeError("%")}), both, nil},
		{"URL error around a refused dial", &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, both, storage.ErrUnavailable},
	}
	sentinels := []error{storage.ErrUnavailable, storage.ErrInvalidInput, storage.ErrConflict}
	for _, tc := range tests {
		for _, d := range tc.dialects {
			t.Run(string(d)+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				got := storage.Classify(d, tc.err)
				for _, s := range sentinels {
					if is := errors.Is(got, s); is != (s == tc.want) {
						t.Errorf("errors.Is(classify(%v), %v) = %v", tc.err, s, is)
					}
				}
				if tc.err != nil && !errors.Is(got, tc.err) {
					t.Errorf("classify(%v) = %v lost the driver's error", tc.err, got)
				}
				if again := storage.Classify(d, got); again != got {
					t.Errorf("classifying twice wraps twice: %v", again)
				}
			})
		}
	}
}

// TestIsUnavailableTerminatedBackend: an administrator (or a failover)
// terminates the backend under a live connection. The next query on it
// fails as unavailable, and the store's pool carries on without a restart.
func TestIsUnavailableTerminatedBackend(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := storagetest.Postgres.Open(t)

	// Inside a transaction, so that the query after the kill runs on the
	// terminated backend: outside one, database/sql would retry it on a
	// fresh connection and nothing would fail.
	tx, err := s.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Rollback(tx) //nolint:errcheck
	var pid int
	if err := s.Get(tx, &pid, `SELECT pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("postgres", storagetest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var killed bool
	if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, killed, err)
	}

	_, err = s.Client(tx, "no-such-client")
	if err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("query on a terminated backend: %v", err)
	}
	t.Logf("terminated backend: %v", err)
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("%#v is not ErrUnavailable for a terminated backend", err)
	}
	if err := s.Rollback(tx); err != nil && !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("rollback on a terminated backend: %v", err)
	}

	// The pool reconnects on its own.
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("store did not recover: %v", err)
	}
	if _, err := s.Client(ctx, "no-such-client"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("store after recovery: %v, want ErrNotFound", err)
	}
}

func TestIsUnavailableNoServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		// Port 1 on loopback: nothing listens, the dial is refused.
		{"refused", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Second)
		}},
		{"deadline", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := tc.ctx()
			defer cancel()
			s, err := storage.Open(ctx, tc.dsn)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded with no server")
			}
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Open: %v is not ErrUnavailable", err)
			}
		})
	}
}

// TestIsUnavailableNotForBadQueries: a query the database rejects is a bug,
// not an outage nor the request's fault, on either dialect; answering it 503
// or 400 would hide it.
func TestIsUnavailableNotForBadQueries(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		_, err := s.Exec(context.Background(), `SELECT * FROM no_such_table`)
		if err == nil {
			t.Fatal("query of a missing table succeeded")
		}
		for _, kind := range []error{storage.ErrUnavailable, storage.ErrInvalidInput, storage.ErrConflict} {
			if errors.Is(err, kind) {
				t.Fatalf("a bad query classified as %v: %v", kind, err)
			}
		}
	})
}

func TestClassifySQLiteCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		code int
		want error
	}{
		{"busy", sqlite3.SQLITE_BUSY, storage.ErrUnavailable},
		{"locked", sqlite3.SQLITE_LOCKED, storage.ErrUnavailable},
		{"disk I/O", sqlite3.SQLITE_IOERR_WRITE, storage.ErrUnavailable},
		{"cannot open", sqlite3.SQLITE_CANTOPEN, storage.ErrUnavailable},
		{"disk full", sqlite3.SQLITE_FULL, storage.ErrUnavailable},
		{"too big", sqlite3.SQLITE_TOOBIG, storage.ErrInvalidInput},
		{"unique", sqlite3.SQLITE_CONSTRAINT_UNIQUE, storage.ErrConflict},
		{"primary key", sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, storage.ErrConflict},
		{"foreign key", sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY, nil},
		{"not null", sqlite3.SQLITE_CONSTRAINT_NOTNULL, nil},
		{"syntax error", sqlite3.SQLITE_ERROR, nil},
	} {
		if got := storage.SQLiteCodeKind(tc.code); got != tc.want {
			t.Errorf("%s (%d): %v, want %v", tc.name, tc.code, got, tc.want)
		}
	}
}
