package flows

import (
	"context"
	"errors"
	"fmt"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/ory/fosite"
)

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
	return scope.Intersect(allowed, scope.Union(held, protocol.ProtocolScopes)), nil
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
