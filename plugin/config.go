// Package plugin is deputy's public face: plugin.New(Config) returns the fosite
// factories to compose and mounts deputy's HTTP routes.
package plugin

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// Directory is the host's source of truth about user authority.
type Directory = scope.Directory

// SessionAuthenticator resolves a first-party browser session to a user.
type SessionAuthenticator = consent.SessionAuthenticator

// ScopeEntry describes one scope of the catalog.
type ScopeEntry = scope.Entry

// Errors a Directory returns when a user can no longer act.
var (
	ErrUserNotFound = scope.ErrUserNotFound
	ErrUserDisabled = scope.ErrUserDisabled
	ErrNoSession    = consent.ErrNoSession
)

// Config is everything the host tells deputy. Store, Directory, Sessions and
// SystemSecret are required; every other field has a default that works.
type Config struct {
	// Store is deputy's database, opened and migrated by the host: deputy's
	// own tables (apps, secrets, grants, signing keys, audit), and in kit
	// mode the fosite storage too.
	// *storage.Store (storage.Open) is one.
	Store storage.Backend
	// Directory answers which scopes a user holds today.
	Directory Directory
	// Sessions resolves the first-party browser session.
	Sessions SessionAuthenticator
	// IsAdmin reports whether userID may manage every user's apps.
	// Default: nobody is.
	IsAdmin func(ctx context.Context, userID string) bool
	// UserName is what deputy's pages call a user ("Signed in as …").
	// Default: the user id.
	UserName func(ctx context.Context, userID string) string

	// SystemSecret keys fosite's token HMAC and encrypts signing keys at
	// rest. At least 32 bytes; every replica must share it.
	SystemSecret []byte
	// Issuer is the IdP's public base URL, e.g. https://idp.example.com.
	// Default: http://127.0.0.1:8080.
	Issuer string
	// MountPath is where the host mounts Handler, below the Issuer, e.g.
	// "/deputy" with http.StripPrefix("/deputy", p.Handler()). deputy
	// builds its own links (approval URL, JWKS URI, pages) with it.
	// Default: "" (the root).
	MountPath string

	// Resources are the protected resources (RFC 8707) this IdP issues
	// tokens for, by URI: an API, an MCP server
	// ("https://mcp.example.com/mcp"). A client names the one it wants
	// with the resource parameter at the authorization and token
	// endpoints; the token's audience is then that resource (the granted
	// audience of opaque tokens, aud in introspection; aud of agent
	// tokens), and the resource middleware for it (MiddlewareFor) refuses
	// tokens for any other. A resource not listed here is invalid_target.
	// URIs are compared in canonical form: scheme and host lower-case, no
	// default port, no trailing slash; no fragment. Default: none (every
	// resource parameter is invalid_target; tokens carry no audience).
	Resources []string
	// DefaultResource is the resource a request that names none gets.
	// Default: the only one of Resources when there is exactly one; with
	// several, none (such tokens carry no audience).
	DefaultResource string

	// Agents enables agent capability tokens and consent: the signing keys
	// (loaded or created by New), the agent-token grant, JWKS and the
	// approval pages and API in Handler. Default: off.
	Agents bool

	// NewSession returns an empty fosite session of the host's type, into
	// which deputy decodes the stored sessions of the host's tokens (the
	// agent grant's subject token, the middleware's lookups). Default
	// (kit mode): deputy's own flows.Session.
	NewSession func() fosite.Session
	// SessionIdentity maps a host session to the user it acts for and the
	// organization it is bound to ("" for none). Default: GetSubject(), and
	// GetOrganization() where the session type has one.
	SessionIdentity func(fosite.Session) (userID, org string)

	// Scopes is the scope catalog shown on consent pages. Scopes not in it
	// are read-only iff they end in ":read".
	Scopes []ScopeEntry

	// LoginURL is where pages send a visitor without a session; deputy adds
	// return_to=<the page>. Default: /login.
	LoginURL string

	// AccessTokenLifespan of opaque access tokens. Default 1h.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan. Default 30 days.
	RefreshTokenLifespan time.Duration
	// AuthorizeCodeLifespan. Default 10 minutes.
	AuthorizeCodeLifespan time.Duration
	// AgentTokenLifespan. Default 5 minutes, at most 1 hour.
	AgentTokenLifespan time.Duration
	// AgentTokenAlgorithm signs agent tokens: "EdDSA" (default) or "ES256".
	AgentTokenAlgorithm string
	// GrantLifespan is how long an approval lasts. Default 1 hour.
	GrantLifespan time.Duration

	// ClientAuthLimit rate-limits failed client authentications on the
	// token, introspection and revocation endpoints (docs/security.md):
	// every request naming a client reserves a failure before its secret is
	// compared, from the client's shared allowance (Burst, default 10,
	// earned back at Rate, default 1 a second) or, once that is spent, from
	// the allowance of that client at the request's Source (SourceBurst,
	// default 5, earned back at SourceRate, default one every 5 seconds),
	// which failures from other sources cannot spend. A request that can
	// reserve nothing is answered 429 with a Retry-After of at most
	// LongestRefusal (1 s by default); a successful authentication costs
	// nothing. Source defaults to the TCP peer (an IPv6 peer by its /64):
	// behind a reverse proxy, set it to the client address the proxy
	// vouches for. MaxClients (default 10,000) bounds the memory each kind
	// of bucket takes; MaxBody (default 64 KiB) is the largest body read to
	// find the client_id, larger ones are answered 413; MaxWait (default
	// 1 s) is how long a request waits for allowance held by requests in
	// flight. The zero value means all the defaults. The limit is per
	// process: with N replicas a client may fail N times as often.
	ClientAuthLimit ClientAuthLimit

	// ClientCacheTTL is how long kit mode's token endpoint keeps one of
	// deputy's clients, with its secret hashes, in memory between the
	// client_credentials and agent-token requests that name it (issue 14:
	// one SQL round trip less a token). It weakens nothing: every token
	// issued with a kept client is checked, in the statement that issues
	// it, against the client's revision in the database, so a deleted
	// secret or app and a narrowed app take effect at once on every
	// replica (plugin/clientcache.go). The TTL only bounds how long an
	// unused copy stays in memory. Default 1 minute; below zero turns the
	// cache off. There is no cache over a Store that does not check client
	// pins (storage.ClientPinChecker; *storage.Store does), nor in plugin
	// mode, where the host serves its token endpoint.
	ClientCacheTTL time.Duration

	// UserScopesCacheTTL is how long kit mode's token endpoint keeps the
	// Directory's answer about a user (their scopes in an organization)
	// between the client_credentials and agent-token requests that ask it:
	// a SQL Directory's round trip less a token. Zero, the default, keeps
	// it off, because it rests on the host: set it only if the host calls
	// Plugin.UserChanged for every change to what a user holds (disabled,
	// deleted, a membership given, changed or taken), in the change's
	// transaction (best: nothing can fail between them) or after it
	// commits, once per affected user (a role or group change touches
	// many), and the Directory must answer from data at least as fresh as
	// that commit (not a lagging read replica, not a cache of its own).
	// Then every token issued with a kept answer is checked against the
	// user's revision in the database, in the statement that issues it
	// (for an agent mint, in the subject token's lookup), so a reported
	// change takes effect at once on every replica (plugin/userscopes.go);
	// a change left unreported (UserChanged failed, or never called) is
	// seen only when the answer expires. It needs the client cache
	// (ClientCacheTTL not below zero) and a Store that keeps user revisions
	// (storage.UserRevisions; *storage.Store does), and does nothing in
	// plugin mode. deputy-idp turns it on (1 minute): its user commands
	// report their changes.
	UserScopesCacheTTL time.Duration

	// ClientRegistration lets clients register without a person, the way
	// MCP clients do: RFC 7591/7592 dynamic registration and Client ID
	// Metadata Documents. Both are off by default; see ClientRegistration.
	ClientRegistration ClientRegistration

	// Logger receives internal errors with detail (ERROR), what does not
	// fail a request (WARN) and agent-grant decisions (INFO); never a
	// secret, token or request value. Give it a handler with its own level
	// to tune deputy apart from the host (README, "Operating deputy").
	// Default slog.Default().
	Logger *slog.Logger
}

