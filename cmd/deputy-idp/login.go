package main

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxFormBytes bounds every form body this host reads.
const maxFormBytes = 64 << 10

type loginData struct {
	Error         string
	ReturnTo      string
	Username      string
	Demo          bool
	AlicePassword string
	BobPassword   string
}

// safeReturnTo returns target when it is a path on this server, and "/"
// otherwise. Only a path that starts with a single "/" qualifies: "//evil",
// "/\evil" (browsers read "\" as "/"), "https://evil" and anything with a
// scheme, host or control character would send a freshly logged-in user to
// another site (an open redirect, the first step of many phishing pages).
func safeReturnTo(target string) string {
	if target == "" || len(target) > 2048 || target[0] != '/' {
		return "/"
	}
	if len(target) > 1 && (target[1] == '/' || target[1] == '\\') {
		return "/"
	}
	for _, c := range target {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	return target
}

// loginURL is where a visitor without a session goes to come back to r.
func loginURL(r *http.Request) string {
	return "/login?return_to=" + url.QueryEscape(r.URL.RequestURI())
}

func (s *server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	returnTo := safeReturnTo(r.URL.Query().Get("return_to"))
	if s.currentUser(r) != nil {
		http.Redirect(w, r, returnTo, http.StatusSeeOther)
		return
	}
	noStore(w)
	s.render(w, r, http.StatusOK, "login", view{Title: "Sign in", Data: s.loginData(returnTo, "", "")})
}

func (s *server) loginData(returnTo, username, msg string) loginData {
	d := loginData{ReturnTo: returnTo, Username: username, Error: msg, Demo: s.cfg.Demo}
	if d.Demo {
		d.AlicePassword, d.BobPassword = demoAlicePassword, demoBobPassword
	}
	return d
}

func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	username := strings.TrimSpace(r.PostForm.Get("username"))
	password := r.PostForm.Get("password")
	returnTo := safeReturnTo(r.PostForm.Get("return_to"))
	noStore(w)
	if username == "" || password == "" || len(username) > 256 || len(password) > 1024 {
		s.render(w, r, http.StatusBadRequest, "login", view{Title: "Sign in",
			Data: s.loginData(returnTo, username, "Enter your username and password.")})
		return
	}
	// No account's name holds a control character (NUL included) or
	// invalid UTF-8 (validUsername): refused here, as the client's fault,
	// before PostgreSQL refuses the lookup and it reads as our error.
	if !utf8.ValidString(username) || strings.ContainsFunc(username, unicode.IsControl) {
		s.render(w, r, http.StatusBadRequest, "login", view{Title: "Sign in",
			Data: s.loginData(returnTo, "", "Usernames are letters, digits, '.', '_' and '-'.")})
		return
	}
	// Reserved before the password is checked (see loginThrottle): a
	// limit checked after would let parallel guesses through, and a
	// refusal only for wrong passwords would tell a right guess.
	source := loginSource(r)
	hold, wait := s.throttle.reserve(source, loginAccount(username))
	if hold == nil {
		secs := int(math.Ceil(wait.Seconds()))
		s.log.InfoContext(r.Context(), "login throttled", "username", username, "source", source, "retry_after", secs)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.render(w, r, http.StatusTooManyRequests, "login", view{Title: "Sign in",
			Data: s.loginData(returnTo, username, fmt.Sprintf("Too many failed sign-in attempts. Try again in %d seconds.", secs))})
		return
	}
	usr, err := s.users.checkPassword(r.Context(), username, password)
	if errors.Is(err, errBadCredentials) {
		// The reserved failure stays spent.
		s.log.InfoContext(r.Context(), "login failed", "username", username, "source", source)
		s.render(w, r, http.StatusUnauthorized, "login", view{Title: "Sign in",
			Data: s.loginData(returnTo, username, "Invalid username or password.")})
		return
	}
	// The right password, or a failure of ours: nothing to charge.
	hold.release()
	if err != nil {
		s.internalError(w, r, "login", err)
		return
	}
	if err := s.sessions.login(w, r, usr.ID); err != nil {
		s.internalError(w, r, "start session", err)
		return
	}
	s.log.InfoContext(r.Context(), "login", "user_id", usr.ID, "username", usr.Username)
	http.Redirect(w, r, returnTo, http.StatusSeeOther)
}

func (s *server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if err := s.sessions.logout(w, r); err != nil {
		s.internalError(w, r, "logout", err)
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// currentUser is the signed-in, enabled user of r, or nil.
func (s *server) currentUser(r *http.Request) *user {
	id, err := s.sessions.Authenticate(r)
	if err != nil {
		if !errors.Is(err, errNoSession) {
			s.log.ErrorContext(r.Context(), "session lookup", "err", err)
		}
		return nil
	}
	usr, err := s.users.byID(r.Context(), id)
	if err != nil || usr.Disabled {
		return nil
	}
	return usr
}

// signedIn wraps a page that needs a user: a visitor without a session is
// sent to log in and brought back.
func (s *server) signedIn(next func(w http.ResponseWriter, r *http.Request, u *user)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := s.currentUser(r)
		if u == nil {
			target := loginURL(r)
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				// A form post cannot be replayed after login.
				target = "/login"
			}
			http.Redirect(w, r, target, http.StatusSeeOther)
			return
		}
		noStore(w)
		next(w, r, u)
	}
}
