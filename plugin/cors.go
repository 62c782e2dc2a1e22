package plugin

import (
	"net/http"

	"github.com/deputyauth/deputy/internal/cors"
)

// CORS wraps one of the IdP's machine endpoints (metadata documents, JWKS,
// token, revocation, registration) so that web pages of any origin may call
// it: browser-based OAuth clients, such as an MCP host in a browser or the
// MCP Inspector, cannot read an answer without it. Every answer carries
// Access-Control-Allow-Origin: * and never allows credentials, so the
// browser sends no cookies with these requests; OPTIONS preflights are
// answered here, so mount the wrapped handler for OPTIONS too. methods are
// the methods the endpoint serves.
//
// Never wrap the authorization endpoint or a page: they act on the user's
// session cookie. Kit mode's OAuth2Handler and Handler already use it; in
// plugin mode a host wraps its own endpoints.
func CORS(next http.Handler, methods ...string) http.Handler { return cors.Public(next, methods...) }
