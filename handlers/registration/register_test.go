package registration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

var testPolicy = Policy{Scopes: []string{"projects:read", "projects:write", "offline_access"}}

// regEnv is the registration endpoint on a loopback server over a real
// store.
type regEnv struct {
	t     *testing.T
	store *storage.Store
	srv   *httptest.Server
	base  string
}

func newRegEnv(t *testing.T, s *storage.Store, mod func(*Config)) *regEnv {
	t.Helper()
	cfg := Config{
		Store:  s,
		Policy: testPolicy,
		Path:   "/oauth2/register",
		// Each test its own source, unless it says otherwise.
		Source: func(r *http.Request) string { return r.Header.Get("X-Test-Source") },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	srv := httptest.NewUnstartedServer(nil)
	cfg.BaseURL = "http://" + srv.Listener.Addr().String() + cfg.Path
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = h
	srv.Start()
	t.Cleanup(srv.Close)
	return &regEnv{t: t, store: s, srv: srv, base: cfg.BaseURL}
}

// call sends body (a string, or any value as JSON) and returns the status,
// headers and decoded JSON answer.
func (e *regEnv) call(method, url, token string, body any, header ...string) (int, http.Header, map[string]any) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: %d, not JSON: %q", method, url, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, resp.Header, out
}

func (e *regEnv) register(md any, header ...string) (int, map[string]any) {
	e.t.Helper()
	status, h, out := e.call(http.MethodPost, e.base, "", md, header...)
	if h.Get("Cache-Control") != "no-store" {
		e.t.Errorf("registration answer without Cache-Control: no-store: %q", h.Get("Cache-Control"))
	}
	return status, out
}

