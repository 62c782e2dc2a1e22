package integration

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// chromiumPath is Debian's Chromium, which .ci/run installs.
func chromiumPath() string { return envOr("DEPUTY_CHROMIUM", "/usr/bin/chromium") }

// newChrome starts a headless Chromium with a fresh profile for t. Without
// Chromium the test is skipped, unless DEPUTY_REQUIRE_CHROMIUM=1 (CI), where
// a missing browser is a failure: the test must run there.
func newChrome(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("DEPUTY_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("DEPUTY_REQUIRE_CHROMIUM=1 but there is no Chromium at %s: %v", path, err)
		}
		t.Skipf("no Chromium at %s (apt-get install -y chromium); browser test skipped", path)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	// The browser lives as long as the context of the first call, so that
	// one has no deadline; the steps after it run under one.
	// A 1280x900 viewport: the window size alone leaves a smaller one.
	if err := chromedp.Do(browserCtx, chromedp.EmulateViewport(1280, 900)); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start Chromium: %v", err)
	}
	ctx, cancelSteps := context.WithTimeout(browserCtx, 5*time.Minute)
	t.Cleanup(func() {
		cancelSteps()
		cancelBrowser()
		cancelAlloc()
	})
	return ctx
}

// screenshots saves full-page PNGs into the test's artifact directory (or
// DEPUTY_SCREENSHOT_DIR), and into docs/screenshots when
// DEPUTY_UPDATE_SCREENSHOTS=1, where the README shows them.
type screenshots struct {
	t   *testing.T
	dir string
}

func newScreenshots(t *testing.T) *screenshots {
	dir := os.Getenv("DEPUTY_SCREENSHOT_DIR")
	if dir == "" {
		dir = artifactDir(t)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &screenshots{t: t, dir: dir}
}

func (s *screenshots) take(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		// Quality 100 makes chromedp capture PNG.
		png, err := chromedp.FullScreenshot(100)(ctx, tgt)
		if err != nil {
			return err
		}
		file := name + ".png"
		if err := os.WriteFile(filepath.Join(s.dir, file), png, 0o644); err != nil {
			return err
		}
		s.t.Logf("screenshot %s", filepath.Join(s.dir, file))
		if os.Getenv("DEPUTY_UPDATE_SCREENSHOTS") == "1" {
			docs := filepath.Join("..", "docs", "screenshots")
			if err := os.MkdirAll(docs, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(docs, file), png, 0o644)
		}
		return nil
	})
}

