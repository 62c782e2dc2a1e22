package flows

import (
	"context"
	"errors"
	"fmt"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	fositestorage "github.com/ory/fosite/storage"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/scope"
)

var _ fosite.TokenEndpointHandler = (*RefreshTokenGrantHandler)(nil)

// RefreshTokenGrantHandler is fosite's refresh_token grant with two
// differences:
//
//   - The user is re-checked, as at every other use of a stored token
//     (EffectiveScopes): a user who is gone or disabled gets invalid_grant,
//     not a new pair of tokens, and scopes the user or the client lost since
//     are not carried into the new pair (they stay lost: a refresh only ever
//     narrows).
//   - A rotation lost to a concurrent refresh with the same token is reuse.
//     fosite reads the token's active flag outside the rotation's
//     transaction, so parallel refreshes all pass that check; the storage
//     then lets exactly one rotate (storage.Store.RotateRefreshToken) and
//     answers the others fosite.ErrInactiveToken, which fosite would turn
//     into invalid_request ("please retry") and nothing else. Here the
//     losers get invalid_grant and, as when fosite sees an inactive token,
//     the whole family is revoked: the winner's new pair included (RFC 9700
//     §4.14.2; the server cannot tell the client from a thief).
//
// It replaces compose.OAuth2RefreshTokenGrantFactory: register only one of
// the two.
type RefreshTokenGrantHandler struct {
	*oauth2.RefreshTokenGrantHandler
	Directory scope.Directory
}

// HandleTokenEndpointRequest implements https://tools.ietf.org/html/rfc6749#section-6
func (c *RefreshTokenGrantHandler) HandleTokenEndpointRequest(ctx context.Context, request fosite.AccessRequester) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	if err := c.RefreshTokenGrantHandler.HandleTokenEndpointRequest(ctx, request); err != nil {
		if errors.Is(err, fosite.ErrInvalidRequest) && lostRotation(err) {
			// fosite found the token inactive (reuse) and, revoking its
			// family, could not delete it: a concurrent request that found
			// the same reuse deleted it, with the family's revocation, in
			// the transaction this one waited for. fosite would say
			// "invalid_request, retry"; the token is spent.
			return errorsx.WithStack(fosite.ErrInvalidGrant.WithWrap(err).
				WithHint("The refresh token was already used.").
				WithDebug("Refresh token reuse was detected by a concurrent request, which revoked all related tokens."))
		}
		return err
	}
	sess := request.GetSession()
	granted, err := EffectiveScopes(ctx, c.Directory, request.GetClient(), sess.GetSubject(), organizationOf(sess), request.GetGrantedScopes())
	if cannotAct(err) {
		return errorsx.WithStack(fosite.ErrInvalidGrant.WithHint("The user the refresh token was issued for can no longer act.").WithWrap(err).WithDebug(err.Error()))
	}
	if err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	if err := setGrantedScopes(request, granted); err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	return nil
}

// setGrantedScopes replaces the scopes granted so far: fosite's Requester
// can add a scope but not take one away.
func setGrantedScopes(request fosite.AccessRequester, scopes []string) error {
	ar, ok := request.(*fosite.AccessRequest)
	if !ok {
		return fmt.Errorf("deputy: cannot narrow the scopes of a %T", request)
	}
	ar.GrantedScope = fosite.Arguments(append([]string{}, scopes...))
	return nil
}

// PopulateTokenEndpointResponse implements https://tools.ietf.org/html/rfc6749#section-6
func (c *RefreshTokenGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, response fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest
	}
	err := c.RefreshTokenGrantHandler.PopulateTokenEndpointResponse(ctx, request, response)
	if err == nil || !lostRotation(err) {
		return err
	}
	if rErr := revokeFamily(ctx, c.TokenRevocationStorage, request.GetID()); rErr != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(rErr).WithDebugf("revoking the tokens of a reused refresh token: %s", rErr))
	}
	return errorsx.WithStack(fosite.ErrInvalidGrant.WithWrap(err).
		WithHint("The refresh token was already used.").
		WithDebug("A concurrent request rotated the refresh token first: reuse. All related tokens have been revoked."))
}

// lostRotation reports fosite's answer to a RotateRefreshToken that found
// the presented token no longer active (or gone): another request rotated
// it first.
func lostRotation(err error) bool {
	return errors.Is(err, fosite.ErrInactiveToken) || errors.Is(err, fosite.ErrNotFound)
}

// revokeFamily revokes every refresh and access token of the request, in
// one transaction when the storage has them, as fosite does on reuse.
func revokeFamily(ctx context.Context, store oauth2.TokenRevocationStorage, requestID string) (err error) {
	ctx, err = fositestorage.MaybeBeginTx(ctx, store)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, fositestorage.MaybeRollbackTx(ctx, store))
		}
	}()
	if err := store.RevokeRefreshToken(ctx, requestID); err != nil && !errors.Is(err, fosite.ErrNotFound) {
		return err
	}
	if err := store.RevokeAccessToken(ctx, requestID); err != nil && !errors.Is(err, fosite.ErrNotFound) {
		return err
	}
	return fositestorage.MaybeCommitTx(ctx, store)
}

// RefreshTokenGrantFactory builds the handler for compose.Compose, in place
// of compose.OAuth2RefreshTokenGrantFactory.
func RefreshTokenGrantFactory(dir scope.Directory) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &RefreshTokenGrantHandler{
			RefreshTokenGrantHandler: compose.OAuth2RefreshTokenGrantFactory(config, storage, strategy).(*oauth2.RefreshTokenGrantHandler),
			Directory:                dir,
		}
	}
}
