package protocol

import (
	"net"
	"net/url"
	"slices"
)

// MultiValuedParams are the request parameters a request may include more
// than once: RFC 8707's resource and fosite's audience, lists by
// definition. Every other parameter "MUST NOT be included more than once"
// (RFC 6749 §3.1, §3.2).
var MultiValuedParams = []string{"resource", "audience"}

// RepeatedParameter returns the name of a parameter that form includes more
// than once, other than MultiValuedParams (the first such name in sorted
// order), or "" when there is none. fosite takes the first value of a
// repeated parameter and ignores the rest, so that what a proxy, a log or a
// second reader sees need not be what fosite acted on; deputy's endpoints
// refuse such a request instead.
func RepeatedParameter(form url.Values) string {
	var names []string
	for k, v := range form {
		if len(v) > 1 && !slices.Contains(MultiValuedParams, k) {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	return names[0]
}

// AuthorizeParams are the parameters of an authorization request that
// fosite reads (RFC 6749 §4.1.1, PKCE, OpenID Connect), other than the
// MultiValuedParams. Only these count at the authorization endpoint: a
// host's own consent form may post fields of its own, lists among them, to
// the same URL.
var AuthorizeParams = []string{
	"acr_values", "claims", "client_id", "code_challenge", "code_challenge_method",
	"display", "id_token_hint", "login_hint", "max_age", "nonce", "prompt",
	"redirect_uri", "registration", "request", "request_uri", "response_mode",
	"response_type", "scope", "state", "ui_locales",
}

// RepeatedAuthorizeParameter is RepeatedParameter for an authorization
// request: the first of AuthorizeParams that form includes more than once,
// or "".
func RepeatedAuthorizeParameter(form url.Values) string {
	for _, name := range AuthorizeParams {
		if len(form[name]) > 1 {
			return name
		}
	}
	return ""
}

// RedirectURIAllowed reports whether raw, the redirect_uri of an
// authorization request, may receive the response of a client that
// registered the redirect URIs registered. It is stricter than fosite, and
// meant to be asked after fosite accepted the request:
//
//   - "" is allowed (fosite then uses the client's only registered URI, or
//     refuses);
//   - a registered URI matches only exactly, port included;
//   - RFC 8252 §7.3's any-port rule applies only to a public client (a
//     native app, which learns its port when it opens it) and only to a
//     registered http URI at a loopback IP literal without a port: then
//     raw may name any port there, with the same host, path and query.
//
// fosite applies the any-port rule to every client and every registered
// loopback URI, port or none: a confidential client registered at
// http://127.0.0.1:9/cb would get its code at http://127.0.0.1:8765/cb,
// wherever something else listens.
func RedirectURIAllowed(registered []string, public bool, raw string) bool {
	if raw == "" || slices.Contains(registered, raw) {
		return true
	}
	if !public {
		return false
	}
	req, err := url.Parse(raw)
	if err != nil || !isLoopbackHTTP(req) {
		return false
	}
	for _, reg := range registered {
		u, err := url.Parse(reg)
		if err == nil && isLoopbackHTTP(u) && u.Port() == "" &&
			u.Hostname() == req.Hostname() && u.EscapedPath() == req.EscapedPath() && u.RawQuery == req.RawQuery {
			return true
		}
	}
	return false
}

// isLoopbackHTTP reports an http URL at a loopback IP literal (127.0.0.1,
// [::1]) without credentials or fragment. "localhost" is a name, not a
// literal: RFC 8252 §8.3 advises against it, and fosite's any-port rule
// does not apply to it either.
func isLoopbackHTTP(u *url.URL) bool {
	ip := net.ParseIP(u.Hostname())
	return u.Scheme == "http" && ip != nil && ip.IsLoopback() && u.User == nil && u.Fragment == "" && !u.ForceQuery
}
