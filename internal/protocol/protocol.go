// Package protocol is the one owner of deputy's input rules and wire
// constants: what an organization id, an agent session id, a scope token, a
// redirect URI and an issuer may be; the grant types, token types, request
// parameters and token prefixes; and the defaults several packages share.
// The token endpoint, the consent handler, the apps API, the plugin's
// configuration and the demo IdP's CLI all ask this package, so an input one
// of them accepts is never one another refuses (consent cannot store a grant
// that the agent grant can never mint). Where earlier copies disagreed, the
// token endpoint's stricter rule was kept.
//
// The package is internal: hosts reach the constants through the plugin
// package, which re-exports the ones they need.
package protocol

import "time"

// Prefixes of deputy's opaque tokens and secrets. They tell a reader (and a
// secret scanner) what a string is, and let the middleware route a token
// without parsing it.
const (
	AccessTokenPrefix   = "dpy_at_"
	RefreshTokenPrefix  = "dpy_rt_"
	AuthorizeCodePrefix = "dpy_ac_"
	// AgentTokenPrefix marks an agent capability token (a JWT after it).
	AgentTokenPrefix = "dpy_agt_"
	// ClientSecretPrefix marks a client secret.
	ClientSecretPrefix = "dpy_cs_"
	// RegistrationTokenPrefix marks an RFC 7592 registration access token.
	RegistrationTokenPrefix = "dpy_rat_"
)

// Token endpoint authentication methods (RFC 7591 §2).
const (
	TokenAuthNone  = "none"
	TokenAuthBasic = "client_secret_basic"
	TokenAuthPost  = "client_secret_post"
)

// Grant types deputy speaks.
const (
	GrantTypeAuthorizationCode = "authorization_code"
	GrantTypeRefreshToken      = "refresh_token"
	GrantTypeClientCredentials = "client_credentials"
	// GrantTypeAgentToken is deputy's agent-token grant, shaped like RFC
	// 8693 token exchange.
	GrantTypeAgentToken = "urn:deputy:params:oauth:grant-type:agent-token"
)

// TokenTypeAccessToken is the RFC 8693 token type the agent-token grant
// takes as subject_token_type and answers as issued_token_type.
const TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"

// Token request parameters of deputy's grants.
const (
	// ParamOrganization binds a token to an organization: required by the
	// agent-token grant, optional for client_credentials.
	ParamOrganization     = "organization"
	ParamAgentSessionID   = "agent_session_id"
	ParamSubjectToken     = "subject_token"
	ParamSubjectTokenType = "subject_token_type"
)

// Defaults and bounds several packages share.
const (
	// DefaultAgentTokenLifespan is how long an agent token lives unless
	// configured otherwise; MaxAgentTokenLifespan bounds any configuration
	// (the signing-key rotation schedule relies on it).
	DefaultAgentTokenLifespan = 5 * time.Minute
	MaxAgentTokenLifespan     = time.Hour
	// DefaultGrantLifespan is how long a user's approval lasts.
	DefaultGrantLifespan = time.Hour
	// DefaultLoginURL is where a visitor without a session is sent.
	DefaultLoginURL = "/login"
)

// ProtocolScopes are OAuth2/OpenID Connect scopes that ask for a protocol
// feature (an ID token, a refresh token) rather than for authority a user
// holds, so a Directory is not asked about them.
var ProtocolScopes = []string{"openid", "offline", "offline_access"}

// SecretIDFormKey is the key, in a stored token request's form, of the id of
// the app secret that obtained the token: deputy's client-credentials
// handler writes it, and a token whose secret was deleted is dead.
const SecretIDFormKey = "deputy_secret_id"

// RetryAfterUnavailable is the Retry-After, in seconds, of every 503 deputy
// answers while its database cannot be reached: the OAuth endpoints, the
// APIs and the resource middleware say the same.
const RetryAfterUnavailable = "5"
