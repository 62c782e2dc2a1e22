package plugin

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/handlers/registration"
	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// Endpoint paths deputy serves. The OAuth2 paths are kit mode's
// (OAuth2Handler), relative to the Issuer; the others are relative to where
// the host mounts Handler (Config.MountPath).
const (
	AuthorizePath     = "/oauth2/auth" // served by the host, see Plugin.Authorize
	TokenPath         = "/oauth2/token"
	IntrospectionPath = "/oauth2/introspect"
	RevocationPath    = "/oauth2/revoke"
	MetadataPath      = "/.well-known/oauth-authorization-server"
	JWKSPath          = "/.well-known/jwks.json"
	ApprovePath       = "/agent/approve"
)

// Grant types deputy speaks.
const (
	GrantTypeAuthorizationCode = protocol.GrantTypeAuthorizationCode
	GrantTypeRefreshToken      = protocol.GrantTypeRefreshToken
	GrantTypeClientCredentials = protocol.GrantTypeClientCredentials
	GrantTypeAgentToken        = protocol.GrantTypeAgentToken
)

// MinSystemSecretLength is the shortest SystemSecret New accepts.
const MinSystemSecretLength = 32

// Plugin is deputy configured for one IdP, built once by New.
//
// In plugin mode the host keeps its provider: it wraps its storage with
// WrapStorage, its hasher with SecretsHasher, its factories with
// HostClientsOnly, adds Factories to its compose.Compose, narrows its
// authorizations with GrantScopes, puts its token endpoint behind
// TokenEndpointGuard, and mounts Handler. In kit mode deputy's store is
// also the fosite storage: Provider composes deputy's own provider and
// OAuth2Handler serves its endpoints.
type Plugin struct {
	cfg      Config
	catalog  *scope.Catalog
	fosite   *fosite.Config
	hmac     *flows.HMACStrategy
	usage    *clientsecret.SecretUsage
	hasher   *clientsecret.SHA256Hasher
	limiter  *ratelimit.ClientAuthLimiter
	sessions flows.SessionCodec
	apps     *apps.Service

	// Clients that register themselves, when Config.ClientRegistration
	// turns them on: the RFC 7591/7592 endpoint and metadata documents.
	registrationPolicy registration.Policy
	registration       *registration.Handler
	documents          *registration.Documents
	// resources are Config.Resources (RFC 8707).
	resources *flows.Resources

	// Agent tokens and consent, when Config.Agents is set.
	keys    *agenttoken.Keyring
	minter  *agenttoken.Minter
	consent *consent.Handler

	// bound is what the provider deputy's factories were composed into
	// uses to store and sign tokens: deputy's own in kit mode, the host's
	// in plugin mode. The resource middleware verifies tokens with it.
	bound atomic.Pointer[binding]

	kitOnce  sync.Once
	provider fosite.OAuth2Provider
	// clients is kit mode's token-endpoint client cache (ClientCacheTTL).
	clients *clientCache

	// now is the clock approvals are made and expire by; tests move it.
	now func() time.Time

	metrics *metrics // Collectors (metrics.go)
}

// tokenDirectory is the Directory of the grants kit mode's token endpoint
// may answer from memory (client_credentials, the agent-token grant): the
// user-scope cache when it is on (Config.UserScopesCacheTTL), which asks
// the Directory itself everywhere else.
func (p *Plugin) tokenDirectory() scope.Directory {
	if p.clients != nil && p.clients.users != nil {
		return p.clients.users
	}
	return p.cfg.Directory
}

// binding is a composed provider's token strategy and storage.
type binding struct {
	verifier *flows.OpaqueVerifier
}

