package plugin_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestDatabaseDownAnswers503 closes the store's database under a running
// plugin: every endpoint family answers a clean 503 JSON with Retry-After,
// never a 500, an invalid_client, or (introspection, revocation) a 200 that
// pretends the token was looked at. Removing the storage.ErrUnavailable
// mapping (plugin.unavailable, plugin.internal) turns the token endpoint
// into invalid_client 401, introspection into {"active":false} 200,
// revocation into 200 and the apps API into 500: checked by commenting the
// mapping out.
func TestDatabaseDownAnswers503(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			s := b.Open(t)
			e := newEnv(t, s)
			app := e.ccApp("alice", "docs:read")
			sec := e.createSecret("alice", app.ID)
			tok := e.mustToken(app.ID, sec.Secret, "acme", "docs:read")
			rs := e.resourceServer()

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			oauth := []struct {
				name, path, body string
				auth             func(*http.Request)
			}{
				{"token", plugin.TokenPath, url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}, "organization": {"acme"}}.Encode(), basic(app.ID, sec.Secret)},
				{"token, wrong secret", plugin.TokenPath, url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}}.Encode(), basic(app.ID, sec.Secret+"x")},
				{"introspection", plugin.IntrospectionPath, url.Values{"token": {tok.AccessToken}}.Encode(), basic(rs.id, rs.secret)},
				{"revocation", plugin.RevocationPath, url.Values{"token": {tok.AccessToken}}.Encode(), basic(app.ID, sec.Secret)},
			}
			for _, c := range oauth {
				resp, body := e.raw(http.MethodPost, c.path, form, c.body, c.auth)
				var got struct {
					Error       string `json:"error"`
					Description string `json:"error_description"`
				}
				if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &got) != nil || got.Error != "temporarily_unavailable" {
					t.Errorf("%s: %d %s, want 503 temporarily_unavailable", c.name, resp.StatusCode, body)
					continue
				}
				if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Cache-Control") != "no-store" {
					t.Errorf("%s: headers %v", c.name, resp.Header)
				}
				if strings.Contains(string(body), "sql") || strings.Contains(string(body), "closed") {
					t.Errorf("%s: body leaks the cause: %s", c.name, body)
				}
			}

			apps := []struct{ method, path, body string }{
				{http.MethodGet, "/api/apps", ""},
				{http.MethodPost, "/api/apps", `{"name":"x","scopes":["docs:read"]}`},
				{http.MethodGet, "/api/apps/" + app.ID, ""},
				{http.MethodPost, "/api/apps/" + app.ID + "/secrets", ""},
				{http.MethodDelete, "/api/apps/" + app.ID, ""},
				{http.MethodGet, "/api/authorized-apps", ""},
			}
			for _, c := range apps {
				ctype := ""
				if c.body != "" {
					ctype = "application/json"
				}
				resp, body := e.raw(c.method, c.path, ctype, c.body, session("alice"))
				var got plugin.APIError
				if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &got) != nil || got.Error != "temporarily_unavailable" {
					t.Errorf("%s %s: %d %s, want 503 temporarily_unavailable", c.method, c.path, resp.StatusCode, body)
					continue
				}
				if resp.Header.Get("Retry-After") == "" || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
					t.Errorf("%s %s: headers %v", c.method, c.path, resp.Header)
				}
			}
		})
	}
}

