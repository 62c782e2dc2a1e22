package flows

import (
	"context"
	"strings"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"
	"github.com/ory/x/errorsx"
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
	return h.signature(ctx, token, protocol.AccessTokenPrefix)
}

func (h *HMACStrategy) RefreshTokenSignature(ctx context.Context, token string) string {
	return h.signature(ctx, token, protocol.RefreshTokenPrefix)
}

func (h *HMACStrategy) AuthorizeCodeSignature(ctx context.Context, token string) string {
	return h.signature(ctx, token, protocol.AuthorizeCodePrefix)
}

func (h *HMACStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	return prefixed(protocol.AccessTokenPrefix)(h.HMACSHAStrategyUnPrefixed.GenerateAccessToken(ctx, r))
}

func (h *HMACStrategy) ValidateAccessToken(ctx context.Context, r fosite.Requester, token string) error {
	return validatePrefixed(ctx, r, token, protocol.AccessTokenPrefix, h.HMACSHAStrategyUnPrefixed.ValidateAccessToken)
}

func (h *HMACStrategy) GenerateRefreshToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	return prefixed(protocol.RefreshTokenPrefix)(h.HMACSHAStrategyUnPrefixed.GenerateRefreshToken(ctx, r))
}

func (h *HMACStrategy) ValidateRefreshToken(ctx context.Context, r fosite.Requester, token string) error {
	return validatePrefixed(ctx, r, token, protocol.RefreshTokenPrefix, h.HMACSHAStrategyUnPrefixed.ValidateRefreshToken)
}

func (h *HMACStrategy) GenerateAuthorizeCode(ctx context.Context, r fosite.Requester) (string, string, error) {
	return prefixed(protocol.AuthorizeCodePrefix)(h.HMACSHAStrategyUnPrefixed.GenerateAuthorizeCode(ctx, r))
}

func (h *HMACStrategy) ValidateAuthorizeCode(ctx context.Context, r fosite.Requester, token string) error {
	return validatePrefixed(ctx, r, token, protocol.AuthorizeCodePrefix, h.HMACSHAStrategyUnPrefixed.ValidateAuthorizeCode)
}

// prefixed puts prefix in front of the token a fosite Generate… returned.
func prefixed(prefix string) func(token, sig string, err error) (string, string, error) {
	return func(token, sig string, err error) (string, string, error) { return prefix + token, sig, err }
}

// validatePrefixed refuses a token without prefix, and hands the rest to
// fosite's Validate….
func validatePrefixed(ctx context.Context, r fosite.Requester, token, prefix string, validate func(context.Context, fosite.Requester, string) error) error {
	rest, ok := cutPrefix(token, prefix)
	if !ok {
		return errorsx.WithStack(fosite.ErrInvalidTokenFormat)
	}
	return validate(ctx, r, rest)
}
