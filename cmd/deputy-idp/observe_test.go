package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// jsonCall calls the IdP's JSON API with c's cookies, from the IdP's own
// origin, and decodes a 2xx answer into out.
func jsonCall(t *testing.T, idp *testIdP, c *http.Client, method, path string, in, out any) int {
	t.Helper()
	raw, _ := json.Marshal(in)
	req, _ := http.NewRequest(method, idp.URL+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", idp.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

// ownedApp creates an owned client-credentials app of c's user through the
// apps API and returns its id and a secret.
func ownedApp(t *testing.T, idp *testIdP, c *http.Client, scopes ...string) (id, secret string) {
	t.Helper()
	var app struct {
		ID string `json:"id"`
	}
	if st := jsonCall(t, idp, c, http.MethodPost, "/api/apps", map[string]any{"name": "robot", "scopes": scopes}, &app); st != http.StatusCreated || app.ID == "" {
		t.Fatalf("POST /api/apps: %d", st)
	}
	var sec struct {
		Secret string `json:"secret"`
	}
	if st := jsonCall(t, idp, c, http.MethodPost, "/api/apps/"+app.ID+"/secrets", struct{}{}, &sec); st != http.StatusCreated || !strings.HasPrefix(sec.Secret, "dpy_cs_") {
		t.Fatalf("POST /api/apps/%s/secrets: %d", app.ID, st)
	}
	return app.ID, sec.Secret
}

// oauthForm posts form to an OAuth2 endpoint with HTTP Basic credentials.
func oauthForm(t *testing.T, idp *testIdP, path, id, secret string, form url.Values) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, idp.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestLogsHoldNoSecrets runs the flows that carry secrets (login, the apps
// API's secret creation, client_credentials, introspection, revocation, the
// authorization code with PKCE and refresh, the agent-token grant, the
// resource middleware, an approval) and their failures (a wrong password,
// a wrong secret, a garbage token) with every log line written, DEBUG
// included, and requires that no password, cookie, secret, code, verifier
// or token appears in them, whole or in part.
func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		logs := &testkit.Buffer{}
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		idp := startIdP(t, b, func(c *config) { c.Logger = log })
		ctx := context.Background()
		var secrets []string
		keep := func(s ...string) { secrets = append(secrets, s...) }
		keep(string(testSecret), demoAlicePassword, "wrong-password-0123")

		if resp := postForm(t, idp.browser(t), idp.URL+"/login", url.Values{"username": {"alice"}, "password": {"wrong-password-0123"}}); resp.StatusCode < 400 {
			t.Fatalf("a wrong password: %d", resp.StatusCode)
		}
		alice := idp.loggedIn(t, "alice", demoAlicePassword)
		base, _ := url.Parse(idp.URL)
		for _, c := range alice.Jar.Cookies(base) {
			keep(c.Value)
		}

		appID, secret := ownedApp(t, idp, alice, "projects:read")
		keep(secret, "dpy_cs_wrong0123456789", basic(appID, secret))
		cc := clientcredentials.Config{ClientID: appID, ClientSecret: secret, TokenURL: idp.URL + "/oauth2/token", Scopes: []string{"projects:read"}, AuthStyle: oauth2.AuthStyleInHeader}
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		keep(tok.AccessToken)
		bad := cc
		bad.ClientSecret = "dpy_cs_wrong0123456789"
		if _, err := bad.Token(ctx); err == nil {
			t.Fatal("a wrong secret got a token")
		}
		for _, token := range []string{tok.AccessToken, "dpy_at_garbage0123456789.garbage0123456789"} {
			if st, body := oauthForm(t, idp, "/oauth2/introspect", appID, secret, url.Values{"token": {token}}); st != http.StatusOK {
				t.Fatalf("introspection: %d %s", st, body)
			}
		}
		keep("dpy_at_garbage0123456789.garbage0123456789")
		if resp, body := callAPI(t, idp, http.MethodGet, tok.AccessToken); resp.StatusCode != http.StatusOK {
			t.Fatalf("API with the app's token: %d %s", resp.StatusCode, body)
		}
		if resp, _ := callAPI(t, idp, http.MethodPost, tok.AccessToken); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("API write with a read token: %d", resp.StatusCode)
		}
		if resp, _ := callAPI(t, idp, http.MethodGet, "dpy_at_garbage0123456789.garbage0123456789"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("API with a garbage token: %d", resp.StatusCode)
		}

		// The authorization code with PKCE, refresh, the agent grant.
		oc := testClient(t, idp, true)
		keep(oc.ClientSecret, basic(oc.ClientID, oc.ClientSecret))
		verifier := oauth2.GenerateVerifier()
		keep(verifier)
		resp, _ := get(t, alice, oc.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(verifier)))
		code := callback(t, resp).Get("code")
		keep(code)
		user, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		keep(user.AccessToken, user.RefreshToken)
		refreshed, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: user.RefreshToken}).Token()
		if err != nil {
			t.Fatal(err)
		}
		keep(refreshed.AccessToken, refreshed.RefreshToken)
		agent, _ := mintAgentToken(t, idp, oc, refreshed.AccessToken, "sess-logs")
		keep(agent)
		if resp, _ := callAPI(t, idp, http.MethodPost, agent); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("agent write before approval: %d", resp.StatusCode)
		}
		if resp := postForm(t, alice, idp.URL+"/agent/approve", url.Values{
			"organization": {demoOrg}, "clientId": {oc.ClientID}, "sessionId": {"sess-logs"}, "scopes": {"projects:write"}, "decision": {"approve"},
		}); resp.StatusCode >= 400 {
			t.Fatalf("approve: %d", resp.StatusCode)
		}
		agent, _ = mintAgentToken(t, idp, oc, refreshed.AccessToken, "sess-logs")
		keep(agent)
		if resp, _ := callAPI(t, idp, http.MethodGet, agent+"x"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a tampered agent token: %d", resp.StatusCode)
		}
		if st, body := oauthForm(t, idp, "/oauth2/revoke", oc.ClientID, oc.ClientSecret, url.Values{"token": {refreshed.RefreshToken}}); st != http.StatusOK {
			t.Fatalf("revoke: %d %s", st, body)
		}
		// A code used twice (fosite then revokes what it issued).
		if _, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
			t.Fatal("a code was exchanged twice")
		}

		// The same secrets again with the database gone: internal errors
		// are logged with detail (ERROR), and the detail must not be a
		// request's secret either.
		errorsBefore := strings.Count(logs.String(), "level=ERROR")
		if err := idp.srv.st.DB().Close(); err != nil {
			t.Fatal(err)
		}
		failing := []struct {
			path, id, secret string
			form             url.Values
		}{
			{"/oauth2/token", appID, secret, url.Values{"grant_type": {"client_credentials"}, "scope": {"projects:read"}}},
			{"/oauth2/introspect", appID, secret, url.Values{"token": {tok.AccessToken}}},
			{"/oauth2/token", oc.ClientID, oc.ClientSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {user.RefreshToken}}},
			{"/oauth2/token", oc.ClientID, oc.ClientSecret, url.Values{
				"grant_type": {protocol.GrantTypeAgentToken}, "subject_token": {refreshed.AccessToken},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "agent_session_id": {"sess-logs"}, "organization": {demoOrg},
			}},
		}
		for _, f := range failing {
			if st, body := oauthForm(t, idp, f.path, f.id, f.secret, f.form); st < 500 {
				t.Errorf("%s (%s) with the database closed: %d %s, want 5xx", f.path, f.form.Get("grant_type"), st, body)
			}
		}
		// A token that may be valid is not called invalid because the
		// database is away.
		if resp, _ := callAPI(t, idp, http.MethodGet, tok.AccessToken); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("API with the database closed: %d, want 503", resp.StatusCode)
		}
		// Token text cannot buy that 503: a forged token fails its HMAC
		// before any lookup.
		if resp, _ := callAPI(t, idp, http.MethodGet, "dpy_at_garbage0123456789.garbage0123456789"); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API with a forged token, the database closed: %d, want 401", resp.StatusCode)
		}
		if resp := postForm(t, idp.browser(t), idp.URL+"/login", url.Values{"username": {"alice"}, "password": {demoAlicePassword}}); resp.StatusCode < 500 {
			t.Errorf("login with the database closed: %d, want 5xx", resp.StatusCode)
		}
		if n := strings.Count(logs.String(), "level=ERROR") - errorsBefore; n < len(failing)+2 {
			t.Errorf("%d ERROR lines for %d failed requests: the failures were not logged with detail", n, len(failing)+2)
		}

		out := logs.String()
		// The test saw the traffic: every request has its DEBUG line.
		for _, want := range []string{"path=/oauth2/token status=200", "path=/oauth2/introspect", "path=/api/apps", "path=/agent/approve", "path=/login", "path=/oauth2/revoke"} {
			if !strings.Contains(out, want) {
				t.Errorf("no log line with %q: the test did not see the flows it checks", want)
			}
		}
		for _, s := range secrets {
			for _, part := range secretParts(s) {
				if strings.Contains(out, part) {
					t.Errorf("the logs hold a secret (%.12s…) or part of one (%q)", s, part)
				}
			}
		}
		if t.Failed() {
			t.Logf("logs:\n%s", out)
		}
	})
}

