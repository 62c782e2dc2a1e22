package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
)

// cookieSessions is the test's first-party session: a "session" cookie
// whose value is the user id.
var cookieSessions = testkit.Sessions{Cookie: "session"}

var catalog = []plugin.ScopeEntry{
	{Name: "docs:read", Description: "Read documents"},
	{Name: "docs:write", Description: "Change documents", Write: true},
	{Name: "admin:read", Description: "Read the admin console"},
}

const admin = "carol"

type env struct {
	t     *testing.T
	store *storage.Store
	dir   *testkit.Directory
	p     *plugin.Plugin
	srv   *httptest.Server
	// bodies is every apps API response body, for the show-once test.
	mu     sync.Mutex
	bodies [][]byte
}

// newPlugin builds the plugin the tests share on s: alice, bob and the
// admin carol with their scopes, cookie sessions, the catalog. mod, when
// not nil, changes the config before plugin.New.
func newPlugin(tb testing.TB, s *storage.Store, mod func(*plugin.Config)) (*plugin.Plugin, *testkit.Directory) {
	tb.Helper()
	dir := testkit.NewDirectory()
	dir.Set("alice", "acme", "docs:read", "docs:write")
	dir.Set("alice", "globex", "admin:read")
	dir.Set("bob", "acme", "docs:read")
	dir.Set(admin, "", "docs:read")
	cfg := plugin.Config{
		Store:        s,
		Directory:    dir,
		Sessions:     cookieSessions,
		IsAdmin:      func(_ context.Context, u string) bool { return u == admin },
		SystemSecret: bytes.Repeat([]byte("k"), 32),
		Scopes:       catalog,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := plugin.New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p, dir
}

func newEnv(t *testing.T, s *storage.Store) *env {
	t.Helper()
	return newEnvWith(t, s, nil)
}

// newEnvWith is newEnv with a hook that runs before the provider is
// composed (to change FositeConfig, say).
func newEnvWith(t *testing.T, s *storage.Store, beforeCompose func(*plugin.Plugin)) *env {
	t.Helper()
	p, dir := newPlugin(t, s, func(c *plugin.Config) { c.Agents = true })
	if beforeCompose != nil {
		beforeCompose(p)
	}
	return serveKit(t, s, p, dir)
}

// newEnvConfig is newEnv with changes to the plugin's config.
func newEnvConfig(t *testing.T, s *storage.Store, mod func(*plugin.Config)) *env {
	t.Helper()
	p, dir := newPlugin(t, s, func(c *plugin.Config) {
		c.Agents = true
		mod(c)
	})
	return serveKit(t, s, p, dir)
}

// serveKit serves p in kit mode on a loopback server, with the host's
// authorize endpoint.
func serveKit(t *testing.T, s *storage.Store, p *plugin.Plugin, dir *testkit.Directory) *env {
	t.Helper()
	r := mux.NewRouter()
	mountKit(r, p)
	// The host's authorize endpoint: its login is the session cookie, its
	// consent a yes.
	r.HandleFunc(plugin.AuthorizePath, func(w http.ResponseWriter, r *http.Request) {
		user, err := cookieSessions.Authenticate(r)
		if err != nil {
			http.Error(w, "log in", http.StatusUnauthorized)
			return
		}
		provider := p.Provider()
		ar, err := p.NewAuthorizeRequest(r.Context(), r)
		if err != nil {
			provider.WriteAuthorizeError(r.Context(), w, ar, err)
			return
		}
		p.Authorize(w, r, ar, user, r.URL.Query().Get("organization"), nil)
	})
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &env{t: t, store: s, dir: dir, p: p, srv: srv}
}

// mountKit mounts what a kit-mode host serves of deputy on r: the OAuth2
// endpoints and deputy's own handler.
func mountKit(r *mux.Router, p *plugin.Plugin) {
	oauth2 := p.OAuth2Handler()
	for _, path := range []string{plugin.TokenPath, plugin.IntrospectionPath, plugin.RevocationPath, plugin.MetadataPath} {
		r.Handle(path, oauth2)
	}
	own := p.Handler()
	for _, prefix := range []string{"/api/", "/agent/", plugin.JWKSPath, plugin.RegistrationPath} {
		r.PathPrefix(prefix).Handler(own)
	}
}

// raw sends a request to the test server and returns the response and its
// body, whatever the status.
func (e *env) raw(method, path, ctype, body string, setup func(*http.Request)) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if setup != nil {
		setup(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, out
}

func basic(id, secret string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) }
}

func session(user string) func(*http.Request) {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "session", Value: user}) }
}

