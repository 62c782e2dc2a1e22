package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestTokenRacingItsClientsChange: on PostgreSQL, a pinned token insert
// whose statement began before a secret's (or the app's) deletion
// committed, and commits after it, must not leave a token behind: the
// deletion bumps the client's row and then deletes the secret's tokens, so
// either it waits for the insert (its row lock) and deletes that token too,
// or the insert reads the new revision and writes nothing.
//
// The insert is held inside its statement, past its snapshot and its
// check of the client, by a BEFORE INSERT trigger that waits on an
// advisory lock the test holds; the deletion runs meanwhile, and the lock
// is released once the deletion has finished or waits for the insert.
// Without the insert's row lock the deletion finishes first, the held
// insert then commits, and its token outlives the secret. A deleted app's
// token is also unreachable through the lookup's join to its client; the
// app rows keep that so. (SQLite takes its one write lock before a write
// statement reads anything: no window.)
func TestTokenRacingItsClientsChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		batch  bool // the insert in a batch of two (each with its own pin)
		inTx   bool // the insert inside a store transaction
		delete func(ctx context.Context, s *storage.Store, clientID, secretID string) error
	}{
		{name: "secret deleted, insert alone", delete: deleteSecret},
		{name: "secret deleted, insert in a batch", batch: true, delete: deleteSecret},
		{name: "secret deleted, insert in a transaction", inTx: true, delete: deleteSecret},
		{name: "app deleted, insert alone", delete: deleteApp},
		{name: "app deleted, insert in a batch", batch: true, delete: deleteApp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := storagetest.Postgres.Open(t)
			current, secret := newAppWithSecret(t, s)

			key := rand.Int64N(1 << 40)
			for _, q := range []string{
				fmt.Sprintf(`CREATE FUNCTION hold_insert() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN PERFORM pg_advisory_lock(%d); PERFORM pg_advisory_unlock(%d); RETURN NEW; END $$`, key, key),
				`CREATE TRIGGER hold_insert BEFORE INSERT ON oauth2_access_tokens FOR EACH ROW EXECUTE FUNCTION hold_insert()`,
			} {
				if _, err := s.DB().ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			holder, err := s.DB().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
				t.Fatal(err)
			}
			released := false
			release := func() {
				if !released {
					released = true
					if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
						t.Error(err)
					}
				}
			}
			defer release()

			insert := func(sig string) error {
				pinned := storage.WithClientPin(ctx)
				storage.PinClient(pinned, current)
				req := batchRequest(current, "req-"+sig, "alice", time.Now().Add(time.Hour))
				req.Form = url.Values{protocol.SecretIDFormKey: {secret.ID}}
				if !tc.inTx {
					return s.CreateAccessTokenSession(pinned, sig, req)
				}
				return s.InTx(pinned, func(ctx context.Context) error {
					return s.CreateAccessTokenSession(ctx, sig, req)
				})
			}
			sigs := []string{"sig-1"}
			if tc.batch {
				sigs = append(sigs, "sig-2")
			}
			var queued func() int
			releaseBatch := func() {}
			if tc.batch {
				queued, releaseBatch = s.HoldAccessTokenInserts(true)
				defer releaseBatch()
			}
			inserted := make(chan error, len(sigs))
			for _, sig := range sigs {
				go func() { inserted <- insert(sig) }()
			}
			if tc.batch {
				waitFor(t, func() bool { return queued() == len(sigs) })
				releaseBatch() // one statement for both rows
			}

			// The insert waits inside its statement.
			var insertPID int
			waitFor(t, func() bool {
				err := s.DB().QueryRowContext(ctx, `SELECT pid FROM pg_locks
					WHERE locktype = 'advisory' AND NOT granted AND ((classid::bigint << 32) | objid::bigint) = $1`, key).Scan(&insertPID)
				return err == nil
			})
			// Its transaction id, once it has one (its first row lock or
			// row): what the deletion would wait for.
			var insertXID sql.NullString
			if err := s.DB().QueryRowContext(ctx, `SELECT backend_xid::text FROM pg_stat_activity WHERE pid = $1`, insertPID).Scan(&insertXID); err != nil {
				t.Fatal(err)
			}

			deleted := make(chan error, 1)
			go func() { deleted <- tc.delete(ctx, s, current.ID, secret.ID) }()
			deleteDone, deleteErr := finishedOrBlocked(t, deleted, func() bool {
				return insertXID.Valid && holds(s, `SELECT EXISTS (SELECT 1 FROM pg_locks
					WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text = $1)`, insertXID.String)
			})
			release()
			for range sigs {
				if err := <-inserted; err != nil && !errors.Is(err, storage.ErrStaleClient) {
					t.Errorf("insert: %v, want success or ErrStaleClient", err)
				}
			}
			if !deleteDone {
				deleteErr = <-deleted
			}
			if deleteErr != nil {
				t.Fatalf("delete: %v", deleteErr)
			}
			for _, sig := range sigs {
				if _, err := s.GetAccessTokenSession(ctx, sig, &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
					t.Errorf("token %s after its client's change: %v, want not found", sig, err)
				}
			}
		})
	}
}

