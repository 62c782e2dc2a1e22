package flows

import (
	"context"
	"errors"
	"fmt"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
)

// OwnedClient is one of deputy's apps whose tokens act as its owner
// (storage.Client).
type OwnedClient interface {
	fosite.Client
	// Owner is the owning user's id, "" for an unowned client.
	Owner() string
	// HasSecret reports whether the secret with this id is still live.
	HasSecret(id string) bool
	// SecretIDFor returns the id of the live secret whose stored hash is
	// hash, "" for none.
	SecretIDFor(hash []byte) string
}

// ownedClient returns c as an app with an owner, or nil.
func ownedClient(c fosite.Client) OwnedClient {
	if o, ok := c.(OwnedClient); ok && o.Owner() != "" {
		return o
	}
	return nil
}

// SecretIDKey is the key, in a stored token request's form, of the id of the
// app secret that obtained the token. The owned client-credentials handler
// sets it; a token whose secret is gone is dead.
const SecretIDKey = protocol.SecretIDFormKey

// SessionCodec tells deputy's flows how to read a host's fosite sessions.
// The zero value reads deputy's own Session.
type SessionCodec struct {
	// New returns an empty session to decode a stored session into: the
	// host's session type. Default: *Session.
	New func() fosite.Session
	// Identity maps a decoded session to the user it acts for and the
	// organization it is bound to ("" for none). Default: GetSubject(), and
	// GetOrganization() where the session has one.
	Identity func(fosite.Session) (userID, org string)
}

// NewSession returns an empty session of the host's type.
func (c SessionCodec) NewSession() fosite.Session {
	if c.New != nil {
		return c.New()
	}
	return NewSession("", "")
}

// IdentityOf returns who s acts for, and where.
func (c SessionCodec) IdentityOf(s fosite.Session) (userID, org string) {
	if c.Identity != nil {
		return c.Identity(s)
	}
	if s == nil {
		return "", ""
	}
	return s.GetSubject(), organizationOf(s)
}

// errAppTokenRevoked is a token of an app that was deleted, lost the secret
// that obtained it, or changed hands.
var errAppTokenRevoked = errors.New("deputy: the token's app, secret or owner is gone")

// AppTokens re-checks stored tokens of deputy's apps against deputy's own
// tables, wherever the tokens are stored (deputy's store in kit mode, the
// host's in plugin mode): the app must still exist; an owned app's token
// acts for its current owner only; and the secret that obtained a
// client-credentials token must still be live.
type AppTokens struct {
	// Apps loads deputy's apps; nil checks nothing.
	Apps fosite.ClientManager
	// StoredClientIsLive says that the token store loads the token's client
	// live with the token and deletes a token with its app or its secret
	// (deputy's own store does): then there is nothing left to check.
	StoredClientIsLive bool
}

// IsAppToken reports whether req is a token of one of deputy's apps: its
// client is deputy's, or it names the secret that obtained it.
func IsAppToken(req fosite.Requester) bool {
	_, isApp := req.GetClient().(OwnedClient)
	return isApp || req.GetRequestForm().Get(SecretIDKey) != ""
}

// Check returns nil for a token that is not an app's, or whose app, owner
// and secret are all live; an error wrapping errAppTokenRevoked for one
// that must be dead; any other error is the store's.
func (a AppTokens) Check(ctx context.Context, req fosite.Requester, subject string) error {
	stamp := req.GetRequestForm().Get(SecretIDKey)
	if a.Apps == nil || a.StoredClientIsLive || !IsAppToken(req) {
		return nil
	}
	c, err := a.Apps.GetClient(ctx, req.GetClient().GetID())
	if errors.Is(err, fosite.ErrNotFound) {
		return fmt.Errorf("%w: app deleted", errAppTokenRevoked)
	}
	if err != nil {
		return fmt.Errorf("deputy: loading the token's app: %w", err)
	}
	live, ok := c.(OwnedClient)
	switch {
	case !ok:
		return fmt.Errorf("%w: not one of deputy's apps", errAppTokenRevoked)
	case (live.Owner() != "" || stamp != "") && live.Owner() != subject:
		return fmt.Errorf("%w: the app has another owner now", errAppTokenRevoked)
	case stamp != "" && !live.HasSecret(stamp):
		return fmt.Errorf("%w: the secret that obtained it was deleted", errAppTokenRevoked)
	}
	return nil
}

// revoked reports whether err means the token must be treated as dead:
// its user or its app can no longer act.
func revoked(err error) bool { return cannotAct(err) || errors.Is(err, errAppTokenRevoked) }

// setGranted replaces the scopes and audience r grants. fosite's requesters
// only add; deputy must also take away what a host granted beyond the cap.
func setGranted(r fosite.Requester, scopes, audience []string) error {
	var req *fosite.Request
	switch v := r.(type) {
	case *fosite.AccessRequest:
		req = &v.Request
	case *fosite.AuthorizeRequest:
		req = &v.Request
	case *fosite.Request:
		req = v
	default:
		return fmt.Errorf("deputy: cannot narrow the scopes of a %T", r)
	}
	req.GrantedScope = fosite.Arguments(append([]string{}, scopes...))
	if audience != nil {
		req.GrantedAudience = fosite.Arguments(append([]string{}, audience...))
	}
	return nil
}

// SetGrantedScopes replaces the scopes r grants with scopes.
func SetGrantedScopes(r fosite.Requester, scopes []string) error { return setGranted(r, scopes, nil) }
