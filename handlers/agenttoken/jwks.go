package agenttoken

import (
	"net/http"
	"strconv"
)

// JWKSCacheMaxAge is how long clients may cache /.well-known/jwks.json. A new
// key is signed with only after a rotation; verifiers that meet an unknown kid
// should refetch (most JWT libraries do), so a short max-age only bounds how
// long a key stays cached after it is dropped.
const JWKSCacheMaxAge = 300

// NewJWKSHandler serves the keyring's public keys as a JWK Set (RFC 7517), for
// mounting at /.well-known/jwks.json. The document is built when the keys are
// loaded, not per request.
func NewJWKSHandler(keys *Keyring) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		doc := keys.JWKS()
		h := w.Header()
		// application/json rather than application/jwk-set+json: it is what IdPs
		// serve and what every JWT library accepts.
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(JWKSCacheMaxAge))
		h.Set("Content-Length", strconv.Itoa(len(doc)))
		h.Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodHead {
			return
		}
		w.Write(doc) //nolint:errcheck // the client went away
	})
}