// ClientRegistration configures the clients that register themselves
// (Config.ClientRegistration). Whichever way they come, they are
// unowned, agents (their write scopes are approvals that last the grant
// lifespan), unverified on consent screens, limited to the
// authorization_code grant with refresh_token optional (never
// client_credentials, never the agent-token grant), response type code,
// and redirect URIs that are https, http to a loopback address (any port,
// RFC 8252) or a private-use scheme.
type ClientRegistration struct {
	// Dynamic serves RFC 7591 registration at RegistrationPath (below
	// MountPath, in Handler) and RFC 7592 management of each registration
	// at RegistrationPath/<client_id>, authenticated by the registration
	// access token the registration answered; the metadata advertises
	// registration_endpoint.
	Dynamic bool
	// MetadataDocuments accepts a client_id that is an https URL as the
	// address of the client's metadata document
	// (draft-ietf-oauth-client-id-metadata-document), fetched when the
	// client is looked up; the metadata advertises
	// client_id_metadata_document_supported.
	MetadataDocuments bool

	// Scopes a client that registers itself may ask for. A dynamic client
	// asking for another is refused (invalid_client_metadata); one asking
	// for none gets them all; a document's scope is narrowed to them.
	// Default: every scope of Config.Scopes, plus offline and
	// offline_access (refresh tokens). Required when Config.Scopes is empty.
	Scopes []string
	// AuthMethods a dynamic client may choose: "none" (a public client:
	// PKCE, no secret) and "client_secret_basic" (a dpy_cs_ secret, given
	// once in the registration's answer). Default both. A metadata
	// document's client is always public.
	AuthMethods []string
	// UnusedLifetime is how long a registration that never obtained a
	// token lives: Store.DeleteExpired removes it after. Its first token
	// makes it permanent (until deleted through RFC 7592, or by an
	// administrator). Default 24 hours.
	UnusedLifetime time.Duration
	// MaxRedirectURIs a client may register. Default 10.
	MaxRedirectURIs int
	// Limit bounds registrations per source (Source): Burst in a row
	// (default 10), then Rate a second (default 10 an hour). MaxSources
	// (default 10,000) bounds the memory it takes. Per process: with N
	// replicas a source may register N times as often.
	Limit RegistrationLimit
	// Source names the source of a registration request for Limit.
	// Default: the peer's address (an IPv6 /64). Behind a reverse proxy
	// every request comes from the proxy: return the address it forwards.
	Source func(*http.Request) string

	// AllowLoopbackDocuments lets metadata documents be fetched from
	// loopback addresses, and accepts http://127.0.0.1…, http://[::1]… and
	// http://localhost… client ids: for development and tests only, never
	// in production (it would let anyone who can reach the authorization
	// endpoint make it fetch from the IdP's own machine). Documents are
	// never fetched from any other non-public address.
	AllowLoopbackDocuments bool
	// DocumentTimeout bounds one document fetch, connection to last byte.
	// Default 5s.
	DocumentTimeout time.Duration
	// DocumentMaxBytes bounds a document. Default 16 KiB.
	DocumentMaxBytes int64
	// DocumentMinCache and DocumentMaxCache bound how long a document is
	// kept: its Cache-Control max-age (5 minutes without one), clamped.
	// Defaults 1 minute and 24 hours.
	DocumentMinCache, DocumentMaxCache time.Duration
}

// RegistrationLimit is ClientRegistration.Limit: a token bucket per
// source. The zero value means the defaults.
type RegistrationLimit = ratelimit.SourceLimit

// Defaults of Config.
const (
	DefaultIssuer                = "http://127.0.0.1:8080"
	DefaultLoginURL              = protocol.DefaultLoginURL
	DefaultAccessTokenLifespan   = time.Hour
	DefaultRefreshTokenLifespan  = 30 * 24 * time.Hour
	DefaultAuthorizeCodeLifespan = 10 * time.Minute
	DefaultAgentTokenLifespan    = protocol.DefaultAgentTokenLifespan
	MaxAgentTokenLifespan        = protocol.MaxAgentTokenLifespan
	DefaultAgentTokenAlgorithm   = "EdDSA"
	DefaultGrantLifespan         = protocol.DefaultGrantLifespan
)

// ClientAuthLimit configures the client-authentication rate limiter
// (Config.ClientAuthLimit). The limiter itself is internal to deputy.
type ClientAuthLimit = ratelimit.ClientAuthLimit
