package flows

import (
	"context"
	"errors"
	"fmt"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/scope"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

var _ resource.AccessTokenVerifier = (*OpaqueVerifier)(nil)

// OpaqueVerifier verifies dpy_at_ access tokens for the resource-server
// middleware: one indexed lookup by HMAC signature (the row carries the
// client), the HMAC and expiry checks, then the user re-check.
type OpaqueVerifier struct {
	Strategy  oauth2.AccessTokenStrategy
	Storage   oauth2.AccessTokenStorage
	Directory scope.Directory
}

// VerifyAccessToken implements AccessTokenVerifier. A token bound to an
// organization is invalid for any other; a token bound to none ("", as
// client-credentials tokens are unless asked otherwise) is checked against
// org's authority and reported as org's.
func (v *OpaqueVerifier) VerifyAccessToken(ctx context.Context, token string, org string) (*resource.Identity, error) {
	sig := v.Strategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		return nil, fmt.Errorf("%w: not a deputy access token", resource.ErrInvalidToken)
	}
	sess := NewSession("", "")
	req, err := v.Storage.GetAccessTokenSession(ctx, sig, sess)
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or revoked", resource.ErrInvalidToken)
	}
	if err != nil {
		return nil, fmt.Errorf("deputy: access token lookup: %w", err)
	}
	if err := v.Strategy.ValidateAccessToken(ctx, req, token); err != nil {
		// Expired, or a signature that does not match the token's key: both
		// are the token's fault, whatever fosite's error says.
		return nil, fmt.Errorf("%w: %w", resource.ErrInvalidToken, err)
	}
	bound := sess.Organization
	if org != "" && bound != "" && org != bound {
		return nil, fmt.Errorf("%w: bound to another organization", resource.ErrInvalidToken)
	}
	if org == "" {
		org = bound
	}
	scopes, err := EffectiveScopes(ctx, v.Directory, req.GetClient(), sess.GetSubject(), org, req.GetGrantedScopes())
	if cannotAct(err) {
		return nil, fmt.Errorf("%w: %w", resource.ErrInvalidToken, err)
	}
	if err != nil {
		return nil, err
	}
	return &resource.Identity{
		Subject:      sess.GetSubject(),
		Organization: org,
		ClientID:     req.GetClient().GetID(),
		Scopes:       scopes,
		Kind:         resource.KindAccess,
	}, nil
}
