// Package secheaders sets the security headers and the no-store cache policy
// every deputy page and OAuth2 endpoint answers with.
package secheaders

import "net/http"

// DefaultContentSecurityPolicy is the CSP of deputy's pages. Scripts and
// styles come from the IdP's own origin only, never inline (so an injected
// <script> or style attribute does nothing); no page may be framed (a framed
// Approve button is clickjacking); forms post only back to the IdP (an
// injected <form action> cannot carry a session elsewhere); <base> cannot
// re-point relative URLs; plugins are off.
const DefaultContentSecurityPolicy = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"

// DefaultReferrerPolicy keeps URLs, and the consent and authorization
// parameters in them, from leaking to other origins, while same-origin
// requests keep a meaningful Referer and Origin. "no-referrer" would be
// stricter, but the Fetch standard then sends "Origin: null" on the IdP's
// own form posts, which breaks the Origin check that cross-origin
// protection falls back on in browsers without Sec-Fetch-Site.
const DefaultReferrerPolicy = "same-origin"

// SecurityHeaders sets the headers every page of deputy carries: the
// default CSP, nosniff, the referrer policy and anti-framing. A handler may
// still replace any of them for its own response. It is a gorilla/mux
// middleware.
func SecurityHeaders(next http.Handler) http.Handler {
	return SecurityHeadersCSP(DefaultContentSecurityPolicy)(next)
}

// SecurityHeadersCSP is SecurityHeaders with the host's own CSP, for a host
// whose pages need more (for example app icons from other origins:
// "img-src 'self' https:"). The CSP should keep frame-ancestors 'none'.
func SecurityHeadersCSP(csp string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			SetSecurityHeaders(w.Header(), csp)
			next.ServeHTTP(w, r)
		})
	}
}

// SetSecurityHeaders sets on h the headers of SecurityHeadersCSP: csp (""
// means DefaultContentSecurityPolicy), nosniff, DefaultReferrerPolicy and
// X-Frame-Options DENY. It is for handlers that answer outside a
// middleware chain, such as the consent pages, which a host may mount on
// any router.
func SetSecurityHeaders(h http.Header, csp string) {
	if csp == "" {
		csp = DefaultContentSecurityPolicy
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", DefaultReferrerPolicy)
	// CSP frame-ancestors supersedes it where supported; the header
	// covers browsers that predate CSP level 2.
	h.Set("X-Frame-Options", "DENY")
}

// SetNoStore sets on h what NoStore sets.
func SetNoStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
}

// NoStore marks every response of next as uncacheable, by browsers and by
// intermediaries (RFC 6749 §5.1 asks it of token responses; it belongs on
// any response carrying a secret). Pragma is for HTTP/1.0 caches.
func NoStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetNoStore(w.Header())
		next.ServeHTTP(w, r)
	})
}
