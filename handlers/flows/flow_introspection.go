package flows

import (
	"context"
	"errors"

	"github.com/deputyauth/deputy/scope"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/x/errorsx"
)

var _ fosite.TokenIntrospector = (*UserCheckingValidator)(nil)

// UserCheckingValidator is fosite's CoreValidator with deputy's re-checks:
// introspection of an access or refresh token answers with the scopes its
// user still holds (EffectiveScopes); a token whose user is gone or
// disabled, or that belongs to one of deputy's apps that was deleted, lost
// the secret that obtained the token, or changed hands, is inactive. It
// finds tokens with whatever strategy and storage it was composed with, so
// in plugin mode it checks the host's own tokens (any prefix). Composed
// after a host's own introspector, it narrows that one's answer: list it
// after the host's factories.
type UserCheckingValidator struct {
	oauth2.CoreStrategy
	oauth2.CoreStorage
	Directory scope.Directory
	Sessions  SessionCodec
	Apps      AppTokens
	// AppsOnly leaves tokens that are neither deputy's apps' nor agent
	// clients' to the host's own introspector (plugin mode): the host's
	// introspection of its other tokens stays exactly what it was.
	AppsOnly bool
	// Approvals drops the write scopes of agent clients' tokens that no
	// live approval covers.
	Approvals Approvals
	Config    fosite.ScopeStrategyProvider
}

// lookup finds token as an access token or a refresh token, the hinted kind
// first, and validates it. ErrUnknownRequest when it is neither.
func (v *UserCheckingValidator) lookup(ctx context.Context, token string, hint fosite.TokenUse, session fosite.Session) (fosite.TokenUse, fosite.Requester, error) {
	kinds := []fosite.TokenUse{fosite.AccessToken, fosite.RefreshToken}
	if hint == fosite.RefreshToken {
		kinds[0], kinds[1] = kinds[1], kinds[0]
	}
	for _, use := range kinds {
		var (
			or  fosite.Requester
			err error
		)
		if use == fosite.AccessToken {
			sig := v.AccessTokenSignature(ctx, token)
			if sig == "" {
				continue
			}
			if or, err = v.CoreStorage.GetAccessTokenSession(ctx, sig, session); err == nil {
				err = v.ValidateAccessToken(ctx, or, token)
			}
		} else {
			sig := v.RefreshTokenSignature(ctx, token)
			if sig == "" {
				continue
			}
			if or, err = v.CoreStorage.GetRefreshTokenSession(ctx, sig, session); err == nil {
				err = v.ValidateRefreshToken(ctx, or, token)
			}
		}
		if errors.Is(err, fosite.ErrNotFound) {
			continue
		}
		return use, or, err
	}
	return "", nil, fosite.ErrUnknownRequest
}

func (v *UserCheckingValidator) IntrospectToken(ctx context.Context, token string, hint fosite.TokenUse, accessRequest fosite.AccessRequester, scopes []string) (fosite.TokenUse, error) {
	use, or, err := v.lookup(ctx, token, hint, accessRequest.GetSession())
	if errors.Is(err, fosite.ErrUnknownRequest) {
		return "", err
	}
	if err != nil {
		return "", errorsx.WithStack(fosite.ErrRequestUnauthorized.WithWrap(err).WithDebug(err.Error()))
	}

	if v.AppsOnly && !IsAppToken(or) && !IsAgentClient(or.GetClient()) {
		return "", fosite.ErrUnknownRequest
	}
	sess := or.GetSession()
	user, org := v.Sessions.IdentityOf(sess)
	err = v.Apps.Check(ctx, or, user)
	var effective []string
	if err == nil {
		effective, err = EffectiveScopes(ctx, v.Directory, or.GetClient(), user, org, or.GetGrantedScopes())
	}
	if err == nil {
		effective, err = v.Approvals.Cap(ctx, or, user, org, effective)
	}
	if revoked(err) {
		return "", errorsx.WithStack(fosite.ErrInactiveToken.WithWrap(err).WithDebug(err.Error()))
	}
	if err != nil {
		return "", errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}

	ss := v.Config.GetScopeStrategy(ctx)
	for _, s := range scopes {
		if s != "" && !ss(effective, s) {
			return "", errorsx.WithStack(fosite.ErrInvalidScope.WithHintf("The request scope '%s' has not been granted or is not allowed to be requested.", s))
		}
	}

	accessRequest.Merge(&fosite.Request{
		ID:                or.GetID(),
		RequestedAt:       or.GetRequestedAt(),
		Client:            or.GetClient(),
		RequestedScope:    or.GetRequestedScopes(),
		RequestedAudience: or.GetRequestedAudience(),
		GrantedAudience:   or.GetGrantedAudience(),
		Form:              or.GetRequestForm(),
		Session:           sess,
	})
	// Merge only adds: replace what a host's introspector merged before.
	if err := setGranted(accessRequest, effective, nil); err != nil {
		return "", errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	return use, nil
}

// UserCheckingIntrospectionFactory builds the validator for compose.Compose
// with the strategy and storage it is composed with: in kit mode in place
// of compose.OAuth2TokenIntrospectionFactory, in plugin mode after it.
func UserCheckingIntrospectionFactory(dir scope.Directory, sessions SessionCodec, apps AppTokens, approvals Approvals, appsOnly bool) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &UserCheckingValidator{
			CoreStrategy: strategy.(oauth2.CoreStrategy),
			CoreStorage:  storage.(oauth2.CoreStorage),
			Directory:    dir,
			Sessions:     sessions,
			Apps:         apps,
			Approvals:    approvals,
			AppsOnly:     appsOnly,
			Config:       config,
		}
	}
}
