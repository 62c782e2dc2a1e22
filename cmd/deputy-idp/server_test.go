package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage/storagetest"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-only")

// testIdP is the whole server on a loopback listener, its issuer the
// listener's URL.
type testIdP struct {
	*httptest.Server
	srv *server
	dsn string
}

func startIdP(t *testing.T, b storagetest.Backend, mod ...func(*config)) *testIdP {
	t.Helper()
	return startIdPOn(t, b.NewDSN(t), mod...)
}

func startIdPOn(t *testing.T, dsn string, mod ...func(*config)) *testIdP {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	cfg := config{
		DatabaseURL:  dsn,
		Issuer:       "http://" + ts.Listener.Addr().String(),
		SystemSecret: testSecret,
		Demo:         true,
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, cleanup, err := buildServer(context.Background(), cfg)
	if err != nil {
		t.Fatalf("buildServer: %v", err)
	}
	ts.Config.Handler = s.routes()
	ts.Start()
	t.Cleanup(func() {
		ts.Close()
		cleanup()
	})
	return &testIdP{Server: ts, srv: s, dsn: dsn}
}

// browser is a cookie-keeping client that does not follow redirects, so
// tests see every Location.
func (idp *testIdP) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func (idp *testIdP) loggedIn(t *testing.T, username, password string) *http.Client {
	t.Helper()
	c := idp.browser(t)
	resp := postForm(t, c, idp.URL+"/login", url.Values{"username": {username}, "password": {password}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login %s: status %d", username, resp.StatusCode)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values) *http.Response {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	return resp
}

func TestSafeReturnTo(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/settings/apps", "/settings/apps"},
		{"/oauth2/auth?client_id=x&scope=a+b", "/oauth2/auth?client_id=x&scope=a+b"},
		{"https://evil.example/", "/"},
		{"//evil.example/", "/"},
		{"///evil.example/", "/"},
		{"/\\evil.example", "/"},
		{"\\\\evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"evil.example", "/"},
		{"/\t/evil.example", "/"},
		{"/\r\nSet-Cookie: x=y", "/"},
		{" /settings", "/"},
		{"/" + strings.Repeat("a", 3000), "/"},
	}
	for _, tt := range tests {
		if got := safeReturnTo(tt.in); got != tt.want {
			t.Errorf("safeReturnTo(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)

		t.Run("success", func(t *testing.T) {
			c := idp.browser(t)
			resp := postForm(t, c, idp.URL+"/login", url.Values{"username": {"alice"}, "password": {demoAlicePassword}, "return_to": {"/settings/apps"}})
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/settings/apps" {
				t.Fatalf("status %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			page, body := get(t, c, idp.URL+"/settings/apps")
			if page.StatusCode != http.StatusOK || !strings.Contains(body, "alice") {
				t.Errorf("settings after login: %d", page.StatusCode)
			}
		})

		t.Run("failure", func(t *testing.T) {
			for _, creds := range []url.Values{
				{"username": {"alice"}, "password": {"wrong-password"}},
				{"username": {"nobody"}, "password": {demoAlicePassword}},
				{"username": {"alice"}},
			} {
				c := idp.browser(t)
				resp := postForm(t, c, idp.URL+"/login", creds)
				if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%v: status %d", creds, resp.StatusCode)
				}
				for _, ck := range resp.Cookies() {
					if ck.Name == sessionCookie {
						t.Errorf("%v: a failed login set a session cookie", creds)
					}
				}
				if page, _ := get(t, c, idp.URL+"/settings/apps"); page.StatusCode != http.StatusSeeOther {
					t.Errorf("%v: settings reachable after a failed login: %d", creds, page.StatusCode)
				}
			}
		})

		t.Run("open redirect refused", func(t *testing.T) {
			for _, target := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"} {
				resp := postForm(t, idp.browser(t), idp.URL+"/login", url.Values{"username": {"alice"}, "password": {demoAlicePassword}, "return_to": {target}})
				if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/" {
					t.Errorf("return_to %q: status %d, Location %q; want 303 to /", target, resp.StatusCode, loc)
				}
			}
			// The login page does not echo a foreign target into its form either.
			_, body := get(t, idp.browser(t), idp.URL+"/login?return_to="+url.QueryEscape("https://evil.example/"))
			if strings.Contains(body, "evil.example") {
				t.Errorf("login page carries the foreign return_to")
			}
		})

		t.Run("cross-origin post refused", func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, idp.URL+"/login", strings.NewReader(url.Values{"username": {"alice"}, "password": {demoAlicePassword}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "cross-site")
			req.Header.Set("Origin", "https://evil.example")
			resp, err := idp.browser(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("cross-site login post: %d, want 403", resp.StatusCode)
			}
		})

		t.Run("logout", func(t *testing.T) {
			c := idp.loggedIn(t, "bob", demoBobPassword)
			if resp := postForm(t, c, idp.URL+"/logout", nil); resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("logout: %d", resp.StatusCode)
			}
			if page, _ := get(t, c, idp.URL+"/settings/apps"); page.StatusCode != http.StatusSeeOther {
				t.Errorf("settings reachable after logout: %d", page.StatusCode)
			}
		})

		t.Run("pages need a session", func(t *testing.T) {
			resp, _ := get(t, idp.browser(t), idp.URL+"/settings/apps/new")
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/login?return_to=%2Fsettings%2Fapps%2Fnew" {
				t.Errorf("status %d, Location %q", resp.StatusCode, loc)
			}
		})
	})
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	for _, path := range []string{"/", "/login", "/healthz", "/no-such-page", "/static/style.css", "/.well-known/oauth-authorization-server"} {
		resp, _ := get(t, idp.browser(t), idp.URL+path)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if csp == "" || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
	}
	// No page carries inline styles or scripts the CSP would block.
	c := idp.loggedIn(t, "alice", demoAlicePassword)
	for _, path := range []string{"/", "/login", "/settings/apps", "/settings/apps/new"} {
		_, body := get(t, c, idp.URL+path)
		if strings.Contains(body, "style=") || strings.Contains(body, "<script") || strings.Contains(body, "<style") {
			t.Errorf("%s has inline style or script", path)
		}
	}
}

