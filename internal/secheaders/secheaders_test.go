package secheaders

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><title>approve</title>"))
	})
	tests := []struct {
		name    string
		handler http.Handler
		csp     string
	}{
		{"default", SecurityHeaders(page), DefaultContentSecurityPolicy},
		{"host CSP", SecurityHeadersCSP("default-src 'self'; img-src 'self' https:; frame-ancestors 'none'")(page), "default-src 'self'; img-src 'self' https:; frame-ancestors 'none'"},
		{"error answer", SecurityHeaders(http.NotFoundHandler()), DefaultContentSecurityPolicy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			tc.handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/agent/approve", nil))
			h := w.Result().Header
			want := map[string]string{
				"Content-Security-Policy": tc.csp,
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "same-origin",
				"X-Frame-Options":         "DENY",
			}
			for k, v := range want {
				if got := h.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestDefaultCSPStopsInjection: the properties the default policy exists
// for, each of which an attack relies on the absence of.
func TestDefaultCSPStopsInjection(t *testing.T) {
	t.Parallel()
	directives := map[string]string{}
	for d := range strings.SplitSeq(DefaultContentSecurityPolicy, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	if strings.Contains(DefaultContentSecurityPolicy, "unsafe-inline") || strings.Contains(DefaultContentSecurityPolicy, "unsafe-eval") {
		t.Error("CSP allows inline script or eval: an injected <script> would run")
	}
	for name, want := range map[string]string{
		"default-src":     "'self'",
		"frame-ancestors": "'none'", // framed consent page: clickjacking
		"form-action":     "'self'", // injected form posting elsewhere
		"base-uri":        "'none'", // injected <base href>
		"object-src":      "'none'",
	} {
		if got := directives[name]; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for name := range directives {
		if strings.HasPrefix(name, "script-src") || strings.HasPrefix(name, "style-src") {
			t.Errorf("%s would override default-src 'self'", name)
		}
	}
}

func TestHandlerMayOverrideSecurityHeader(t *testing.T) {
	t.Parallel()
	h := SecurityHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if got := w.Header().Get("Content-Security-Policy"); got != "default-src 'none'; frame-ancestors 'none'" {
		t.Fatalf("CSP = %q", got)
	}
}

func TestNoStore(t *testing.T) {
	t.Parallel()
	secret := NoStore(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"secret":"dpy_cs_x"}`))
	}))
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		w := httptest.NewRecorder()
		secret.ServeHTTP(w, httptest.NewRequest(method, "/api/apps/x/secrets", nil))
		if got := w.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control = %q, want no-store", method, got)
		}
		if got := w.Header().Get("Pragma"); got != "no-cache" {
			t.Errorf("%s: Pragma = %q, want no-cache", method, got)
		}
	}
}
