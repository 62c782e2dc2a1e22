package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The demo IdP lets MCP clients connect without setup: it advertises and
// serves dynamic registration and metadata documents, and its consent page
// says when a client registered itself and where the answer goes.
func TestClientsWithoutSetup(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		ctx := context.Background()
		idp := startIdP(t, b, func(c *config) { c.LoopbackMetadataDocuments = true })
		var md map[string]any
		resp, body := get(t, http.DefaultClient, idp.URL+plugin.MetadataPath)
		if err := json.Unmarshal([]byte(body), &md); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("metadata: %d %v", resp.StatusCode, err)
		}
		if md["registration_endpoint"] != idp.URL+plugin.RegistrationPath || md["client_id_metadata_document_supported"] != true {
			t.Fatalf("metadata: %v", md)
		}
		alice := idp.loggedIn(t, "alice", demoAlicePassword)

		// Dynamic registration, then the code flow with its consent page.
		resp, err := http.Post(idp.URL+plugin.RegistrationPath, "application/json", strings.NewReader(
			`{"client_name":"Totally Official","redirect_uris":["`+testRedirect+`"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}`))
		if err != nil {
			t.Fatal(err)
		}
		var reg map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&reg); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register: %d %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		oc := &oauth2.Config{
			ClientID: reg["client_id"].(string), RedirectURL: testRedirect, Scopes: []string{"projects:read", "offline_access"},
			Endpoint: oauth2.Endpoint{AuthURL: idp.URL + plugin.AuthorizePath, TokenURL: idp.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInParams},
		}
		verifier := oauth2.GenerateVerifier()
		authURL := oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier))
		resp, page := get(t, alice, authURL)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("consent page: %d", resp.StatusCode)
		}
		for _, want := range []string{"Totally Official", `class="badge unverified"`, "registered itself", `<strong class="redirect-host">127.0.0.1:9</strong>`} {
			if !strings.Contains(page, want) {
				t.Errorf("consent page of a registered client lacks %q", want)
			}
		}
		q := callback(t, postForm(t, alice, authURL, url.Values{"decision": {"allow"}}))
		if _, err := oc.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("exchange: %v", err)
		}

		// A metadata document served on loopback (allowed in this test).
		var docURL string
		doc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"client_id": docURL, "client_name": "Doc Client",
				"redirect_uris": []string{testRedirect}, "token_endpoint_auth_method": "none"})
		}))
		t.Cleanup(doc.Close)
		docURL = doc.URL + "/client.json"
		oc.ClientID = docURL
		verifier = oauth2.GenerateVerifier()
		authURL = oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier))
		resp, page = get(t, alice, authURL)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("consent page of a document client: %d", resp.StatusCode)
		}
		for _, want := range []string{"Doc Client", `class="badge unverified"`, "described by a document at <code>" + docURL, `<strong class="redirect-host">127.0.0.1:9</strong>`} {
			if !strings.Contains(page, want) {
				t.Errorf("consent page of a document client lacks %q", want)
			}
		}
		q = callback(t, postForm(t, alice, authURL, url.Values{"decision": {"allow"}}))
		if _, err := oc.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("exchange: %v", err)
		}

		// A client an administrator made is not marked.
		_, page = get(t, alice, testClient(t, idp, false).AuthCodeURL("state-12345", oauth2.S256ChallengeOption(verifier)))
		if strings.Contains(page, "unverified") {
			t.Error("a pre-registered client is called unverified")
		}
	})
}

// Without loopback documents (the default), a client id on loopback is no
// client; with --no-client-registration, neither way is open.
func TestClientsWithoutSetupOff(t *testing.T) {
	t.Parallel()
	var docURL string
	doc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": docURL, "redirect_uris": []string{testRedirect}})
	}))
	t.Cleanup(doc.Close)
	docURL = doc.URL + "/client.json"
	oc := &oauth2.Config{ClientID: docURL, RedirectURL: testRedirect, Scopes: []string{"projects:read"}}

	idp := startIdP(t, storagetest.SQLite)
	oc.Endpoint.AuthURL = idp.URL + plugin.AuthorizePath
	resp, _ := get(t, idp.loggedIn(t, "alice", demoAlicePassword), oc.AuthCodeURL("state-12345", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if resp.StatusCode < 400 || resp.StatusCode >= 500 || resp.Header.Get("Location") != "" {
		t.Errorf("a loopback document without the switch: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	off := startIdP(t, storagetest.SQLite, func(c *config) { c.NoClientRegistration = true })
	_, body := get(t, http.DefaultClient, off.URL+plugin.MetadataPath)
	if strings.Contains(body, "registration_endpoint") || strings.Contains(body, "client_id_metadata_document_supported") {
		t.Errorf("metadata with registration off: %s", body)
	}
	resp, err := http.Post(off.URL+plugin.RegistrationPath, "application/json", strings.NewReader(`{"redirect_uris":["`+testRedirect+`"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("registration with registration off: %d", resp.StatusCode)
	}
}