// basic is the credentials of an HTTP Basic header as clients send them.
func basic(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}

// secretParts is s and each of its dot-separated parts long enough to be
// secret on their own (a JWS's signature, an HMAC token's key or
// signature).
func secretParts(s string) []string {
	parts := []string{s}
	for p := range strings.SplitSeq(s, ".") {
		if len(p) >= 16 && p != s {
			parts = append(parts, p)
		}
	}
	return parts
}

// TestRequestLogLevels: a success is a DEBUG line, a refusal INFO, our
// failure WARN; at the default level (INFO) a successful request writes
// nothing.
func TestRequestLogLevels(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]slog.Level{200: slog.LevelDebug, 204: slog.LevelDebug, 303: slog.LevelDebug, 400: slog.LevelInfo, 404: slog.LevelInfo, 429: slog.LevelInfo, 500: slog.LevelWarn, 503: slog.LevelWarn} {
		if got := requestLevel(status); got != want {
			t.Errorf("requestLevel(%d) = %v, want %v", status, got, want)
		}
	}
	var buf bytes.Buffer
	h := observeRequests(newLogger(&buf, slog.LevelInfo, false), false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/ok?code=secret-code", nil))
	if buf.Len() != 0 {
		t.Errorf("a success at INFO wrote %q", buf.String())
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/missing?code=secret-code", nil))
	if line := buf.String(); !strings.Contains(line, "level=INFO msg=request method=GET path=/missing status=404") || strings.Contains(line, "secret-code") {
		t.Errorf("a 404 at INFO: %q", line)
	}
}

func TestLogLevelFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "info+2": slog.LevelInfo + 2} {
		if got, err := parseLogLevel(in); err != nil || got != want {
			t.Errorf("parseLogLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseLogLevel("verbose"); err == nil {
		t.Error("parseLogLevel accepted verbose")
	}
	if code, _, errs := cli(t, "serve", "--log-level", "verbose", "--database-url", "sqlite::memory:"); code != 2 || !strings.Contains(errs, "--log-level") {
		t.Errorf("serve --log-level verbose: exit %d, %q", code, errs)
	}
}

func TestCacheTTLFlags(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"--client-cache-ttl", "--user-scopes-cache-ttl"} {
		for _, bad := range []string{"soon", "-1m", "10"} {
			if code, _, errs := cli(t, "serve", flag, bad, "--database-url", "sqlite::memory:"); code != 2 || !strings.Contains(errs, flag) {
				t.Errorf("serve %s %s: exit %d, %q", flag, bad, code, errs)
			}
		}
	}
	for _, tt := range []struct {
		value string
		want  time.Duration
		ok    bool
	}{{"", 0, true}, {"0", -1, true}, {"90s", 90 * time.Second, true}, {"-1s", 0, false}} {
		got, ok := parseCacheTTL("x", tt.value, io.Discard)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseCacheTTL(%q) = %v, %v; want %v, %v", tt.value, got, ok, tt.want, tt.ok)
		}
	}
	// The plugin's value: the default, off, or as given.
	for in, want := range map[time.Duration]time.Duration{0: defaultUserScopesCacheTTL, -1: 0, time.Hour: time.Hour} {
		if got := userScopesCacheTTL(in); got != want {
			t.Errorf("userScopesCacheTTL(%v) = %v, want %v", in, got, want)
		}
	}
}