// TestBrowser drives the pages a person uses, in Chromium: sign in, create
// an app, see its secret once (a reload no longer shows it), allow an agent
// platform on the consent page, open the approval URL of its 403, approve,
// and see the grant; no page may trip the Content-Security-Policy.
func TestBrowser(t *testing.T) {
	ctx := newChrome(t)
	shots := newScreenshots(t)
	csp := watchCSP(t, ctx)
	var tg *target
	if os.Getenv("DEPUTY_URL") != "" {
		tg = remoteTarget(t)
	} else {
		tg = startServer(t, storagetest.SQLite.NewDSN(t), newSecret(t))
	}
	// where describes the page the browser is on, for failure messages.
	where := func() string {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
		return "at " + loc + "\n" + truncate([]byte(html))
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		// Each step has its own deadline, so a page that never shows what
		// the test waits for fails that step instead of the whole test's
		// time.
		stepCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(stepCtx, steps...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, where())
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		stepCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		v, err := chromedp.Run(stepCtx, a)
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, where())
		}
		return v
	}

	// Sign in.
	do("sign in",
		chromedp.Navigate(tg.URL+"/login"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.SendKeys(chromedp.CSS(`#username`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), alicePassword),
		shots.take("01-login"),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button[type=submit]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#password`)),
		chromedp.WaitVisible(chromedp.Search(`//*[@class="who"]/strong[.="alice"]`)),
	)

	// Create an app from the settings pages.
	appName := randomName("ci-bot-")
	appHeading := chromedp.Search(`//h1[.="` + appName + `"]`)
	do("create an app",
		chromedp.Navigate(tg.URL+settingsNewAppPath),
		chromedp.WaitVisible(chromedp.CSS(`input[name=name]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), appName),
		// The read scopes alice holds are offered checked, the write one
		// unchecked: keep those defaults.
		chromedp.WaitVisible(chromedp.CSS(`input[name=scope][value="projects:read"]:checked`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name=scope][value="projects:write"]:not(:checked)`)),
		shots.take("02-create-app"),
		chromedp.Click(chromedp.CSS(`form[action="/settings/apps"] button[type=submit]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`input[name=name]`)),
		chromedp.WaitVisible(appHeading),
		chromedp.WaitVisible(chromedp.CSS(`#secret-value`)),
		shots.take("03-app-created"),
	)
	appURL := get("app page", chromedp.Location())

	// The new app's first secret is shown once, in full, in its own box
	// (the secrets table lists only a short display prefix, also in a
	// visually hidden label, so the test reads the box only).
	readSecret := func(what string) string {
		t.Helper()
		secret := strings.TrimSpace(get(what, chromedp.Text(chromedp.CSS(`#secret-value`))))
		if !strings.HasPrefix(secret, "dpy_cs_") || len(secret) < len("dpy_cs_")+32 {
			t.Fatalf("%s: the new-secret box holds %q, not a whole dpy_cs_ secret", what, secret)
		}
		return secret
	}
	// notShown fails the test if the page the browser is on holds any of
	// the secrets.
	notShown := func(what string, secrets ...string) {
		t.Helper()
		html := get(what, chromedp.OuterHTML(chromedp.CSS("html")))
		for _, secret := range secrets {
			if strings.Contains(html, secret) {
				t.Fatalf("%s: the secret %s… is still on the page", what, secret[:12])
			}
		}
	}
	first := readSecret("read the first secret")
	// Reloading the page the browser landed on must not show it again.
	do("reload after creating the app",
		chromedp.Reload(),
		chromedp.WaitVisible(appHeading),
		chromedp.WaitNotPresent(chromedp.CSS(`#secret-value`)),
	)
	notShown("page reloaded after creating the app", first)

	// A second secret, from the app's page, is shown once too.
	do("generate a secret",
		chromedp.Click(chromedp.CSS(`form[action$="/secrets"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#secret-value`)),
		chromedp.WaitVisible(appHeading),
		shots.take("04-new-secret"),
	)
	second := readSecret("read the second secret")
	if second == first {
		t.Fatal("generating a secret showed the app's first secret again")
	}
	do("reload after generating a secret",
		chromedp.Reload(),
		chromedp.WaitVisible(appHeading),
		chromedp.WaitNotPresent(chromedp.CSS(`#secret-value`)),
		// Both secrets are listed, by their short prefixes.
		chromedp.WaitReady(chromedp.CSS(`tbody tr:nth-child(2)`)),
		shots.take("05-secret-gone"),
	)
	notShown("page reloaded after generating a secret", first, second)
	do("app page again",
		chromedp.Navigate(appURL),
		chromedp.WaitVisible(appHeading),
	)
	notShown("app page visited again", first, second)

	// The agent story, with its pages in the browser. An agent platform, a
	// third-party client so that alice sees the consent page, gets her user
	// token through the authorization-code flow with PKCE; the agent token
	// it mints is read-only; a write gets 403 insufficient_scope with an
	// approval URL; alice approves there; the re-minted token writes.
	callback := newCallbackServer(t)
	out := tg.cli(t, "clients", "create",
		"--name", "Agent platform",
		"--grant", "authorization_code",
		"--grant", agentTokenGrant,
		"--redirect-uri", callback.URL+"/callback",
		"--scope", "projects:read projects:write")
	p := &platform{ID: str(t, out, "client_id"), Secret: str(t, out, "client_secret"), base: tg.URL}
	conf := p.oauth2Config("projects:read", "projects:write")
	conf.RedirectURL = callback.URL + "/callback"
	verifier, state := oauth2.GenerateVerifier(), randomName("state-")
	do("authorize the agent platform",
		chromedp.Navigate(conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))),
		chromedp.WaitVisible(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1/span[.="`+str(t, out, "name")+`"]`)),
		shots.take("06-authorize"),
		chromedp.Click(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[.="Agent platform callback"]`)),
	)
	if e := strings.TrimSpace(get("callback error", chromedp.TextContent(chromedp.CSS(`#callback-error`)))); e != "" {
		t.Fatalf("the authorization came back with an error: %s", e)
	}
	if got := get("callback state", chromedp.TextContent(chromedp.CSS(`#callback-state`))); got != state {
		t.Fatalf("the callback got state %q, sent %q", got, state)
	}
	code := get("callback code", chromedp.TextContent(chromedp.CSS(`#callback-code`)))
	userTok, err := conf.Exchange(oauthCtx(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange the code the browser brought back: %v", err)
	}

	session := randomName("sess-")
	readOnly := p.mint(t, userTok.AccessToken, session, demoOrg)
	if readOnly.has("projects:write") {
		t.Fatalf("an agent token before any approval carries projects:write: %v", readOnly.Scopes)
	}
	callAPI(t, tg.URL, http.MethodGet, demoOrg, readOnly.Raw).wantStatus(t, "read with the agent token", http.StatusOK)
	denied := callAPI(t, tg.URL, http.MethodPost, demoOrg, readOnly.Raw)
	denied.wantStatus(t, "write before approval", http.StatusForbidden)
	var refusal struct {
		Error       string `json:"error"`
		ApprovalURL string `json:"approval_url"`
	}
	if err := json.Unmarshal(denied.Body, &refusal); err != nil || refusal.Error != "insufficient_scope" || !strings.HasPrefix(refusal.ApprovalURL, tg.URL+"/agent/approve?") {
		t.Fatalf("write before approval: want insufficient_scope with an approval URL on %s, got %s (%v)", tg.URL, denied.Body, err)
	}
	do("approve",
		chromedp.Navigate(refusal.ApprovalURL),
		chromedp.WaitVisible(chromedp.CSS(`button[value=approve]`)),
		chromedp.WaitVisible(chromedp.Search(`//code[.="`+session+`"]`)),
		chromedp.WaitVisible(chromedp.Search(`//li//code[.="projects:write"]`)),
		shots.take("07-approve"),
		chromedp.Click(chromedp.CSS(`button[value=approve]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[value=approve]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[.="Access approved"]`)),
		chromedp.WaitVisible(chromedp.Search(`//p/code[.="projects:write"]`)),
		shots.take("08-approved"),
	)
	a := p.mint(t, userTok.AccessToken, session, demoOrg)
	if !a.has("projects:write") {
		t.Fatalf("the agent token minted after approval lacks projects:write: %v", a.Scopes)
	}
	callAPI(t, tg.URL, http.MethodPost, demoOrg, a.Raw).wantStatus(t, "write after approval", http.StatusCreated)
	do("agent grants",
		chromedp.Navigate(tg.URL+"/agent/grants"),
		chromedp.WaitVisible(chromedp.Search(`//tr[td/code[.="`+session+`"]]/td/code[.="projects:write"]`)),
		shots.take("09-grants"),
	)

	// An MCP client that registered itself (RFC 7591): the consent page
	// calls it unverified and names the host the answer goes to.
	regResp, err := http.Post(tg.URL+"/oauth2/register", "application/json", strings.NewReader(
		`{"client_name":"MCP Inspector","redirect_uris":["`+callback.URL+`/callback"],"token_endpoint_auth_method":"none"}`))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if err := json.NewDecoder(regResp.Body).Decode(&reg); err != nil || regResp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %v", regResp.StatusCode, err)
	}
	regResp.Body.Close()
	regConf := &oauth2.Config{ClientID: reg.ClientID, RedirectURL: callback.URL + "/callback", Scopes: []string{"projects:read"},
		Endpoint: oauth2.Endpoint{AuthURL: tg.URL + "/oauth2/auth"}}
	callbackHost := strings.TrimPrefix(callback.URL, "http://")
	do("authorize a client that registered itself",
		chromedp.Navigate(regConf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))),
		chromedp.WaitVisible(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1/span[@class="badge unverified"]`)),
		chromedp.WaitVisible(chromedp.Search(`//strong[@class="redirect-host"][.="`+callbackHost+`"]`)),
		shots.take("10-unverified"),
		chromedp.Click(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[.="Agent platform callback"]`)),
	)
	if got := get("registered client's code", chromedp.TextContent(chromedp.CSS(`#callback-code`))); got == "" {
		t.Fatal("no code for the client that registered itself")
	}

	// Its step-up (MCP: after 403 insufficient_scope the client asks again
	// with the union of scopes): the write is shown as a time-boxed
	// approval, and once allowed it is listed with alice's agent grants.
	regConf.Scopes = []string{"projects:read", "projects:write"}
	do("re-authorize with a write",
		chromedp.Navigate(regConf.AuthCodeURL(randomName("state-"), oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))),
		chromedp.WaitVisible(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//li[code[.="projects:write"]]/span[@class="badge write"][starts-with(., "write · for ")]`)),
		chromedp.WaitVisible(chromedp.Search(`//p[@class="notice"]/a[@href="/agent/grants"]`)),
		shots.take("11-step-up"),
		chromedp.Click(chromedp.CSS(`button[name=decision][value=allow]`)),
		chromedp.WaitVisible(chromedp.Search(`//h1[.="Agent platform callback"]`)),
	)
	if got := get("step-up code", chromedp.TextContent(chromedp.CSS(`#callback-code`))); got == "" {
		t.Fatal("no code for the step-up")
	}
	do("the step-up is an agent grant",
		chromedp.Navigate(tg.URL+"/agent/grants"),
		chromedp.WaitVisible(chromedp.Search(`//tr[td//code[.="`+reg.ClientID+`"]]/td/code[.="projects:write"]`)),
		shots.take("12-step-up-grant"),
	)

	// The pages are served with a CSP without 'unsafe-inline': an inline
	// style, script or event handler would be refused, and Chromium says so.
	// (Checked by adding style="color:red" to login.html: this failed.)
	if v := csp.violations(); len(v) > 0 {
		t.Fatalf("Chromium refused content under the pages' Content-Security-Policy:\n%s", strings.Join(v, "\n"))
	}
}