// New validates cfg, fills in its defaults, and builds deputy: its fosite
// configuration, and with Config.Agents the signing keys (read from, or
// created in, the store), the minter and the consent handler. Close the
// plugin when done with it.
func New(ctx context.Context, cfg Config) (*Plugin, error) {
	err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Plugin{cfg: cfg, catalog: scope.NewCatalog(cfg.Scopes...), now: time.Now}
	// Clients are kept in memory only over a store that checks the pins
	// which keep those copies honest (storage.ClientPinChecker).
	if pc, ok := cfg.Store.(storage.ClientPinChecker); ok && pc.ChecksClientPins() {
		p.clients = newClientCache(cfg.ClientCacheTTL)
	}
	// And users' scopes only over a client cache (their pins ride on the
	// client's) and a store that keeps user revisions.
	if revs, ok := cfg.Store.(storage.UserRevisions); ok && revs.ChecksUserPins() && p.clients != nil {
		p.clients.users = newUserScopesCache(cfg.Directory, revs, cfg.UserScopesCacheTTL)
	}
	// withDefaults has checked and canonicalized them.
	if p.resources, err = flows.NewResources(cfg.Resources, cfg.DefaultResource); err != nil {
		return nil, fmt.Errorf("deputy: invalid config: %w", err)
	}
	p.sessions = flows.SessionCodec{New: cfg.NewSession, Identity: cfg.SessionIdentity}
	p.apps = apps.New(apps.Config{Store: cfg.Store, Catalog: p.catalog, IsAdmin: cfg.IsAdmin})

	// The token HMAC key is derived, not SystemSecret itself, so that the
	// same secret can key other things (signing-key encryption) without
	// one use weakening another.
	hmacKey, err := hkdf.Key(sha256.New, cfg.SystemSecret, nil, "deputy oauth2 token hmac v1", 32)
	if err != nil {
		return nil, fmt.Errorf("deputy: derive token key: %w", err)
	}
	p.metrics = newMetrics(cfg.Store)
	p.limiter = ratelimit.NewClientAuthLimiter(cfg.ClientAuthLimit)
	p.limiter.OnRefuse = p.metrics.clientAuthLimited.Inc
	p.usage = clientsecret.NewSecretUsage(cfg.Store, clientsecret.DefaultSecretUsageInterval, cfg.Logger)
	p.hasher = &clientsecret.SHA256Hasher{OnMatch: p.usage.Used}
	p.fosite = &fosite.Config{
		AccessTokenLifespan:   cfg.AccessTokenLifespan,
		RefreshTokenLifespan:  cfg.RefreshTokenLifespan,
		AuthorizeCodeLifespan: cfg.AuthorizeCodeLifespan,
		GlobalSecret:          hmacKey,
		ClientSecretsHasher:   p.hasher,
		// deputy's scopes ("docs:read") are names, not fosite's dotted
		// hierarchy: "docs" must not grant "docs.anything".
		ScopeStrategy: fosite.ExactScopeStrategy,
		// Every client may ask for the configured resources (RFC 8707);
		// other audiences only from the client's own list.
		AudienceMatchingStrategy:       p.resources.AudienceStrategy(fosite.DefaultAudienceMatchingStrategy),
		EnforcePKCE:                    true,
		EnforcePKCEForPublicClients:    true,
		EnablePKCEPlainChallengeMethod: false,
		TokenURL:                       cfg.Issuer + TokenPath,
		AccessTokenIssuer:              cfg.Issuer,
		IDTokenIssuer:                  cfg.Issuer,
		SendDebugMessagesToClients:     false,
		TokenEntropy:                   32,
	}
	p.hmac = flows.NewHMACStrategy(p.fosite)

	if err := p.enableRegistration(); err != nil {
		p.usage.Close()
		return nil, err
	}
	if cfg.Agents {
		if err := p.enableAgents(ctx); err != nil {
			p.usage.Close()
			return nil, err
		}
	}
	return p, nil
}

