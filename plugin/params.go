package plugin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/ory/fosite"
)

// maxMultipartMemory is what fosite's endpoints give ParseMultipartForm.
const maxMultipartMemory = 1 << 20

// parseForm parses r's query and body as fosite's endpoints do (fosite then
// finds the form parsed). An error is fosite's invalid_request.
func parseForm(r *http.Request) error {
	if err := r.ParseMultipartForm(maxMultipartMemory); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return fosite.ErrInvalidRequest.WithHint("Unable to parse HTTP body, make sure to send a properly formatted form request body.").WithWrap(err).WithDebug(err.Error())
	}
	return nil
}

// errRepeated is the answer to a request that includes name more than once
// ("" for none): RFC 6749 §3.1 and §3.2 say parameters "MUST NOT be
// included more than once", and fosite would silently act on the first
// value.
func errRepeated(name string) error {
	if name == "" {
		return nil
	}
	return fosite.ErrInvalidRequest.WithHintf("The '%s' parameter must not be included more than once.", name)
}

// writeOAuthError answers err as RFC 6749 §5.2 does (the token,
// introspection and revocation endpoints share the format): its status,
// and a JSON body with error and error_description.
func writeOAuthError(w http.ResponseWriter, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(rfc.CodeField)
	_ = json.NewEncoder(w).Encode(rfc)
}