func (e *regEnv) clients() int {
	e.t.Helper()
	cs, err := e.store.ListClients(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return len(cs)
}

var loopbackRedirect = []string{"http://127.0.0.1/callback"}

// The RFC 7591 §3.2.2 error table: every refused registration is a 400
// with the right error code, and stores nothing.
func TestRegistrationErrors(t *testing.T) {
	t.Parallel()
	md := func(kv ...any) map[string]any {
		m := map[string]any{"redirect_uris": loopbackRedirect, "token_endpoint_auth_method": "none"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
				continue
			}
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tooMany := make([]string, 11)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("https://app.example/cb%d", i)
	}
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		e := newRegEnv(t, s, nil)
		for _, tc := range []struct {
			name string
			body any
			ct   string // Content-Type when not application/json
			code string
		}{
			{"not JSON", "{redirect_uris:", "", ErrInvalidClientMetadata},
			{"a JSON array", `[{"redirect_uris":["http://127.0.0.1/cb"]}]`, "", ErrInvalidClientMetadata},
			{"two objects", `{"redirect_uris":["http://127.0.0.1/cb"]}{}`, "", ErrInvalidClientMetadata},
			{"null", `null`, "", ErrInvalidClientMetadata},
			{"not UTF-8", "{\"redirect_uris\":[\"http://127.0.0.1/cb\"],\"client_name\":\"\xff\"}", "", ErrInvalidClientMetadata},
			{"form body", "redirect_uris=http://127.0.0.1/cb", "application/x-www-form-urlencoded", ErrInvalidClientMetadata},
			{"over 64 KiB", `{"client_name":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, "", ErrInvalidClientMetadata},
			{"no redirect_uris", md("redirect_uris", nil), "", ErrInvalidRedirectURI},
			{"empty redirect_uris", md("redirect_uris", []string{}), "", ErrInvalidRedirectURI},
			{"redirect_uris a string", md("redirect_uris", "https://app.example/cb"), "", ErrInvalidRedirectURI},
			{"redirect_uris of numbers", md("redirect_uris", []int{1}), "", ErrInvalidRedirectURI},
			{"http to a host", md("redirect_uris", []string{"http://app.example/cb"}), "", ErrInvalidRedirectURI},
			{"fragment", md("redirect_uris", []string{"https://app.example/cb#x"}), "", ErrInvalidRedirectURI},
			{"credentials", md("redirect_uris", []string{"https://u:p@app.example/cb"}), "", ErrInvalidRedirectURI},
			{"javascript", md("redirect_uris", []string{"javascript:alert(1)"}), "", ErrInvalidRedirectURI},
			{"data", md("redirect_uris", []string{"data:text/html,x"}), "", ErrInvalidRedirectURI},
			{"relative", md("redirect_uris", []string{"/cb"}), "", ErrInvalidRedirectURI},
			{"a NUL", md("redirect_uris", []string{"https://app.example/\u0000"}), "", ErrInvalidRedirectURI},
			{"eleven", md("redirect_uris", tooMany), "", ErrInvalidRedirectURI},
			{"client_credentials", md("grant_types", []string{"client_credentials"}), "", ErrInvalidClientMetadata},
			{"code and client_credentials", md("grant_types", []string{"authorization_code", "client_credentials"}), "", ErrInvalidClientMetadata},
			{"agent grant", md("grant_types", []string{"authorization_code", "urn:deputy:params:oauth:grant-type:agent-token"}), "", ErrInvalidClientMetadata},
			{"implicit", md("grant_types", []string{"implicit"}), "", ErrInvalidClientMetadata},
			{"password", md("grant_types", []string{"password"}), "", ErrInvalidClientMetadata},
			{"refresh alone", md("grant_types", []string{"refresh_token"}), "", ErrInvalidClientMetadata},
			{"grant_types a string", md("grant_types", "authorization_code"), "", ErrInvalidClientMetadata},
			{"response type token", md("response_types", []string{"code", "token"}), "", ErrInvalidClientMetadata},
			{"client_secret_post", md("token_endpoint_auth_method", "client_secret_post"), "", ErrInvalidClientMetadata},
			{"private_key_jwt", md("token_endpoint_auth_method", "private_key_jwt"), "", ErrInvalidClientMetadata},
			{"auth method a number", md("token_endpoint_auth_method", 1), "", ErrInvalidClientMetadata},
			{"unknown scope", md("scope", "projects:read admin:everything"), "", ErrInvalidClientMetadata},
			{"scope with a quote", md("scope", `projects:read "x`), "", ErrInvalidClientMetadata},
			{"scope an array", md("scope", []string{"projects:read"}), "", ErrInvalidClientMetadata},
			{"name too long", md("client_name", strings.Repeat("n", protocol.MaxClientNameLength+1)), "", ErrInvalidClientMetadata},
			{"name with a control character", md("client_name", "MCP\u0007client"), "", ErrInvalidClientMetadata},
			{"name with a NUL", md("client_name", "MCP\u0000"), "", ErrInvalidClientMetadata},
			{"name a number", md("client_name", 7), "", ErrInvalidClientMetadata},
			{"logo over http", md("logo_uri", "http://app.example/logo.png"), "", ErrInvalidClientMetadata},
			{"logo not a URL", md("logo_uri", "logo.png"), "", ErrInvalidClientMetadata},
		} {
			var status int
			var out map[string]any
			if tc.ct != "" {
				status, _, out = e.call(http.MethodPost, e.base, "", tc.body, "Content-Type", tc.ct, "X-Test-Source", tc.name)
			} else {
				status, out = e.register(tc.body, "X-Test-Source", tc.name)
			}
			if status != http.StatusBadRequest || out["error"] != tc.code || out["error_description"] == "" {
				t.Errorf("%s: %d %v, want 400 %s with a description", tc.name, status, out, tc.code)
			}
		}
		if n := e.clients(); n != 0 {
			t.Fatalf("refused registrations stored %d clients", n)
		}
	})
}

