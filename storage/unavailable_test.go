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

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func TestIsUnavailableClassifies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"bad conn", fmt.Errorf("storage: get client: %w", driver.ErrBadConn), true},
		{"conn done", sql.ErrConnDone, true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"connection reset", fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{"deadline waiting for the pool", fmt.Errorf("storage: %w", context.DeadlineExceeded), true},
		{"caller went away", fmt.Errorf("storage: %w", context.Canceled), false},
		{"admin_shutdown 57P01", &pq.Error{Code: "57P01"}, true},
		{"crash_shutdown 57P02", &pq.Error{Code: "57P02"}, true},
		{"cannot_connect_now 57P03", &pq.Error{Code: "57P03"}, true},
		{"connection_failure 08006", &pq.Error{Code: "08006"}, true},
		{"connection_exception 08000", &pq.Error{Code: "08000"}, true},
		{"too_many_connections 53300", &pq.Error{Code: "53300"}, true},
		{"read-only standby 25006", &pq.Error{Code: "25006"}, true},
		{"database not accepting connections 55000 FATAL", &pq.Error{Code: "55000", Severity: "FATAL"}, true},
		{"object_not_in_prerequisite_state 55000 ERROR", &pq.Error{Code: "55000", Severity: "ERROR"}, false},
		{"unique violation 23505", &pq.Error{Code: "23505"}, false},
		{"syntax error 42601", &pq.Error{Code: "42601"}, false},
		{"query_canceled 57014", &pq.Error{Code: "57014"}, false},
		{"not found", storage.ErrNotFound, false},
		{"conflict", storage.ErrConflict, false},
		{"no rows", sql.ErrNoRows, false},
		{"other", errors.New("boom"), false},
		{"URL that does not parse", fmt.Errorf("audience: %w", &url.Error{Op: "parse", URL: "%", Err: url.EscapeError("%")}), false},
		{"URL error around a refused dial", &url.Error{Op: "Post", URL: "http://127.0.0.1:1", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := storage.IsUnavailable(tc.err); got != tc.want {
				t.Fatalf("IsUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
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

	conn, err := s.DB().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
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

	var one int
	err = conn.QueryRowContext(ctx, `SELECT 1`).Scan(&one)
	if err == nil {
		t.Fatal("query on a terminated backend succeeded")
	}
	t.Logf("terminated backend: %T %v", err, err)
	if !storage.IsUnavailable(err) {
		t.Fatalf("IsUnavailable(%#v) = false for a terminated backend", err)
	}
	conn.Close()

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
			if !storage.IsUnavailable(err) {
				t.Fatalf("IsUnavailable(%v) = false", err)
			}
		})
	}
}

// TestIsUnavailableNotForBadQueries: a query the database rejects is a bug,
// not an outage, on either dialect; answering it 503 would hide it.
func TestIsUnavailableNotForBadQueries(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		_, err := s.DB().ExecContext(context.Background(), `SELECT * FROM no_such_table`)
		if err == nil {
			t.Fatal("query of a missing table succeeded")
		}
		if storage.IsUnavailable(err) {
			t.Fatalf("IsUnavailable(%v) = true for a bad query", err)
		}
	})
}
