// Package consent turns a user's "yes" into an agent grant: a scope-capped,
// expiring approval bound to (organization, user, agent platform, agent
// session), the platform being the OAuth 2.0 client that mints the agent's
// tokens. It serves the approval page, the approval API, and the user's list
// of grants.
//
// The approver is whoever the host's SessionAuthenticator says is logged in
// through a first-party browser session, never an identity taken from the
// request body and never a bearer token: an agent holding its user's token
// must not be able to approve for itself. Mutating routes refuse cross-origin
// requests with net/http.CrossOriginProtection, and pages refuse to be framed.
package consent

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// MaxBodyBytes caps a POST body; a larger one is answered 413.
const MaxBodyBytes = 64 << 10

// Template names a Config.Templates override must define.
const (
	TemplateApprove = "approve.html"
	TemplateDone    = "done.html"
	TemplateGrants  = "grants.html"
	TemplateError   = "error.html"
)

// Config is what the consent handler needs from the host. Store, Directory
// and Sessions are required.
type Config struct {
	// Store keeps the grants and the audit log: a *storage.Store, or
	// anything else with its methods.
	Store     Storage
	Directory scope.Directory
	Sessions  SessionAuthenticator
	// Clients finds the agent platform an approval names: the page shows
	// its name and id, and an approval for an unknown client is refused.
	// Default: Store, when it is also a ClientFinder (*storage.Store is:
	// deputy's own clients); otherwise required.
	Clients ClientFinder
	// Catalog describes scopes on the page. When it has entries, a request
	// naming a scope outside it is refused; when empty, any syntactically
	// valid scope may be requested.
	Catalog *scope.Catalog
	// GrantLifespan is how long an approval lasts from the moment it is
	// given; a re-approval restarts it. Default 1 hour.
	GrantLifespan time.Duration
	// LoginURL is where the page sends a visitor without a session, with
	// return_to=<the page's path and query>. Default /login.
	LoginURL string
	// Templates replaces the embedded page templates. It must define
	// approve.html, done.html, grants.html and error.html; see the *Page
	// types for the data each receives. html/template escapes everything.
	Templates *template.Template
	// TrustedOrigins are extra origins ("https://app.example.com") allowed
	// to POST and DELETE cross-origin. Default none.
	TrustedOrigins []string
	// Logger receives internal errors with detail. Default slog.Default().
	Logger *slog.Logger
	// UserName is what the pages call the signed-in user ("Signed in as
	// …"). Default: the user id.
	UserName func(ctx context.Context, userID string) string
	// Clock is the time approvals are stamped with. Default time.Now; tests
	// set it to move expiry without sleeping.
	Clock func() time.Time
	// PathPrefix is the path the host mounts the handler under ("/idp"),
	// without a trailing slash; the routes and the links the pages render
	// carry it. Default "": the routes are at /agent/….
	PathPrefix string
	// OnEvent, when set, is called after each approval, denial and
	// revocation is stored, with its audit event (storage.AuditApproved,
	// AuditDenied, AuditRevoked): deputy's metrics count them.
	OnEvent func(event string)
}

