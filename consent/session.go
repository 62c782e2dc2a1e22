package consent

import (
	"errors"
	"net/http"
)

// ErrNoSession is what a SessionAuthenticator returns when the request
// carries no first-party session; pages answer it with a redirect to login.
var ErrNoSession = errors.New("deputy: no first-party session")

// SessionAuthenticator resolves a first-party browser session (cookie) to a
// user. Bearer tokens are never a session: an agent must not be able to
// approve for itself.
type SessionAuthenticator interface {
	Authenticate(r *http.Request) (userID string, err error)
}
