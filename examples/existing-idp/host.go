package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/storage"
	"github.com/ory/fosite/token/jwt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"
)

// This file is an ordinary fosite IdP, written the way ory/fosite-example
// writes one: fosite's MemoryStore, its HMAC token strategy (ory_at_ …),
// bcrypt-hashed clients, compose.Compose, net/http.ServeMux, and a login and
// consent screen of its own. Nothing in it knows about deputy except the
// extension points an IdP would have anyway (checkAuthorize, consentNote,
// onAuthorize, wrapToken, wrapProvider, its metrics registry): deputy.go
// adds deputy to it.

// user is one account of the host.
type user struct {
	password string
	disabled bool
	// scopes the user holds in organization org.
	org    string
	scopes []string
}

// host is the IdP.
type host struct {
	issuer    string
	config    *fosite.Config
	store     *storage.MemoryStore
	storage   any // what compose.Compose gets: store, or a wrapper around it
	strategy  *compose.CommonStrategy
	factories []compose.Factory
	provider  fosite.OAuth2Provider
	mux       *http.ServeMux
	log       *slog.Logger
	// metrics is the IdP's Prometheus registry, served at /metrics (a
	// real deployment keeps that off its public listener).
	metrics *prometheus.Registry

	// checkAuthorize, when set, vets an authorization request fosite
	// accepted, before the consent screen.
	checkAuthorize func(r *http.Request, ar fosite.AuthorizeRequester) error
	// consentNote, when set, is a line to show on the consent screen about
	// the request (a warning about its client, say).
	consentNote func(ar fosite.AuthorizeRequester) string
	// onAuthorize, when set, narrows what an authorization grants: it is
	// called with the scopes the user ticked before the code is issued.
	onAuthorize func(ctx context.Context, ar fosite.AuthorizeRequester, user string, ticked []string) error
	// wrapToken, when set, wraps the token, introspection and revocation
	// endpoints (rate limits, request checks).
	wrapToken func(http.Handler) http.Handler
	// wrapProvider, when set, wraps the composed provider (rules of the
	// authorization endpoint).
	wrapProvider func(fosite.OAuth2Provider) fosite.OAuth2Provider

	mu       sync.Mutex
	users    map[string]*user
	sessions map[string]string // session cookie → username
}

const sessionCookie = "host_session"

// newHost returns the IdP with its clients and users, not yet composed.
func newHost(issuer string, log *slog.Logger) *host {
	h := &host{
		issuer: issuer,
		config: &fosite.Config{
			AccessTokenLifespan:        30 * time.Minute,
			GlobalSecret:               []byte("some-cool-secret-that-is-32bytes"),
			TokenURL:                   issuer + "/oauth2/token",
			AccessTokenIssuer:          issuer,
			ScopeStrategy:              fosite.ExactScopeStrategy,
			EnforcePKCE:                true,
			SendDebugMessagesToClients: true,
		},
		store:    storage.NewMemoryStore(),
		mux:      http.NewServeMux(),
		log:      log,
		metrics:  prometheus.NewRegistry(),
		users:    map[string]*user{},
		sessions: map[string]string{},
	}
	h.storage = h.store
	h.strategy = &compose.CommonStrategy{CoreStrategy: compose.NewOAuth2HMACStrategy(h.config)}
	h.factories = []compose.Factory{
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2PKCEFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
	}
	h.store.Clients["host-cc"] = &fosite.DefaultClient{
		ID:         "host-cc",
		Secret:     mustBcrypt("host-cc-secret"),
		GrantTypes: []string{"client_credentials"},
		Scopes:     []string{"projects:read", "projects:write", "reports:read"},
	}
	h.store.Clients["host-web"] = &fosite.DefaultClient{
		ID:            "host-web",
		Secret:        mustBcrypt("host-web-secret"),
		RedirectURIs:  []string{"http://localhost:3846/callback"},
		ResponseTypes: []string{"code"},
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		Scopes:        []string{"projects:read", "projects:write", "reports:read", "offline"},
	}
	h.users["alice"] = &user{password: "alice-password", org: "acme", scopes: []string{"projects:read", "projects:write", "reports:read"}}
	h.users["bob"] = &user{password: "bob-password", org: "acme", scopes: []string{"projects:read"}}
	return h
}

func mustBcrypt(secret string) []byte {
	b, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return b
}

