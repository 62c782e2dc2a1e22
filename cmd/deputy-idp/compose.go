package main

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/plugin"
)

// deputy is what the host composed from the plugin and its parts.
type deputy struct {
	p        *plugin.Plugin
	keys     *agenttoken.Keyring
	resource *resource.Middleware
}

// compose builds the plugin around the host's Directory and sessions,
// enables agent tokens and consent, and makes the resource middleware for
// the sample API.
func (s *server) compose(ctx context.Context, closers *[]func()) error {
	p, err := plugin.New(plugin.Config{
		Store:        s.st,
		Directory:    s.dir,
		Sessions:     s.sessions,
		IsAdmin:      s.users.isAdmin,
		UserName:     s.users.userName,
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

	agents, err := p.EnableAgents(ctx)
	if err != nil {
		return err
	}
	s.deputy = &deputy{
		p:        p,
		keys:     agents.Keys,
		resource: agents.Middleware(func(r *http.Request) string { return mux.Vars(r)["org"] }),
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
