package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/scope"
)

// Prefixes of deputy's opaque tokens. They tell a reader (and a secret
// scanner) what a string is, and let the middleware route a token without
// parsing it.
const (
	AccessTokenPrefix   = "dpy_at_"
	RefreshTokenPrefix  = "dpy_rt_"
	AuthorizeCodePrefix = "dpy_ac_"
)

var _ oauth2.CoreStrategy = (*HMACStrategy)(nil)

// HMACStrategy is fosite's HMAC-SHA512/256 token strategy with deputy's
// prefixes, shaped like fosite's own HMACSHAStrategy (ory_at_ …). Unlike
// fosite's, it insists on the prefix: a refresh token offered where an access
// token is expected has no signature here, instead of a lookup in the wrong
// table.
type HMACStrategy struct {
	*oauth2.HMACSHAStrategyUnPrefixed
}

// NewHMACStrategy returns the prefixed strategy keyed by config's global
// secret.
func NewHMACStrategy(config compose.HMACSHAStrategyConfigurator) *HMACStrategy {
	return &HMACStrategy{
		HMACSHAStrategyUnPrefixed: oauth2.NewHMACSHAStrategyUnPrefixed(&hmac.HMACStrategy{Config: config}, config),
	}
}

func cutPrefix(token, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(token, prefix)
	return rest, ok && rest != ""
}

// signature is the storage key of token, or "" when token is not one of
// ours. Unlike fosite's, it verifies the HMAC first: fosite's revocation
// looks a token up by signature alone, so without this a forged key with a
// known signature (a row of a database dump) would revoke the real token.
func (h *HMACStrategy) signature(ctx context.Context, token, prefix string) string {
	rest, ok := cutPrefix(token, prefix)
	if !ok || h.Enigma.Validate(ctx, rest) != nil {
		return ""
	}
	return h.Enigma.Signature(rest)
}

func (h *HMACStrategy) AccessTokenSignature(ctx context.Context, token string) string {
	return h.signature(ctx, token, AccessTokenPrefix)
}

func (h *HMACStrategy) RefreshTokenSignature(ctx context.Context, token string) string {
	return h.signature(ctx, token, RefreshTokenPrefix)
}

func (h *HMACStrategy) AuthorizeCodeSignature(ctx context.Context, token string) string {
	return h.signature(ctx, token, AuthorizeCodePrefix)
}

func (h *HMACStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	token, sig, err := h.HMACSHAStrategyUnPrefixed.GenerateAccessToken(ctx, r)
	return AccessTokenPrefix + token, sig, err
}

func (h *HMACStrategy) ValidateAccessToken(ctx context.Context, r fosite.Requester, token string) error {
	rest, ok := cutPrefix(token, AccessTokenPrefix)
	if !ok {
		return errorsx.WithStack(fosite.ErrInvalidTokenFormat)
	}
	return h.HMACSHAStrategyUnPrefixed.ValidateAccessToken(ctx, r, rest)
}

func (h *HMACStrategy) GenerateRefreshToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	token, sig, err := h.HMACSHAStrategyUnPrefixed.GenerateRefreshToken(ctx, r)
	return RefreshTokenPrefix + token, sig, err
}

func (h *HMACStrategy) ValidateRefreshToken(ctx context.Context, r fosite.Requester, token string) error {
	rest, ok := cutPrefix(token, RefreshTokenPrefix)
	if !ok {
		return errorsx.WithStack(fosite.ErrInvalidTokenFormat)
	}
	return h.HMACSHAStrategyUnPrefixed.ValidateRefreshToken(ctx, r, rest)
}

func (h *HMACStrategy) GenerateAuthorizeCode(ctx context.Context, r fosite.Requester) (string, string, error) {
	token, sig, err := h.HMACSHAStrategyUnPrefixed.GenerateAuthorizeCode(ctx, r)
	return AuthorizeCodePrefix + token, sig, err
}

