package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/secheaders"
)

//go:embed web/templates/*.html
var templateFiles embed.FS

//go:embed web/static
var staticFiles embed.FS

// pages are the parsed templates, one set per page so that each page's
// "content" block does not collide with another's.
type pages map[string]*template.Template

var templateFuncs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04 UTC")
	},
	"join": func(s []string) string { return strings.Join(s, " ") },
}

func parsePages() (pages, error) {
	names, err := fs.Glob(templateFiles, "web/templates/*.html")
	if err != nil {
		return nil, err
	}
	out := pages{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "web/templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(templateFuncs).ParseFS(templateFiles, "web/templates/layout.html", n)
		if err != nil {
			return nil, err
		}
		out[base] = t
	}
	return out, nil
}

// view is what every page template receives.
type view struct {
	Title string
	Nav   string
	User  *user
	Flash string
	Data  any
}

// render writes a page, buffering it so that a template error becomes a
// clean 500 instead of half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	t, ok := s.pages[page]
	if !ok {
		s.internalError(w, r, "render", errUnknownPage(page))
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.internalError(w, r, "render "+page, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes()) //nolint:errcheck // the client went away
}

type errUnknownPage string

func (e errUnknownPage) Error() string { return "unknown page " + string(e) }

// internalError answers err generically and logs it with detail, at a
// level chosen by what it is, classified before anything is logged: a
// database that cannot be reached is an outage (ERROR, 503); a value the
// database refuses to hold (a NUL byte or invalid UTF-8 in PostgreSQL text)
// is the request's fault (WARN, 400), so hostile input cannot fill the
// error log; anything else is ours (ERROR, 500).
func (s *server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	httperr.Answer(w, r, s.log, what, err, func(c httperr.Class) {
		if wantsJSON(r) {
			writeJSON(w, c.Status, map[string]string{"error": c.Code, "error_description": c.Message})
			return
		}
		http.Error(w, pageMessage[c.Status], c.Status)
	})
}

// pageMessage is what a page says for each httperr class.
var pageMessage = map[int]string{
	http.StatusServiceUnavailable:  "The service is temporarily unavailable. Please try again in a moment.",
	http.StatusBadRequest:          "The request contains characters that are not allowed.",
	http.StatusInternalServerError: "Something went wrong on our side. It has been logged; please try again.",
}

// errorPage answers a browser with a short page.
func (s *server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", view{Title: http.StatusText(status), User: s.currentUser(r), Data: msg})
}

func wantsJSON(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/api/") || strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck // the client went away
}

// contentSecurityPolicy allows nothing but this origin's stylesheet and
// images: no scripts at all, no inline styles, no framing. form-action is
// left out on purpose: after the consent page's Allow, the authorization
// endpoint redirects to the client's redirect URI, and browsers apply
// form-action to that redirect.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"

// securityHeaders sets the headers every response carries, with deputy's
// helper (the consent pages use the same one with their own CSP): the CSP
// above, nosniff, the same-origin referrer policy, X-Frame-Options DENY.
// Pages that others set (fosite's, the plugin's) get them too.
func securityHeaders(next http.Handler) http.Handler {
	withHeaders := secheaders.SecurityHeadersCSP(contentSecurityPolicy)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cross-Origin-Opener-Policy", "same-origin")
		withHeaders.ServeHTTP(w, r)
	})
}

// noStore marks a response as not cacheable: pages with secrets or
// per-user data must not land in a shared or back-button cache.
func noStore(w http.ResponseWriter) { secheaders.SetNoStore(w.Header()) }

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recoverPanics turns a panic into a logged 500, so that one bad request
// cannot take the server down and nothing internal reaches the client.
func recoverPanics(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.ErrorContext(r.Context(), "panic", "value", v, "method", r.Method, "path", r.URL.Path)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}
