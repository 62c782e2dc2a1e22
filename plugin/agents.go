package plugin

import (
	"context"

	"fmt"
	"github.com/ory/fosite"
	"net/http"
	"net/url"
	"time"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// enableAgents builds agent capability tokens and consent: the signing keys
// every replica shares, the minter behind the agent-token grant (also
// callable from Go for first-party agents), and the consent handler that
// turns a user's approval into a grant.
func (p *Plugin) enableAgents(ctx context.Context) error {
	cfg := p.cfg
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{
		Store:        cfg.Store,
		SystemSecret: cfg.SystemSecret,
		Algorithm:    cfg.AgentTokenAlgorithm,
		Logger:       cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("deputy: signing keys: %w", err)
	}
	p.keys = keys
	p.minter = &agenttoken.Minter{
		Keys:      keys,
		Store:     cfg.Store,
		Directory: p.tokenDirectory(),
		Catalog:   p.catalog,
		Issuer:    cfg.Issuer,
		// A token minted from Go without an audience is for the default
		// resource (none: the issuer).
		Audience: p.resources.Default(),
		Lifespan: cfg.AgentTokenLifespan,
		Logger:   cfg.Logger,
		OnMint:   p.metrics.agentMinted.Inc,
	}
	p.metrics.signingKeyAge(keys.ActiveKeyCreatedAt)
	p.consent, err = consent.New(consent.Config{
		Store:         cfg.Store,
		Directory:     cfg.Directory,
		Sessions:      cfg.Sessions,
		Clients:       consentClients{p},
		Catalog:       p.catalog,
		GrantLifespan: cfg.GrantLifespan,
		LoginURL:      cfg.LoginURL,
		UserName:      cfg.UserName,
		PathPrefix:    cfg.MountPath,
		Logger:        cfg.Logger,
		// The clock approvals expire by, also for those made at the
		// authorization endpoint (Plugin.approve).
		Clock:   func() time.Time { return p.now() },
		OnEvent: p.metrics.consentEvent,
	})
	return err
}

// consentClients finds the clients the consent pages name: deputy's, and
// with Config.ClientRegistration.MetadataDocuments the documents'.
type consentClients struct{ p *Plugin }

func (f consentClients) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	if d := f.p.documents; d != nil && d.IsDocumentID(id) {
		return d.Client(ctx, id)
	}
	return f.p.cfg.Store.GetClient(ctx, id)
}

// Keys returns the agent-token signing keys; nil without Config.Agents.
func (p *Plugin) Keys() *agenttoken.Keyring { return p.keys }

// Minter mints agent tokens from Go, for first-party agents; nil without
// Config.Agents.
func (p *Plugin) Minter() *agenttoken.Minter { return p.minter }

// ApprovalURL is the page where the user approves missing scopes for one
// agent session of one agent platform: what a 403 insufficient_scope points
// the agent to.
func (p *Plugin) ApprovalURL(org, client, session string, missing []string) string {
	q := url.Values{"organization": {org}, "client": {client}, "session": {session}, "scope": {scope.Join(missing)}}
	return p.cfg.Issuer + p.cfg.MountPath + ApprovePath + "?" + q.Encode()
}

// Identity is who a token verified by the middleware speaks for.
type Identity = resource.Identity

// IdentityFrom returns the identity the middleware verified for a request.
func IdentityFrom(ctx context.Context) (*Identity, bool) { return resource.IdentityFrom(ctx) }

// Middleware returns the resource-server middleware for this IdP's tokens
// that protects the default resource (Config.DefaultResource; with none,
// it checks no audience, as before resource indicators): see MiddlewareFor.
func (p *Plugin) Middleware(org func(*http.Request) string) *resource.Middleware {
	return p.middleware(p.resources.Default(), org)
}

// MiddlewareFor returns the resource-server middleware that protects
// resourceURI, one of Config.Resources: it accepts only tokens for that
// resource (audience; tokens for no particular resource when its
// AllowNoAudience is set), and serves its RFC 9728 metadata
// (MetadataHandler, to mount at MetadataPath) naming this IdP as the
// authorization server, the scope catalog and offline_access as the scopes,
// which every challenge points to. It verifies agent tokens (with
// Config.Agents) against the shared keys, and stored access tokens, of
// deputy (kit mode) or of the host (plugin mode), with the app and user
// re-checks; its 403s for agent tokens point at ApprovalURL. org names the
// organization a request is for (a path variable, a header); a token for
// another organization is refused.
func (p *Plugin) MiddlewareFor(resourceURI string, org func(*http.Request) string) (*resource.Middleware, error) {
	canonical, err := protocol.CanonicalResource(resourceURI)
	if err != nil {
		return nil, fmt.Errorf("deputy: resource %q: %w", resourceURI, err)
	}
	if !p.resources.Has(canonical) {
		return nil, fmt.Errorf("deputy: resource %q is not one of Config.Resources", resourceURI)
	}
	return p.middleware(canonical, org), nil
}

func (p *Plugin) middleware(resourceURI string, org func(*http.Request) string) *resource.Middleware {
	scopes := []string{}
	for _, e := range p.catalog.Entries() {
		scopes = append(scopes, e.Name)
	}
	m := &resource.Middleware{
		Opaque:   p.AccessTokenVerifier(),
		Org:      org,
		Logger:   p.cfg.Logger,
		OnRefuse: p.metrics.refused,
		Resource: resourceURI,
		Metadata: resource.ProtectedResourceMetadata{
			AuthorizationServers: []string{p.cfg.Issuer},
			ScopesSupported:      scope.Union(scopes, []string{scopeOfflineAccess}),
		},
		// MCP clients ask for exactly the scope a challenge names: with
		// offline_access among them they get a refresh token, and their
		// user does not consent again every hour.
		ChallengeScopes: []string{scopeOfflineAccess},
	}
	if p.keys != nil {
		m.Agent = &agenttoken.AgentVerifier{Keys: p.keys, Issuer: p.cfg.Issuer, Audiences: append([]string{p.cfg.Issuer}, p.resources.List()...)}
		m.ApprovalURL = p.ApprovalURL
	}
	return m
}

// AgentPlatform describes an agent platform: a confidential client allowed
// the agent-token grant, acting for whichever user's token it presents.
type AgentPlatform struct {
	// Name is shown on the approval page ("… asks to write …").
	Name string
	// Scopes the platform may ever put in an agent token.
	Scopes []string
	// Audience the platform may request; empty for none.
	Audience []string
}

// CreateAgentPlatform registers an agent platform (an administrator's act:
// the apps API never grants the agent-token grant) through the apps
// service's administrator path, and returns its client id and its first
// secret, which exists nowhere else from then on. Refusals are
// *apps.FieldError values naming the field.
func (p *Plugin) CreateAgentPlatform(ctx context.Context, ap AgentPlatform) (clientID, secret string, err error) {
	c, secret, err := p.apps.AdminCreate(ctx, apps.AdminInput{Input: apps.Input{
		Name:       ap.Name,
		GrantTypes: []string{GrantTypeAgentToken},
		Scopes:     ap.Scopes,
		Audience:   ap.Audience,
	}})
	if err != nil {
		return "", "", fmt.Errorf("deputy: agent platform: %w", err)
	}
	return c.ID, secret, nil
}
