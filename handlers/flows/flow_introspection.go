package flows

import (
	"context"
	"strings"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/x/errorsx"
)

var _ fosite.TokenIntrospector = (*UserCheckingValidator)(nil)

// UserCheckingValidator is fosite's CoreValidator with the user re-check:
// introspection of a dpy_at_ or dpy_rt_ token answers with the scopes its
// user still holds (EffectiveScopes), and a token whose user is gone or
// disabled is inactive. Other tokens are left to other introspectors.
type UserCheckingValidator struct {
	oauth2.CoreStrategy
	oauth2.CoreStorage
	Directory scope.Directory
	Config    fosite.ScopeStrategyProvider
}

func (v *UserCheckingValidator) IntrospectToken(ctx context.Context, token string, _ fosite.TokenUse, accessRequest fosite.AccessRequester, scopes []string) (fosite.TokenUse, error) {
	var (
		use fosite.TokenUse
		or  fosite.Requester
		err error
	)
	switch {
	case strings.HasPrefix(token, protocol.AccessTokenPrefix):
		use = fosite.AccessToken
		or, err = v.CoreStorage.GetAccessTokenSession(ctx, v.AccessTokenSignature(ctx, token), accessRequest.GetSession())
		if err == nil {
			err = v.ValidateAccessToken(ctx, or, token)
		}
	case strings.HasPrefix(token, protocol.RefreshTokenPrefix):
		use = fosite.RefreshToken
		or, err = v.CoreStorage.GetRefreshTokenSession(ctx, v.RefreshTokenSignature(ctx, token), accessRequest.GetSession())
		if err == nil {
			err = v.ValidateRefreshToken(ctx, or, token)
		}
	default:
		return "", errorsx.WithStack(fosite.ErrUnknownRequest)
	}
	if err != nil {
		return "", errorsx.WithStack(fosite.ErrRequestUnauthorized.WithWrap(err).WithDebug(err.Error()))
	}

	sess := or.GetSession()
	effective, err := EffectiveScopes(ctx, v.Directory, or.GetClient(), sess.GetSubject(), organizationOf(sess), or.GetGrantedScopes())
	if cannotAct(err) {
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
		GrantedScope:      fosite.Arguments(effective),
		RequestedAudience: or.GetRequestedAudience(),
		GrantedAudience:   or.GetGrantedAudience(),
		Form:              or.GetRequestForm(),
		Session:           sess,
	})
	return use, nil
}

// UserCheckingIntrospectionFactory replaces compose.OAuth2TokenIntrospectionFactory:
// same storage and strategy, plus the Directory re-check.
func UserCheckingIntrospectionFactory(dir scope.Directory) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &UserCheckingValidator{
			CoreStrategy: strategy.(oauth2.CoreStrategy),
			CoreStorage:  storage.(oauth2.CoreStorage),
			Directory:    dir,
			Config:       config,
		}
	}
}