// withDefaults validates c and fills in every unset field.
func (c *Config) withDefaults() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Store == nil {
		bad("Store", "required")
	}
	if c.Directory == nil {
		bad("Directory", "required")
	}
	if c.Sessions == nil {
		bad("Sessions", "required")
	}
	if len(c.SystemSecret) < MinSystemSecretLength {
		bad("SystemSecret", "at least %d bytes, got %d", MinSystemSecretLength, len(c.SystemSecret))
	}
	if c.IsAdmin == nil {
		c.IsAdmin = func(context.Context, string) bool { return false }
	}
	if c.Issuer == "" {
		c.Issuer = DefaultIssuer
	}
	c.Issuer = strings.TrimRight(c.Issuer, "/")
	if !protocol.ValidIssuer(c.Issuer) {
		bad("Issuer", "%q must be an absolute http(s) URL without query or fragment", c.Issuer)
	}
	c.MountPath = strings.TrimRight(c.MountPath, "/")
	if c.MountPath != "" && (!strings.HasPrefix(c.MountPath, "/") || strings.ContainsAny(c.MountPath, "?#") || strings.Contains(c.MountPath, "//")) {
		bad("MountPath", "%q must be a path starting with /", c.MountPath)
	}
	for _, e := range c.Scopes {
		if !protocol.ValidScopeToken(e.Name) {
			bad("Scopes", "%q is not a valid scope name", e.Name)
		}
	}
	c.Resources = slices.Clone(c.Resources) // the caller's stays as it was
	for i, raw := range c.Resources {
		canonical, err := protocol.CanonicalResource(raw)
		if err != nil {
			bad("Resources", "%q: %v (want %s)", raw, err, protocol.ResourceRule)
			continue
		}
		c.Resources[i] = canonical
	}
	if c.DefaultResource != "" {
		canonical, err := protocol.CanonicalResource(c.DefaultResource)
		switch {
		case err != nil:
			bad("DefaultResource", "%q: %v", c.DefaultResource, err)
		case !slices.Contains(c.Resources, canonical):
			bad("DefaultResource", "%q is not one of Resources", c.DefaultResource)
		default:
			c.DefaultResource = canonical
		}
	} else if len(c.Resources) == 1 {
		c.DefaultResource = c.Resources[0]
	}
	if c.LoginURL == "" {
		c.LoginURL = DefaultLoginURL
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"AccessTokenLifespan", &c.AccessTokenLifespan, DefaultAccessTokenLifespan},
		{"RefreshTokenLifespan", &c.RefreshTokenLifespan, DefaultRefreshTokenLifespan},
		{"AuthorizeCodeLifespan", &c.AuthorizeCodeLifespan, DefaultAuthorizeCodeLifespan},
		{"AgentTokenLifespan", &c.AgentTokenLifespan, DefaultAgentTokenLifespan},
		{"GrantLifespan", &c.GrantLifespan, DefaultGrantLifespan},
	}
	for _, d := range durations {
		switch {
		case *d.d < 0:
			bad(d.name, "must not be negative")
		case *d.d == 0:
			*d.d = d.def
		}
	}
	if c.AgentTokenLifespan > MaxAgentTokenLifespan {
		bad("AgentTokenLifespan", "at most %s", MaxAgentTokenLifespan)
	}
	switch c.AgentTokenAlgorithm {
	case "":
		c.AgentTokenAlgorithm = DefaultAgentTokenAlgorithm
	case "EdDSA", "ES256":
	default:
		bad("AgentTokenAlgorithm", "%q: want EdDSA or ES256", c.AgentTokenAlgorithm)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deputy: invalid config: %w", err)
	}
	return nil
}

// Config returns the configuration with its defaults filled in.
func (p *Plugin) Config() Config { return p.cfg }

// Catalog returns the scope catalog built from Config.Scopes.
func (p *Plugin) Catalog() *scope.Catalog { return p.catalog }

// Apps returns the apps service behind the apps API, with the plugin's
// catalog and Config.IsAdmin: for a host's own pages or tools to create and
// manage apps by the same rules, and for an administrator's path
// (AdminCreate) the API never offers.
func (p *Plugin) Apps() *apps.Service { return p.apps }

