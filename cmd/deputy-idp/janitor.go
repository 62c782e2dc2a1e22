package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// sweepInterval is how often expired tokens, codes, grants and sessions are
// deleted. Expired rows are already refused when read; sweeping only keeps
// the tables small, so neither precision nor a single sweeper among
// replicas matters.
const sweepInterval = 10 * time.Minute

// sweep deletes what has expired, in deputy's tables and the host's.
func sweep(ctx context.Context, st *storage.Store, log *slog.Logger) {
	now := time.Now().UTC()
	n, err := st.DeleteExpired(ctx, now)
	if err != nil {
		log.WarnContext(ctx, "sweeping expired tokens", "err", err)
	}
	res, err := st.Exec(ctx, `DELETE FROM idp_sessions WHERE expires_at < ?`, now)
	if err != nil {
		log.WarnContext(ctx, "sweeping expired sessions", "err", err)
	} else if k, err := res.RowsAffected(); err == nil {
		n += k
	}
	if n > 0 {
		log.InfoContext(ctx, "swept expired rows", "rows", n)
	}
}

// startJanitor sweeps every interval until the returned stop is called.
func startJanitor(st *storage.Store, log *slog.Logger, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sweep(ctx, st, log)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