// scrapeMetrics reads /metrics in the text format into series → value.
func scrapeMetrics(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", w.Code, w.Body.String())
	}
	return testkit.ParseMetrics(t, w.Body)
}

// TestMetricsEndpoint: the metrics listener's /metrics, and what a token
// request, a failed client authentication, an approval and a middleware
// refusal add to it, exactly. The IdP's own listener serves no /metrics.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		m := idp.srv.metricsRoutes()
		ctx := context.Background()
		last, step := testkit.MetricSteps(t, func() map[string]float64 { return scrapeMetrics(t, m) })
		for _, name := range []string{"go_goroutines", `go_sql_open_connections{db_name="deputy"}`, "deputy_signing_key_age_seconds", "deputy_database_available"} {
			if _, ok := last[name]; !ok {
				t.Errorf("no %s on /metrics", name)
			}
		}
		if resp, _ := get(t, http.DefaultClient, idp.URL+"/metrics"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("the public listener serves /metrics: %d", resp.StatusCode)
		}

		alice := idp.loggedIn(t, "alice", demoAlicePassword)
		appID, secret := ownedApp(t, idp, alice, "projects:read")
		step("creating an app", nil)

		cc := clientcredentials.Config{ClientID: appID, ClientSecret: secret, TokenURL: idp.URL + "/oauth2/token", Scopes: []string{"projects:read"}, AuthStyle: oauth2.AuthStyleInHeader}
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		step("a token", map[string]float64{`deputy_token_requests_total{grant_type="client_credentials",outcome="success"}`: 1})

		cc.ClientSecret = "dpy_cs_wrong"
		if _, err := cc.Token(ctx); err == nil {
			t.Fatal("a wrong secret got a token")
		}
		step("a wrong secret", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="invalid_client"}`: 1,
			`deputy_client_auth_failures_total`:                                                     1,
		})

		if resp, _ := callAPI(t, idp, http.MethodPost, tok.AccessToken); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("write with a read token: %d", resp.StatusCode)
		}
		step("a refusal", map[string]float64{`deputy_resource_refusals_total{reason="insufficient_scope",token_kind="access"}`: 1})

		oc := testClient(t, idp, true)
		if resp := postForm(t, alice, idp.URL+"/agent/approve", url.Values{
			"organization": {demoOrg}, "clientId": {oc.ClientID}, "sessionId": {"sess-m"}, "scopes": {"projects:write"}, "decision": {"approve"},
		}); resp.StatusCode >= 400 {
			t.Fatalf("approve: %d", resp.StatusCode)
		}
		step("an approval", map[string]float64{`deputy_consent_events_total{event="approved"}`: 1})
	})
}

// waitFor polls until re matches what w holds, or serve ends.
func waitFor(t *testing.T, w *testkit.Buffer, re *regexp.Regexp, done <-chan error) string {
	t.Helper()
	for {
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\n%s", err, w.String())
		default:
		}
		if m := re.FindStringSubmatch(w.String()); m != nil {
			return m[1]
		}
		time.Sleep(5 * time.Millisecond) // polling, not a timing assertion
	}
}

var metricsAddrPattern = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// TestServeMetricsListener: --metrics-listen binds a second listener that
// serves /metrics and nothing else; the public listener has no /metrics.
func TestServeMetricsListener(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, logs testkit.Buffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, config{
			Listen:        "127.0.0.1:0",
			MetricsListen: "127.0.0.1:0",
			DatabaseURL:   storagetest.SQLite.NewDSN(t),
			Logger:        newLogger(&logs, slog.LevelInfo, false),
			Out:           &out,
		})
	}()
	base := waitFor(t, &out, bannerPattern, done)
	metrics := "http://" + waitFor(t, &logs, metricsAddrPattern, done)
	if resp, body := get(t, http.DefaultClient, metrics+"/metrics"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "deputy_database_available 1") {
		t.Errorf("metrics listener /metrics: %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, metrics+"/healthz"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("metrics listener serves the IdP: /healthz %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.DefaultClient, base+"/metrics"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("public listener /metrics: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve after shutdown: %v", err)
	}
}

// TestServeExportsTraces: with OTEL_EXPORTER_OTLP_ENDPOINT set, serve
// exports its spans over OTLP/HTTP, continuing the caller's trace context,
// and flushes them when it stops. (Not parallel: it sets the environment
// and the process's global tracer provider.)
func TestServeExportsTraces(t *testing.T) {
	var mu sync.Mutex
	var received []byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("collector: %v", err)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		if r.URL.Path != "/v1/traces" {
			t.Errorf("collector got %s %s", r.Method, r.URL.Path)
		}
		mu.Lock()
		received = append(received, b...)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, errs, done := runServe(ctx, t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.SetBasicAuth("nobody", "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token with unknown credentials: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	id, _ := hex.DecodeString(traceID)
	for _, want := range [][]byte{[]byte("deputy.oauth2.token"), []byte("Fosite.NewAccessRequest"), []byte("HTTP POST"), []byte("deputy-idp"), id} {
		if !bytes.Contains(received, want) {
			t.Errorf("the exported spans lack %q (%d bytes received)", want, len(received))
		}
	}
	if !strings.Contains(errs.String(), "exporting traces over OTLP/HTTP") {
		t.Errorf("serve did not say where traces go: %s", errs.String())
	}
}

// runServe runs the serve command as a user does, on a fresh SQLite file
// and a free port, with args added, until ctx ends. It returns where it
// serves, what it writes to stderr (its log), and the command's end: nil
// for exit code 0.
func runServe(ctx context.Context, t *testing.T, args ...string) (string, *testkit.Buffer, <-chan error) {
	t.Helper()
	var out, errs testkit.Buffer
	done := make(chan error, 1)
	go func() {
		args := append([]string{"serve", "--listen", "127.0.0.1:0", "--no-demo", "--database-url", storagetest.SQLite.NewDSN(t)}, args...)
		if code := run(ctx, args, &out, &errs); code != 0 {
			done <- fmt.Errorf("exit code %d: %s", code, errs.String())
			return
		}
		done <- nil
	}()
	return waitFor(t, &out, bannerPattern, done), &errs, done
}

// TestServeLogLevel: --log-level and DEPUTY_LOG_LEVEL decide what serve
// writes; at the default (info) a successful request writes nothing, at
// debug one line. (Not parallel: one case sets the environment.)
func TestServeLogLevel(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       string
		wantDebug bool
	}{
		{"default", nil, "", false},
		{"--log-level debug", []string{"--log-level", "debug"}, "", true},
		{"DEPUTY_LOG_LEVEL=debug", nil, "debug", true},
		{"the flag wins over the environment", []string{"--log-level", "warn"}, "debug", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DEPUTY_LOG_LEVEL", tt.env)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			base, errs, done := runServe(ctx, t, tt.args...)
			if resp, _ := get(t, http.DefaultClient, base+"/healthz"); resp.StatusCode != http.StatusOK {
				t.Fatalf("/healthz: %d", resp.StatusCode)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
			got := strings.Contains(errs.String(), "level=DEBUG msg=request method=GET path=/healthz status=200")
			if got != tt.wantDebug {
				t.Errorf("debug request line written: %v, want %v; log:\n%s", got, tt.wantDebug, errs.String())
			}
		})
	}
}

// TestRequestLogAllocations: a request whose line is below the level costs
// one allocation (the status recorder), nothing formatted. (Not parallel:
// AllocsPerRun counts every goroutine's allocations; the bound leaves room
// for stray ones, not for a second allocation per request.)
func TestRequestLogAllocations(t *testing.T) {
	h := observeRequests(newLogger(io.Discard, slog.LevelInfo, false), false, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w, r := httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/oauth2/token", nil)
	if n := testing.AllocsPerRun(1000, func() { h.ServeHTTP(w, r) }); n > 1.5 {
		t.Errorf("a successful request at INFO allocates %.1f times, want 1", n)
	}
}
