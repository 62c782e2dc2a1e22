// Package cors lets web pages of any origin call deputy's machine
// endpoints: the metadata documents, the JWKS, the token, revocation and
// registration endpoints, the protected-resource metadata. Browser-based
// OAuth clients (an MCP host running in a browser, the MCP Inspector) read
// and call these across origins; without CORS the browser hides every
// answer from them.
//
// It is never for the authorization endpoint or any page: those act on
// the user's cookies, and a cross-origin read of them is what the same-origin
// policy is there to stop.
package cors

import (
	"net/http"
	"strings"
)

// MaxAge is how long, in seconds, a browser may cache a preflight answer
// (browsers cap it lower: Chromium at two hours).
const MaxAge = "7200"

// maxRequestHeaders bounds the Access-Control-Request-Headers echoed back.
const maxRequestHeaders = 1024

// exposed are the response headers a cross-origin script may read besides
// the CORS-safelisted ones: a bearer challenge (RFC 6750 §3, RFC 9728
// §5.1) and when to retry a 429 or 503.
const exposed = "WWW-Authenticate, Retry-After"

// Public wraps next so that any origin may call it without credentials:
// every answer carries Access-Control-Allow-Origin: * and never
// Access-Control-Allow-Credentials, so a browser sends no cookies and no
// HTTP authentication of its own (RFC 6749's client_secret_basic, which a
// script sets itself, still works: the Authorization header is allowed).
// OPTIONS is answered here (204): a preflight lists methods, and the
// headers the browser asked for. methods are the methods next serves.
func Public(next http.Handler, methods ...string) http.Handler {
	allow := strings.Join(append(append([]string{}, methods...), http.MethodOptions), ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		if r.Method != http.MethodOptions {
			h.Set("Access-Control-Expose-Headers", exposed)
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Allow", allow)
		if r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", allow)
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" && validHeaderList(req) {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", MaxAge)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// validHeaderList reports whether s is a comma-separated list of header
// names (RFC 9110 tokens), short enough to echo back.
func validHeaderList(s string) bool {
	if len(s) > maxRequestHeaders {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~, ", c) >= 0:
		default:
			return false
		}
	}
	return true
}