// TestHealthAndReadiness: /healthz is liveness and stays 200 while the
// database is away (an orchestrator must not restart every replica during
// an outage); /readyz is readiness and turns 503, as JSON, not a 500.
func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		check := func(path string, status int, field, want string) {
			t.Helper()
			resp, body := get(t, idp.browser(t), idp.URL+path)
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != status || got[field] != want {
				t.Errorf("%s: %d %q, want %d with %s %q", path, resp.StatusCode, body, status, field, want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", path, ct)
			}
		}
		check("/healthz", http.StatusOK, "status", "ok")
		check("/readyz", http.StatusOK, "database", string(idp.srv.st.Dialect()))
		idp.srv.st.Close()
		check("/healthz", http.StatusOK, "status", "ok")
		check("/readyz", http.StatusServiceUnavailable, "status", "unavailable")
	})
}

func TestDemoSeedIsIdempotent(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		dsn := b.NewDSN(t)
		first := startIdPOn(t, dsn)
		ctx := context.Background()
		alice, err := first.srv.users.byUsername(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		// An operator takes a scope away; a restart must not give it back.
		if err := first.srv.users.setMembership(ctx, alice.ID, demoOrg, []string{"projects:read"}); err != nil {
			t.Fatal(err)
		}
		second := startIdPOn(t, dsn)
		again, err := second.srv.users.byUsername(ctx, "alice")
		if err != nil || again.ID != alice.ID {
			t.Fatalf("alice after restart: %v, %v", again, err)
		}
		got, err := second.srv.dir.UserScopes(ctx, alice.ID, demoOrg)
		if err != nil || len(got) != 1 || got[0] != "projects:read" {
			t.Errorf("scopes after restart: %q, %v", got, err)
		}
		noDemo := startIdPOn(t, storagetest.SQLite.NewDSN(t), func(c *config) { c.Demo = false })
		if _, err := noDemo.srv.users.byUsername(ctx, "alice"); err == nil {
			t.Errorf("--no-demo seeded alice")
		}
	})
}

var secretPattern = regexp.MustCompile(`dpy_cs_[A-Za-z0-9_-]{43}`)
var appPathPattern = regexp.MustCompile(`^/settings/apps/([0-9a-f]{32})$`)

