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
//
// That alone does not keep the log short. SQLite rewinds the log only when
// a write begins after a checkpoint that copied all of it, and under a
// steady stream of writes the background checkpoint, running beside the
// writer, ends a few frames short nearly every time: the log grew until
// the backstop fired inside a commit, which then waited for the fsync of
// tens of megabytes, 20 to 50 ms for every request queued behind it
// (docs/performance.md change 15). So when the log is still longer than
// rewindAbove pages after a background checkpoint that did not copy all of
// it, the checkpointer checkpoints once more while holding the store's
// connection: no write runs beside it, so it copies the few frames the
// background one left, and the next write rewinds the log. The store's
// requests wait that short while, once an interval at most.
//
// The backstop sits well above what one interval writes: a token commit
// writes a page of each of its table's B-trees, and at 5,000 tokens/s on a
// slow machine one interval wrote up to 9,200 pages, so a backstop of
// 10,000 still fired inside commits now and then (docs/performance.md
// change 18). The log is rewound every interval, so it reaches the
// backstop only when the background checkpoints fail (logged) or cannot
// copy all of it because another process holds a read transaction on the
// file or writes to it (not logged); the commit that crosses it then
// copies up to 120 MB itself, and the -wal file keeps that size until the
// store closes.
const (
	checkpointInterval   = 200 * time.Millisecond
	sqliteAutoCheckpoint = 30000 // pages, about 120 MB of log
	rewindAbove          = 2000  // pages, about 8 MB of log
)

// checkpointer runs PASSIVE checkpoints on db until closed.
type checkpointer struct {
	db      *sql.DB
	cancel  context.CancelFunc
	stopped sync.Once
	done    sync.WaitGroup
	// copied counts the checkpoints that copied frames into the database;
	// finished, those finished on the store's connection.
	copied, finished atomic.Int64
}

// checkpointPassive runs a PASSIVE checkpoint on db and returns the log's
// size and how much of it is now in the database, in frames (-1 and -1
// when the database is not in WAL mode), and whether it copied all of it.
func checkpointPassive(ctx context.Context, db *sql.DB) (logFrames, checkpointed int, all bool, err error) {
	var busy int
	err = db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &checkpointed)
	return logFrames, checkpointed, err == nil && busy == 0 && checkpointed == logFrames, err
}

// startCheckpointer connects to the existing database the driver's dsn
// names, on a connection of its own that never creates a file (mode=rw:
// a database removed under it is an error, not a new empty one), and
// checkpoints it every interval. A failure is logged when it starts and
// when it ends, not every interval.
//
// store is the store's own pool, whose connection is held while a
// checkpoint that left more than rewindAbove pages of log is finished
// (nil: never).
func startCheckpointer(ctx context.Context, driver, dsn string, interval time.Duration, store *sql.DB) (*checkpointer, error) {
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
			// A log copied whole is rewound by the next write already; an
			// idle store's is left alone.
			logFrames, n, all, err := checkpointPassive(ctx, c.db)
			if err == nil && store != nil && logFrames > rewindAbove && !all {
				var finished bool
				if finished, err = c.finish(ctx, store); finished {
					c.finished.Add(1)
				}
			}
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

// finish checkpoints again while it holds the store's connection, so that
// no write of this store runs beside it: the checkpoint copies the whole log
// (finished; not when another process writes to the file too) and the
// store's next write rewinds it. Holding the connection, rather than
// checkpointing on it, runs no statement of the store's own. database/sql
// hands a freed connection to any of its waiters, not the first, so the
// frames written while this waits are copied while it holds it.
func (c *checkpointer) finish(ctx context.Context, store *sql.DB) (finished bool, err error) {
	conn, err := store.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	_, _, finished, err = checkpointPassive(ctx, c.db)
	return finished, err
}

// Close stops the checkpoints and closes the connection; Store.Close may
// be called more than once.
func (c *checkpointer) Close() error {
	c.stopped.Do(c.cancel)
	c.done.Wait()
	return c.db.Close()
}
