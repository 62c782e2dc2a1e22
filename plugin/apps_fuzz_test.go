package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// fuzzStores are the databases a fuzz target runs its inputs against: SQLite
// always; PostgreSQL as well when the seed corpus runs as a plain test (go
// test, make test, CI) and a PostgreSQL server is configured. While fuzzing
// (-fuzz) only SQLite, for speed.
func fuzzStores(f *testing.F) []*storage.Store {
	f.Helper()
	stores := []*storage.Store{storagetest.SQLite.Open(f)}
	fuzzing := false
	if fl := flag.Lookup("test.fuzz"); fl != nil && fl.Value.String() != "" {
		fuzzing = true
	}
	if !fuzzing && (os.Getenv("DEPUTY_TEST_DATABASE_URL") != "" || os.Getenv("DEPUTY_REQUIRE_POSTGRES") == "1") {
		stores = append(stores, storagetest.Postgres.Open(f))
	}
	return stores
}

// fuzzIdP is one plugin built once per fuzz target and reused by every
// iteration; requests go straight to its router (no socket), so a panic in a
// handler reaches the fuzzer instead of being swallowed by net/http.
type fuzzIdP struct {
	store *storage.Store
	dir   *testkit.Directory
	p     *plugin.Plugin
	h     http.Handler
}

// newFuzzIdP builds the plugin on s with the users of newEnv. agents
// enables agent tokens and consent.
func newFuzzIdP(tb testing.TB, s *storage.Store, agents bool) *fuzzIdP {
	tb.Helper()
	return newFuzzIdPConfig(tb, s, agents, nil)
}

// newFuzzIdPConfig is newFuzzIdP with mod, when not nil, changing the
// config last.
func newFuzzIdPConfig(tb testing.TB, s *storage.Store, agents bool, mod func(*plugin.Config)) *fuzzIdP {
	tb.Helper()
	p, dir := newPlugin(tb, s, func(c *plugin.Config) {
		// Never refuse: a fuzzer's wrong secrets must not lock the agent
		// platform out, or every later input would stop at the 429. The
		// limiter still reads every body, so its parsing is fuzzed too.
		c.ClientAuthLimit = plugin.ClientAuthLimit{Burst: 1 << 30, Rate: 1e9}
		// Internal errors are logged; they also answer 500, which fails
		// the target, so the log is where to look then.
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
		c.Agents = agents
		if mod != nil {
			mod(c)
		}
	})
	r := mux.NewRouter()
	mountKit(r, p)
	return &fuzzIdP{store: s, dir: dir, p: p, h: r}
}

// do serves one request as user ("" for none) and returns the recorder.
func (z *fuzzIdP) do(method, path, user, contentType string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if user != "" {
		req.AddCookie(&http.Cookie{Name: "session", Value: user})
	}
	w := httptest.NewRecorder()
	z.h.ServeHTTP(w, req)
	return w
}

// storedApp is the app's row as JSON ("" if there is none), to compare
// before and after a request.
func storedApp(t *testing.T, s *storage.Store, id string) (*storage.Client, string) {
	t.Helper()
	c, err := s.Client(context.Background(), id)
	if err != nil {
		t.Fatalf("load app %s: %v", id, err)
	}
	c.SecretHashes = nil
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, string(js)
}