// call makes an apps API request as user ("" for none) and returns the
// status and body.
func (e *env) call(user, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var text, ctype string
	switch b := body.(type) {
	case nil:
	case string:
		text = b
	case []byte:
		text = string(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		text = string(js)
	}
	if body != nil {
		ctype = "application/json"
	}
	var who func(*http.Request)
	if user != "" {
		who = session(user)
	}
	resp, out := e.raw(method, path, ctype, text, who)
	if resp.StatusCode == http.StatusInternalServerError {
		e.t.Errorf("%s %s: 500: %s", method, path, out)
	}
	e.mu.Lock()
	e.bodies = append(e.bodies, out)
	e.mu.Unlock()
	return resp.StatusCode, out
}

// must decodes a response that must have the given status.
func (e *env) must(status int, got int, body []byte, v any) {
	e.t.Helper()
	if got != status {
		e.t.Fatalf("status %d, want %d: %s", got, status, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			e.t.Fatalf("decode %s: %v", body, err)
		}
	}
}

func (e *env) createApp(user string, in map[string]any) plugin.App {
	e.t.Helper()
	var app plugin.App
	st, body := e.call(user, http.MethodPost, "/api/apps", in)
	e.must(http.StatusCreated, st, body, &app)
	return app
}

// ccApp creates a client_credentials app of user with scopes.
func (e *env) ccApp(user string, scopes ...string) plugin.App {
	return e.createApp(user, map[string]any{"name": user + "'s robot", "scopes": scopes})
}

func (e *env) createSecret(user, appID string) plugin.Secret {
	e.t.Helper()
	var s plugin.Secret
	st, body := e.call(user, http.MethodPost, "/api/apps/"+appID+"/secrets", nil)
	e.must(http.StatusCreated, st, body, &s)
	return s
}

// token fetches a client_credentials token with golang.org/x/oauth2.
func (e *env) token(clientID, secret, org string, style oauth2.AuthStyle, scopes ...string) (*oauth2.Token, error) {
	cfg := clientcredentials.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		TokenURL:     e.srv.URL + plugin.TokenPath,
		Scopes:       scopes,
		AuthStyle:    style,
	}
	if org != "" {
		cfg.EndpointParams = url.Values{"organization": {org}}
	}
	return cfg.Token(context.Background())
}

func (e *env) mustToken(clientID, secret, org string, scopes ...string) *oauth2.Token {
	e.t.Helper()
	tok, err := e.token(clientID, secret, org, oauth2.AuthStyleInHeader, scopes...)
	if err != nil {
		e.t.Fatalf("token: %v", err)
	}
	return tok
}

// oauthErrorCode is the RFC 6749 error code of a failed token request.
func oauthErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// form posts an authenticated form to an OAuth2 endpoint.
func (e *env) form(path, clientID, secret string, v url.Values) (int, []byte) {
	e.t.Helper()
	var auth func(*http.Request)
	if clientID != "" {
		auth = basic(clientID, secret)
	}
	resp, body := e.raw(http.MethodPost, path, "application/x-www-form-urlencoded", v.Encode(), auth)
	if resp.StatusCode >= 500 {
		e.t.Errorf("POST %s: %d: %s", path, resp.StatusCode, body)
	}
	return resp.StatusCode, body
}

// introspector is a resource server's own app, used to call introspection.
type introspector struct{ id, secret string }

func (e *env) resourceServer() introspector {
	e.t.Helper()
	e.dir.Set("rs-owner", "", "docs:read")
	app := e.ccApp("rs-owner", "docs:read")
	s := e.createSecret("rs-owner", app.ID)
	return introspector{app.ID, s.Secret}
}

type introspection struct {
	Active   bool   `json:"active"`
	Sub      string `json:"sub"`
	Scope    string `json:"scope"`
	ClientID string `json:"client_id"`
	Org      string `json:"org"`
	Exp      int64  `json:"exp"`
}

func (e *env) introspect(as introspector, token string) introspection {
	e.t.Helper()
	st, body := e.form(plugin.IntrospectionPath, as.id, as.secret, url.Values{"token": {token}})
	var out introspection
	e.must(http.StatusOK, st, body, &out)
	return out
}

// authorize sends user's browser to authURL (GET, the host's authorize
// endpoint) and returns the answer without following it.
func (e *env) authorize(user, authURL string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, authURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "session", Value: user})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		e.t.Errorf("GET %s: %d", authURL, resp.StatusCode)
	}
	return resp
}

// codeClient is a confidential authorization-code client and its secret,
// as golang.org/x/oauth2 configures it.
func (e *env) codeClient(redirect string, scopes ...string) oauth2.Config {
	e.t.Helper()
	app := e.createApp(admin, map[string]any{
		"name": "web", "grantTypes": []string{"authorization_code", "refresh_token"},
		"redirectUris": []string{redirect}, "scopes": scopes,
	})
	sec := e.createSecret(admin, app.ID)
	return oauth2.Config{
		ClientID: app.ID, ClientSecret: sec.Secret, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// code runs the authorization request for user in org and returns the
// code, failing the test without one.
func (e *env) code(user, org string, cfg oauth2.Config, opts ...oauth2.AuthCodeOption) string {
	e.t.Helper()
	resp := e.authorize(user, cfg.AuthCodeURL("state-"+user+"-0123456789", opts...)+"&organization="+url.QueryEscape(org))
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		e.t.Fatalf("authorize: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}
