package querycount_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// openCounting opens and migrates a counting store on a fresh database of b.
func openCounting(t *testing.T, b storagetest.Backend) (*storage.Store, *querycount.Counter, string) {
	t.Helper()
	dsn := b.NewDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, qc, err := querycount.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("querycount.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return s, qc, dsn
}

// The counts are exact: each known operation makes exactly the calls listed,
// on both drivers, and nothing database/sql does on its own (pinging,
// resetting sessions, rolling back a committed transaction) is counted.
func TestCountsExact(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		s, qc, _ := openCounting(t, b)
		ctx := context.Background()
		db := s.DB()
		errBoom := errors.New("boom")

		seed := &storage.Client{ID: "seeded", Name: "seeded", GrantTypes: []string{"client_credentials"}}
		seed.SetOwner("u1")
		if err := s.CreateClient(ctx, seed); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"hash-one", "hash-two"} {
			if _, err := s.CreateClientSecret(ctx, "seeded", []byte(h), "dpy_cs_x"); err != nil {
				t.Fatal(err)
			}
		}

		tests := []struct {
			name string
			op   func(t *testing.T)
			want querycount.Counts
		}{
			{
				name: "ping",
				op: func(t *testing.T) {
					if err := s.Ping(ctx); err != nil {
						t.Fatal(err)
					}
				},
			},
			{
				name: "create client is one exec",
				op: func(t *testing.T) {
					c := &storage.Client{ID: "c1", Name: "one", Scopes: []string{"a:read"}}
					if err := s.CreateClient(ctx, c); err != nil {
						t.Fatal(err)
					}
				},
				want: querycount.Counts{Exec: 1},
			},
			{
				name: "client with two secrets is one query",
				op: func(t *testing.T) {
					c, err := s.Client(ctx, "seeded")
					if err != nil {
						t.Fatal(err)
					}
					if len(c.SecretHashes) != 2 {
						t.Fatalf("got %d secret hashes, want 2", len(c.SecretHashes))
					}
				},
				// A prepared statement of the hot path: its first use
				// prepares it on the connection (once per connection),
				// every use is one query.
				want: querycount.Counts{Prepare: 1, StmtQuery: 1},
			},
			{
				name: "missing client is one query",
				op: func(t *testing.T) {
					if _, err := s.Client(ctx, "nope"); !errors.Is(err, fosite.ErrNotFound) {
						t.Fatalf("got %v, want ErrNotFound", err)
					}
				},
				// The statement is prepared on this connection already (the
				// pool hands back the connection used last).
				want: querycount.Counts{StmtQuery: 1},
			},
			{
				name: "a host's prepared select is one statement query",
				op: func(t *testing.T) {
					for range 2 {
						var ids []string
						if err := s.SelectPrepared(ctx, &ids, `SELECT id FROM clients WHERE id = ?`, "seeded"); err != nil {
							t.Fatal(err)
						}
						if len(ids) != 1 {
							t.Fatalf("got %q", ids)
						}
					}
				},
				// Prepared on its first use on the connection, then reused.
				want: querycount.Counts{Prepare: 1, StmtQuery: 2},
			},
			{
				name: "committed transaction",
				op: func(t *testing.T) {
					err := s.InTx(ctx, func(ctx context.Context) error {
						if err := s.CreateClient(ctx, &storage.Client{ID: "tx1", Name: "tx1"}); err != nil {
							return err
						}
						return s.CreateClient(ctx, &storage.Client{ID: "tx2", Name: "tx2"})
					})
					if err != nil {
						t.Fatal(err)
					}
				},
				// InTx's deferred Rollback after Commit stops in database/sql.
				want: querycount.Counts{Begin: 1, Exec: 2, Commit: 1},
			},
			{
				name: "rolled back transaction",
				op: func(t *testing.T) {
					err := s.InTx(ctx, func(ctx context.Context) error {
						if err := s.CreateClient(ctx, &storage.Client{ID: "tx3", Name: "tx3"}); err != nil {
							return err
						}
						return errBoom
					})
					if !errors.Is(err, errBoom) {
						t.Fatalf("got %v, want %v", err, errBoom)
					}
				},
				want: querycount.Counts{Begin: 1, Exec: 1, Rollback: 1},
			},
			{
				name: "prepared once, executed twice, queried once",
				op: func(t *testing.T) {
					// A pinned connection, so that the statement is prepared
					// once whatever the pool holds.
					conn, err := db.Conn(ctx)
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					st, err := conn.PrepareContext(ctx, s.DB().Rebind(`UPDATE clients SET name = ? WHERE id = ?`))
					if err != nil {
						t.Fatal(err)
					}
					for _, n := range []string{"x", "y"} {
						if _, err := st.ExecContext(ctx, n, "c1"); err != nil {
							t.Fatal(err)
						}
					}
					st.Close()
					q, err := conn.PrepareContext(ctx, s.DB().Rebind(`SELECT name FROM clients WHERE id = ?`))
					if err != nil {
						t.Fatal(err)
					}
					defer q.Close()
					var name string
					if err := q.QueryRowContext(ctx, "c1").Scan(&name); err != nil || name != "y" {
						t.Fatalf("got %q, %v; want y", name, err)
					}
				},
				want: querycount.Counts{Prepare: 2, StmtExec: 2, StmtQuery: 1},
			},
			{
				name: "a failing statement still reached the database",
				op: func(t *testing.T) {
					if _, err := db.ExecContext(ctx, `UPDATE no_such_table SET x = 1`); err == nil {
						t.Fatal("want an error")
					}
				},
				want: querycount.Counts{Exec: 1},
			},
		}
		// Sequential: the counts of one store are shared.
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got := qc.Measure(func() { tt.op(t) })
				// The pool may open a connection at any time; exchanges on
				// the wire have their own test.
				got.Connect, got.Wire = 0, 0
				if got != tt.want {
					t.Errorf("counts = %+v\nwant     %+v", got, tt.want)
				}
				if got.RoundTrips() != tt.want.RoundTrips() {
					t.Errorf("round trips = %d, want %d", got.RoundTrips(), tt.want.RoundTrips())
				}
			})
		}
	})
}