// checkAppInvariants fails t unless the stored app c is one the apps API may
// ever hold: client_credentials alone and owned by owner, or
// authorization_code (with refresh_token at most) without an owner and with
// redirect URIs; scopes from the catalog; a name.
func checkAppInvariants(t *testing.T, c *storage.Client, owner string, body []byte) {
	t.Helper()
	gs := c.GetGrantTypes()
	cc := gs.Has(plugin.GrantTypeClientCredentials)
	switch {
	case len(gs) == 0:
		t.Fatalf("%q: stored app %s has no grant type", body, c.ID)
	case cc && len(gs) != 1:
		t.Fatalf("%q: stored app %s mixes grant types %v", body, c.ID, gs)
	case cc && (c.Owner() == "" || c.Owner() != owner):
		t.Fatalf("%q: client_credentials app %s owned by %q, want %q", body, c.ID, c.Owner(), owner)
	case cc && len(c.RedirectURIs) > 0:
		t.Fatalf("%q: client_credentials app %s has redirect URIs %v", body, c.ID, c.RedirectURIs)
	case cc && len(c.Scopes) == 0:
		t.Fatalf("%q: client_credentials app %s has no scope", body, c.ID)
	case !cc && !gs.Has(plugin.GrantTypeAuthorizationCode):
		t.Fatalf("%q: stored app %s has grant types %v", body, c.ID, gs)
	case !cc && c.Owner() != "":
		t.Fatalf("%q: authorization_code app %s has owner %q", body, c.ID, c.Owner())
	case !cc && len(c.RedirectURIs) == 0:
		t.Fatalf("%q: authorization_code app %s has no redirect URI", body, c.ID)
	case c.Name == "" || c.Public:
		t.Fatalf("%q: stored app %+v", body, c)
	case c.TokenEndpointAuthMethod != apps.TokenAuthBasic && c.TokenEndpointAuthMethod != apps.TokenAuthPost:
		t.Fatalf("%q: stored app %s has token endpoint auth method %q", body, c.ID, c.TokenEndpointAuthMethod)
	}
	for _, g := range gs {
		if g != plugin.GrantTypeClientCredentials && g != plugin.GrantTypeAuthorizationCode && g != plugin.GrantTypeRefreshToken {
			t.Fatalf("%q: stored app %s has grant type %q", body, c.ID, g)
		}
	}
	known := map[string]bool{"openid": !cc, "offline": !cc, "offline_access": !cc}
	for _, e := range catalog {
		known[e.Name] = true
	}
	for _, s := range c.Scopes {
		if !known[s] {
			t.Fatalf("%q: stored app %s has scope %q", body, c.ID, s)
		}
	}
	if !slices.Equal(c.Scopes, scope.Normalize(c.Scopes)) {
		t.Fatalf("%q: stored app %s has unnormalized scopes %v", body, c.ID, c.Scopes)
	}
}

// checkAPIAnswer fails t on a 5xx, and on an error answer that is not the
// apps API's JSON error shape. It returns the App of a 2xx answer.
func checkAPIAnswer(t *testing.T, what string, w *httptest.ResponseRecorder, body []byte) (plugin.App, bool) {
	t.Helper()
	if w.Code >= 500 {
		t.Fatalf("%s %q: status %d: %s", what, body, w.Code, w.Body.String())
	}
	if w.Code >= 300 {
		var e plugin.APIError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" || e.Message == "" {
			t.Fatalf("%s %q: status %d with body %q (%v)", what, body, w.Code, w.Body.String(), err)
		}
		return plugin.App{}, false
	}
	var app plugin.App
	if err := json.Unmarshal(w.Body.Bytes(), &app); err != nil || app.ID == "" {
		t.Fatalf("%s %q: status %d with body %q (%v)", what, body, w.Code, w.Body.String(), err)
	}
	return app, true
}

