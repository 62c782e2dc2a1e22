package flows

import (
	"context"
	"errors"
	"fmt"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
)

var _ resource.AccessTokenVerifier = (*OpaqueVerifier)(nil)

// OpaqueVerifier verifies stored access tokens for the resource-server
// middleware, with the strategy and storage that issued them (deputy's
// dpy_at_ in kit mode, the host's in plugin mode): one indexed lookup by
// signature, the HMAC and expiry checks, the app re-check for tokens of
// deputy's apps (one more lookup), then the user re-check.
type OpaqueVerifier struct {
	Strategy  oauth2.AccessTokenStrategy
	Storage   oauth2.AccessTokenStorage
	Directory scope.Directory
	Sessions  SessionCodec
	Apps      AppTokens
	// Approvals drops the write scopes of agent clients' tokens that no
	// live approval covers (one more lookup, only for such tokens).
	Approvals Approvals
}

// VerifyAccessToken implements AccessTokenVerifier. A token bound to an
// organization is invalid for any other; a token bound to none ("", as
// client-credentials tokens are unless asked otherwise) is checked against
// org's authority and reported as org's.
func (v *OpaqueVerifier) VerifyAccessToken(ctx context.Context, token string, org string) (*resource.Identity, error) {
	sig := v.Strategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		return nil, fmt.Errorf("%w: not an access token of this server", resource.ErrInvalidToken)
	}
	req, err := v.Storage.GetAccessTokenSession(ctx, sig, v.Sessions.NewSession())
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or revoked", resource.ErrInvalidToken)
	}
	if err != nil {
		return nil, cannotTellNow(fmt.Errorf("deputy: access token lookup: %w", err))
	}
	if err := v.Strategy.ValidateAccessToken(ctx, req, token); err != nil {
		// Expired, or a signature that does not match the token's key: both
		// are the token's fault, whatever fosite's error says.
		return nil, fmt.Errorf("%w: %w", resource.ErrInvalidToken, err)
	}
	// Stores differ in whether they decode into the session they are
	// handed or return the one they kept: read the one returned.
	subject, bound := v.Sessions.IdentityOf(req.GetSession())
	if org != "" && bound != "" && org != bound {
		return nil, fmt.Errorf("%w: bound to another organization", resource.ErrInvalidToken)
	}
	if org == "" {
		org = bound
	}
	err = v.Apps.Check(ctx, req, subject)
	var scopes []string
	if err == nil {
		scopes, err = EffectiveScopes(ctx, v.Directory, req.GetClient(), subject, org, req.GetGrantedScopes())
	}
	if err == nil {
		scopes, err = v.Approvals.Cap(ctx, req, subject, bound, scopes)
	}
	if revoked(err) {
		return nil, fmt.Errorf("%w: %w", resource.ErrInvalidToken, err)
	}
	if err != nil {
		return nil, cannotTellNow(err)
	}
	return &resource.Identity{
		Subject:      subject,
		Organization: org,
		ClientID:     req.GetClient().GetID(),
		Scopes:       scopes,
		Kind:         resource.KindAccess,
		Audience:     req.GetGrantedAudience(),
	}, nil
}

// cannotTellNow marks err, when what the verifier reads could not be
// reached (storage.ErrUnavailable, which a host's storage and Directory
// wrap too), as resource.ErrUnavailable: the middleware answers 503, not a
// 401 that would tell the client to throw away a token that may be valid.
func cannotTellNow(err error) error {
	if errors.Is(err, storage.ErrUnavailable) && !errors.Is(err, resource.ErrUnavailable) {
		return fmt.Errorf("%w: %w", resource.ErrUnavailable, err)
	}
	return err
}