// What a registration creates: an unowned agent client, public or with a
// secret, restricted to the policy, with a registration token kept only as
// a hash and an expiry until its first token.
func TestRegister(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		e := newRegEnv(t, s, nil)
		ctx := context.Background()

		status, out := e.register(map[string]any{
			"client_name":                "Inspector",
			"redirect_uris":              []string{"http://127.0.0.1/callback", "http://127.0.0.1/callback", "cursor://anysphere.cursor-retrieval/oauth/callback"},
			"grant_types":                []string{"authorization_code", "refresh_token"},
			"response_types":             []string{"code"},
			"token_endpoint_auth_method": "none",
			"scope":                      "projects:read offline_access",
			// Metadata deputy does not keep is ignored (RFC 7591 §2).
			"client_uri": "https://inspector.example", "contacts": []string{"a@b"}, "software_statement": "x.y.z",
		}, "X-Test-Source", "public")
		if status != http.StatusCreated {
			t.Fatalf("register: %d %v", status, out)
		}
		id, _ := out["client_id"].(string)
		token, _ := out["registration_access_token"].(string)
		if id == "" || !strings.HasPrefix(token, "dpy_rat_") || out["registration_client_uri"] != e.base+"/"+id {
			t.Fatalf("answer: %v", out)
		}
		if _, has := out["client_secret"]; has {
			t.Fatalf("a public client got a secret: %v", out)
		}
		if _, has := out["client_secret_expires_at"]; has {
			t.Fatalf("a public client got client_secret_expires_at: %v", out)
		}
		if fmt.Sprint(out["redirect_uris"]) != "[http://127.0.0.1/callback cursor://anysphere.cursor-retrieval/oauth/callback]" ||
			out["scope"] != "offline_access projects:read projects:write" || out["token_endpoint_auth_method"] != "none" {
			t.Fatalf("registered metadata: %v", out)
		}
		c, err := s.Client(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !c.Public || !c.Agent || c.Owner() != "" || c.Registration != storage.RegistrationDynamic:
			t.Fatalf("stored client: %+v", c)
		case !c.RegistrationUnused() || !c.UnusedExpiresAt.Time.After(time.Now().Add(23*time.Hour)):
			t.Fatalf("unused expiry: %+v", c.UnusedExpiresAt)
		case len(c.RegistrationTokenHash) != 32 || bytes.Contains(c.RegistrationTokenHash, []byte(token)):
			t.Fatalf("registration token stored as %q", c.RegistrationTokenHash)
		case fmt.Sprint(c.GrantTypes) != "[authorization_code refresh_token]" || fmt.Sprint(c.ResponseTypes) != "[code]":
			t.Fatalf("grants: %v %v", c.GrantTypes, c.ResponseTypes)
		}

		// The defaults: client_secret_basic, authorization_code, every scope.
		status, out = e.register(map[string]any{"redirect_uris": []string{"https://app.example/cb"}}, "X-Test-Source", "confidential")
		if status != http.StatusCreated {
			t.Fatalf("register: %d %v", status, out)
		}
		secret, _ := out["client_secret"].(string)
		if !strings.HasPrefix(secret, "dpy_cs_") || out["client_secret_expires_at"] != float64(0) ||
			out["token_endpoint_auth_method"] != "client_secret_basic" || fmt.Sprint(out["grant_types"]) != "[authorization_code]" ||
			out["scope"] != "offline_access projects:read projects:write" {
			t.Fatalf("defaults: %v", out)
		}
		c, err = s.Client(ctx, out["client_id"].(string))
		if err != nil || c.Public || len(c.SecretHashes) != 1 || bytes.Contains(c.SecretHashes[0], []byte(secret)) {
			t.Fatalf("confidential client stored: %+v %v", c, err)
		}
	})
}

