package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/handlers"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
)

// deputy is what the host composed from the plugin and its parts.
type deputy struct {
	p        *plugin.Plugin
	keys     *handlers.Keyring
	resource *handlers.Middleware
}

// compose builds the plugin around the host's Directory and sessions, adds
// the agent-token grant, JWKS and the consent routes, and makes the
// resource middleware for the sample API.
func (s *server) compose(ctx context.Context, closers *[]func()) error {
	p, err := plugin.New(plugin.Config{
		Store:        s.st,
		Directory:    s.dir,
		Sessions:     s.sessions,
		IsAdmin:      s.users.isAdmin,
		SystemSecret: s.cfg.SystemSecret,
		Issuer:       s.issuer,
		Scopes:       scopeCatalog,
		LoginURL:     "/login",
		Logger:       s.log,
	})
	if err != nil {
		return err
	}
	*closers = append(*closers, func() { p.Close() })
	cfg := p.Config()

	keys, err := handlers.NewKeyring(ctx, handlers.KeyringConfig{
		Store:        s.st,
		SystemSecret: s.cfg.SystemSecret,
		Algorithm:    cfg.AgentTokenAlgorithm,
		Logger:       s.log,
	})
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	minter := &handlers.Minter{
		Keys:      keys,
		Store:     s.st,
		Directory: s.dir,
		Catalog:   p.Catalog(),
		Issuer:    s.issuer,
		Lifespan:  cfg.AgentTokenLifespan,
		Logger:    s.log,
	}
	if err := p.AddFactories(handlers.AgentTokenGrantFactory(minter, func() fosite.Session { return handlers.NewSession("", "") })); err != nil {
		return err
	}
	p.AddGrantTypes(plugin.GrantTypeAgentToken)

	approvals, err := consent.New(consent.Config{
		Store:         s.st,
		Directory:     s.dir,
		Sessions:      s.sessions,
		Catalog:       p.Catalog(),
		GrantLifespan: cfg.GrantLifespan,
		LoginURL:      "/login",
		Logger:        s.log,
	})
	if err != nil {
		return err
	}
	jwks := handlers.NewJWKSHandler(keys)
	p.AddRoutes(
		func(r *mux.Router) { r.Handle(plugin.JWKSPath, jwks).Methods(http.MethodGet, http.MethodHead) },
		approvals.Register,
	)

	s.deputy = &deputy{
		p:    p,
		keys: keys,
		resource: &handlers.Middleware{
			Agent:  &handlers.AgentVerifier{Keys: keys, Issuer: s.issuer},
			Opaque: p.AccessTokenVerifier(),
			Org:    func(r *http.Request) string { return mux.Vars(r)["org"] },
			ApprovalURL: func(org, session string, missing []string) string {
				q := url.Values{"organization": {org}, "session": {session}, "scope": {scope.Join(missing)}}
				return s.issuer + "/agent/approve?" + q.Encode()
			},
			Logger: s.log,
		},
	}
	return nil
}

// apiRoutes mounts the sample protected API behind the resource middleware.
func (s *server) apiRoutes(r *mux.Router) {
	m := s.deputy.resource
	r.Handle("/api/orgs/{org}/projects", m.RequireScopes("projects:read")(http.HandlerFunc(s.handleListProjects))).
		Methods(http.MethodGet, http.MethodHead)
	r.Handle("/api/orgs/{org}/projects", m.RequireScopes("projects:write")(http.HandlerFunc(s.handleCreateProject))).
		Methods(http.MethodPost)
	s.deputy.p.Register(r)
}