// TestOAuthEndpointsWired checks that the client-auth failure limiter and
// no-store are on the token, introspection and revocation endpoints as
// Register mounts them. Without the limiter the 11th wrong secret is a 401
// like the first ten; without NoStore introspection's answer (which fosite
// leaves cacheable on success) carries no Cache-Control: checked by
// removing guard() in registerOAuth2.
func TestOAuthEndpointsWired(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	e := newEnv(t, storagetest.SQLite.Open(t))
	app := e.ccApp("alice", "docs:read")
	sec := e.createSecret("alice", app.ID)
	other := e.ccApp("bob", "docs:read")
	otherSec := e.createSecret("bob", other.ID)
	rs := e.resourceServer()
	tok := e.mustToken(app.ID, sec.Secret, "acme", "docs:read")

	// Responses carrying tokens are uncacheable.
	for _, c := range []struct{ name, path, body string }{
		{"token", plugin.TokenPath, url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}, "organization": {"acme"}}.Encode()},
		{"introspection", plugin.IntrospectionPath, url.Values{"token": {tok.AccessToken}}.Encode()},
	} {
		id, secret := app.ID, sec.Secret
		if c.path == plugin.IntrospectionPath {
			id, secret = rs.id, rs.secret
		}
		resp, body := e.raw(http.MethodPost, c.path, form, c.body, basic(id, secret))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", c.name, resp.StatusCode, body)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
			t.Errorf("%s: Cache-Control %q Pragma %q", c.name, resp.Header.Get("Cache-Control"), resp.Header.Get("Pragma"))
		}
	}
	// A new secret is shown once and must not be cached.
	resp, body := e.raw(http.MethodPost, "/api/apps/"+app.ID+"/secrets", "", "", session("alice"))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
		t.Errorf("new secret: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	// Repeated failures: 401 until the bucket is empty, then 429.
	bad := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}}.Encode()
	var last *http.Response
	for i := 0; i < 30; i++ {
		last, body = e.raw(http.MethodPost, plugin.TokenPath, form, bad, basic(app.ID, "wrong"))
		if last.StatusCode != http.StatusUnauthorized {
			break
		}
	}
	if last.StatusCode != http.StatusTooManyRequests || last.Header.Get("Retry-After") == "" {
		t.Fatalf("after repeated failures: %d %s (Retry-After %q), want 429", last.StatusCode, body, last.Header.Get("Retry-After"))
	}
	// The right secret of the locked-out client waits too (the bucket is
	// checked before the secret), on every guarded endpoint.
	for _, path := range []string{plugin.TokenPath, plugin.RevocationPath} {
		if resp, body := e.raw(http.MethodPost, path, form, url.Values{"grant_type": {"client_credentials"}, "token": {"x"}}.Encode(), basic(app.ID, sec.Secret)); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("%s for the locked-out client: %d %s, want 429", path, resp.StatusCode, body)
		}
	}
	// Another client is unaffected.
	if _, err := e.token(other.ID, otherSec.Secret, "acme", 0, "docs:read"); err != nil {
		t.Errorf("another client's token: %v", err)
	}
}

// TestClientAuthOutcomeReported: each guarded endpoint tells the limiter
// how its client authentication ended from fosite's own error. A wrong
// secret is charged on the token, introspection and revocation endpoints
// alike; requests whose client authenticated but that fail for another
// reason (a scope the app may not have, an unsupported grant, a token that
// is not there) are never charged, however many. Without the Report calls in
// plugin/oauth2.go every request is charged (the limiter counts an
// unreported attempt as a failure) and the second half fails: checked by
// removing reportClientAuth's call in token.
func TestClientAuthOutcomeReported(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	e := newEnv(t, storagetest.SQLite.Open(t))
	rs := e.resourceServer()
	for _, path := range []string{plugin.TokenPath, plugin.IntrospectionPath, plugin.RevocationPath} {
		app := e.ccApp("alice", "docs:read")
		e.createSecret("alice", app.ID)
		body := url.Values{"grant_type": {"client_credentials"}, "token": {"dpy_at_x"}}.Encode()
		var last *http.Response
		for i := 0; i < 30; i++ {
			last, _ = e.raw(http.MethodPost, path, form, body, basic(app.ID, "dpy_cs_wrong"))
			if last.StatusCode != http.StatusUnauthorized {
				break
			}
		}
		if last.StatusCode != http.StatusTooManyRequests {
			t.Errorf("%s: wrong secrets answered %d at the end, want 429", path, last.StatusCode)
		}
	}
	app := e.ccApp("alice", "docs:read")
	sec := e.createSecret("alice", app.ID)
	for i := 0; i < 40; i++ {
		for _, c := range []struct{ path, body string }{
			{plugin.TokenPath, url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:write"}}.Encode()},
			{plugin.TokenPath, url.Values{"grant_type": {"password"}}.Encode()},
			{plugin.RevocationPath, url.Values{"token": {"dpy_at_nothing"}}.Encode()},
		} {
			resp, body := e.raw(http.MethodPost, c.path, form, c.body, basic(app.ID, sec.Secret))
			if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusUnauthorized {
				t.Fatalf("request %d to %s with the right secret: %d %s", i, c.path, resp.StatusCode, body)
			}
		}
		resp, body := e.raw(http.MethodPost, plugin.IntrospectionPath, form, url.Values{"token": {"dpy_at_nothing"}}.Encode(), basic(rs.id, rs.secret))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("introspection %d: %d %s", i, resp.StatusCode, body)
		}
	}
}
