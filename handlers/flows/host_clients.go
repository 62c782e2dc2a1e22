package flows

import (
	"context"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
)

// HostClientsOnly wraps a host's factories so that their client_credentials
// handler steps aside (fosite.ErrUnknownRequest) for deputy's owned apps,
// which only deputy's client-credentials handler may serve. Without it,
// fosite's own client_credentials handler would also accept an owned app
// and issue a second, uncapped token acting for nobody. Every other handler
// is returned as it is: an owned app has no redirect URI and no refresh
// token, so no other grant can serve it. (Only the client_credentials
// handler is wrapped because fosite keeps one handler per Go type: two
// wrapped handlers of one wrapper type would lose the second.)
func HostClientsOnly(factories ...compose.Factory) []compose.Factory {
	out := make([]compose.Factory, len(factories))
	for i, f := range factories {
		out[i] = func(config fosite.Configurator, storage, strategy any) any {
			return hostClientsOnly(f(config, storage, strategy))
		}
	}
	return out
}

// clientCredentialsProbe is a token request that only a client_credentials
// handler claims.
var clientCredentialsProbe = &fosite.AccessRequest{GrantTypes: fosite.Arguments{"client_credentials"}}

// hostClientsOnly wraps h when it is a client_credentials handler, keeping
// its authorize-endpoint side if it has one.
func hostClientsOnly(h any) any {
	th, ok := h.(fosite.TokenEndpointHandler)
	if !ok || !th.CanHandleTokenEndpointRequest(context.Background(), clientCredentialsProbe) {
		return h
	}
	gate := tokenHandlerGate{th}
	if ah, ok := h.(fosite.AuthorizeEndpointHandler); ok {
		return struct {
			fosite.AuthorizeEndpointHandler
			tokenHandlerGate
		}{ah, gate}
	}
	return gate
}

// tokenHandlerGate is a host's token-endpoint handler that does not see
// deputy's owned apps.
type tokenHandlerGate struct{ next fosite.TokenEndpointHandler }

var _ fosite.TokenEndpointHandler = tokenHandlerGate{}

func isOwnedApp(r fosite.AccessRequester) bool {
	return r.GetClient() != nil && ownedClient(r.GetClient()) != nil
}

func (g tokenHandlerGate) PopulateTokenEndpointResponse(ctx context.Context, r fosite.AccessRequester, resp fosite.AccessResponder) error {
	if isOwnedApp(r) {
		return fosite.ErrUnknownRequest
	}
	return g.next.PopulateTokenEndpointResponse(ctx, r, resp)
}

func (g tokenHandlerGate) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if isOwnedApp(r) {
		return fosite.ErrUnknownRequest
	}
	return g.next.HandleTokenEndpointRequest(ctx, r)
}

func (g tokenHandlerGate) CanSkipClientAuth(ctx context.Context, r fosite.AccessRequester) bool {
	return g.next.CanSkipClientAuth(ctx, r)
}

func (g tokenHandlerGate) CanHandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) bool {
	return !isOwnedApp(r) && g.next.CanHandleTokenEndpointRequest(ctx, r)
}