// On PostgreSQL the counter also sees the wire: lib/pq runs a statement with
// arguments as two network round trips (parse+describe, then bind+execute)
// and one without arguments as one; binary_parameters=yes makes the former
// one too. SQLite has no wire.
func TestCountsWire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		dsnParam string
		args     bool
		want     int64
	}{
		{"statement without arguments", "", false, 1},
		// Open turns binary_parameters on unless the DSN says otherwise.
		{"statement with arguments", "", true, 1},
		{"statement with arguments, binary_parameters=no", "binary_parameters=no", true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dsn := storagetest.Postgres.NewDSN(t)
			if tt.dsnParam != "" {
				dsn += "&" + tt.dsnParam
			}
			ctx := context.Background()
			s, qc, err := querycount.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			conn, err := s.DB().Conn(ctx) // connected before measuring
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got := qc.Measure(func() {
				if tt.args {
					_, err = conn.ExecContext(ctx, `SELECT $1::int + $2::int`, 1, 2)
				} else {
					_, err = conn.ExecContext(ctx, `SELECT 1 + 2`)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.Wire != tt.want || got.RoundTrips() != 1 {
				t.Errorf("wire = %d, round trips = %d; want %d and 1 (%s)", got.Wire, got.RoundTrips(), tt.want, got)
			}
		})
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, qc, _ := openCounting(t, storagetest.SQLite)
		got := qc.Measure(func() {
			if _, err := s.DB().Exec(`SELECT 1 + ?`, 2); err != nil {
				t.Error(err)
			}
		})
		if got.Wire != 0 || got.RoundTrips() != 1 {
			t.Errorf("sqlite: %s, want 1 round trip and nothing on the wire", got)
		}
	})
}

// A counting store is the store Open returns, with the same pool settings.
func TestOpenKeepsPoolSettings(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		counting, _, dsn := openCounting(t, b)
		plain := storagetest.OpenDSN(t, dsn)
		if got, want := counting.Dialect(), plain.Dialect(); got != want {
			t.Errorf("dialect = %s, want %s", got, want)
		}
		if got, want := counting.DB().Stats().MaxOpenConnections, plain.DB().Stats().MaxOpenConnections; got != want {
			t.Errorf("max open connections = %d, want %d", got, want)
		}
		if got, want := counting.DB().DriverName(), plain.DB().DriverName(); got != want {
			t.Errorf("driver name = %q, want %q", got, want)
		}
	})
}

func TestOpenRejectsUnknownDSN(t *testing.T) {
	t.Parallel()
	if _, _, err := querycount.Open(context.Background(), "mysql://x"); err == nil {
		t.Fatal("want an error for an unsupported DSN")
	}
}