// finishedOrBlocked waits until the call behind done has returned (true,
// and its error) or blocked says it waits for a lock (false).
func finishedOrBlocked(t *testing.T, done <-chan error, blocked func() bool) (finished bool, err error) {
	t.Helper()
	waitFor(t, func() bool {
		select {
		case err = <-done:
			finished = true
			return true
		default:
			return blocked()
		}
	})
	return finished, err
}

// holds reports whether query, one boolean, is true on s's database.
func holds(s *storage.Store, query string, args ...any) bool {
	var b bool
	err := s.DB().QueryRowContext(context.Background(), query, args...).Scan(&b)
	return err == nil && b
}

// newAppWithSecret makes an owned client_credentials app with one secret
// and returns the app as read back (at its current revision).
func newAppWithSecret(t *testing.T, s *storage.Store) (*storage.Client, *storage.ClientSecret) {
	t.Helper()
	ctx := context.Background()
	c := &storage.Client{ID: "app", GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs:read"}}
	c.SetOwner("alice")
	if err := s.CreateClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	secret, err := s.CreateClientSecret(ctx, c.ID, []byte("race-hash"), "dpy_cs_r")
	if err != nil {
		t.Fatal(err)
	}
	current, err := s.Client(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	return current, secret
}

func deleteSecret(ctx context.Context, s *storage.Store, clientID, secretID string) error {
	return s.DeleteClientSecret(ctx, clientID, secretID)
}

func deleteApp(ctx context.Context, s *storage.Store, clientID, _ string) error {
	return s.DeleteClient(ctx, clientID)
}

// TestTokenInsertAfterItsClientChanged: the other order. A change of the
// client (here its revision bumped in a transaction not yet committed) is
// under way when a pinned insert runs: the insert waits for it and, once
// it commits, reads the new revision and writes nothing. Without the row
// lock the insert reads the old revision from its snapshot and its token
// goes in.
func TestTokenInsertAfterItsClientChanged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storagetest.Postgres.Open(t)
	current, _ := newAppWithSecret(t, s)
	tx, err := s.BeginTX(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Rollback(tx) //nolint:errcheck // a no-op after Commit
	if _, err := s.Exec(tx, `UPDATE clients SET revision = revision + 1 WHERE id = ?`, current.ID); err != nil {
		t.Fatal(err)
	}
	pinned := storage.WithClientPin(ctx)
	storage.PinClient(pinned, current)
	inserted := make(chan error, 1)
	go func() {
		inserted <- s.CreateAccessTokenSession(pinned, "sig", batchRequest(current, "req", "alice", time.Now().Add(time.Hour)))
	}()
	insertDone, insertErr := finishedOrBlocked(t, inserted, func() bool {
		return holds(s, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'transactionid' AND NOT l.granted AND a.datname = current_database())`)
	})
	if err := s.Commit(tx); err != nil {
		t.Fatal(err)
	}
	if !insertDone {
		insertErr = <-inserted
	}
	if !errors.Is(insertErr, storage.ErrStaleClient) {
		t.Errorf("insert under a change that then committed: %v, want ErrStaleClient", insertErr)
	}
	if _, err := s.GetAccessTokenSession(ctx, "sig", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("token: %v, want not found", err)
	}
}

// TestPinnedInsertInATransactionMeetsADeletion: a transaction that has
// locked one of the client's tokens (revoking it, as a refresh does) and
// then makes a pinned insert, against the secret's deletion, which holds
// the client's row and wants that token: a deadlock PostgreSQL breaks by
// aborting one side. That side hears ErrUnavailable (try again), never an
// unclassified error, and no token outlives the secret either way.
func TestPinnedInsertInATransactionMeetsADeletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storagetest.Postgres.Open(t)
	current, secret := newAppWithSecret(t, s)
	request := func(id string) *fosite.Request {
		r := batchRequest(current, id, "alice", time.Now().Add(time.Hour))
		r.Form = url.Values{protocol.SecretIDFormKey: {secret.ID}}
		return r
	}
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.CreateAccessTokenSession(ctx, "old", request("req-old")) }); err != nil {
		t.Fatal(err)
	}
	pinned := storage.WithClientPin(ctx)
	storage.PinClient(pinned, current)
	tx, err := s.BeginTX(pinned)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Rollback(tx) //nolint:errcheck // a no-op after Commit
	if err := s.RevokeAccessToken(tx, "req-old"); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteClientSecret(ctx, current.ID, secret.ID) }()
	waitFor(t, func() bool { // the deletion waits for the revoked token
		return holds(s, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'transactionid' AND NOT l.granted AND a.datname = current_database()
			AND a.query LIKE 'DELETE FROM oauth2_access_tokens%')`)
	})
	insertErr := s.CreateAccessTokenSession(tx, "new", request("req-new"))
	if insertErr == nil {
		insertErr = s.Commit(tx)
	}
	deleteErr := <-deleted
	for name, err := range map[string]error{"insert": insertErr, "deletion": deleteErr} {
		if err != nil && !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s: %v, want nil or ErrUnavailable", name, err)
		}
	}
	if deleteErr == nil {
		if _, err := s.GetAccessTokenSession(ctx, "new", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("token after its secret's deletion: %v, want not found", err)
		}
	}
}
