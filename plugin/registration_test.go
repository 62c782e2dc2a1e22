package plugin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// withRegistration turns on both ways of registering without a person,
// with loopback documents (the tests serve them on 127.0.0.1).
func withRegistration(c *plugin.Config) {
	c.ClientRegistration = plugin.ClientRegistration{Dynamic: true, MetadataDocuments: true, AllowLoopbackDocuments: true}
	c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
}

// register posts metadata to the registration endpoint and returns the
// answer, failing the test unless it is 201.
func (e *env) register(md map[string]any) map[string]any {
	e.t.Helper()
	raw, _ := json.Marshal(md)
	resp, err := http.Post(e.srv.URL+plugin.RegistrationPath, "application/json", strings.NewReader(string(raw)))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("register: %d %v %v", resp.StatusCode, out, err)
	}
	return out
}

// registered is a registered client as golang.org/x/oauth2 configures it.
func (e *env) registered(out map[string]any, redirect string, scopes ...string) oauth2.Config {
	secret, _ := out["client_secret"].(string)
	style := oauth2.AuthStyleInParams
	if secret != "" {
		style = oauth2.AuthStyleInHeader
	}
	return oauth2.Config{
		ClientID: out["client_id"].(string), ClientSecret: secret, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: style},
	}
}

func (e *env) metadata() map[string]any {
	e.t.Helper()
	resp, err := http.Get(e.srv.URL + plugin.MetadataPath)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		e.t.Fatal(err)
	}
	return md
}

// The metadata advertises what is on, and nothing that is off.
func TestRegistrationAdvertised(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	on := newEnvConfig(t, s, withRegistration).metadata()
	if on["registration_endpoint"] != plugin.DefaultIssuer+plugin.RegistrationPath || on["client_id_metadata_document_supported"] != true ||
		!slices.Contains(toStrings(on["token_endpoint_auth_methods_supported"]), "none") {
		t.Fatalf("metadata with registration on: %v", on)
	}
	off := newEnv(t, s).metadata()
	if _, has := off["registration_endpoint"]; has {
		t.Fatalf("registration_endpoint advertised while off: %v", off)
	}
	if _, has := off["client_id_metadata_document_supported"]; has {
		t.Fatalf("metadata documents advertised while off: %v", off)
	}
	// Only documents: no registration endpoint; public clients.
	docs := newEnvConfig(t, s, func(c *plugin.Config) {
		c.ClientRegistration = plugin.ClientRegistration{MetadataDocuments: true}
	}).metadata()
	if _, has := docs["registration_endpoint"]; has || docs["client_id_metadata_document_supported"] != true ||
		!slices.Contains(toStrings(docs["token_endpoint_auth_methods_supported"]), "none") {
		t.Fatalf("metadata with documents only: %v", docs)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// A public client registers, is authorized with PKCE on a loopback port
// of its choosing (RFC 8252), gets tokens, refreshes, and is marked used by
// its first token; deleting its registration (RFC 7592) kills its tokens.
func TestDynamicRegistrationFlow(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnvConfig(t, s, withRegistration)
		rs := e.resourceServer()
		out := e.register(map[string]any{
			"client_name": "MCP Inspector", "redirect_uris": []string{"http://127.0.0.1/callback"},
			"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "none",
			"scope": "docs:read docs:write offline_access",
		})
		cfg := e.registered(out, "http://127.0.0.1:43210/callback", "docs:read", "offline_access")
		if c, err := s.Client(ctx, cfg.ClientID); err != nil || !c.RegistrationUnused() || !c.Agent || !c.Public {
			t.Fatalf("registered client: %+v %v", c, err)
		}
		verifier := oauth2.GenerateVerifier()
		code := e.code("alice", "acme", cfg, oauth2.S256ChallengeOption(verifier))
		if c, _ := s.Client(ctx, cfg.ClientID); !c.RegistrationUnused() {
			t.Fatal("a code marked the registration used: only a token does")
		}
		tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Client(ctx, cfg.ClientID); c.RegistrationUnused() {
			t.Fatal("the first token did not mark the registration used")
		}
		if in := e.introspect(rs, tok.AccessToken); !in.Active || in.Sub != "alice" || in.ClientID != cfg.ClientID || in.Scope != "docs:read offline_access" {
			t.Fatalf("introspection: %+v", in)
		}
		// Used: the sweep keeps it after its unused lifetime (a day).
		if _, err := s.DeleteExpired(ctx, time.Now().Add(48*time.Hour)); err != nil {
			t.Fatal(err)
		}
		tok, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}

		// The registration token deletes the client; its tokens die.
		regURI, _ := url.Parse(out["registration_client_uri"].(string))
		req, _ := http.NewRequest(http.MethodDelete, e.srv.URL+regURI.Path, nil)
		req.Header.Set("Authorization", "Bearer "+out["registration_access_token"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
		if in := e.introspect(rs, tok.AccessToken); in.Active {
			t.Fatal("a deleted registration's token is active")
		}
		if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
			t.Fatal("a deleted registration's refresh token works")
		}
	})
}

