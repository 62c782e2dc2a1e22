package cors

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPublic(t *testing.T) {
	t.Parallel()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusTeapot)
	})
	h := Public(next, http.MethodGet, http.MethodPost)
	for _, tc := range []struct {
		name    string
		method  string
		headers map[string]string
		status  int
		want    map[string]string // "" means absent
	}{
		{
			name: "simple request", method: http.MethodGet,
			headers: map[string]string{"Origin": "https://inspector.example"},
			status:  http.StatusTeapot,
			want: map[string]string{
				"Access-Control-Allow-Origin":      "*",
				"Access-Control-Allow-Credentials": "",
				"Access-Control-Expose-Headers":    "WWW-Authenticate, Retry-After",
			},
		},
		{
			name: "preflight", method: http.MethodOptions,
			headers: map[string]string{
				"Origin":                         "https://inspector.example",
				"Access-Control-Request-Method":  "POST",
				"Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
			},
			status: http.StatusNoContent,
			want: map[string]string{
				"Access-Control-Allow-Origin":      "*",
				"Access-Control-Allow-Methods":     "GET, POST, OPTIONS",
				"Access-Control-Allow-Headers":     "authorization, content-type, mcp-protocol-version",
				"Access-Control-Max-Age":           MaxAge,
				"Access-Control-Allow-Credentials": "",
			},
		},
		{
			name: "preflight asking for odd headers", method: http.MethodOptions,
			headers: map[string]string{
				"Origin":                         "https://inspector.example",
				"Access-Control-Request-Method":  "POST",
				"Access-Control-Request-Headers": "x-a\r\nSet-Cookie: a=b",
			},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Headers": "", "Access-Control-Allow-Methods": "GET, POST, OPTIONS"},
		},
		{
			name: "preflight asking for too many headers", method: http.MethodOptions,
			headers: map[string]string{
				"Origin":                         "https://inspector.example",
				"Access-Control-Request-Method":  "POST",
				"Access-Control-Request-Headers": strings.Repeat("x-a, ", 300),
			},
			status: http.StatusNoContent,
			want:   map[string]string{"Access-Control-Allow-Headers": ""},
		},
		{
			name: "OPTIONS that is no preflight", method: http.MethodOptions,
			status: http.StatusNoContent,
			want:   map[string]string{"Allow": "GET, POST, OPTIONS", "Access-Control-Allow-Methods": ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(tc.method, "/token", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			for k, v := range tc.want {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}
