package flows

import (
	"context"
	"errors"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
	"github.com/ory/x/errorsx"
)

// A code is redeemed once. fosite reads it (and its PKCE session) before
// it writes anything, so redemptions racing with one code all pass the
// read; what decides is the first write that can fail: deleting the PKCE
// session (one DELETE removes the row) or, without PKCE, invalidating the
// code (storage.Store.InvalidateAuthorizeCodeSession changes only an active
// code). fosite answers the loser of either with server_error (500); the
// two handlers below answer invalid_grant, as for any code already used.

var (
	_ fosite.TokenEndpointHandler = (*AuthorizeCodeGrantHandler)(nil)
	_ fosite.TokenEndpointHandler = (*PKCEHandler)(nil)
)

// errCodeUsed is the answer to a redemption that lost to another.
func errCodeUsed(cause error) error {
	return errorsx.WithStack(fosite.ErrInvalidGrant.WithWrap(cause).
		WithHint("The authorization code has already been used.").
		WithDebug("A concurrent request redeemed the authorization code first."))
}

// AuthorizeCodeGrantHandler is fosite's authorization_code grant whose
// redemption lost to a concurrent one (the code was active when read, and
// inactive when invalidated) is invalid_grant, and, as fosite does for a
// code used twice (RFC 6749 §4.1.2), revokes what the winner was issued.
// It replaces compose.OAuth2AuthorizeExplicitFactory: register only one of
// the two.
type AuthorizeCodeGrantHandler struct {
	*oauth2.AuthorizeExplicitGrantHandler
}

// PopulateTokenEndpointResponse implements https://tools.ietf.org/html/rfc6749#section-4.1.3
func (c *AuthorizeCodeGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, response fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	err := c.AuthorizeExplicitGrantHandler.PopulateTokenEndpointResponse(ctx, request, response)
	if err == nil || !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		return err
	}
	// The winner committed before the loser's write could fail, so its
	// tokens are there to revoke.
	if revErr := revokeFamily(ctx, c.TokenRevocationStorage, request.GetID()); revErr != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(revErr).WithDebugf("revoking the tokens of a reused authorization code: %s", revErr))
	}
	return errCodeUsed(err)
}

// PKCEHandler is fosite's PKCE handler whose redemption lost to a
// concurrent one (the PKCE session was there when read, and gone when
// deleted) is invalid_grant instead of server_error. It replaces
// compose.OAuth2PKCEFactory: register only one of the two.
type PKCEHandler struct {
	*pkce.Handler
}

// HandleTokenEndpointRequest implements https://tools.ietf.org/html/rfc7636#section-4.6
func (c *PKCEHandler) HandleTokenEndpointRequest(ctx context.Context, request fosite.AccessRequester) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest
	}
	err := c.Handler.HandleTokenEndpointRequest(ctx, request)
	// fosite answers a PKCE session it cannot find when reading it with
	// invalid_grant itself; a server_error that wraps not-found comes from
	// the delete, after a successful read: a concurrent redemption won.
	if errors.Is(err, fosite.ErrServerError) && errors.Is(err, fosite.ErrNotFound) {
		return errCodeUsed(err)
	}
	return err
}

// AuthorizeCodeGrantFactory builds the handler for compose.Compose, in
// place of compose.OAuth2AuthorizeExplicitFactory.
func AuthorizeCodeGrantFactory(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
	return &AuthorizeCodeGrantHandler{
		AuthorizeExplicitGrantHandler: compose.OAuth2AuthorizeExplicitFactory(config, storage, strategy).(*oauth2.AuthorizeExplicitGrantHandler),
	}
}

// PKCEFactory builds the handler for compose.Compose, in place of
// compose.OAuth2PKCEFactory.
func PKCEFactory(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
	return &PKCEHandler{Handler: compose.OAuth2PKCEFactory(config, storage, strategy).(*pkce.Handler)}
}
