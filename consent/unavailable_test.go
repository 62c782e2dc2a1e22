package consent_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestDatabaseDownAnswers503 closes the database under the consent
// handler: approving, denying, listing and revoking answer a clean 503
// (JSON for API calls, the error page for browsers) with Retry-After, and
// the body says nothing about the database. Without the storage.ErrUnavailable
// branch of Handler.internal each of these is a 500 server_error: checked
// by removing it.
func TestDatabaseDownAnswers503(t *testing.T) {
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			s := b.Open(t)
			e := newEnv(t, s, nil)
			wantStatus(t, e.do(t, req{user: "alice", body: approveJSON("sess-1", "approve", "docs:read")}), http.StatusOK)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				q    req
			}{
				{"approve", req{user: "alice", body: approveJSON("sess-2", "approve", "docs:read")}},
				{"deny", req{user: "alice", body: approveJSON("sess-2", "deny", "docs:read")}},
				{"list grants", req{method: http.MethodGet, path: "/agent/grants", user: "alice"}},
				{"revoke", req{method: http.MethodDelete, path: "/agent/grants/g1", user: "alice"}},
			} {
				w := e.do(t, c.q)
				if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
					t.Errorf("%s: %d (Retry-After %q) %s, want 503", c.name, w.Code, w.Header().Get("Retry-After"), w.Body)
					continue
				}
				got := decode[struct{ Error, Message string }](t, w)
				if got.Error != "temporarily_unavailable" || strings.Contains(w.Body.String(), "sql") {
					t.Errorf("%s: body %s", c.name, w.Body)
				}
			}
			// A browser gets the page, with the page's headers.
			w := e.do(t, req{method: http.MethodGet, path: "/agent/approve?organization=acme&client=agent-plat&session=sess-3&scope=docs:read", user: "alice",
				header: map[string]string{"Accept": "text/html"}})
			if w.Code != http.StatusServiceUnavailable || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
				w.Header().Get("X-Frame-Options") != "DENY" {
				t.Errorf("approval page: %d %v", w.Code, w.Header())
			}
		})
	}
}