// compose builds the provider and mounts the host's routes.
func (h *host) compose() {
	h.provider = compose.Compose(h.config, h.storage, h.strategy, h.factories...)
	if h.wrapProvider != nil {
		h.provider = h.wrapProvider(h.provider)
	}
	wrap := func(f http.HandlerFunc) http.Handler {
		if h.wrapToken != nil {
			return h.wrapToken(f)
		}
		return f
	}
	h.mux.HandleFunc("GET /login", h.loginPage)
	h.mux.HandleFunc("POST /login", h.login)
	h.mux.HandleFunc("/oauth2/auth", h.authorize)
	h.mux.Handle("POST /oauth2/token", wrap(h.token))
	h.mux.Handle("POST /oauth2/introspect", wrap(h.introspect))
	h.mux.Handle("POST /oauth2/revoke", wrap(h.revoke))
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(h.metrics, promhttp.HandlerOpts{}))
}

// newSession is the session the host's tokens carry, as in fosite-example.
func newSession(subject string) *openid.DefaultSession {
	return &openid.DefaultSession{
		Claims:  &jwt.IDTokenClaims{Subject: subject},
		Headers: &jwt.Headers{Extra: map[string]any{}},
		Subject: subject,
	}
}

// currentUser is the signed-in user of r, "" for none.
func (h *host) currentUser(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[c.Value]
}

var loginTmpl = template.Must(template.New("login").Parse(`<!doctype html><title>Sign in</title>
<form method="post" action="/login"><input type="hidden" name="return_to" value="{{.}}">
<input name="username" autocomplete="username"> <input name="password" type="password"> <button>Sign in</button></form>`))

func (h *host) loginPage(w http.ResponseWriter, r *http.Request) {
	_ = loginTmpl.Execute(w, r.URL.Query().Get("return_to"))
}

func (h *host) login(w http.ResponseWriter, r *http.Request) {
	name, pw := r.PostFormValue("username"), r.PostFormValue("password")
	h.mu.Lock()
	u := h.users[name]
	h.mu.Unlock()
	if u == nil || u.disabled || subtle.ConstantTimeCompare([]byte(u.password), []byte(pw)) != 1 {
		http.Error(w, "wrong username or password", http.StatusUnauthorized)
		return
	}
	id := randomID()
	h.mu.Lock()
	h.sessions[id] = name
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	to := r.PostFormValue("return_to")
	if !strings.HasPrefix(to, "/") || strings.HasPrefix(to, "//") {
		to = "/"
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var consentTmpl = template.Must(template.New("consent").Parse(`<!doctype html><title>Consent</title>
{{with .Note}}<p class="note">{{.}}</p>{{end}}<p>{{.Client}} asks for:</p><form method="post">{{range .Scopes}}
<label><input type="checkbox" name="grant_scope" value="{{.}}" checked> {{.}}</label>{{end}}
<button>Allow</button></form>`))

// authorize is the authorization endpoint: login, then the host's consent
// screen, where the user may untick scopes.
func (h *host) authorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := h.currentUser(r)
	if name == "" {
		http.Redirect(w, r, "/login?return_to="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	ar, err := h.provider.NewAuthorizeRequest(ctx, r)
	if err == nil && h.checkAuthorize != nil {
		err = h.checkAuthorize(r, ar)
	}
	if err != nil {
		h.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	if r.Method != http.MethodPost {
		var note string
		if h.consentNote != nil {
			note = h.consentNote(ar)
		}
		_ = consentTmpl.Execute(w, map[string]any{"Client": ar.GetClient().GetID(), "Scopes": ar.GetRequestedScopes(), "Note": note})
		return
	}
	ticked := r.PostForm["grant_scope"]
	for _, s := range ticked {
		if slices.Contains(ar.GetRequestedScopes(), s) {
			ar.GrantScope(s)
		}
	}
	if h.onAuthorize != nil {
		if err := h.onAuthorize(ctx, ar, name, ticked); err != nil {
			h.provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
	}
	resp, err := h.provider.NewAuthorizeResponse(ctx, ar, newSession(name))
	if err != nil {
		h.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	h.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}

// token is fosite-example's token endpoint, including its habit of granting
// a client_credentials client every scope it asked for.
func (h *host) token(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ar, err := h.provider.NewAccessRequest(ctx, r, newSession(""))
	if err != nil {
		h.log.InfoContext(ctx, "token request refused", "err", err)
		h.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	if ar.GetGrantTypes().ExactOne("client_credentials") {
		for _, s := range ar.GetRequestedScopes() {
			ar.GrantScope(s)
		}
	}
	resp, err := h.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		h.provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	h.provider.WriteAccessResponse(ctx, w, ar, resp)
}

func (h *host) introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ir, err := h.provider.NewIntrospectionRequest(ctx, r, newSession(""))
	if err != nil {
		h.provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	h.provider.WriteIntrospectionResponse(ctx, w, ir)
}

func (h *host) revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	h.provider.WriteRevocationResponse(ctx, w, h.provider.NewRevocationRequest(ctx, r))
}
