package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// This file proves clients that register themselves in plugin mode: the
// IdP's own fosite provider, MemoryStore and endpoints, with deputy's
// registration endpoint mounted under /deputy and its storage wrapper
// serving the registered and metadata document clients.

const registeredRedirect = "http://127.0.0.1/callback"

// register posts metadata to deputy's registration endpoint as the IdP
// mounts it.
func (e *idp) register(md string) map[string]any {
	e.t.Helper()
	resp, err := http.Post(e.url+"/deputy"+plugin.RegistrationPath, "application/json", strings.NewReader(md))
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

// consentPage returns the IdP's consent page for authURL as b.
func (b *browser) consentPage(authURL string) string {
	b.e.t.Helper()
	resp, err := b.c.Get(authURL)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.e.t.Fatalf("consent page: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// A client registers at deputy's endpoint and then goes through the IdP's
// own authorization and token endpoints: public with PKCE on a loopback
// port of its choosing, or confidential with its dpy_cs_ secret (deputy's
// hash, which the IdP's hasher hands to deputy's). The IdP's consent
// screen says it is unverified; its tokens are the IdP's, capped at what
// the user holds; client_credentials stays closed to it; deleting its
// registration ends its tokens at deputy's middleware.
func TestRegisteredClientInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		e := startIdP(t, st)
		alice := e.signIn("alice", "alice-password")

		out := e.register(`{"client_name":"Inspector","redirect_uris":["` + registeredRedirect + `"],` +
			`"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"scope":"projects:read projects:write offline"}`)
		conf := &oauth2.Config{
			ClientID: out["client_id"].(string), RedirectURL: "http://127.0.0.1:43210/callback",
			Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
		}
		page := alice.consentPage(conf.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if !strings.Contains(page, "Unverified app: "+conf.ClientID) || !strings.Contains(page, "goes to 127.0.0.1:43210") {
			t.Errorf("the IdP's consent page does not warn about a registered client: %s", page)
		}
		tok := alice.authorizeWith(conf, []string{"projects:read", "offline"}, []string{"projects:read", "offline"})
		if prefix(tok.AccessToken) != "ory_at_" {
			t.Fatalf("the IdP's token strategy is not used: %q", tok.AccessToken)
		}
		if status, body := e.api(http.MethodGet, tok.AccessToken); status != http.StatusOK || body != "GET projects as alice" {
			t.Fatalf("API: %d %s", status, body)
		}
		if c, err := st.Client(ctx, conf.ClientID); err != nil || c.RegistrationUnused() {
			t.Fatalf("the registration is not marked used by its first token: %+v %v", c, err)
		}
		tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}

		// Confidential: the secret deputy issued authenticates at the
		// IdP's token endpoint; client_credentials does not.
		sec := e.register(`{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}`)
		cconf := &oauth2.Config{
			ClientID: sec["client_id"].(string), ClientSecret: sec["client_secret"].(string), RedirectURL: "https://app.example/cb",
			Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader},
		}
		if ct := alice.authorizeWith(cconf, []string{"projects:read"}, []string{"projects:read"}); ct.AccessToken == "" {
			t.Fatal("no token for the confidential registration")
		}
		if _, err := e.ccToken(cconf.ClientID, cconf.ClientSecret, "projects:read"); err == nil {
			t.Fatal("a registered client got a client_credentials token")
		}

		// Deleting the registration (RFC 7592) ends its tokens.
		regURI, _ := url.Parse(out["registration_client_uri"].(string))
		req, _ := http.NewRequest(http.MethodDelete, e.url+regURI.Path, nil)
		req.Header.Set("Authorization", "Bearer "+out["registration_access_token"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete: %d", resp.StatusCode)
		}
		if status, _ := e.api(http.MethodGet, tok.AccessToken); status != http.StatusUnauthorized {
			t.Fatalf("a deleted registration's token at deputy's middleware: %d", status)
		}
		if in := e.introspect(tok.AccessToken); in.Active {
			t.Fatalf("a deleted registration's token introspects active: %+v", in)
		}
	})
}

// A client known by its metadata document, through the IdP's endpoints
// (the test serves the document on 127.0.0.1 and turns loopback
// documents on): the IdP's consent screen warns, the redirect URI must be
// the document's exactly, and the token works at deputy's middleware.
func TestMetadataDocumentClientInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st, func(c *plugin.Config) { c.ClientRegistration.AllowLoopbackDocuments = true })
		alice := e.signIn("alice", "alice-password")
		const redirect = "http://127.0.0.1:8765/callback"
		var id string
		doc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"client_id": id, "client_name": "Doc Client",
				"redirect_uris": []string{redirect}, "grant_types": []string{"authorization_code", "refresh_token"}})
		}))
		t.Cleanup(doc.Close)
		id = doc.URL + "/client.json"
		conf := &oauth2.Config{
			ClientID: id, RedirectURL: redirect,
			Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth", TokenURL: e.url + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams},
		}
		page := alice.consentPage(conf.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if !strings.Contains(page, "Unverified app: "+id) || !strings.Contains(page, "goes to 127.0.0.1:8765") {
			t.Errorf("the IdP's consent page does not warn about a document client: %s", page)
		}
		tok := alice.authorizeWith(conf, []string{"projects:read", "offline"}, []string{"projects:read", "offline"})
		if status, body := e.api(http.MethodGet, tok.AccessToken); status != http.StatusOK || body != "GET projects as alice" {
			t.Fatalf("API: %d %s", status, body)
		}
		if in := e.introspect(tok.AccessToken); !in.Active || in.ClientID != id {
			t.Fatalf("introspection: %+v", in)
		}
		if _, err := conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
			t.Fatalf("refresh: %v", err)
		}

		// Another port than the document's: refused, and not redirected.
		other := *conf
		other.RedirectURL = "http://127.0.0.1:8766/callback"
		resp, err := alice.c.Get(other.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.Header.Get("Location") != "" {
			t.Fatalf("a redirect URI the document does not list: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// The example as published fetches no document from loopback: a client id
// on 127.0.0.1 is no client.
func TestExampleRefusesLoopbackDocuments(t *testing.T) {
	t.Parallel()
	e := startIdP(t, storagetest.SQLite.Open(t))
	if e.p.Config().ClientRegistration.AllowLoopbackDocuments {
		t.Fatal("the example allows loopback documents")
	}
	var id string
	doc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": id, "redirect_uris": []string{registeredRedirect}})
	}))
	t.Cleanup(doc.Close)
	id = doc.URL + "/client.json"
	conf := &oauth2.Config{ClientID: id, RedirectURL: registeredRedirect, Endpoint: oauth2.Endpoint{AuthURL: e.url + "/oauth2/auth"}}
	resp, err := e.signIn("alice", "alice-password").c.Get(conf.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.Header.Get("Location") != "" {
		t.Fatalf("a loopback document in the published example: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