// RFC 7592: the registration token, and only it, reads, updates and
// deletes its own registration. Each refusal is the same 401, whatever
// was wrong, so that nothing can be learnt about other clients.
func TestRegistrationManagement(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		e := newRegEnv(t, s, nil)
		ctx := context.Background()
		reg := func(name, method string) (id, token, secret, uri string) {
			status, out := e.register(map[string]any{"client_name": name, "redirect_uris": loopbackRedirect, "token_endpoint_auth_method": method}, "X-Test-Source", name)
			if status != http.StatusCreated {
				t.Fatalf("register %s: %d %v", name, status, out)
			}
			secret, _ = out["client_secret"].(string)
			return out["client_id"].(string), out["registration_access_token"].(string), secret, out["registration_client_uri"].(string)
		}
		id, token, secret, uri := reg("mine", "client_secret_basic")
		otherID, otherToken, _, otherURI := reg("other", "none")
		app := &storage.Client{ID: "app-1", Name: "app", RedirectURIs: loopbackRedirect, GrantTypes: []string{"authorization_code"}}
		if err := s.CreateClient(ctx, app); err != nil {
			t.Fatal(err)
		}
		// A token of the client, to see it go with the registration.
		c, _ := s.Client(ctx, id)
		req := &fosite.Request{ID: "r1", Client: c, RequestedAt: time.Now(), Session: &fosite.DefaultSession{Subject: "alice",
			ExpiresAt: map[fosite.TokenType]time.Time{fosite.AccessToken: time.Now().Add(time.Hour)}}}
		if err := s.CreateAccessTokenSession(ctx, "at-of-mine", req); err != nil {
			t.Fatal(err)
		}

		unauthorized := func(what string, status int, h http.Header, withError bool) {
			t.Helper()
			wa := h.Get("WWW-Authenticate")
			if status != http.StatusUnauthorized || !strings.HasPrefix(wa, "Bearer") || strings.Contains(wa, `error="invalid_token"`) != withError {
				t.Errorf("%s: %d %q, want 401 with a Bearer challenge (error=%v)", what, status, wa, withError)
			}
		}
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			body := map[string]any{"client_id": id, "redirect_uris": []string{"https://evil.example/cb"}, "token_endpoint_auth_method": "client_secret_basic"}
			status, h, _ := e.call(method, uri, "", body)
			unauthorized(method+" without a token", status, h, false)
			status, h, _ = e.call(method, uri, otherToken, body)
			unauthorized(method+" with another client's token", status, h, true)
			status, h, _ = e.call(method, uri, token+"x", body)
			unauthorized(method+" with a wrong token", status, h, true)
			status, h, _ = e.call(method, uri, secret, body)
			unauthorized(method+" with the client secret", status, h, true)
			status, h, _ = e.call(method, e.base+"/"+app.ID, token, body)
			unauthorized(method+" of an app", status, h, true)
			status, h, _ = e.call(method, e.base+"/no-such-client", token, body)
			unauthorized(method+" of a client that does not exist", status, h, true)
		}
		if got, _ := s.Client(ctx, id); got == nil || fmt.Sprint(got.RedirectURIs) != fmt.Sprint(loopbackRedirect) {
			t.Fatalf("a refused update changed the client: %+v", got)
		}

		// Read.
		status, _, out := e.call(http.MethodGet, uri, token, nil)
		if status != http.StatusOK || out["client_id"] != id || out["client_name"] != "mine" || out["registration_access_token"] != token ||
			out["registration_client_uri"] != uri || out["client_secret"] != nil {
			t.Fatalf("read: %d %v", status, out)
		}

		// Update: the full metadata, checked like a registration.
		for _, tc := range []struct {
			name string
			body map[string]any
			code string
		}{
			{"another client_id", map[string]any{"client_id": otherID, "redirect_uris": loopbackRedirect}, ErrInvalidClientMetadata},
			{"no client_id", map[string]any{"redirect_uris": loopbackRedirect}, ErrInvalidClientMetadata},
			{"bad redirect", map[string]any{"client_id": id, "redirect_uris": []string{"http://evil.example/cb"}}, ErrInvalidRedirectURI},
			{"client_credentials", map[string]any{"client_id": id, "redirect_uris": loopbackRedirect, "grant_types": []string{"client_credentials"}}, ErrInvalidClientMetadata},
			{"public now", map[string]any{"client_id": id, "redirect_uris": loopbackRedirect, "token_endpoint_auth_method": "none"}, ErrInvalidClientMetadata},
			{"wrong secret", map[string]any{"client_id": id, "client_secret": "dpy_cs_wrong", "redirect_uris": loopbackRedirect}, ErrInvalidClientMetadata},
		} {
			status, _, out := e.call(http.MethodPut, uri, token, tc.body)
			if status != http.StatusBadRequest || out["error"] != tc.code {
				t.Errorf("update with %s: %d %v, want 400 %s", tc.name, status, out, tc.code)
			}
		}
		status, _, out = e.call(http.MethodPut, uri, token, map[string]any{
			"client_id": id, "client_secret": secret, "client_name": "renamed",
			"redirect_uris": []string{"https://app.example/cb"}, "grant_types": []string{"authorization_code", "refresh_token"},
			// Fields a client must not send are ignored.
			"registration_access_token": "x", "client_id_issued_at": 1,
		})
		if status != http.StatusOK || out["client_name"] != "renamed" || fmt.Sprint(out["redirect_uris"]) != "[https://app.example/cb]" || out["registration_access_token"] != token {
			t.Fatalf("update: %d %v", status, out)
		}
		got, err := s.Client(ctx, id)
		if err != nil || got.Name != "renamed" || fmt.Sprint(got.GrantTypes) != "[authorization_code refresh_token]" ||
			got.Registration != storage.RegistrationDynamic || !got.RegistrationUnused() || len(got.SecretHashes) != 1 {
			t.Fatalf("updated client: %+v %v", got, err)
		}

		// Delete takes the client, its secret and its tokens; the token is
		// dead with it.
		status, _, _ = e.call(http.MethodDelete, uri, token, nil)
		if status != http.StatusNoContent {
			t.Fatalf("delete: %d", status)
		}
		if _, err := s.Client(ctx, id); !errors.Is(err, fosite.ErrNotFound) {
			t.Fatalf("deleted client: %v", err)
		}
		if _, err := s.GetAccessTokenSession(ctx, "at-of-mine", &fosite.DefaultSession{}); !errors.Is(err, fosite.ErrNotFound) {
			t.Fatalf("token of the deleted client: %v", err)
		}
		status, h, _ := e.call(http.MethodGet, uri, token, nil)
		unauthorized("read after delete", status, h, true)
		if _, err := s.Client(ctx, otherID); err != nil {
			t.Fatalf("the other registration: %v", err)
		}
		if status, _, _ := e.call(http.MethodGet, otherURI, otherToken, nil); status != http.StatusOK {
			t.Fatalf("the other registration's token: %d", status)
		}
	})
}

