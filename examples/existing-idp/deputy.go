package main

// This file is everything the IdP in host.go does to add deputy (plugin
// mode). Without it, and without the one call in main.go, the IdP is plain
// fosite-example. The IdP keeps its provider, MemoryStore, ory_at_ tokens,
// bcrypt clients, ServeMux, login and consent; deputy keeps its own tables.

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
)

// The sample API's resource (below the IdP's issuer), and another
// service's.
const (
	apiResourcePath = "/api"
	reportsResource = "https://reports.example.com"
)

// addDeputy adds deputy to h before h composes its provider. st holds
// deputy's own tables (storage.Open, then Migrate). opts change deputy's
// configuration (the tests turn on loopback metadata documents).
func addDeputy(ctx context.Context, h *host, st *storage.Store, systemSecret []byte, opts ...func(*plugin.Config)) (*plugin.Plugin, error) {
	cfg := plugin.Config{
		Store:        st,
		Directory:    directory{h},
		Sessions:     sessions{h},
		SystemSecret: systemSecret,
		Issuer:       h.issuer,
		MountPath:    "/deputy", // where p.Handler() is mounted below
		// deputy logs (internal errors, warnings, agent-grant decisions)
		// through the IdP's logger, at the IdP's level.
		Logger:   h.log.With("component", "deputy"),
		LoginURL: "/login",
		Agents:   true,
		// Tokens of this IdP carry fosite-example's session.
		NewSession: func() fosite.Session { return newSession("") },
		// MCP clients register themselves (RFC 7591 at
		// /deputy/oauth2/register) or name their metadata document as their
		// client_id; either way, only for these scopes.
		ClientRegistration: plugin.ClientRegistration{
			Dynamic:           true,
			MetadataDocuments: true,
			Scopes:            []string{"projects:read", "projects:write", "reports:read", "offline", "offline_access"},
		},
		// The protected resources tokens are for (RFC 8707): the sample
		// API below, and a reports service elsewhere. A client that names
		// none gets the sample API.
		Resources:       []string{h.issuer + apiResourcePath, reportsResource},
		DefaultResource: h.issuer + apiResourcePath,
	}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := plugin.New(ctx, cfg)
	if err != nil {
		return nil, err
	}

	// deputy's apps come from deputy's tables, every other client from the
	// MemoryStore; deputy's secrets are SHA-256, the IdP's stay bcrypt.
	h.storage = p.WrapStorage(h.store)
	h.config.ClientSecretsHasher = p.SecretsHasher(h.config.GetSecretsHasher(ctx))
	// The IdP's handlers leave deputy's owned apps to deputy's, which come
	// last so that they see what the IdP's granted.
	h.factories = append(p.HostClientsOnly(h.factories...), p.Factories()...)
	// Any client may ask for the resources; fosite asks the strategy again
	// at every refresh of a token for one.
	h.config.AudienceMatchingStrategy = p.AudienceStrategy(h.config.GetAudienceStrategy(ctx))
	// Redirect URIs matched exactly (any port on a loopback address only
	// for a public client registered without one), no repeated parameters;
	// an unknown resource is invalid_target before the consent screen.
	h.checkAuthorize = func(r *http.Request, ar fosite.AuthorizeRequester) error {
		if err := plugin.CheckAuthorizeRequest(r, ar); err != nil {
			return err
		}
		return p.ResolveResources(ar)
	}
	// The consent screen says when a client registered itself, and where
	// the answer goes.
	h.consentNote = func(ar fosite.AuthorizeRequester) string {
		c := plugin.DescribeClient(ar)
		if !c.Unverified {
			return ""
		}
		return "Unverified app: " + c.ID + " registered itself, so nobody here checked who runs it. Your answer goes to " + c.RedirectHost + "."
	}
	// What a user ticks on the consent screen, capped at what they hold.
	h.onAuthorize = func(ctx context.Context, ar fosite.AuthorizeRequester, user string, ticked []string) error {
		return p.GrantScopes(ctx, ar, user, "", ticked)
	}
	// Client-authentication limits and RFC 6749's one-value-per-parameter;
	// spans and metrics of the token endpoint.
	h.wrapToken = p.TokenEndpointGuard
	// deputy's metrics, in the IdP's own registry.
	if err := p.RegisterMetrics(h.metrics); err != nil {
		return nil, err
	}
	// The authorization endpoint's answers carry iss (RFC 9207), and state
	// is optional under PKCE S256 (RFC 9700), as MCP clients expect.
	h.wrapProvider = p.WrapProvider

	// The apps API, the consent pages and API, JWKS, and deputy's metadata.
	h.mux.Handle("/deputy/", p.Handler())
	// Readiness: 503 while deputy's database does not answer (liveness
	// must not ask, or an outage would restart every replica).
	h.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := p.Ready(ctx); err != nil {
			h.log.Error("readiness: deputy's database", "err", err)
			w.Header().Set("Retry-After", "5")
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})

	// A sample API that deputy's tokens and agent tokens for it may call,
	// and its RFC 9728 metadata, where its challenges point.
	mw, err := p.MiddlewareFor(h.issuer+apiResourcePath, func(*http.Request) string { return "acme" })
	if err != nil {
		return nil, err
	}
	h.mux.Handle(mw.MetadataPath(), mw.MetadataHandler())
	projects := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := plugin.IdentityFrom(r.Context())
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(r.Method + " projects as " + id.Subject))
	})
	h.mux.Handle("GET /api/projects", mw.RequireScopes("projects:read")(projects))
	h.mux.Handle("POST /api/projects", mw.RequireScopes("projects:write")(projects))
	return p, nil
}

// directory answers deputy's question from the IdP's users.
type directory struct{ h *host }

func (d directory) UserScopes(_ context.Context, name, org string) ([]string, error) {
	d.h.mu.Lock()
	defer d.h.mu.Unlock()
	u := d.h.users[name]
	switch {
	case u == nil:
		return nil, plugin.ErrUserNotFound
	case u.disabled:
		return nil, plugin.ErrUserDisabled
	case org != "" && org != u.org:
		return nil, nil
	}
	return slices.Clone(u.scopes), nil
}

// sessions is the IdP's login cookie, for deputy's pages.
type sessions struct{ h *host }

func (s sessions) Authenticate(r *http.Request) (string, error) {
	if name := s.h.currentUser(r); name != "" {
		return name, nil
	}
	return "", plugin.ErrNoSession
}