func (h *HMACStrategy) ValidateAuthorizeCode(ctx context.Context, r fosite.Requester, token string) error {
	rest, ok := cutPrefix(token, AuthorizeCodePrefix)
	if !ok {
		return errorsx.WithStack(fosite.ErrInvalidTokenFormat)
	}
	return h.HMACSHAStrategyUnPrefixed.ValidateAuthorizeCode(ctx, r, rest)
}

// ProtocolScopes are OAuth2/OpenID Connect scopes that ask for a protocol
// feature (an ID token, a refresh token) rather than for authority a user
// holds, so a Directory is not asked about them.
var ProtocolScopes = []string{"openid", "offline", "offline_access"}

// errCannotAct reports a token's user who is gone or disabled.
var errCannotAct = errors.New("deputy: the token's user can no longer act")

// EffectiveScopes is the re-check every use of a stored token goes through:
// of scopes, only those the client is still allowed and its user still holds
// in org today survive. The protocol scopes need only the client's
// allowance. A user who is gone or disabled is an error wrapping
// scope.ErrUserNotFound or scope.ErrUserDisabled; any other error is the
// Directory's own. A token without a subject acts for no user and keeps
// what the client allows.
func EffectiveScopes(ctx context.Context, dir scope.Directory, client fosite.Client, subject, org string, scopes []string) ([]string, error) {
	allowed := scope.Intersect(scopes, client.GetScopes())
	if subject == "" {
		return allowed, nil
	}
	held, err := dir.UserScopes(ctx, subject, org)
	if err != nil {
		if errors.Is(err, scope.ErrUserNotFound) || errors.Is(err, scope.ErrUserDisabled) {
			return nil, fmt.Errorf("%w: %w", errCannotAct, err)
		}
		return nil, fmt.Errorf("deputy: directory: %w", err)
	}
	return scope.Intersect(allowed, scope.Union(held, ProtocolScopes)), nil
}

// cannotAct reports whether err came from a user who can no longer act.
func cannotAct(err error) bool { return errors.Is(err, errCannotAct) }

// organizationOf returns the organization a stored session is bound to.
func organizationOf(s fosite.Session) string {
	if o, ok := s.(interface{ GetOrganization() string }); ok {
		return o.GetOrganization()
	}
	return ""
}

var _ AccessTokenVerifier = (*OpaqueVerifier)(nil)

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
func (v *OpaqueVerifier) VerifyAccessToken(ctx context.Context, token string, org string) (*Identity, error) {
	sig := v.Strategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		return nil, fmt.Errorf("%w: not a deputy access token", ErrInvalidToken)
	}
	sess := NewSession("", "")
	req, err := v.Storage.GetAccessTokenSession(ctx, sig, sess)
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, fmt.Errorf("%w: unknown or revoked", ErrInvalidToken)
	}
	if err != nil {
		return nil, fmt.Errorf("deputy: access token lookup: %w", err)
	}
	if err := v.Strategy.ValidateAccessToken(ctx, req, token); err != nil {
		// Expired, or a signature that does not match the token's key: both
		// are the token's fault, whatever fosite's error says.
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	bound := sess.Organization
	if org != "" && bound != "" && org != bound {
		return nil, fmt.Errorf("%w: bound to another organization", ErrInvalidToken)
	}
	if org == "" {
		org = bound
	}
	scopes, err := EffectiveScopes(ctx, v.Directory, req.GetClient(), sess.GetSubject(), org, req.GetGrantedScopes())
	if cannotAct(err) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if err != nil {
		return nil, err
	}
	return &Identity{
		Subject:      sess.GetSubject(),
		Organization: org,
		ClientID:     req.GetClient().GetID(),
		Scopes:       scopes,
		Kind:         KindAccess,
	}, nil
}

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
	case strings.HasPrefix(token, AccessTokenPrefix):
		use = fosite.AccessToken
		or, err = v.CoreStorage.GetAccessTokenSession(ctx, v.AccessTokenSignature(ctx, token), accessRequest.GetSession())
		if err == nil {
			err = v.ValidateAccessToken(ctx, or, token)
		}
	case strings.HasPrefix(token, RefreshTokenPrefix):
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
