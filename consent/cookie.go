package consent

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
)

// SessionCookie builds a first-party session cookie the way the consent
// routes need it, for hosts that want one: HttpOnly, so page scripts cannot
// read it; SameSite=Lax, so a cross-site POST does not carry it (a second
// wall behind CrossOriginProtection, and the only one for browsers too old
// to send Sec-Fetch-Site or Origin); Secure unless r arrived over plain HTTP
// on a loopback host, where browsers would otherwise drop it during
// development. A zero maxAge makes a browser-session cookie; a negative one
// deletes the cookie.
func SessionCookie(r *http.Request, name, value string, maxAge time.Duration) *http.Cookie {
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   r.TLS != nil || !isLoopback(r.Host),
	}
	switch {
	case maxAge < 0:
		c.MaxAge = -1
		c.Expires = time.Unix(0, 0)
	case maxAge > 0:
		c.MaxAge = int(maxAge / time.Second)
		c.Expires = time.Now().Add(maxAge)
	}
	return c
}

// isLoopback reports a request Host naming this machine.
func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return protocol.IsLoopback(host)
}
