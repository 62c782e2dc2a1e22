package flows

import (
	"context"
	"slices"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/internal/protocol"
)

var _ fosite.TokenEndpointHandler = (*ResourceIndicatorHandler)(nil)

// ResourceIndicatorHandler is RFC 8707 at the token endpoint for the
// authorization_code, refresh_token and client_credentials grants (the
// agent-token grant reads resource itself). It issues no token: composed
// after the grants' own handlers, it adjusts the audience they put on the
// request, and then answers fosite.ErrUnknownRequest, so that it never
// counts as the handler of a request nobody else handles.
//
//   - authorization_code: the tokens carry the authorization's audience; a
//     resource the authorization did not cover is invalid_target (fosite
//     grants the audience as it issues the tokens, so the exchange cannot
//     narrow it).
//   - refresh_token: the new pair carries the refresh token's audience,
//     narrowed to the resources the request names; a resource the refresh
//     token does not cover is invalid_target. The new refresh token carries
//     the narrowed audience too, so a later refresh cannot widen it back.
//   - A grant without any audience (issued before resources were
//     configured) takes the resources named, or the default resource.
//   - client_credentials: the resources named, or the default resource when
//     the request names neither a resource nor an audience, are added to
//     the audience.
//
// Unknown or malformed resources are invalid_target (Resources.Requested).
type ResourceIndicatorHandler struct {
	Resources *Resources
}

// ResourceIndicatorFactory builds the handler for compose.Compose; list it
// after every grant handler.
func ResourceIndicatorFactory(r *Resources) compose.Factory {
	return func(fosite.Configurator, interface{}, interface{}) interface{} {
		return &ResourceIndicatorHandler{Resources: r}
	}
}

func (h *ResourceIndicatorHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (h *ResourceIndicatorHandler) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	gt := r.GetGrantTypes()
	return gt.ExactOne(protocol.GrantTypeAuthorizationCode) || gt.ExactOne(protocol.GrantTypeRefreshToken) || gt.ExactOne(protocol.GrantTypeClientCredentials)
}

// HandleTokenEndpointRequest adjusts the audience, then steps aside
// (fosite.ErrUnknownRequest) unless the request is refused.
func (h *ResourceIndicatorHandler) HandleTokenEndpointRequest(ctx context.Context, request fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest
	}
	asked, err := h.Resources.Requested(request.GetRequestForm())
	if err != nil {
		return err
	}
	if request.GetGrantTypes().ExactOne(protocol.GrantTypeClientCredentials) {
		requested := slices.Clone(request.GetRequestedAudience())
		if len(asked) == 0 && len(requested) == 0 && h.Resources.Default() != "" {
			asked = []string{h.Resources.Default()}
		}
		for _, a := range asked {
			if !slices.Contains(requested, a) {
				requested = append(requested, a)
			}
			// fosite's handler granted what was requested already;
			// deputy's owned-app handler grants the requested audience
			// when it issues the token.
			request.GrantAudience(a)
		}
		request.SetRequestedAudience(requested)
		return fosite.ErrUnknownRequest
	}

	if request.GetGrantTypes().ExactOne(protocol.GrantTypeAuthorizationCode) {
		return h.code(request, asked)
	}
	return h.refresh(request, asked)
}

// code checks the resources of a code exchange against the
// authorization's audience: fosite's handler has put it in the requested
// audience (GrantScopes granted all of it), and grants it to the tokens
// only when it issues them, so the exchange cannot narrow it; a refresh
// can.
func (h *ResourceIndicatorHandler) code(request fosite.AccessRequester, asked []string) error {
	authorized := request.GetRequestedAudience()
	if len(authorized) == 0 {
		// An authorization without audience (issued before resources were
		// configured): the resources named, or the default.
		if len(asked) == 0 && h.Resources.Default() != "" {
			asked = []string{h.Resources.Default()}
		}
		for _, a := range asked {
			request.GrantAudience(a)
		}
		request.SetRequestedAudience(asked)
		return fosite.ErrUnknownRequest
	}
	for _, a := range asked {
		if !slices.Contains(authorized, a) {
			return errorsx.WithStack(ErrInvalidTarget.WithHintf("The resource %q was not authorized; ask for it at the authorization endpoint.", a))
		}
	}
	return fosite.ErrUnknownRequest
}

// refresh narrows the audience fosite's handler copied from the refresh
// token to the resources named.
func (h *ResourceIndicatorHandler) refresh(request fosite.AccessRequester, asked []string) error {
	granted := request.GetGrantedAudience()
	switch {
	case len(asked) == 0 && len(granted) == 0 && h.Resources.Default() != "":
		asked = []string{h.Resources.Default()}
	case len(asked) == 0:
		return fosite.ErrUnknownRequest // the grant's audience, as it is
	case len(granted) > 0:
		for _, a := range asked {
			if !slices.Contains(granted, a) {
				return errorsx.WithStack(ErrInvalidTarget.WithHintf("The resource %q was not granted to this refresh token.", a))
			}
		}
	}
	if err := setGranted(request, request.GetGrantedScopes(), asked); err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	request.SetRequestedAudience(asked)
	return fosite.ErrUnknownRequest
}

func (h *ResourceIndicatorHandler) PopulateTokenEndpointResponse(context.Context, fosite.AccessRequester, fosite.AccessResponder) error {
	return fosite.ErrUnknownRequest
}