// cspWatch collects what Chromium logs about Content-Security-Policy
// violations on the pages the test visits.
type cspWatch struct {
	mu   sync.Mutex
	seen []string
}

func watchCSP(t *testing.T, ctx context.Context) *cspWatch {
	t.Helper()
	w := &cspWatch{}
	err := chromedp.Listen(ctx, func(ev any) {
		// Listen's callback must return at once: record, nothing more.
		if e, ok := ev.(*cdplog.EventEntryAdded); ok && e.Entry != nil && strings.Contains(e.Entry.Text, "Content Security Policy") {
			w.mu.Lock()
			w.seen = append(w.seen, e.Entry.URL+": "+e.Entry.Text)
			w.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("listen to the browser's log: %v", err)
	}
	return w
}

func (w *cspWatch) violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

// newCallbackServer stands in for the agent platform's redirect URI: it
// shows the code and state the browser brings back, for the test to read.
func newCallbackServer(t *testing.T) *httptest.Server {
	page := template.Must(template.New("callback").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Agent platform callback</title></head>
<body><h1>Agent platform callback</h1>
<p>code: <code id="callback-code">{{.code}}</code></p>
<p>state: <code id="callback-state">{{.state}}</code></p>
<p>error: <code id="callback-error">{{.error}}</code></p>
</body></html>`))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]string{"code": q.Get("code"), "state": q.Get("state"), "error": q.Get("error") + " " + q.Get("error_description")})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// settingsNewAppPath is the page with the form that creates an app.
const settingsNewAppPath = "/settings/apps/new"
