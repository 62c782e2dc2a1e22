package plugin

import (
	"context"
	"net/http"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
)

// NewAuthorizeRequest is kit mode's: Provider().NewAuthorizeRequest, then
// CheckAuthorizeRequest and ResolveResources (an unknown resource is
// invalid_target). The host's authorization endpoint calls it, not
// the provider's, before it shows a login or consent page, and writes its
// errors with the provider's WriteAuthorizeError as usual.
func (p *Plugin) NewAuthorizeRequest(ctx context.Context, r *http.Request) (fosite.AuthorizeRequester, error) {
	// Repeated parameters first, so that fosite does not even redirect an
	// error to the first of two redirect URIs.
	err := parseForm(r)
	if err == nil {
		err = errRepeated(protocol.RepeatedAuthorizeParameter(r.Form))
	}
	if err != nil {
		return fosite.NewAuthorizeRequest(), err
	}
	ar, err := p.Provider().NewAuthorizeRequest(ctx, r)
	if err == nil {
		err = CheckAuthorizeRequest(r, ar)
	}
	if err == nil {
		err = p.ResolveResources(ar)
	}
	return ar, err
}

// CheckAuthorizeRequest holds an authorization request that fosite's
// NewAuthorizeRequest accepted to deputy's stricter rules; a host in plugin
// mode calls it after its provider's NewAuthorizeRequest:
//
//   - a parameter of the authorization request included more than once is
//     invalid_request (RFC 6749 §3.1), where fosite acts on the first
//     value (protocol.RepeatedAuthorizeParameter: fields of the host's own
//     consent form posted to the same URL are the host's);
//   - the redirect URI must be one the client registered, exactly; only a
//     public client that registered a loopback URI without a port may use
//     any port there (RFC 8252 §7.3), where fosite grants that to every
//     client and every registered loopback URI
//     (protocol.RedirectURIAllowed).
//
// A refused request comes back without its redirect URI, so that
// WriteAuthorizeError answers the browser instead of redirecting to it.
func CheckAuthorizeRequest(r *http.Request, ar fosite.AuthorizeRequester) error {
	err := errRepeated(protocol.RepeatedAuthorizeParameter(r.Form))
	if err == nil {
		client := ar.GetClient()
		if !protocol.RedirectURIAllowed(client.GetRedirectURIs(), client.IsPublic(), ar.GetRequestForm().Get("redirect_uri")) {
			err = fosite.ErrInvalidRequest.WithHint("The 'redirect_uri' parameter does not match any of the OAuth 2.0 Client's pre-registered redirect urls.")
		}
	}
	if err != nil {
		if a, ok := ar.(*fosite.AuthorizeRequest); ok {
			a.RedirectURI = nil
		}
	}
	return err
}
