package flows

import (
	"context"
	"errors"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"

	"github.com/deputyauth/deputy/storage"
)

// A client that registers itself (RFC 7591, or a metadata document's copy
// in kit mode) and never gets a token is swept after a while
// (storage.Store.DeleteExpired): registering costs nothing, so unused
// registrations would otherwise pile up. Its first token, which always
// comes from an authorization code, marks it used.

// UsageMarker records a registration's first token.
type UsageMarker interface {
	MarkClientUsed(ctx context.Context, id string) error
}

// UnusedRegistration is a client that may be a registration not used yet
// (storage.Client is one).
type UnusedRegistration interface {
	RegistrationUnused() bool
}

var _ fosite.TokenEndpointHandler = (*RegistrationUsageHandler)(nil)

// RegistrationUsageHandler marks a registration used when an authorization
// code is exchanged for its first token. It handles no request itself: it
// only looks at the response being made. List it before the authorization
// code grant's handler, so that a failed mark issues no token.
type RegistrationUsageHandler struct {
	Store UsageMarker
}

// RegistrationUsageFactory is the factory of RegistrationUsageHandler.
func RegistrationUsageFactory(store UsageMarker) compose.Factory {
	return func(fosite.Configurator, any, any) any { return &RegistrationUsageHandler{Store: store} }
}

func (h *RegistrationUsageHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, _ fosite.AccessResponder) error {
	if !request.GetGrantTypes().ExactOne("authorization_code") {
		return fosite.ErrUnknownRequest
	}
	c, ok := request.GetClient().(UnusedRegistration)
	if !ok || !c.RegistrationUnused() {
		return fosite.ErrUnknownRequest
	}
	if err := h.Store.MarkClientUsed(ctx, request.GetClient().GetID()); err != nil {
		if errors.Is(err, storage.ErrUnavailable) {
			return fosite.ErrTemporarilyUnavailable.WithWrap(err).WithDebug(err.Error())
		}
		return fosite.ErrServerError.WithWrap(err).WithDebugf("marking the registration used: %s", err)
	}
	return fosite.ErrUnknownRequest
}

func (h *RegistrationUsageHandler) HandleTokenEndpointRequest(context.Context, fosite.AccessRequester) error {
	return fosite.ErrUnknownRequest
}

func (h *RegistrationUsageHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (h *RegistrationUsageHandler) CanHandleTokenEndpointRequest(context.Context, fosite.AccessRequester) bool {
	return false
}
