// Package resource is deputy's resource-server side: the middleware that
// protects an API with deputy tokens, the Identity a verified token speaks
// for, and the verifier interfaces the middleware routes tokens to (agent
// tokens to handlers/agenttoken's verifier, opaque access tokens to
// handlers/flows' OpaqueVerifier, or a host's own).
package resource

import (
	"context"
	"errors"
)

// Identity kinds.
const (
	// KindAgent is a dpy_agt_ agent capability token.
	KindAgent = "agent"
	// KindAccess is a stored dpy_at_ access token.
	KindAccess = "access"
)

// ErrInvalidToken is what a verifier returns (wrapped) for a token that is not
// valid here: malformed, expired, wrongly signed, revoked, another
// organization's. The middleware answers it with 401 invalid_token; any other
// error is internal (logged, and still 401 to the caller, never a 500 for
// token text), except ErrUnavailable.
var ErrInvalidToken = errors.New("deputy: invalid token")

// ErrUnavailable is what a verifier returns (wrapped) when it cannot decide
// now because what it reads cannot be reached (deputy's verifiers: its
// database, storage.ErrUnavailable). The middleware answers 503 with
// Retry-After: a 401 invalid_token would tell the client to throw away a
// token that may well be valid and start authorization again, during the
// outage, as OAuth and MCP clients do on a 401.
var ErrUnavailable = errors.New("deputy: token verifier unavailable")

// Identity is who a verified token speaks for.
type Identity struct {
	// Subject is the user the token acts for.
	Subject string
	// Organization the token is bound to ("" where the IdP has none).
	Organization string
	// AgentSession is the agent session id of an agent token; "" otherwise.
	AgentSession string
	// ClientID is the OAuth2 client that obtained the token (for an agent
	// token, the agent platform: the actor).
	ClientID string
	// Scopes the token carries, normalized.
	Scopes []string
	// Kind is KindAgent or KindAccess.
	Kind string
	// Audience are the resources (RFC 8707) the token is for; empty for a
	// token for no particular resource: an opaque token granted no
	// audience, an agent token whose aud is only the issuer.
	Audience []string
}

// AccessTokenVerifier checks an opaque dpy_at_ access token. org is the
// organization of the request; a token bound to another organization is
// invalid. Errors wrapping ErrInvalidToken mean "not valid", errors wrapping
// ErrUnavailable "cannot tell now"; other errors are internal.
type AccessTokenVerifier interface {
	VerifyAccessToken(ctx context.Context, token string, org string) (*Identity, error)
}

// AgentTokenVerifier checks a dpy_agt_ agent token (with its prefix) for a
// request in org. Errors wrapping ErrInvalidToken mean "not valid", errors
// wrapping ErrUnavailable "cannot tell now"; other errors are internal.
type AgentTokenVerifier interface {
	Verify(ctx context.Context, token, org string) (*Identity, error)
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity the middleware verified for this request.
func IdentityFrom(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	return id, ok && id != nil
}
