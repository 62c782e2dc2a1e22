// Command existing-idp is a small fosite IdP written the way
// ory/fosite-example is, with deputy added in plugin mode by one file
// (deputy.go). Run it with `go run ./examples/existing-idp`, sign in as
// alice / alice-password at http://127.0.0.1:9090/login.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/deputyauth/deputy/storage"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	dsn := flag.String("deputy-db", "sqlite:existing-idp-deputy.db", "deputy's database (sqlite:PATH or postgres://…)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr, *dsn, log); err != nil {
		log.Error("existing-idp", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, dsn string, log *slog.Logger) error {
	h := newHost("http://"+addr, log)
	st, err := storage.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	secret := []byte(os.Getenv("DEPUTY_SYSTEM_SECRET"))
	if len(secret) == 0 {
		secret = []byte("example-only-system-secret-0123456789")
		log.Warn("DEPUTY_SYSTEM_SECRET is not set; using the example's, which is public")
	}
	p, err := addDeputy(ctx, h, st, secret)
	if err != nil {
		return err
	}
	defer p.Close()
	h.compose()
	srv := &http.Server{Addr: addr, Handler: h.mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("existing-idp listening", "addr", "http://"+addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}
