package plugin

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/ory/fosite"
)

// WrapProvider returns provider with deputy's rules for the authorization
// endpoint, which fosite does not have:
//
//   - RFC 9207: every authorization response, success or error, carries
//     iss (Config.Issuer), so that a client talking to several
//     authorization servers can tell which one answered (a mix-up attack
//     swaps them);
//   - RFC 9700 §2.1: a request that uses PKCE with S256 may omit state
//     (PKCE is the CSRF protection then), and its response carries none; a
//     request without PKCE S256 still needs fosite's state of at least 8
//     characters, and a state that is sent is echoed as always.
//
// Kit mode's Provider is already wrapped. A host in plugin mode wraps the
// provider compose.Compose built, and its authorization endpoint uses the
// result for NewAuthorizeRequest, NewAuthorizeResponse and both
// WriteAuthorize calls. A state-less request relies on PKCE being checked:
// compose fosite's PKCE handler (with EnforcePKCE).
//
// An error in response_mode=form_post (which deputy's clients cannot
// register) is written by fosite as it is, without iss.
func (p *Plugin) WrapProvider(provider fosite.OAuth2Provider) fosite.OAuth2Provider {
	return &authorizeEndpoint{OAuth2Provider: provider, issuer: p.cfg.Issuer}
}

// authorizeEndpoint is a provider with deputy's authorization-endpoint
// rules (WrapProvider).
type authorizeEndpoint struct {
	fosite.OAuth2Provider
	issuer string
}

// statePlaceholder stands in for the state a PKCE S256 request left out,
// while fosite (which wants one of at least 8 characters) validates the
// request; it is taken out again before anything else sees the request.
const statePlaceholder = "deputy-pkce-s256-without-state"

// authorizeFormMemory is what fosite gives ParseMultipartForm.
const authorizeFormMemory = 1 << 20

// NewAuthorizeRequest is fosite's, with state optional under PKCE S256.
func (a *authorizeEndpoint) NewAuthorizeRequest(ctx context.Context, r *http.Request) (fosite.AuthorizeRequester, error) {
	if err := r.ParseMultipartForm(authorizeFormMemory); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return a.OAuth2Provider.NewAuthorizeRequest(ctx, r) // fosite answers a body it cannot parse
	}
	if r.Form.Get("state") != "" || !pkceS256(r.Form) {
		return a.OAuth2Provider.NewAuthorizeRequest(ctx, r)
	}
	sent, had := r.Form["state"]
	r.Form["state"] = []string{statePlaceholder}
	ar, err := a.OAuth2Provider.NewAuthorizeRequest(ctx, r)
	// fosite's request shares r.Form: this restores both.
	if had {
		r.Form["state"] = sent
	} else {
		delete(r.Form, "state")
	}
	req, ok := ar.(*fosite.AuthorizeRequest)
	if !ok {
		// A provider of another kind: its state cannot be taken back, so
		// the request is refused as fosite would have refused it.
		return ar, fosite.ErrInvalidState.WithHint("Request parameter 'state' is required.")
	}
	req.State = ""
	return req, err
}

// pkceS256 reports an authorization request that sends a PKCE challenge
// with the S256 method; fosite's PKCE handler checks the challenge itself.
func pkceS256(form url.Values) bool {
	return form.Get("code_challenge") != "" && form.Get("code_challenge_method") == "S256"
}

// WriteAuthorizeResponse adds iss, and leaves out the state a request did
// not send.
func (a *authorizeEndpoint) WriteAuthorizeResponse(ctx context.Context, rw http.ResponseWriter, ar fosite.AuthorizeRequester, resp fosite.AuthorizeResponder) {
	params := resp.GetParameters()
	if ar.GetState() == "" {
		params.Del("state")
	}
	params.Set("iss", a.issuer)
	a.OAuth2Provider.WriteAuthorizeResponse(ctx, rw, ar, resp)
}

// WriteAuthorizeError adds iss to an error fosite redirects to the
// client, and leaves out the state a request did not send.
func (a *authorizeEndpoint) WriteAuthorizeError(ctx context.Context, rw http.ResponseWriter, ar fosite.AuthorizeRequester, err error) {
	if ar == nil {
		a.OAuth2Provider.WriteAuthorizeError(ctx, rw, ar, err)
		return
	}
	w := &issuerRedirect{ResponseWriter: rw, issuer: a.issuer, dropState: ar.GetState() == "", fragment: ar.GetResponseMode() == fosite.ResponseModeFragment}
	a.OAuth2Provider.WriteAuthorizeError(ctx, w, ar, err)
}

// issuerRedirect rewrites the Location of the redirect fosite writes for
// an authorization error: iss added, an empty state taken out (fosite
// writes "state=" for a request without one).
type issuerRedirect struct {
	http.ResponseWriter
	issuer    string
	dropState bool
	fragment  bool
	done      bool
}

func (w *issuerRedirect) WriteHeader(code int) {
	if !w.done && code >= 300 && code < 400 {
		if loc := w.Header().Get("Location"); loc != "" {
			w.Header().Set("Location", w.rewrite(loc))
		}
	}
	w.done = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *issuerRedirect) Write(b []byte) (int, error) {
	w.done = true
	return w.ResponseWriter.Write(b)
}

// Unwrap is for http.ResponseController.
func (w *issuerRedirect) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *issuerRedirect) rewrite(loc string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	raw := u.RawQuery
	if w.fragment {
		raw = u.EscapedFragment()
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return loc
	}
	if w.dropState && q.Get("state") == "" {
		q.Del("state")
	}
	q.Set("iss", w.issuer)
	if w.fragment {
		u.Fragment, u.RawFragment = "", ""
		return u.String() + "#" + q.Encode()
	}
	u.RawQuery = q.Encode()
	return u.String()
}