func TestSettingsAppLifecycle(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		alice := idp.loggedIn(t, "alice", demoAlicePassword)
		ctx := context.Background()

		if resp, body := get(t, alice, idp.URL+"/settings/apps/new"); resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="scope" value="projects:read"`) {
			t.Fatalf("new app page: %d", resp.StatusCode)
		}
		// Validation: no name, unknown scope.
		for _, form := range []url.Values{
			{"name": {""}, "scope": {"projects:read"}},
			{"name": {"x"}, "scope": {"admin:everything"}},
			{"name": {"x"}},
			{"name": {strings.Repeat("n", 65)}, "scope": {"projects:read"}},
		} {
			if resp := postForm(t, alice, idp.URL+"/settings/apps", form); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("create %v: %d, want 400", form, resp.StatusCode)
			}
		}

		resp := postForm(t, alice, idp.URL+"/settings/apps", url.Values{"name": {"CI deploys"}, "scope": {"projects:read", "projects:write"}})
		m := appPathPattern.FindStringSubmatch(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || m == nil {
			t.Fatalf("create app: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		appPath, appID := m[0], m[1]

		// The secret is on the first view of the app page, and only there.
		page, body := get(t, alice, idp.URL+appPath)
		secret := secretPattern.FindString(body)
		if page.StatusCode != http.StatusOK || secret == "" {
			t.Fatalf("first view: %d, secret %q", page.StatusCode, secret)
		}
		if !strings.Contains(body, "curl -s -u '"+appID+":"+secret) || !strings.Contains(body, "clientcredentials.Config") {
			t.Errorf("first view lacks the curl or Go snippet")
		}
		if cc := page.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("secret page Cache-Control %q", cc)
		}
		if _, body := get(t, alice, idp.URL+appPath); secretPattern.MatchString(body) {
			t.Errorf("the secret is shown again on reload")
		}
		// Nor is it in any table: only its hash is kept.
		assertNotStored(t, idp, secret)

		// The secret works with a standard client, and the token acts as alice.
		cc := clientcredentials.Config{ClientID: appID, ClientSecret: secret, TokenURL: idp.URL + "/oauth2/token", Scopes: []string{"projects:read"}}
		api, apiBody := get(t, cc.Client(ctx), idp.URL+"/api/orgs/acme/projects")
		if api.StatusCode != http.StatusOK || !strings.Contains(apiBody, `"kind": "access"`) {
			t.Fatalf("sample API with the app's token: %d %s", api.StatusCode, apiBody)
		}

		// bob sees nothing of alice's app.
		bob := idp.loggedIn(t, "bob", demoBobPassword)
		for _, path := range []string{appPath, appPath + "/delete"} {
			if resp, _ := get(t, bob, idp.URL+path); resp.StatusCode != http.StatusNotFound {
				t.Errorf("bob GET %s: %d, want 404", path, resp.StatusCode)
			}
		}
		for _, path := range []string{appPath + "/delete", appPath + "/secrets"} {
			if resp := postForm(t, bob, idp.URL+path, nil); resp.StatusCode != http.StatusNotFound {
				t.Errorf("bob POST %s: %d, want 404", path, resp.StatusCode)
			}
		}
		if _, body := get(t, bob, idp.URL+"/settings/apps"); strings.Contains(body, appID) {
			t.Errorf("bob's app list shows alice's app")
		}

		// A second secret, then delete the first through its confirmation.
		if resp := postForm(t, alice, idp.URL+appPath+"/secrets", nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("new secret: %d", resp.StatusCode)
		}
		_, body = get(t, alice, idp.URL+appPath)
		second := secretPattern.FindString(body)
		if second == "" || second == secret {
			t.Fatalf("second secret not shown")
		}
		secrets, err := idp.srv.st.ListClientSecrets(ctx, appID)
		if err != nil || len(secrets) != 2 {
			t.Fatalf("secrets: %d, %v", len(secrets), err)
		}
		var firstID string
		for _, s := range secrets {
			if strings.HasPrefix(secret, s.DisplayPrefix) {
				firstID = s.ID
			}
		}
		confirmPath := appPath + "/secrets/" + firstID + "/delete"
		if resp, body := get(t, alice, idp.URL+confirmPath); resp.StatusCode != http.StatusOK || !strings.Contains(body, `action="`+confirmPath+`"`) {
			t.Fatalf("confirm page: %d", resp.StatusCode)
		}
		if resp := postForm(t, alice, idp.URL+confirmPath, nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("delete secret: %d", resp.StatusCode)
		}
		if _, err := cc.Token(ctx); err == nil {
			t.Errorf("a deleted secret still authenticates")
		}
		cc.ClientSecret = second
		if _, err := cc.Token(ctx); err != nil {
			t.Errorf("the remaining secret fails: %v", err)
		}

		// Delete the app: its token stops working at once.
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if resp := postForm(t, alice, idp.URL+appPath+"/delete", nil); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("delete app: %d", resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodGet, idp.URL+"/api/orgs/acme/projects", nil)
		tok.SetAuthHeader(req)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("deleted app's token: %d, want 401", resp.StatusCode)
		}
	})
}

// assertNotStored fails if value appears in any text column of the app
// tables or the host's tables.
func assertNotStored(t *testing.T, idp *testIdP, value string) {
	t.Helper()
	for _, q := range []string{
		`SELECT COUNT(*) FROM clients WHERE id = ? OR name = ?`,
		`SELECT COUNT(*) FROM client_secrets WHERE id = ? OR display_prefix = ?`,
		`SELECT COUNT(*) FROM idp_sessions WHERE id = ? OR user_id = ?`,
	} {
		var n int
		if err := idp.srv.st.Get(context.Background(), &n, q, value, value); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("secret found by %q", q)
		}
	}
}

func TestSampleAPIRefusals(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	metadata := idp.URL + "/.well-known/oauth-protected-resource/api"
	tests := []struct {
		name, method, auth string
		want               int
		challenge          string
	}{
		{"no token", http.MethodGet, "", http.StatusUnauthorized, `Bearer scope="offline_access projects:read", resource_metadata="` + metadata + `"`},
		{"garbage", http.MethodGet, "Bearer " + strings.Repeat("x", 9000), http.StatusUnauthorized, `Bearer error="invalid_token", scope="offline_access projects:read", resource_metadata="` + metadata + `"`},
		{"unknown opaque", http.MethodGet, "Bearer dpy_at_nope.nope", http.StatusUnauthorized, `Bearer error="invalid_token", scope="offline_access projects:read", resource_metadata="` + metadata + `"`},
		{"forged agent", http.MethodPost, "Bearer dpy_agt_eyJhbGciOiJub25lIn0.e30.", http.StatusUnauthorized, `Bearer error="invalid_token", scope="offline_access projects:write", resource_metadata="` + metadata + `"`},
		{"session cookie value as bearer", http.MethodGet, "Bearer " + strings.Repeat("A", 43), http.StatusUnauthorized, `Bearer error="invalid_token", scope="offline_access projects:read", resource_metadata="` + metadata + `"`},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, idp.URL+"/api/orgs/acme/projects", strings.NewReader(`{"name":"x"}`))
		req.Header.Set("Content-Type", "application/json")
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want || resp.Header.Get("WWW-Authenticate") != tt.challenge {
			t.Errorf("%s: %d %q, want %d %q", tt.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tt.want, tt.challenge)
		}
	}
}

func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	idp := startIdP(t, storagetest.SQLite)
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, out, errs := cli(t, "healthcheck", "--url", idp.URL+path); code != 0 || !strings.Contains(out, `"ok"`) {
			t.Errorf("healthy server, %s: exit %d %q %q", path, code, out, errs)
		}
	}
	idp.srv.st.Close()
	if code, _, errs := cli(t, "healthcheck", "--url", idp.URL+"/healthz"); code != 0 {
		t.Errorf("database down, liveness: exit %d %q, want 0", code, errs)
	}
	if code, _, _ := cli(t, "healthcheck", "--url", idp.URL+"/readyz"); code != 1 {
		t.Errorf("database down, readiness: exit %d, want 1", code)
	}
	for in, want := range map[string]string{
		"0.0.0.0:8080":   "http://127.0.0.1:8080/healthz",
		":9090":          "http://127.0.0.1:9090/healthz",
		"[::]:8080":      "http://127.0.0.1:8080/healthz",
		"127.0.0.1:8080": "http://127.0.0.1:8080/healthz",
	} {
		if got := localHealthURL(in); got != want {
			t.Errorf("localHealthURL(%q) = %q, want %q", in, got, want)
		}
	}
}

var bannerPattern = regexp.MustCompile(`deputy-idp is running at (http://127\.0\.0\.1:\d+)`)

// TestServeLifecycle runs the serve command's core on a free port: it
// prints where it runs, answers, and stops cleanly when its context ends
// (what SIGINT/SIGTERM do in main).
func TestServeLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out testkit.Buffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, config{
			Listen:      "127.0.0.1:0",
			DatabaseURL: storagetest.SQLite.NewDSN(t),
			Demo:        true,
			Logger:      discardLogger(),
			Out:         &out,
		})
	}()
	base := waitFor(t, &out, bannerPattern, done)
	if !strings.Contains(out.String(), demoAlicePassword) {
		t.Errorf("banner does not print the demo passwords")
	}
	resp, body := get(t, http.DefaultClient, base+"/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}