// Registrations are rate-limited per source, refused ones included, with
// a Retry-After; other sources are not held up.
func TestRegistrationRateLimit(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		e := newRegEnv(t, s, func(c *Config) { c.Limit = ratelimit.SourceLimit{Burst: 3, Rate: 1.0 / 3600} })
		good := map[string]any{"redirect_uris": loopbackRedirect, "token_endpoint_auth_method": "none"}
		for i, body := range []any{good, "not json", good} {
			if status, out := e.register(body, "X-Test-Source", "flood"); status >= 500 || status == http.StatusTooManyRequests {
				t.Fatalf("request %d of the burst: %d %v", i, status, out)
			}
		}
		status, h, out := e.call(http.MethodPost, e.base, "", good, "X-Test-Source", "flood")
		if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || out["error"] != "temporarily_unavailable" {
			t.Fatalf("over the limit: %d %q %v", status, h.Get("Retry-After"), out)
		}
		if status, out := e.register(good, "X-Test-Source", "someone else"); status != http.StatusCreated {
			t.Fatalf("another source: %d %v", status, out)
		}
		if n := e.clients(); n != 3 {
			t.Fatalf("%d clients, want 3", n)
		}
	})
}

// A registration that never had a token issued is swept once its unused
// lifetime is over; one that did is kept.
func TestRegistrationExpiry(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		registeredAt := time.Now().Add(-25 * time.Hour)
		e := newRegEnv(t, s, func(c *Config) { c.Clock = func() time.Time { return registeredAt } })
		var ids []string
		for _, name := range []string{"never used", "used"} {
			status, out := e.register(map[string]any{"redirect_uris": loopbackRedirect}, "X-Test-Source", name)
			if status != http.StatusCreated {
				t.Fatalf("register: %d %v", status, out)
			}
			ids = append(ids, out["client_id"].(string))
		}
		if err := s.MarkClientUsed(ctx, ids[1]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteExpired(ctx, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client(ctx, ids[0]); !errors.Is(err, fosite.ErrNotFound) {
			t.Fatalf("the unused registration survived the sweep: %v", err)
		}
		if _, err := s.Client(ctx, ids[1]); err != nil {
			t.Fatalf("the used registration was swept: %v", err)
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no store":       {Policy: testPolicy, Path: "/r", BaseURL: "https://idp.example/r"},
		"no scopes":      {Store: &storage.Store{}, Path: "/r", BaseURL: "https://idp.example/r"},
		"bad scope":      {Store: &storage.Store{}, Policy: Policy{Scopes: []string{"a b"}}, Path: "/r", BaseURL: "https://idp.example/r"},
		"bad method":     {Store: &storage.Store{}, Policy: Policy{Scopes: []string{"a"}, AuthMethods: []string{"client_secret_post"}}, Path: "/r", BaseURL: "https://idp.example/r"},
		"relative path":  {Store: &storage.Store{}, Policy: testPolicy, Path: "r", BaseURL: "https://idp.example/r"},
		"relative base":  {Store: &storage.Store{}, Policy: testPolicy, Path: "/r", BaseURL: "/r"},
		"negative idle":  {Store: &storage.Store{}, Policy: Policy{Scopes: []string{"a"}, UnusedLifetime: -1}, Path: "/r", BaseURL: "https://idp.example/r"},
		"trailing slash": {Store: &storage.Store{}, Policy: testPolicy, Path: "/r/", BaseURL: "https://idp.example/r"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
