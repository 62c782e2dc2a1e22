package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/scope"
)

// ApprovePath is where the consent routes serve the approval page and API.
const ApprovePath = "/agent/approve"

// Agents is the agent half of deputy, composed into a Plugin by
// EnableAgents: the signing keys every replica shares, the minter behind the
// agent-token grant (also callable from Go for first-party agents), and the
// consent routes that turn a user's approval into a grant.
type Agents struct {
	Keys    *agenttoken.Keyring
	Minter  *agenttoken.Minter
	Consent *consent.Handler

	p *Plugin
}

// EnableAgents adds agent capability tokens and consent to p: it loads (or
// creates) the signing keys from the store, composes the agent-token grant,
// lists it in the metadata, and mounts JWKSPath and the consent routes with
// the plugin's others. It uses Config's AgentTokenAlgorithm,
// AgentTokenLifespan, GrantLifespan and LoginURL. Call it once, before
// Provider and Register.
func (p *Plugin) EnableAgents(ctx context.Context) (*Agents, error) {
	cfg := p.cfg
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{
		Store:        cfg.Store,
		SystemSecret: cfg.SystemSecret,
		Algorithm:    cfg.AgentTokenAlgorithm,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("deputy: signing keys: %w", err)
	}
	minter := &agenttoken.Minter{
		Keys:      keys,
		Store:     cfg.Store,
		Directory: cfg.Directory,
		Catalog:   p.catalog,
		Issuer:    cfg.Issuer,
		Lifespan:  cfg.AgentTokenLifespan,
		Logger:    cfg.Logger,
	}
	approvals, err := consent.New(consent.Config{
		Store:         cfg.Store,
		Directory:     cfg.Directory,
		Sessions:      cfg.Sessions,
		Catalog:       p.catalog,
		GrantLifespan: cfg.GrantLifespan,
		LoginURL:      cfg.LoginURL,
		UserName:      cfg.UserName,
		Logger:        cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	newSession := func() fosite.Session { return flows.NewSession("", "") }
	if err := p.AddFactories(flows.AgentTokenGrantFactory(minter, newSession)); err != nil {
		return nil, err
	}
	p.AddGrantTypes(GrantTypeAgentToken)
	jwks := agenttoken.NewJWKSHandler(keys)
	p.AddRoutes(
		func(r *mux.Router) { r.Handle(JWKSPath, jwks).Methods(http.MethodGet, http.MethodHead) },
		func(r *mux.Router) { r.PathPrefix("/agent/").Handler(approvals) },
	)
	return &Agents{Keys: keys, Minter: minter, Consent: approvals, p: p}, nil
}

// ApprovalURL is the page where the user approves missing scopes for an
// agent session of the agent platform client: what a 403
// insufficient_scope points the agent to. The approval it leads to is
// bound to (organization, user, client, session).
func (a *Agents) ApprovalURL(org, client, session string, missing []string) string {
	q := url.Values{"organization": {org}, "client": {client}, "session": {session}, "scope": {scope.Join(missing)}}
	return a.p.cfg.Issuer + ApprovePath + "?" + q.Encode()
}

// Middleware returns the resource-server middleware for this IdP's tokens:
// agent tokens verified against the shared keys, opaque access tokens looked
// up with the owner re-check, 403s pointing at ApprovalURL. org names the
// organization a request is for (a path variable, a header); a token for
// another organization is refused.
func (a *Agents) Middleware(org func(*http.Request) string) *resource.Middleware {
	return &resource.Middleware{
		Agent:       &agenttoken.AgentVerifier{Keys: a.Keys, Issuer: a.p.cfg.Issuer},
		Opaque:      a.p.verifier,
		Org:         org,
		ApprovalURL: a.ApprovalURL,
		Logger:      a.p.cfg.Logger,
	}
}