// A confidential registration authenticates with its secret (HTTP Basic),
// and can never use client_credentials or the agent-token grant: it is no
// owned app and no agent platform.
func TestDynamicRegistrationGrants(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnvConfig(t, s, withRegistration)
		const redirect = "https://app.example/cb"
		out := e.register(map[string]any{"redirect_uris": []string{redirect}, "token_endpoint_auth_method": "client_secret_basic"})
		cfg := e.registered(out, redirect, "docs:read")
		verifier := oauth2.GenerateVerifier()
		code := e.code("alice", "acme", cfg, oauth2.S256ChallengeOption(verifier))
		tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		bad := cfg
		bad.ClientSecret = "dpy_cs_wrong"
		if _, err := bad.Exchange(ctx, code, oauth2.VerifierOption(verifier)); oauthErrorCode(err) != "invalid_client" {
			t.Fatalf("a wrong secret: %v", err)
		}
		for _, form := range []url.Values{
			{"grant_type": {"client_credentials"}, "scope": {"docs:read"}},
			{"grant_type": {protocol.GrantTypeAgentToken}, "subject_token": {tok.AccessToken}, "subject_token_type": {protocol.TokenTypeAccessToken},
				"agent_session_id": {"s1"}, "organization": {"acme"}},
		} {
			st, body := e.form(plugin.TokenPath, cfg.ClientID, cfg.ClientSecret, form)
			if st < 400 || st >= 500 || strings.Contains(string(body), "access_token") {
				t.Errorf("%s for a registered client: %d %s", form.Get("grant_type"), st, body)
			}
		}
	})
}

// A registration that never obtained a token is swept after its unused
// lifetime; the ones that did are kept.
func TestDynamicRegistrationSwept(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnvConfig(t, s, func(c *plugin.Config) {
			withRegistration(c)
			c.ClientRegistration.UnusedLifetime = time.Hour
		})
		const redirect = "http://127.0.0.1:9/cb"
		unused := e.registered(e.register(map[string]any{"redirect_uris": []string{redirect}, "token_endpoint_auth_method": "none"}), redirect, "docs:read")
		coded := e.registered(e.register(map[string]any{"redirect_uris": []string{redirect}, "token_endpoint_auth_method": "none"}), redirect, "docs:read")
		used := e.registered(e.register(map[string]any{"redirect_uris": []string{redirect}, "token_endpoint_auth_method": "none"}), redirect, "docs:read")
		e.code("alice", "acme", coded, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		verifier := oauth2.GenerateVerifier()
		if _, err := used.Exchange(ctx, e.code("alice", "acme", used, oauth2.S256ChallengeOption(verifier)), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteExpired(ctx, time.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			cfg  oauth2.Config
			kept bool
		}{{unused, false}, {coded, false}, {used, true}} {
			if _, err := s.Client(ctx, tc.cfg.ClientID); (err == nil) != tc.kept {
				t.Errorf("client %s: %v, want kept=%v", tc.cfg.ClientID, err, tc.kept)
			}
		}
	})
}

// metadataDocument serves a client ID metadata document on 127.0.0.1 and
// returns its URL, the client's id.
func metadataDocument(t *testing.T, redirects []string, changes map[string]any) (id string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	var self string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		doc := map[string]any{
			"client_id": self, "client_name": "Doc Client", "redirect_uris": redirects,
			"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "none",
		}
		for k, v := range changes {
			doc[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	self = srv.URL + "/oauth/client.json"
	return self, hits
}

// A client known by its metadata document goes through the code flow like
// any public client: its document is fetched (once, then cached), its copy
// is stored for its tokens and marked used by the first, and the user sees
// it among the apps holding tokens.
func TestMetadataDocumentFlow(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		e := newEnvConfig(t, s, withRegistration)
		rs := e.resourceServer()
		const redirect = "http://127.0.0.1:8765/callback"
		id, hits := metadataDocument(t, []string{redirect}, nil)
		cfg := oauth2.Config{
			ClientID: id, RedirectURL: redirect, Scopes: []string{"docs:read", "offline_access"},
			Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInParams},
		}
		verifier := oauth2.GenerateVerifier()
		code := e.code("alice", "acme", cfg, oauth2.S256ChallengeOption(verifier))
		c, err := s.Client(ctx, id)
		if err != nil || c.Registration != storage.RegistrationMetadataDocument || !c.RegistrationUnused() || c.Name != "Doc Client" {
			t.Fatalf("the copy after the code: %+v %v", c, err)
		}
		tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Client(ctx, id); c.RegistrationUnused() {
			t.Fatal("the first token did not mark the copy used")
		}
		if in := e.introspect(rs, tok.AccessToken); !in.Active || in.ClientID != id || in.Sub != "alice" {
			t.Fatalf("introspection: %+v", in)
		}
		if _, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if n := hits.Load(); n != 1 {
			t.Fatalf("the document was fetched %d times, want once (cached)", n)
		}
		var apps []plugin.AuthorizedApp
		st, body := e.call("alice", http.MethodGet, "/api/authorized-apps", nil)
		e.must(http.StatusOK, st, body, &apps)
		if len(apps) != 1 || apps[0].ID != id || apps[0].Name != "Doc Client" {
			t.Fatalf("authorized apps: %+v", apps)
		}
	})
}