// Handler serves the consent routes, an http.Handler. Build it with New and
// mount it at PathPrefix+"/agent/" on the host's router (a ServeMux pattern
// "/agent/", or a PathPrefix route): it answers
//
//	GET    /agent/approve              the approval page
//	POST   /agent/approve              approve or deny (JSON or form)
//	GET    /agent/approve/done         the confirmation page after a form post
//	GET    /agent/grants               the caller's grants (JSON, or HTML for browsers)
//	DELETE /agent/grants/{id}          revoke one (JSON API)
//	POST   /agent/grants/{id}/revoke   revoke one (form on the grants page)
//	GET    /agent/static/consent.css   the pages' stylesheet
//
// each under PathPrefix, 404 for any other path and 405 for another method.
// POST and DELETE routes refuse cross-origin requests.
type Handler struct {
	store     Storage
	directory scope.Directory
	sessions  SessionAuthenticator
	clients   ClientFinder
	catalog   *scope.Catalog
	lifespan  time.Duration
	loginURL  string
	tmpl      *template.Template
	log       *slog.Logger
	clock     func() time.Time
	userName  func(ctx context.Context, userID string) string
	onEvent   func(event string)
	cop       *http.CrossOriginProtection
	routes    http.Handler

	// Paths of the routes as mounted, PathPrefix included, so that pages
	// link correctly.
	approvePath, donePath, grantsPath, cssPath string
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Directory == nil || cfg.Sessions == nil {
		return nil, errors.New("consent: Config needs Store, Directory and Sessions")
	}
	prefix := cfg.PathPrefix
	if prefix != "" && (!strings.HasPrefix(prefix, "/") || strings.HasSuffix(prefix, "/")) {
		return nil, fmt.Errorf("consent: PathPrefix %q must start with '/' and not end with one", prefix)
	}
	h := &Handler{
		store:     cfg.Store,
		directory: cfg.Directory,
		sessions:  cfg.Sessions,
		clients:   cfg.Clients,
		catalog:   cfg.Catalog,
		lifespan:  cfg.GrantLifespan,
		loginURL:  cfg.LoginURL,
		tmpl:      cfg.Templates,
		log:       cfg.Logger,
		clock:     cfg.Clock,
		userName:  cfg.UserName,
		onEvent:   cfg.OnEvent,
		cop:       http.NewCrossOriginProtection(),

		approvePath: prefix + "/agent/approve",
		donePath:    prefix + "/agent/approve/done",
		grantsPath:  prefix + "/agent/grants",
		cssPath:     prefix + "/agent/static/consent.css",
	}
	if h.clients == nil {
		cf, ok := cfg.Store.(ClientFinder)
		if !ok {
			return nil, errors.New("consent: Config needs Clients (its Store cannot look clients up)")
		}
		h.clients = cf
	}
	if h.catalog == nil {
		h.catalog = scope.NewCatalog()
	}
	if h.lifespan <= 0 {
		h.lifespan = protocol.DefaultGrantLifespan
	}
	if h.loginURL == "" {
		h.loginURL = protocol.DefaultLoginURL
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	if h.clock == nil {
		h.clock = time.Now
	}
	if h.tmpl == nil {
		h.tmpl = defaultTemplates
	}
	for _, name := range []string{TemplateApprove, TemplateDone, TemplateGrants, TemplateError} {
		if h.tmpl.Lookup(name) == nil {
			return nil, fmt.Errorf("consent: Templates does not define %q", name)
		}
	}
	for _, o := range cfg.TrustedOrigins {
		if err := h.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("consent: trusted origin: %w", err)
		}
	}
	h.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusForbidden, "cross_origin", "cross-origin request refused: approvals must come from this site's own pages")
	}))
	h.routes = h.router()
	return h, nil
}

// ServeHTTP serves the consent routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.routes.ServeHTTP(w, r) }

// router routes the paths listed on Handler.
func (h *Handler) router() *mux.Router {
	r := mux.NewRouter()
	guard := func(f http.HandlerFunc) http.Handler { return h.cop.Handler(f) }
	r.Handle(h.approvePath, http.HandlerFunc(h.approvePage)).Methods(http.MethodGet, http.MethodHead)
	r.Handle(h.approvePath, guard(traced("deputy.consent.approve", h.approve))).Methods(http.MethodPost)
	r.Handle(h.donePath, http.HandlerFunc(h.donePage)).Methods(http.MethodGet, http.MethodHead)
	r.Handle(h.grantsPath, http.HandlerFunc(h.listGrants)).Methods(http.MethodGet, http.MethodHead)
	r.Handle(h.grantsPath+"/{id}", guard(traced("deputy.consent.revoke", h.revoke))).Methods(http.MethodDelete)
	r.Handle(h.grantsPath+"/{id}/revoke", guard(traced("deputy.consent.revoke", h.revoke))).Methods(http.MethodPost)
	r.Handle(h.cssPath, http.HandlerFunc(serveCSS)).Methods(http.MethodGet, http.MethodHead)
	return r
}
