package storage

import (
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// SQLite in WAL mode appends each commit to the write-ahead log and, by
// default, copies the log back into the database file (a checkpoint, with
// its fsync) inside whichever commit pushes the log past 1000 pages. With
// the store's one connection, every request queued behind that commit
// waited for it: at 8 clients the checkpoints were the p99 of a
// client_credentials token on SQLite (docs/performance.md change 13).
//
// A file database's store therefore checkpoints from a connection of its
// own, every checkpointInterval, off the request path (PASSIVE: it never
// waits for, nor blocks, the store's readers and writer); the store's
// connection checkpoints itself only past sqliteAutoCheckpoint pages, a
// backstop should the background fall behind.
const (
	checkpointInterval   = 200 * time.Millisecond
	sqliteAutoCheckpoint = 10000 // pages, about 40 MB of log
)

// checkpointer runs PASSIVE checkpoints on db until closed.
type checkpointer struct {
	db      *sql.DB
	cancel  context.CancelFunc
	stopped sync.Once
	done    sync.WaitGroup
	// copied counts the checkpoints that copied frames into the database.
	copied atomic.Int64
}

// startCheckpointer connects to the existing database the driver's dsn
// names, on a connection of its own that never creates a file (mode=rw:
// a database removed under it is an error, not a new empty one), and
// checkpoints it every interval. A failure is logged when it starts and
// when it ends, not every interval.
func startCheckpointer(ctx context.Context, driver, dsn string, interval time.Duration) (*checkpointer, error) {
	db, err := sql.Open(driver, dsn+"&mode=rw")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &checkpointer{db: db, cancel: cancel}
	c.done.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, n, err := c.checkpoint(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil && !failing:
				failing = true
				slog.Warn("storage: background checkpoints of the SQLite log are failing; the store's connection checkpoints past its backstop", "err", err)
			case err == nil && failing:
				failing = false
				slog.Info("storage: background checkpoints of the SQLite log work again")
			}
			if err == nil && n > 0 {
				c.copied.Add(1)
			}
		}
	})
	return c, nil
}

// checkpoint copies what it can of the log into the database and returns
// the log's size and how much of it is now in the database, in frames.
func (c *checkpointer) checkpoint(ctx context.Context) (logFrames, checkpointed int, err error) {
	var busy int
	err = c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &checkpointed)
	return logFrames, checkpointed, err
}

// Close stops the checkpoints and closes the connection; Store.Close may
// be called more than once.
func (c *checkpointer) Close() error {
	c.stopped.Do(c.cancel)
	c.done.Wait()
	return c.db.Close()
}
