package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// server is the demo IdP: the host's users and pages around the plugin.
type server struct {
	cfg      config
	issuer   string
	log      *slog.Logger
	st       *storage.Store
	users    *users
	dir      Directory
	sessions *SessionAuthenticator
	pages    pages
	flash    *flashSealer
	throttle *loginThrottle
	catalog  *scope.Catalog
	deputy   *deputy
	metrics  *prometheus.Registry // served on the metrics listener (observe.go)
}

// scopeCatalog is the demo's scope catalog, shown on consent pages.
var scopeCatalog = []scope.Entry{
	{Name: "projects:read", Description: "See the organization's projects"},
	{Name: "projects:write", Description: "Create and change the organization's projects", Write: true},
	{Name: "members:read", Description: "See who belongs to the organization"},
}

// buildServer opens the database, migrates it, seeds the demo data when
// asked, and returns the IdP (routes is its handler, metricsRoutes its
// metrics listener's) and a cleanup that releases what it holds. It is the
// whole server minus the listeners, so tests in this package drive it with
// httptest.
func buildServer(ctx context.Context, cfg config) (_ *server, cleanup func(), err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = defaultDatabaseURL
	}
	if cfg.Issuer == "" {
		cfg.Issuer = defaultIssuer(cfg.Listen)
	}
	issuer, err := validateIssuer(cfg.Issuer)
	if err != nil {
		return nil, nil, err
	}
	cfg.Issuer = issuer
	secret, err := resolveSystemSecret(cfg.DatabaseURL, cfg.SystemSecret, cfg.Logger)
	if err != nil {
		return nil, nil, err
	}
	cfg.SystemSecret = secret

	var storeOpts []storage.Option
	if cfg.queries != nil {
		storeOpts = append(storeOpts, cfg.queries.Option())
	}
	st, u, err := openStore(ctx, cfg.DatabaseURL, storeOpts...)
	if err != nil {
		return nil, nil, err
	}
	var closers []func()
	cleanup = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	closers = append(closers, func() { st.Close() })
	defer func() {
		if err != nil {
			cleanup()
		}
	}()

	if cfg.Demo {
		if err := seedDemo(ctx, u, cfg.Logger); err != nil {
			return nil, nil, err
		}
	}
	pg, err := parsePages()
	if err != nil {
		return nil, nil, fmt.Errorf("templates: %w", err)
	}
	s := &server{
		cfg:      cfg,
		issuer:   issuer,
		log:      cfg.Logger,
		st:       st,
		users:    u,
		dir:      Directory{users: u},
		sessions: &SessionAuthenticator{users: u, secure: strings.HasPrefix(issuer, "https://"), ttl: defaultSessionTTL},
		pages:    pg,
		flash:    newFlashSealer(secret),
		throttle: newLoginThrottle(defaultLoginLimits),
		catalog:  scope.NewCatalog(scopeCatalog...),
	}
	if err := s.compose(ctx, &closers); err != nil {
		return nil, nil, err
	}
	if s.metrics, err = s.metricsRegistry(); err != nil {
		return nil, nil, err
	}
	closers = append(closers, startJanitor(st, cfg.Logger, sweepInterval))
	return s, cleanup, nil
}

// routes assembles the router. The host's own pages refuse cross-origin
// form posts; the OAuth2 endpoints are for other origins by nature, and the
// plugin guards its own browser routes.
func (s *server) routes() http.Handler {
	r := mux.NewRouter()
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.errorPage(w, r, http.StatusForbidden, "Cross-origin request refused.")
	}))
	guard := func(h http.HandlerFunc) http.Handler { return cop.Handler(h) }

	r.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", s.handleReadyz).Methods(http.MethodGet, http.MethodHead)
	static, _ := fs.Sub(staticFiles, "web/static")
	r.PathPrefix("/static/").Handler(http.StripPrefix("/static/", staticHandler(static)))

	r.HandleFunc("/", s.handleHome).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/login", s.handleLoginPage).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/login", guard(s.handleLogin)).Methods(http.MethodPost)
	r.Handle("/logout", guard(s.handleLogout)).Methods(http.MethodPost)

	s.settingsRoutes(r, guard)
	s.oauthRoutes(r, guard)
	s.apiRoutes(r)

	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsJSON(r) {
			apiError(w, http.StatusNotFound, "not_found", "no such resource")
			return
		}
		s.errorPage(w, r, http.StatusNotFound, "There is no page here.")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	})
	return recoverPanics(s.log, observeRequests(s.log, s.cfg.Tracing, securityHeaders(r)))
}

func staticHandler(files fs.FS) http.Handler {
	fsrv := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

type homeData struct {
	Issuer      string
	Memberships []homeMembership
}

type homeMembership struct {
	Organization string
	Scopes       []string
}

func (s *server) handleHome(w http.ResponseWriter, r *http.Request) {
	u := s.currentUser(r)
	d := homeData{Issuer: s.issuer}
	if u != nil {
		noStore(w)
		ms, err := s.users.memberships(r.Context(), u.ID)
		if err != nil {
			s.internalError(w, r, "home", err)
			return
		}
		for _, m := range ms {
			d.Memberships = append(d.Memberships, homeMembership{m.Organization, m.scopeList()})
		}
	}
	s.render(w, r, http.StatusOK, "home", view{Title: "Home", User: u, Data: d})
}
