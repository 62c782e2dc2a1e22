package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/deputyauth/deputy/storage/querycount"
)

// parseCacheTTL reads a cache's --name flag into config's convention: 0
// (flag unset) the default, below zero off ("0" on the command line).
func parseCacheTTL(name, value string, stderr io.Writer) (time.Duration, bool) {
	if value == "" {
		return 0, true
	}
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 {
		fmt.Fprintf(stderr, "serve: --%s %q must be a duration such as 1m, or 0 for no cache\n", name, value)
		return 0, false
	}
	if d == 0 {
		return -1, true
	}
	return d, true
}

// shutdownGrace is how long in-flight requests get after SIGINT/SIGTERM.
const shutdownGrace = 15 * time.Second

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var (
		common   commonFlags
		listen   = fs.String("listen", envOr("DEPUTY_LISTEN", defaultListen), "address to listen on (env DEPUTY_LISTEN)")
		issuer   = fs.String("issuer", os.Getenv("DEPUTY_ISSUER"), "public base URL (env DEPUTY_ISSUER; default http://<listen>)")
		secret   = fs.String("system-secret", os.Getenv("DEPUTY_SYSTEM_SECRET"), "at least 32 bytes shared by every replica (env DEPUTY_SYSTEM_SECRET; generated next to an SQLite database when empty, required with PostgreSQL)")
		noDemo   = fs.Bool("no-demo", envBool("DEPUTY_NO_DEMO"), "do not seed the demo organization and users (env DEPUTY_NO_DEMO)")
		logJSON  = fs.Bool("log-json", envBool("DEPUTY_LOG_JSON"), "write logs as JSON (env DEPUTY_LOG_JSON)")
		grantLS  = fs.String("grant-lifespan", os.Getenv("DEPUTY_GRANT_LIFESPAN"), "how long a user's approval of an agent's writes lasts, e.g. 1h or 15m (env DEPUTY_GRANT_LIFESPAN; default 1h)")
		level    = fs.String("log-level", envOr("DEPUTY_LOG_LEVEL", "info"), "least severe log level written: debug (adds a line per successful request), info, warn or error (env DEPUTY_LOG_LEVEL)")
		noReg    = fs.Bool("no-client-registration", envBool("DEPUTY_NO_CLIENT_REGISTRATION"), "turn off dynamic client registration and client ID metadata documents, which let MCP clients connect without setup (env DEPUTY_NO_CLIENT_REGISTRATION)")
		loopDoc  = fs.Bool("loopback-metadata-documents", envBool("DEPUTY_LOOPBACK_METADATA_DOCUMENTS"), "fetch client ID metadata documents from loopback addresses too: development and tests only, never in production (env DEPUTY_LOOPBACK_METADATA_DOCUMENTS)")
		cacheTTL = fs.String("client-cache-ttl", os.Getenv("DEPUTY_CLIENT_CACHE_TTL"), "how long the token endpoint keeps an app in memory between its tokens, e.g. 1m; every token is still checked against the app's row, so changes hold at once on every replica; 0 turns the cache off (env DEPUTY_CLIENT_CACHE_TTL; default 1m)")
		usersTTL = fs.String("user-scopes-cache-ttl", os.Getenv("DEPUTY_USER_SCOPES_CACHE_TTL"), "how long the token endpoint keeps a user's scopes in memory between their apps' and agents' tokens, e.g. 1m; every token is still checked against the user's revision, which the users commands move on, so changes hold at once on every replica; 0 turns the cache off (env DEPUTY_USER_SCOPES_CACHE_TTL; default 1m)")
		metrics  = fs.String("metrics-listen", os.Getenv("DEPUTY_METRICS_LISTEN"), "address of a separate listener serving Prometheus /metrics, e.g. 127.0.0.1:9464; off when empty (env DEPUTY_METRICS_LISTEN)")
	)
	common.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var grantLifespan time.Duration
	if *grantLS != "" {
		d, err := time.ParseDuration(*grantLS)
		if err != nil || d <= 0 {
			fmt.Fprintf(stderr, "serve: --grant-lifespan %q must be a positive duration such as 1h or 15m\n", *grantLS)
			return 2
		}
		grantLifespan = d
	}
	clientCacheTTL, ok := parseCacheTTL("client-cache-ttl", *cacheTTL, stderr)
	if !ok {
		return 2
	}
	userScopesCacheTTL, ok := parseCacheTTL("user-scopes-cache-ttl", *usersTTL, stderr)
	if !ok {
		return 2
	}
	lvl, err := parseLogLevel(*level)
	if err != nil {
		fmt.Fprintf(stderr, "serve: --log-level: %v\n", err)
		return 2
	}
	log := newLogger(stderr, lvl, *logJSON || common.json)
	gogc, source := setGCPercent()
	log.Info("garbage collector", "gogc", gogc, "from", source)
	tracing := tracingConfigured()
	if tracing {
		shutdown, err := startTracing(ctx)
		if err != nil {
			log.Error("deputy-idp cannot start", "err", err)
			return 1
		}
		log.Info("exporting traces over OTLP/HTTP", "endpoint", otlpEndpoint())
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(sctx); err != nil {
				log.Warn("flushing traces", "err", err)
			}
		}()
	}
	cfg := config{
		Listen:         *listen,
		DatabaseURL:    common.databaseURL,
		Issuer:         *issuer,
		SystemSecret:   []byte(*secret),
		Demo:           !*noDemo,
		GrantLifespan:  grantLifespan,
		ClientCacheTTL: clientCacheTTL,
		Logger:         log,
		Out:            stdout,
		MetricsListen:  *metrics,
		Tracing:        tracing,
		DebugListen:    os.Getenv(debugListenEnv),

		UserScopesCacheTTL:        userScopesCacheTTL,
		NoClientRegistration:      *noReg,
		LoopbackMetadataDocuments: *loopDoc,
	}
	if err := serve(ctx, cfg); err != nil {
		log.Error("deputy-idp stopped", "err", err)
		return 1
	}
	return 0
}

