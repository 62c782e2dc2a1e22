package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
)

// Defaults of the serve command.
const (
	defaultListen      = "127.0.0.1:8080"
	defaultDatabaseURL = "sqlite:deputy.db"
)

// config is everything buildServer needs. The serve command fills it from
// flags and the environment; tests fill it directly.
type config struct {
	// Listen is the address the server binds, host:port.
	Listen string
	// DatabaseURL is postgres://… or sqlite:PATH.
	DatabaseURL string
	// Issuer is the public base URL; default http://<Listen>.
	Issuer string
	// SystemSecret keys token HMACs and encrypts signing keys. Empty means:
	// read or create the file next to an SQLite database; an error on PostgreSQL.
	SystemSecret []byte
	// Demo seeds the acme organization with alice and bob.
	Demo bool
	// GrantLifespan is how long an approval of an agent's writes lasts;
	// 0 is plugin.DefaultGrantLifespan.
	GrantLifespan time.Duration
	// ClientCacheTTL is plugin.Config.ClientCacheTTL: 0 its default, below
	// zero no cache.
	ClientCacheTTL time.Duration
	// UserScopesCacheTTL is plugin.Config.UserScopesCacheTTL: 0
	// defaultUserScopesCacheTTL, below zero no cache. deputy-idp may keep
	// users' scopes because every change to them (the users commands)
	// moves the user's revision on in the same transaction (users.go).
	UserScopesCacheTTL time.Duration
	// NoClientRegistration turns off what lets MCP clients connect without
	// setup: dynamic client registration (RFC 7591/7592) and client ID
	// metadata documents, both on by default.
	NoClientRegistration bool
	// LoopbackMetadataDocuments lets client ID metadata documents be
	// fetched from loopback addresses (and http://127.0.0.1… client ids):
	// for development and tests on one machine only.
	LoopbackMetadataDocuments bool
	// Logger receives structured logs.
	Logger *slog.Logger
	// MetricsListen, when set, is the address of a second listener that
	// serves /metrics (Prometheus) and nothing else.
	MetricsListen string
	// Tracing runs each request in a server span (the global tracer
	// provider's; serve installs an OTLP exporter when configured).
	Tracing bool
	// Out receives the human-readable start banner; nil discards it.
	Out io.Writer
	// DebugListen, when set, is a loopback address serving query counts
	// and pprof (debug.go); empty, the default, adds nothing.
	DebugListen string
	// queries counts the store's SQL when the debug listener is on.
	queries *querycount.Counter
}

// envOr returns the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// commonFlags are the flags every subcommand takes.
type commonFlags struct {
	databaseURL string
	json        bool
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.databaseURL, "database-url", envOr("DATABASE_URL", defaultDatabaseURL),
		"database: postgres://… or sqlite:PATH (env DATABASE_URL)")
	fs.BoolVar(&c.json, "json", false, "print machine-readable JSON")
}

// newFlagSet makes a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// stringsFlag collects a repeatable flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// defaultIssuer derives the issuer from the listen address. An unspecified
// host (":8080", "0.0.0.0:8080") is shown as localhost, which is where a
// browser on the same machine reaches it.
func defaultIssuer(listen string) string {
	host := listen
	switch {
	case strings.HasPrefix(listen, ":"):
		host = "localhost" + listen
	case strings.HasPrefix(listen, "0.0.0.0:"):
		host = "localhost" + strings.TrimPrefix(listen, "0.0.0.0")
	case strings.HasPrefix(listen, "[::]:"):
		host = "localhost" + strings.TrimPrefix(listen, "[::]")
	}
	return "http://" + host
}

// validateIssuer refuses issuers that would break redirects and cookies.
func validateIssuer(issuer string) (string, error) {
	if !protocol.ValidIssuer(issuer) {
		return "", fmt.Errorf("issuer %q must be an absolute http(s) URL without query or fragment", issuer)
	}
	return strings.TrimSuffix(issuer, "/"), nil
}

// resolveSystemSecret returns the secret to use. A configured one must be at
// least 32 bytes. Without one, an SQLite database gets a secret generated on
// first start and kept in <database>.secret (mode 0600), so that restarting a
// dev server keeps its tokens valid; PostgreSQL means replicas, which must
// share a secret the operator chose, so there it is required.
func resolveSystemSecret(dsn string, configured []byte, log *slog.Logger) ([]byte, error) {
	if len(configured) > 0 {
		if len(configured) < plugin.MinSystemSecretLength {
			return nil, fmt.Errorf("system secret is %d bytes; it must be at least %d", len(configured), plugin.MinSystemSecretLength)
		}
		return configured, nil
	}
	path, ok := strings.CutPrefix(dsn, "sqlite:")
	if !ok {
		return nil, errors.New("DEPUTY_SYSTEM_SECRET (or --system-secret) is required with PostgreSQL: every replica must share it; generate one with `openssl rand -hex 32`")
	}
	if path == ":memory:" {
		log.Warn("in-memory database: using a throwaway system secret")
		return randomSecret(), nil
	}
	file := path + ".secret"
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		s := []byte(strings.TrimSpace(string(b)))
		if len(s) < plugin.MinSystemSecretLength {
			return nil, fmt.Errorf("system secret in %s is shorter than %d bytes", file, plugin.MinSystemSecretLength)
		}
		return s, nil
	case errors.Is(err, fs.ErrNotExist):
		s := randomSecret()
		// O_EXCL: two dev processes starting at once must not each write a
		// different secret; the loser reads the winner's.
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return resolveSystemSecret(dsn, nil, log)
		}
		if err != nil {
			return nil, fmt.Errorf("store system secret: %w", err)
		}
		if _, err := f.Write(append(s, '\n')); err != nil {
			f.Close()
			return nil, fmt.Errorf("store system secret: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("store system secret: %w", err)
		}
		log.Info("generated a system secret for this development database", "file", file)
		return s, nil
	default:
		return nil, fmt.Errorf("read system secret: %w", err)
	}
}

// randomSecret is 32 random bytes, hex-encoded so it survives a text file
// and an environment variable.
func randomSecret() []byte {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return []byte(hex.EncodeToString(b[:]))
}

// openStore opens and migrates deputy's store and the host's tables.
func openStore(ctx context.Context, dsn string, opts ...storage.Option) (*storage.Store, *users, error) {
	st, err := storage.Open(ctx, dsn, opts...)
	if err != nil {
		return nil, nil, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, nil, err
	}
	u := &users{st: st}
	if err := u.migrate(ctx); err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, u, nil
}