// FuzzAppsAPIJSON sends arbitrary bodies to POST /api/apps (as a user and as
// an administrator) and PUT /api/apps/{id} (a user's client_credentials app,
// an administrator's authorization_code app). No body may get a 5xx or a
// panic; every answer is the API's JSON; an app created or updated must
// satisfy checkAppInvariants, match what the answer showed, and keep its id
// and owner; a refused update changes nothing.
//
//	go test -run '^$' -fuzz FuzzAppsAPIJSON ./plugin/
func FuzzAppsAPIJSON(f *testing.F) {
	f.Add([]byte(`{"name":"robot","scopes":["docs:read"]}`))
	f.Add([]byte(`{"name":"web","grantTypes":["authorization_code","refresh_token"],"redirectUris":["https://app.example/cb"],"scopes":["docs:read","openid"]}`))
	type target struct {
		idp      *fuzzIdP
		ccID     string // alice's client_credentials app
		acID     string // an authorization_code app, managed by admin
		ccBefore *storage.Client
		acBefore *storage.Client
	}
	var targets []target
	ctx := context.Background()
	for _, s := range fuzzStores(f) {
		z := newFuzzIdP(f, s, false)
		mk := func(user, in string) string {
			w := z.do(http.MethodPost, "/api/apps", user, "application/json", []byte(in))
			var app plugin.App
			if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &app) != nil {
				f.Fatalf("create app: %d %s", w.Code, w.Body.String())
			}
			return app.ID
		}
		tg := target{idp: z,
			ccID: mk("alice", `{"name":"alice's robot","scopes":["docs:read"]}`),
			acID: mk(admin, `{"name":"web","grantTypes":["authorization_code"],"redirectUris":["https://app.example/cb"],"scopes":["docs:read"]}`),
		}
		var err error
		if tg.ccBefore, err = s.Client(ctx, tg.ccID); err != nil {
			f.Fatal(err)
		}
		if tg.acBefore, err = s.Client(ctx, tg.acID); err != nil {
			f.Fatal(err)
		}
		targets = append(targets, tg)
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range targets {
			z := tg.idp
			// Creation, by a user (who may create only a
			// client_credentials app, owned by them) and by an admin.
			for _, user := range []string{"alice", admin} {
				w := z.do(http.MethodPost, "/api/apps", user, "application/json", body)
				app, ok := checkAPIAnswer(t, "POST /api/apps as "+user, w, body)
				if !ok {
					continue
				}
				if w.Code != http.StatusCreated {
					t.Fatalf("POST %q as %s: status %d", body, user, w.Code)
				}
				c, _ := storedApp(t, z.store, app.ID)
				owner := user
				if !c.GetGrantTypes().Has(plugin.GrantTypeClientCredentials) {
					if user != admin {
						t.Fatalf("POST %q: user %s created authorization_code app %+v", body, user, c)
					}
					owner = ""
				}
				checkAppInvariants(t, c, owner, body)
				if app.OwnerUserID != c.Owner() || !slices.Equal(app.GrantTypes, c.GrantTypes) || !slices.Equal(app.Scopes, c.Scopes) {
					t.Fatalf("POST %q: answered %+v, stored %+v", body, app, c)
				}
				if err := z.store.DeleteClient(ctx, app.ID); err != nil {
					t.Fatal(err)
				}
			}

			// Update, of the user's own client_credentials app and of an
			// authorization_code app by the admin.
			for _, u := range []struct {
				user, id, owner string
				reset           *storage.Client
			}{
				{"alice", tg.ccID, "alice", tg.ccBefore},
				{admin, tg.acID, "", tg.acBefore},
			} {
				_, before := storedApp(t, z.store, u.id)
				w := z.do(http.MethodPut, "/api/apps/"+u.id, u.user, "application/json", body)
				app, ok := checkAPIAnswer(t, "PUT /api/apps/{id} as "+u.user, w, body)
				c, after := storedApp(t, z.store, u.id)
				if !ok {
					if after != before {
						t.Fatalf("PUT %q answered %d but changed the app:\n%s\n→\n%s", body, w.Code, before, after)
					}
					continue
				}
				if app.ID != u.id || app.OwnerUserID != c.Owner() || !slices.Equal(app.GrantTypes, c.GrantTypes) || !slices.Equal(app.Scopes, c.Scopes) {
					t.Fatalf("PUT %q: answered %+v, stored %+v", body, app, c)
				}
				checkAppInvariants(t, c, u.owner, body)
				// Back to the start, so each input meets the same app.
				reset := *u.reset
				if err := z.store.UpdateClient(ctx, &reset); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// FuzzAppsAPIPath puts arbitrary text where the apps API takes an id (an
// app, a secret, an authorized app, a user_id or owner filter) and calls
// every route with it as alice, who owns nothing. No answer may be a 5xx;
// none but her own listings may succeed; and bob's app and its secret, whose
// ids the placeholders __BOB__ and __BOBSECRET__ stand for, survive
// whatever she sent (an id that reached another user's app would show).
//
//	go test -run '^$' -fuzz FuzzAppsAPIPath ./plugin/
func FuzzAppsAPIPath(f *testing.F) {
	f.Add("__BOB__")
	type target struct {
		idp               *fuzzIdP
		bobApp, bobSecret string
		ids               *strings.Replacer
	}
	var targets []target
	for _, s := range fuzzStores(f) {
		z := newFuzzIdP(f, s, false)
		w := z.do(http.MethodPost, "/api/apps", "bob", "application/json", []byte(`{"name":"bob's robot","scopes":["docs:read"]}`))
		var app plugin.App
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &app) != nil {
			f.Fatalf("create app: %d %s", w.Code, w.Body.String())
		}
		w = z.do(http.MethodPost, "/api/apps/"+app.ID+"/secrets", "bob", "", nil)
		var sec plugin.Secret
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &sec) != nil {
			f.Fatalf("create secret: %d %s", w.Code, w.Body.String())
		}
		targets = append(targets, target{idp: z, bobApp: app.ID, bobSecret: sec.ID,
			ids: strings.NewReplacer("__BOB__", app.ID, "__BOBSECRET__", sec.ID)})
	}
	body := []byte(`{"name":"mine now","scopes":["docs:read"]}`)
	f.Fuzz(func(t *testing.T, raw string) {
		for _, tg := range targets {
			z := tg.idp
			id := tg.ids.Replace(raw)
			p := url.PathEscape(id)
			for _, c := range []struct {
				method, path string
				mayPass      bool
			}{
				{http.MethodGet, "/api/apps/" + p, false},
				{http.MethodPut, "/api/apps/" + p, false},
				{http.MethodPost, "/api/apps/" + p + "/secrets", false},
				{http.MethodGet, "/api/apps/" + p + "/secrets", false},
				{http.MethodDelete, "/api/apps/" + p + "/secrets/" + url.PathEscape(tg.bobSecret), false},
				{http.MethodDelete, "/api/apps/" + url.PathEscape(tg.bobApp) + "/secrets/" + p, false},
				{http.MethodDelete, "/api/apps/" + p, false},
				{http.MethodDelete, "/api/authorized-apps/" + p, false},
				{http.MethodGet, "/api/apps?user_id=" + url.QueryEscape(id), id == "alice" || id == ""},
				{http.MethodGet, "/api/apps?owner=" + url.QueryEscape(id), id == "me" || id == ""},
			} {
				var b []byte
				ct := ""
				if c.method == http.MethodPut {
					b, ct = body, "application/json"
				}
				w := z.do(c.method, c.path, "alice", ct, b)
				switch {
				case w.Code >= 500:
					t.Fatalf("%s %q: status %d: %s", c.method, c.path, w.Code, w.Body.String())
				case w.Code < 300 && !c.mayPass:
					t.Fatalf("alice %s %q: status %d: %s", c.method, c.path, w.Code, w.Body.String())
				case w.Code < 300 && c.method == http.MethodGet && strings.Contains(w.Body.String(), tg.bobApp):
					t.Fatalf("alice %s %q lists bob's app: %s", c.method, c.path, w.Body.String())
				}
			}
			if _, err := z.store.Client(context.Background(), tg.bobApp); err != nil {
				t.Fatalf("after %q bob's app: %v", id, err)
			}
			if n, err := z.store.CountClientSecrets(context.Background(), tg.bobApp); err != nil || n != 1 {
				t.Fatalf("after %q bob's app has %d secrets (%v)", id, n, err)
			}
		}
	})
}
