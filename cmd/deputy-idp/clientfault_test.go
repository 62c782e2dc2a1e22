package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestHostileTextIsNotAnError: a NUL byte or invalid UTF-8 in a settings
// path id or a login username is the client's fault, answered 4xx and
// never logged at ERROR (PostgreSQL refuses such text with SQLSTATE 22021;
// SQLite stores it), the same on both dialects. It also pins item 5 of
// issue 13: an authorized-app revoke page exists only for an app holding
// the user's tokens.
func TestHostileTextIsNotAnError(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		logs := &testkit.Buffer{}
		idp := startIdP(t, b, func(c *config) {
			c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		})
		alice := idp.loggedIn(t, "alice", demoAlicePassword)
		resp := postForm(t, alice, idp.URL+"/settings/apps", url.Values{"name": {"hostile text"}, "scope": {"projects:read"}})
		m := appPathPattern.FindStringSubmatch(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || m == nil {
			t.Fatalf("create app: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		app := m[1]

		for _, bad := range []string{"a\x00b", "\xff\xfe", "\x00"} {
			id := url.PathEscape(bad)
			for _, c := range []struct {
				method, path string
				status       int
			}{
				{http.MethodGet, "/settings/apps/" + id, http.StatusNotFound},
				{http.MethodGet, "/settings/apps/" + id + "/delete", http.StatusNotFound},
				{http.MethodPost, "/settings/apps/" + id + "/delete", http.StatusNotFound},
				{http.MethodPost, "/settings/apps/" + id + "/secrets", http.StatusNotFound},
				{http.MethodGet, "/settings/apps/" + app + "/secrets/" + id + "/delete", http.StatusNotFound},
				{http.MethodPost, "/settings/apps/" + app + "/secrets/" + id + "/delete", http.StatusNotFound},
				{http.MethodGet, "/settings/authorized-apps/" + id + "/revoke", http.StatusNotFound},
				{http.MethodPost, "/settings/authorized-apps/" + id + "/revoke", http.StatusNotFound},
			} {
				var resp *http.Response
				if c.method == http.MethodGet {
					resp, _ = get(t, alice, idp.URL+c.path)
				} else {
					resp = postForm(t, alice, idp.URL+c.path, nil)
				}
				if resp.StatusCode != c.status {
					t.Errorf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.status)
				}
			}
			for _, name := range []string{bad, "alice" + bad} {
				resp := postForm(t, idp.browser(t), idp.URL+"/login", url.Values{"username": {name}, "password": {demoAlicePassword}})
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("login as %q: status %d, want 400", name, resp.StatusCode)
				}
			}
		}
		// Real ids still work: the 404s above are about the ids.
		if resp, _ := get(t, alice, idp.URL+"/settings/apps/"+app); resp.StatusCode != http.StatusOK {
			t.Errorf("control: alice's app page: %d", resp.StatusCode)
		}
		// An app that holds no tokens of alice's has no revoke page, even
		// her own; nor does it when revoked twice.
		if resp, body := get(t, alice, idp.URL+"/settings/authorized-apps/"+app+"/revoke"); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "hostile text") {
			t.Errorf("revoke page of an app holding nothing of alice's: %d", resp.StatusCode)
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "level=ERROR") {
				t.Errorf("client input logged as an error: %s", line)
			}
		}
	})
}

// TestInternalErrorClassifiesBeforeLogging: the level of internalError's
// log line follows what the error is, decided before anything is logged.
func TestInternalErrorClassifiesBeforeLogging(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		err    error
		status int
		level  string
	}{
		// What the store returns for text PostgreSQL cannot hold (SQLSTATE
		// 22021), classified by the store where the query ran.
		{"NUL in PostgreSQL text", fmt.Errorf("load: %w: %w", storage.ErrInvalidInput, &pq.Error{Code: "22021", Message: "invalid byte sequence for encoding \"UTF8\": 0x00"}), http.StatusBadRequest, "level=WARN"},
		{"backend terminated", fmt.Errorf("load: %w: %w", storage.ErrUnavailable, &pq.Error{Code: "57P01"}), http.StatusServiceUnavailable, "level=ERROR"},
		{"a bug of ours", errors.New("template exploded"), http.StatusInternalServerError, "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logs := &testkit.Buffer{}
			s := &server{log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			w := httptest.NewRecorder()
			s.internalError(w, httptest.NewRequest(http.MethodGet, "/settings/apps/x", nil), "load app", tc.err)
			if w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.level) {
				t.Errorf("logged %q, want one line at %s", logs.String(), tc.level)
			}
		})
	}
}