// What the authorization endpoint refuses of a metadata document client,
// answered to the browser (no redirect to the client): a redirect URI the
// document does not list exactly, a document whose client_id is another,
// and any document once documents are turned off, stored copy or not.
func TestMetadataDocumentRefused(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		e := newEnvConfig(t, s, withRegistration)
		const redirect = "http://127.0.0.1:8765/callback"
		id, _ := metadataDocument(t, []string{redirect}, nil)
		liar, _ := metadataDocument(t, []string{redirect}, map[string]any{"client_id": id})
		authURL := func(env *env, clientID, redirect string) string {
			cfg := oauth2.Config{ClientID: clientID, RedirectURL: redirect, Scopes: []string{"docs:read"},
				Endpoint: oauth2.Endpoint{AuthURL: env.srv.URL + plugin.AuthorizePath}}
			return cfg.AuthCodeURL("state-0123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		}
		refused := func(what string, resp *http.Response) {
			t.Helper()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get("Location") != "" {
				t.Errorf("%s: %d, Location %q; want a 4xx answered to the browser", what, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
		refused("another port", e.authorize("alice", authURL(e, id, "http://127.0.0.1:8766/callback")))
		refused("no port", e.authorize("alice", authURL(e, id, "http://127.0.0.1/callback")))
		refused("another host", e.authorize("alice", authURL(e, id, "https://evil.example/callback")))
		refused("a document naming another client", e.authorize("alice", authURL(e, liar, redirect)))

		// Authorized once, so a copy is stored; then documents are turned
		// off (another plugin on the same store).
		e.code("alice", "acme", oauth2.Config{ClientID: id, RedirectURL: redirect, Scopes: []string{"docs:read"},
			Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath}}, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
		off := newEnv(t, s)
		refused("documents off, copy stored", off.authorize("alice", authURL(off, id, redirect)))
	})
}

func TestRegistrationConfigRefused(t *testing.T) {
	t.Parallel()
	s := storagetest.SQLite.Open(t)
	for name, mod := range map[string]func(*plugin.Config){
		"no scopes at all": func(c *plugin.Config) {
			c.Scopes = nil
			c.ClientRegistration = plugin.ClientRegistration{Dynamic: true}
		},
		"an auth method deputy does not register": func(c *plugin.Config) {
			c.ClientRegistration = plugin.ClientRegistration{Dynamic: true, AuthMethods: []string{"private_key_jwt"}}
		},
		"an invalid scope": func(c *plugin.Config) {
			c.ClientRegistration = plugin.ClientRegistration{MetadataDocuments: true, Scopes: []string{"a b"}}
		},
		"cache bounds crossed": func(c *plugin.Config) {
			c.ClientRegistration = plugin.ClientRegistration{MetadataDocuments: true, DocumentMinCache: time.Hour, DocumentMaxCache: time.Minute}
		},
	} {
		cfg := plugin.Config{Store: s, Directory: testkit.NewDirectory(), Sessions: cookieSessions, SystemSecret: []byte(strings.Repeat("k", 32)), Scopes: catalog}
		mod(&cfg)
		if p, err := plugin.New(context.Background(), cfg); err == nil {
			p.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// Browser-based MCP hosts (the MCP Inspector) register across origins: the
// registration endpoint answers CORS preflights and every answer lets any
// origin read it, without credentials.
func TestRegistrationCORS(t *testing.T) {
	t.Parallel()
	e := newEnvConfig(t, storagetest.SQLite.Open(t), withRegistration)
	req, _ := http.NewRequest(http.MethodOptions, e.srv.URL+plugin.RegistrationPath, nil)
	req.Header.Set("Origin", "http://localhost:6274")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodPost, e.srv.URL+plugin.RegistrationPath, strings.NewReader(`{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`))
	req.Header.Set("Origin", "http://localhost:6274")
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("registration across origins: %d %v", resp.StatusCode, resp.Header)
	}
}