// appTokens re-checks tokens of deputy's apps against deputy's store.
// storedClientIsLive: the tokens are in deputy's own store (kit mode).
func (p *Plugin) appTokens(storedClientIsLive bool) flows.AppTokens {
	return flows.AppTokens{Apps: p.cfg.Store, StoredClientIsLive: storedClientIsLive}
}

// approvals re-checks the write scopes of agent clients' tokens against
// the user's approvals (agent grants in deputy's store).
func (p *Plugin) approvals() flows.Approvals {
	return flows.Approvals{Grants: p.cfg.Store, Catalog: p.catalog, Now: func() time.Time { return p.now() }}
}

// bind is a factory that composes nothing: it records the strategy and
// storage of the provider it is composed into, for the resource middleware.
func (p *Plugin) bind(kit bool) compose.Factory {
	return func(cfg fosite.Configurator, storage, strategy any) any {
		// The first provider composed wins: a kit provider composed later
		// in plugin mode must not take the host's tokens from the
		// middleware.
		p.checkAudienceStrategy(cfg)
		p.bound.CompareAndSwap(nil, &binding{verifier: &flows.OpaqueVerifier{
			Strategy:  strategy.(oauth2.AccessTokenStrategy),
			Storage:   storage.(oauth2.AccessTokenStorage),
			Directory: p.cfg.Directory,
			Sessions:  p.sessions,
			Apps:      p.appTokens(kit),
			Approvals: p.approvals(),
		}})
		return nil
	}
}

// Factories returns deputy's factories for a host's compose.Compose (plugin
// mode), to list after the host's own (wrapped by HostClientsOnly): the
// owned apps' client_credentials, the agent-token grant (with
// Config.Agents), the introspection re-check of deputy's apps' and agent
// clients' tokens, the narrowing of agent clients' refreshes to their
// approvals (after the host's refresh handler), and RFC 8707 resource
// indicators at the token endpoint (the host's fosite.Config must use
// AudienceStrategy).
// The strategy must be an oauth2.CoreStrategy and the storage the host's,
// wrapped by WrapStorage.
func (p *Plugin) Factories() []compose.Factory {
	fs := []compose.Factory{
		flows.OwnedClientCredentialsFactory(p.cfg.Directory, true),
		flows.UserCheckingIntrospectionFactory(p.cfg.Directory, p.sessions, p.appTokens(false), p.approvals(), true),
		flows.RefreshApprovalFactory(p.approvals(), p.sessions),
	}
	if p.minter != nil {
		fs = append(fs, flows.AgentTokenGrantFactory(p.minter, p.sessions, p.appTokens(false), p.resources))
	}
	if p.registration != nil {
		// A dynamic registration's first token makes it permanent. (A
		// metadata document's client has no row to mark in plugin mode.)
		fs = append(fs, flows.RegistrationUsageFactory(p.cfg.Store))
	}
	// After every grant's handler, the host's included: it adjusts the
	// audience they granted.
	fs = append(fs, flows.ResourceIndicatorFactory(p.resources))
	return append(fs, p.bind(false))
}

