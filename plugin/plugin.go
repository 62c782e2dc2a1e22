package plugin

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"

	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/scope"
)

// Endpoint paths deputy mounts, relative to the Issuer.
const (
	AuthorizePath     = "/oauth2/auth" // served by the host, see Plugin.Authorize
	TokenPath         = "/oauth2/token"
	IntrospectionPath = "/oauth2/introspect"
	RevocationPath    = "/oauth2/revoke"
	MetadataPath      = "/.well-known/oauth-authorization-server"
	JWKSPath          = "/.well-known/jwks.json"
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

// Plugin is deputy configured for one IdP. Build it with New, compose its
// fosite provider once with Provider, and mount its routes with Register.
type Plugin struct {
	cfg      Config
	catalog  *scope.Catalog
	fosite   *fosite.Config
	strategy *compose.CommonStrategy
	hmac     *flows.HMACStrategy
	usage    *clientsecret.SecretUsage
	verifier *flows.OpaqueVerifier
	limiter  *ratelimit.ClientAuthLimiter

	mu         sync.Mutex
	composed   bool
	provider   fosite.OAuth2Provider
	factories  []compose.Factory
	registrars []func(r *mux.Router)
	grantTypes []string
}

// New validates cfg, fills in its defaults, and builds deputy's fosite
// configuration. Close the plugin when done with it.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	p := &Plugin{cfg: cfg, catalog: scope.NewCatalog(cfg.Scopes...)}

	// The token HMAC key is derived, not SystemSecret itself, so that the
	// same secret can key other things (signing-key encryption) without
	// one use weakening another.
	hmacKey, err := hkdf.Key(sha256.New, cfg.SystemSecret, nil, "deputy oauth2 token hmac v1", 32)
	if err != nil {
		return nil, fmt.Errorf("deputy: derive token key: %w", err)
	}
	p.limiter = ratelimit.NewClientAuthLimiter(cfg.ClientAuthLimit)
	p.usage = clientsecret.NewSecretUsage(cfg.Store, clientsecret.DefaultSecretUsageInterval, cfg.Logger)
	p.fosite = &fosite.Config{
		AccessTokenLifespan:   cfg.AccessTokenLifespan,
		RefreshTokenLifespan:  cfg.RefreshTokenLifespan,
		AuthorizeCodeLifespan: cfg.AuthorizeCodeLifespan,
		GlobalSecret:          hmacKey,
		ClientSecretsHasher:   &clientsecret.SHA256Hasher{OnMatch: p.usage.Used},
		// deputy's scopes ("docs:read") are names, not fosite's dotted
		// hierarchy: "docs" must not grant "docs.anything".
		ScopeStrategy:                  fosite.ExactScopeStrategy,
		AudienceMatchingStrategy:       fosite.DefaultAudienceMatchingStrategy,
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
	// OpenIDConnectTokenStrategy and Signer stay empty until a host adds
	// OpenID Connect factories; the OAuth2 factories need only CoreStrategy.
	p.strategy = &compose.CommonStrategy{CoreStrategy: p.hmac}
	p.verifier = &flows.OpaqueVerifier{Strategy: p.hmac, Storage: cfg.Store, Directory: cfg.Directory}

	p.factories = []compose.Factory{
		flows.AuthorizeCodeGrantFactory,
		flows.RefreshTokenGrantFactory(),
		flows.PKCEFactory,
		flows.OwnedClientCredentialsFactory(cfg.Directory),
		flows.UserCheckingIntrospectionFactory(cfg.Directory),
		compose.OAuth2TokenRevocationFactory,
	}
	p.grantTypes = []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken, GrantTypeClientCredentials, GrantTypeAgentToken}
	p.registrars = []func(*mux.Router){p.registerOAuth2, p.registerApps}

	// Agent tokens and consent need the signing keys, read from the store,
	// so they are added by EnableAgents, which takes a context.
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
	for _, e := range c.Scopes {
		if !protocol.ValidScopeToken(e.Name) {
			bad("Scopes", "%q is not a valid scope name", e.Name)
		}
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

// FositeConfig returns the fosite configuration: the SHA-256 secret hasher,
// the HMAC key, lifespans, PKCE S256 enforced, the token URL. Change it only
// before Provider.
func (p *Plugin) FositeConfig() *fosite.Config { return p.fosite }

// Strategy is what Provider composes the factories with: deputy's prefixed
// HMAC strategy as CoreStrategy. Fill in its OpenID Connect strategy and
// Signer before Provider to add OpenID Connect factories.
func (p *Plugin) Strategy() *compose.CommonStrategy { return p.strategy }

// HMACStrategy returns the dpy_at_/dpy_rt_/dpy_ac_ token strategy.
func (p *Plugin) HMACStrategy() *flows.HMACStrategy { return p.hmac }

// AccessTokenVerifier verifies dpy_at_ tokens for the resource middleware
// (and for the agent-token grant's subject_token): stored lookup, expiry,
// and the re-check of the user's current scopes.
func (p *Plugin) AccessTokenVerifier() *flows.OpaqueVerifier { return p.verifier }

// AddFactories adds token-endpoint, introspection or revocation factories
// (the agent-token grant) to those Provider composes. It fails once
// Provider has composed.
func (p *Plugin) AddFactories(f ...compose.Factory) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.composed {
		return errors.New("deputy: AddFactories after Provider")
	}
	p.factories = append(p.factories, f...)
	return nil
}

// AddRoutes adds route registrars that Register calls after deputy's own
// (the consent pages and API, JWKS).
func (p *Plugin) AddRoutes(fn ...func(r *mux.Router)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.registrars = append(p.registrars, fn...)
}

// AddGrantTypes adds grant types to those the metadata document lists.
func (p *Plugin) AddGrantTypes(gt ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range gt {
		if !scope.Contains(p.grantTypes, g) {
			p.grantTypes = append(p.grantTypes, g)
		}
	}
}

// Factories returns the factories Provider composes: authorization code,
// refresh (re-checking the user, rotation races answered as reuse), PKCE,
// owned client credentials, user-checking introspection, revocation, then
// whatever AddFactories added. A host composing its own provider uses these
// in place of fosite's authorization-code, refresh, PKCE, client-credentials
// and introspection factories.
func (p *Plugin) Factories() []compose.Factory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]compose.Factory(nil), p.factories...)
}

// Provider returns the fosite provider, composing it on first use.
func (p *Plugin) Provider() fosite.OAuth2Provider {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.composed {
		p.provider = compose.Compose(p.fosite, p.cfg.Store, p.strategy, p.factories...)
		p.composed = true
	}
	return p.provider
}

// NewSession returns the fosite session deputy's stored tokens carry. A host
// that serves the authorize endpoint itself must hand fosite this type.
func (p *Plugin) NewSession(subject, org string) *flows.Session {
	return flows.NewSession(subject, org)
}

// Register mounts deputy's routes on r: the token, introspection and
// revocation endpoints, the RFC 8414 metadata, the apps API, then every
// AddRoutes registrar.
func (p *Plugin) Register(r *mux.Router) {
	p.Provider()
	p.mu.Lock()
	regs := make([]func(*mux.Router), len(p.registrars))
	copy(regs, p.registrars)
	p.mu.Unlock()
	for _, reg := range regs {
		reg(r)
	}
}

// Close stops the background writer of secrets' last-used times, flushing
// what it holds. The Store stays open: the host owns it.
func (p *Plugin) Close() error {
	p.usage.Close()
	return nil
}
