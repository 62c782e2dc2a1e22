package main

import (
	"net/http"
	"time"

	"github.com/deputyauth/deputy/consent"
)

// sessionCookie names the first-party browser session.
const sessionCookie = "deputy_session"

// defaultSessionTTL is how long a login lasts.
const defaultSessionTTL = 12 * time.Hour

var errNoSession = consent.ErrNoSession

// SessionAuthenticator resolves the deputy_session cookie to a user. It reads
// the cookie and nothing else: a bearer token, however valid, is never a
// browser session, so an agent holding one cannot approve on its owner's
// behalf.
type SessionAuthenticator struct {
	users *users
	// secure marks the cookie Secure; set when the issuer is https.
	secure bool
	ttl    time.Duration
}

// Authenticate implements consent.SessionAuthenticator.
func (a *SessionAuthenticator) Authenticate(r *http.Request) (string, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", errNoSession
	}
	return a.users.sessionUser(r.Context(), c.Value)
}

// login starts a session for userID and sets its cookie on w.
func (a *SessionAuthenticator) login(w http.ResponseWriter, r *http.Request, userID string) error {
	// A fresh token on every login: a session id planted before login
	// (session fixation) never becomes an authenticated one.
	token, exp, err := a.users.createSession(r.Context(), userID, a.ttl)
	if err != nil {
		return err
	}
	http.SetCookie(w, a.cookie(token, exp))
	return nil
}

// logout ends the request's session, if any, and clears the cookie.
func (a *SessionAuthenticator) logout(w http.ResponseWriter, r *http.Request) error {
	var err error
	if c, cerr := r.Cookie(sessionCookie); cerr == nil {
		err = a.users.deleteSession(r.Context(), c.Value)
	}
	http.SetCookie(w, a.cookie("", time.Unix(0, 0)))
	return err
}

// cookie is the session cookie: HttpOnly so page scripts cannot read it,
// SameSite=Lax so other sites cannot post with it, Secure over https.
func (a *SessionAuthenticator) cookie(value string, exp time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     sessionCookie,
		Value:    value,
		Path:     "/",
		Expires:  exp,
		HttpOnly: true,
		Secure:   a.secure,
		SameSite: http.SameSiteLaxMode,
	}
	if value == "" {
		c.MaxAge = -1
	}
	return c
}