func envBool(name string) bool {
	v, err := strconv.ParseBool(os.Getenv(name))
	return err == nil && v
}

// serve runs the server until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg config) error {
	// Bind before building, so that a port in use fails fast and the banner
	// can name the real address when the port was 0.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = defaultIssuer(ln.Addr().String())
	}
	var mln net.Listener
	if cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("metrics listen: %w", err)
		}
	}
	var dln net.Listener
	if cfg.DebugListen != "" {
		if dln, err = listenDebug(cfg.DebugListen); err != nil {
			ln.Close()
			if mln != nil {
				mln.Close()
			}
			return err
		}
		cfg.queries = new(querycount.Counter)
	}
	s, cleanup, err := buildServer(ctx, cfg)
	if err != nil {
		for _, l := range []net.Listener{ln, mln, dln} {
			if l != nil {
				l.Close()
			}
		}
		return err
	}
	defer cleanup()
	handler := s.routes()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 3)
	go func() { errc <- srv.Serve(ln) }()
	var msrv *http.Server
	if mln != nil {
		msrv = &http.Server{
			Handler:           s.metricsRoutes(),
			ReadHeaderTimeout: 10 * time.Second,
			WriteTimeout:      30 * time.Second,
			ErrorLog:          srv.ErrorLog,
		}
		go func() { errc <- msrv.Serve(mln) }()
		cfg.Logger.Info("metrics listening", "addr", mln.Addr().String(), "path", "/metrics")
	}
	var dsrv *http.Server
	if dln != nil {
		dsrv = &http.Server{Handler: s.debugRoutes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: srv.ErrorLog}
		go func() { errc <- dsrv.Serve(dln) }()
		cfg.Logger.Warn("debug listening", "addr", dln.Addr().String(), "serves", "/debug/querycount /debug/pprof/", "env", debugListenEnv)
	}
	cfg.Logger.Info("deputy-idp listening", "addr", ln.Addr().String(), "issuer", issuerOr(cfg), "demo", cfg.Demo)
	printBanner(cfg.Out, issuerOr(cfg), cfg.Demo)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	for _, side := range []struct {
		srv  *http.Server
		name string
	}{{msrv, "metrics"}, {dsrv, "debug"}} {
		if side.srv == nil {
			continue
		}
		if err := side.srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shutdown %s: %w", side.name, err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	cfg.Logger.Info("stopped")
	return nil
}

func issuerOr(cfg config) string {
	if iss, err := validateIssuer(cfg.Issuer); err == nil {
		return iss
	}
	return cfg.Issuer
}

func printBanner(out io.Writer, issuer string, demo bool) {
	fmt.Fprintf(out, "\ndeputy-idp is running at %s\n\n", issuer)
	if demo {
		fmt.Fprintf(out, "  Demo organization %q:\n", demoOrg)
		fmt.Fprintf(out, "    alice / %s   (admin; projects:read projects:write members:read)\n", demoAlicePassword)
		fmt.Fprintf(out, "    bob   / %s     (projects:read)\n\n", demoBobPassword)
	}
	fmt.Fprintf(out, "  Next:\n")
	fmt.Fprintf(out, "    1. Sign in:              %s/login\n", issuer)
	fmt.Fprintf(out, "    2. Create an owned app:  %s/settings/apps/new\n", issuer)
	fmt.Fprintf(out, "    3. Fetch a token:        curl -u CLIENT_ID:SECRET -d grant_type=client_credentials %s/oauth2/token\n", issuer)
	fmt.Fprintf(out, "    4. Call the sample API:  curl -H \"Authorization: Bearer TOKEN\" %s/api/orgs/%s/projects\n", issuer, demoOrg)
	fmt.Fprintf(out, "  Metadata: %s/.well-known/oauth-authorization-server\n\n", issuer)
	if demo {
		fmt.Fprintf(out, "  The demo users have well-known passwords: run with --no-demo anywhere that matters.\n\n")
	}
}
