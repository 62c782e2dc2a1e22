package main

import (
	"context"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/plugin"
)

// deputy is what the host composed from the plugin and its parts.
type deputy struct {
	p *plugin.Plugin
	// resource guards the sample API, mcp the MCP server: each accepts only
	// tokens for itself (RFC 8707).
	resource *resource.Middleware
	mcp      *resource.Middleware
}

// APIResourcePath is the sample API's resource (RFC 8707), below the
// issuer: tokens for it are good at /api/…, and nowhere else.
const APIResourcePath = "/api"

// defaultUserScopesCacheTTL is config.UserScopesCacheTTL's default.
const defaultUserScopesCacheTTL = time.Minute

// userScopesCacheTTL is plugin.Config's value for config's: 0 there is off.
func userScopesCacheTTL(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return defaultUserScopesCacheTTL
	case d < 0:
		return 0
	}
	return d
}

// compose builds the plugin (kit mode: deputy's store is the fosite
// storage, deputy composes the provider) around the host's Directory and
// sessions, with agent tokens and consent, and makes the resource
// middleware for the sample API and the MCP server. Both are resources
// (RFC 8707): a client names the one it wants (MCP clients always do), and
// one that names none gets the sample API.
func (s *server) compose(ctx context.Context, closers *[]func()) error {
	p, err := plugin.New(ctx, plugin.Config{
		Store:          s.st,
		Directory:      s.dir,
		Sessions:       s.sessions,
		IsAdmin:        s.users.isAdmin,
		UserName:       s.users.userName,
		SystemSecret:   s.cfg.SystemSecret,
		Issuer:         s.issuer,
		Scopes:         scopeCatalog,
		LoginURL:       "/login",
		Agents:         true,
		GrantLifespan:  s.cfg.GrantLifespan,
		ClientCacheTTL: s.cfg.ClientCacheTTL,
		// Every change to a user moves their revision on (users.go).
		UserScopesCacheTTL: userScopesCacheTTL(s.cfg.UserScopesCacheTTL),
		// MCP clients connect without setup: they register (RFC 7591) or
		// name their metadata document as their client_id.
		ClientRegistration: plugin.ClientRegistration{
			Dynamic:                !s.cfg.NoClientRegistration,
			MetadataDocuments:      !s.cfg.NoClientRegistration,
			AllowLoopbackDocuments: s.cfg.LoopbackMetadataDocuments,
		},
		// The sample API and the MCP server are resources (RFC 8707).
		Resources:       []string{s.issuer + APIResourcePath, s.issuer + MCPPath},
		DefaultResource: s.issuer + APIResourcePath,
		Logger:          s.log,
	})
	if err != nil {
		return err
	}
	*closers = append(*closers, func() { p.Close() })
	org := func(r *http.Request) string { return mux.Vars(r)["org"] }
	api, err := p.MiddlewareFor(s.issuer+APIResourcePath, org)
	if err != nil {
		return err
	}
	mcp, err := p.MiddlewareFor(s.issuer+MCPPath, org)
	if err != nil {
		return err
	}
	api.Metadata.ResourceName = "deputy demo: projects API"
	mcp.Metadata.ResourceName = "deputy demo: projects MCP server"
	s.deputy = &deputy{p: p, resource: api, mcp: mcp}
	return nil
}

// apiRoutes mounts deputy's endpoints, pages and APIs, and the sample
// protected API behind the resource middleware.
func (s *server) apiRoutes(r *mux.Router) {
	oauth2 := s.deputy.p.OAuth2Handler()
	for _, path := range []string{plugin.TokenPath, plugin.IntrospectionPath, plugin.RevocationPath, plugin.MetadataPath} {
		r.Handle(path, oauth2)
	}
	own := s.deputy.p.Handler()
	for _, prefix := range []string{"/api/apps", "/api/authorized-apps", "/agent/", plugin.JWKSPath, plugin.RegistrationPath} {
		r.PathPrefix(prefix).Handler(own)
	}
	m := s.deputy.resource
	r.Handle("/api/orgs/{org}/projects", m.RequireScopes("projects:read")(http.HandlerFunc(s.handleListProjects))).
		Methods(http.MethodGet, http.MethodHead)
	r.Handle("/api/orgs/{org}/projects", m.RequireScopes("projects:write")(http.HandlerFunc(s.handleCreateProject))).
		Methods(http.MethodPost)
	// The MCP server: the same projects, as tools (mcp.go).
	r.Handle(MCPPath, s.mcpHandler())
	// Each resource's RFC 9728 metadata, where its challenges point:
	// /.well-known/oauth-protected-resource/api and …/mcp.
	for _, m := range []*resource.Middleware{s.deputy.resource, s.deputy.mcp} {
		r.Handle(m.MetadataPath(), m.MetadataHandler()).Methods(http.MethodGet, http.MethodHead, http.MethodOptions)
	}
}