// kitFactories is what Provider composes: authorization code, refresh
// (re-checking the user, rotation races answered as reuse, agent clients
// narrowed to their approvals), PKCE, owned
// client credentials, user-checking introspection, revocation,
// and the agent-token grant with Config.Agents.
func (p *Plugin) kitFactories() []compose.Factory {
	var fs []compose.Factory
	if p.registration != nil || p.documents != nil {
		// Before the code grant, so that a registration that cannot be
		// marked used gets no token (it would be swept).
		fs = append(fs, flows.RegistrationUsageFactory(p.cfg.Store))
	}
	fs = append(fs,
		flows.AuthorizeCodeGrantFactory,
		flows.RefreshTokenGrantFactory(p.cfg.Directory),
		flows.RefreshApprovalFactory(p.approvals(), p.sessions),
		flows.PKCEFactory,
		flows.OwnedClientCredentialsFactory(p.tokenDirectory(), false),
		flows.UserCheckingIntrospectionFactory(p.cfg.Directory, p.sessions, p.appTokens(true), p.approvals(), false),
		compose.OAuth2TokenRevocationFactory,
	)
	if p.minter != nil {
		fs = append(fs, flows.AgentTokenGrantFactory(p.minter, p.sessions, p.appTokens(true), p.resources))
	}
	fs = append(fs, flows.ResourceIndicatorFactory(p.resources))
	return append(fs, p.bind(true))
}

// grantTypes lists the grants the kit provider speaks.
func (p *Plugin) grantTypes() []string {
	gts := []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken, GrantTypeClientCredentials}
	if p.minter != nil {
		gts = append(gts, GrantTypeAgentToken)
	}
	return gts
}

// Provider returns deputy's own fosite provider (kit mode), composing it on
// first use over deputy's store with the dpy_ token strategy, with deputy's
// authorization-endpoint rules (WrapProvider).
func (p *Plugin) Provider() fosite.OAuth2Provider {
	p.kitOnce.Do(func() {
		p.provider = p.WrapProvider(compose.Compose(p.fosite, kitStorage{Backend: p.cfg.Store, p: p}, &compose.CommonStrategy{CoreStrategy: p.hmac}, p.kitFactories()...))
	})
	return p.provider
}

// FositeConfig returns kit mode's fosite configuration: the SHA-256 secret
// hasher, the HMAC key, lifespans, PKCE S256 enforced, the token URL.
// Change it only before Provider.
func (p *Plugin) FositeConfig() *fosite.Config { return p.fosite }

// HMACStrategy returns kit mode's dpy_at_/dpy_rt_/dpy_ac_ token strategy.
func (p *Plugin) HMACStrategy() *flows.HMACStrategy { return p.hmac }

// NewSession returns the fosite session deputy's own tokens carry (kit
// mode). A host that serves the authorize endpoint itself must hand fosite
// this type.
func (p *Plugin) NewSession(subject, org string) *flows.Session {
	return flows.NewSession(subject, org)
}

// AccessTokenVerifier verifies stored access tokens for the resource
// middleware (and for the agent-token grant's subject_token), with the
// strategy and storage of the provider deputy was composed into: lookup,
// expiry, the app re-check and the user re-check. Before any provider is
// composed every token is refused.
func (p *Plugin) AccessTokenVerifier() resource.AccessTokenVerifier { return boundVerifier{p} }

type boundVerifier struct{ p *Plugin }

var errNotComposed = errors.New("deputy: no provider has been composed with deputy's factories yet")

func (v boundVerifier) VerifyAccessToken(ctx context.Context, token, org string) (*resource.Identity, error) {
	b := v.p.bound.Load()
	if b == nil {
		// Nothing composed yet: deputy's own provider (kit mode).
		v.p.Provider()
		if b = v.p.bound.Load(); b == nil {
			return nil, errNotComposed
		}
	}
	return b.verifier.VerifyAccessToken(ctx, token, org)
}

// Close stops the background writer of secrets' last-used times, flushing
// what it holds. The Store stays open: the host owns it.
func (p *Plugin) Close() error {
	p.usage.Close()
	if p.documents != nil {
		p.documents.Close()
	}
	return nil
}

// Ready reports whether deputy can serve requests now: nil when its
// database answers, an error wrapping storage.ErrUnavailable when it does
// not. A host's readiness endpoint calls it (deputy-idp's /readyz does);
// a liveness check must not, or an outage of the database would restart
// every replica. Give ctx a deadline.
func (p *Plugin) Ready(ctx context.Context) error { return p.cfg.Store.Ping(ctx) }
