package consent

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/secheaders"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/consent.css
var consentCSS []byte

var defaultTemplates = template.Must(template.New("consent").Funcs(TemplateFuncs()).ParseFS(templateFS, "templates/*.html"))

// TemplateFuncs are the functions the embedded templates use; a host that
// overrides Templates can parse its own with them.
//
//	join      []string → "a b c"
//	time      time.Time → "2006-01-02 15:04 UTC"
//	duration  time.Duration → "1 hour", "30 minutes"
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"join":     func(s []string) string { return strings.Join(s, " ") },
		"time":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"duration": humanDuration,
	}
}

func humanDuration(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s"
	}
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int64(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return plural(int64(d/time.Minute), "minute")
	default:
		return d.String()
	}
}

// contentSecurityPolicy allows the page nothing but its own stylesheet and
// form posts to its own origin: no script, no inline style, no framing.
const contentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// secure sets the headers every consent response carries, with the
// helper every deputy page uses (secheaders.SetSecurityHeaders). A framed
// Approve button is clickjacking, so nothing here may be framed; approvals
// are per-user, so nothing may be cached; the referrer policy keeps the
// page's URL on this site (secheaders.DefaultReferrerPolicy says why it is not
// "no-referrer": that would break the Origin check of the form post).
func secure(w http.ResponseWriter) {
	secheaders.SetSecurityHeaders(w.Header(), contentSecurityPolicy)
	secheaders.SetNoStore(w.Header())
}

func serveCSS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(consentCSS) //nolint:errcheck // the client went away
}

// apiError is the JSON body of every error answer.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	secure(w)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	enc.Encode(v) //nolint:errcheck // the client went away
}

// wantsHTML reports whether to answer r with a page rather than JSON: a
// browser, which lists text/html first in Accept, both when it navigates and
// when it submits a form. API clients, curl included, get JSON.
func wantsHTML(r *http.Request) bool {
	return prefersHTML(r.Header.Get("Accept"))
}

// isForm reports a urlencoded form body.
func isForm(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// prefersHTML is a deliberately small reading of Accept: text/html listed
// ahead of application/json (browsers), with no JSON at all, wins.
func prefersHTML(accept string) bool {
	h := strings.Index(accept, "text/html")
	if h < 0 {
		return false
	}
	j := strings.Index(accept, "application/json")
	return j < 0 || h < j
}

// fail answers an error the client can act on: JSON for API calls, a page
// for browsers. msg must not carry internal detail.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if wantsHTML(r) {
		h.render(w, r, status, TemplateError, &ErrorPage{
			Status: status, Title: http.StatusText(status), Message: msg, CSS: h.cssPath,
		})
		return
	}
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

// internal logs err with detail and answers generically (httperr): the
// client learns nothing about the database or the directory. A database
// that cannot be reached is a 503 with Retry-After: the same request works
// once it is back, and nothing was written.
func (h *Handler) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	httperr.Answer(w, r, h.log, "consent: "+what, err, func(c httperr.Class) {
		h.fail(w, r, c.Status, c.Code, c.Message)
	})
}

// render executes a template into a buffer first, so a template error is a
// clean 500 rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var buf bytes.Buffer
	if err := h.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		h.log.ErrorContext(r.Context(), "consent: render", "template", name, "err", err)
		secure(w)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	secure(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes()) //nolint:errcheck // the client went away
	}
}
