package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// cli runs the binary's entry point in-process.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func cliJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	code, out, errs := cli(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, errs)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: output is not JSON: %q", args, out)
	}
	return v
}

func TestCLIRoundTrip(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		dsn := b.NewDSN(t)
		db := "--database-url=" + dsn
		ctx := context.Background()

		// users create, then log in with it on a server over the same database.
		u := cliJSON(t, "users", "create", db, "--username", "carol", "--password", "carol-password",
			"--org", "initech", "--scope", "projects:read members:read")
		if u["username"] != "carol" || u["organization"] != "initech" || !strings.HasPrefix(u["id"].(string), "usr_") {
			t.Errorf("users create printed %v", u)
		}
		if code, _, errs := cli(t, "users", "create", db, "--username", "carol", "--password", "another-password", "--org", "initech"); code != 1 || !strings.Contains(errs, "taken") {
			t.Errorf("duplicate user: exit %d, %q", code, errs)
		}
		idp := startIdPOn(t, dsn, func(c *config) { c.Demo = false })
		idp.loggedIn(t, "carol", "carol-password")

		// apps create: an owned app whose secret fetches a token acting as carol.
		app := cliJSON(t, "apps", "create", db, "--owner", "carol", "--name", "nightly report",
			"--grant", "client_credentials", "--scope", "projects:read")
		id, _ := app["client_id"].(string)
		secret, _ := app["client_secret"].(string)
		if id == "" || !strings.HasPrefix(secret, "dpy_cs_") || app["owner_user_id"] != u["id"] {
			t.Fatalf("apps create printed %v", app)
		}
		cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: idp.URL + "/oauth2/token"}
		resp, body := get(t, cc.Client(ctx), idp.URL+"/api/orgs/initech/projects")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"sub": "`+u["id"].(string)+`"`) {
			t.Errorf("owned app token on the API: %d %s", resp.StatusCode, body)
		}
		assertNotStored(t, idp, secret)

		// users set-scopes, through its own connection to the database,
		// narrows the app's next token on the server at once, though the
		// server kept carol's scopes (its user-scope cache), and widens it
		// back.
		for _, tt := range []struct{ scopes, want string }{{"members:read", ""}, {"projects:read members:read", "projects:read"}} {
			set := cliJSON(t, "users", "set-scopes", db, "--username", "carol", "--org", "initech", "--scope", tt.scopes)
			if set["id"] != u["id"] || set["organization"] != "initech" {
				t.Errorf("users set-scopes printed %v", set)
			}
			tok, err := cc.Token(ctx)
			if err != nil {
				t.Fatalf("token after users set-scopes %q: %v", tt.scopes, err)
			}
			if got, _ := tok.Extra("scope").(string); got != tt.want {
				t.Errorf("token after users set-scopes %q: scope %q, want %q", tt.scopes, got, tt.want)
			}
		}

		// clients create: an agent platform; its secret authenticates.
		cl := cliJSON(t, "clients", "create", db, "--name", "Agent Platform",
			"--grant", "authorization_code", "--grant", "refresh_token", "--grant", protocol.GrantTypeAgentToken,
			"--redirect-uri", "http://127.0.0.1:9999/callback", "--scope", "projects:read projects:write offline_access")
		cid, _ := cl["client_id"].(string)
		csecret, _ := cl["client_secret"].(string)
		stored, err := idp.srv.st.Client(ctx, cid)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Owner() != "" || stored.FirstParty || len(stored.GrantTypes) != 3 || len(stored.ResponseTypes) != 1 {
			t.Errorf("stored client: %+v", stored)
		}
		intro := func(user, pass string) int {
			req, _ := http.NewRequest(http.MethodPost, idp.URL+"/oauth2/introspect", strings.NewReader(url.Values{"token": {"dpy_at_x.y"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(user, pass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if got := intro(cid, csecret); got != http.StatusOK {
			t.Errorf("client secret does not authenticate at introspection: %d", got)
		}
		if got := intro(cid, csecret+"x"); got == http.StatusOK {
			t.Errorf("a wrong secret authenticates")
		}
		fp := cliJSON(t, "clients", "create", db, "--name", "Console", "--grant", "authorization_code",
			"--redirect-uri", "https://console.example/cb", "--scope", "projects:read", "--first-party")
		if fp["first_party"] != true || fp["agent"] != false {
			t.Errorf("--first-party not recorded: %v", fp)
		}
		ag := cliJSON(t, "clients", "create", db, "--name", "MCP client", "--grant", "authorization_code", "--grant", "refresh_token",
			"--redirect-uri", "http://127.0.0.1:33418/callback", "--scope", "projects:read projects:write offline_access", "--public", "--agent")
		if ag["agent"] != true {
			t.Errorf("--agent not recorded: %v", ag)
		}

		// keys rotate keeps the old key published beside the new one.
		rot := cliJSON(t, "keys", "rotate", db, "--system-secret", string(testSecret))
		if kids, _ := rot["published_kids"].([]any); len(kids) != 2 {
			t.Errorf("after rotation: %v", rot)
		}
	})
}

func TestCLIRefusals(t *testing.T) {
	t.Parallel()
	db := "--database-url=" + storagetest.SQLite.NewDSN(t)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"users: missing flags", []string{"users", "create", db, "--username", "x"}, 2, "required"},
		{"users: short password", []string{"users", "create", db, "--username", "x", "--password", "short", "--org", "o"}, 1, "at least 8"},
		{"apps: other grant", []string{"apps", "create", db, "--owner", "x", "--name", "n", "--grant", "authorization_code", "--scope", "a"}, 2, "client_credentials"},
		{"apps: unknown owner", []string{"apps", "create", db, "--owner", "ghost", "--name", "n", "--scope", "projects:read"}, 1, "not found"},
		{"clients: client_credentials", []string{"clients", "create", db, "--name", "n", "--grant", "client_credentials", "--scope", "a"}, 2, "owner"},
		{"clients: code without redirect", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--scope", "a"}, 2, "redirect-uri"},
		{"clients: http redirect", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "http://evil.example/cb", "--scope", "a"}, 2, "https"},
		{"clients: fragment", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "https://a.example/cb#x", "--scope", "a"}, 2, "fragment"},
		{"users: org with a space", []string{"users", "create", db, "--username", "x", "--password", "long-enough", "--org", "acme corp"}, 2, "--org must be"},
		{"set-scopes: missing flags", []string{"users", "set-scopes", db, "--username", "x"}, 2, "required"},
		{"set-scopes: org with a space", []string{"users", "set-scopes", db, "--username", "x", "--org", "acme corp"}, 2, "--org must be"},
		{"set-scopes: bad scope", []string{"users", "set-scopes", db, "--username", "x", "--org", "o", "--scope", `a"b`}, 2, "--scope"},
		{"set-scopes: unknown user", []string{"users", "set-scopes", db, "--username", "ghost", "--org", "o", "--scope", "projects:read"}, 1, "not found"},
		{"users: bad scope", []string{"users", "create", db, "--username", "x", "--password", "long-enough", "--org", "o", "--scope", `a"b`}, 2, "--scope"},
		{"apps: bad scope", []string{"apps", "create", db, "--owner", "x", "--name", "n", "--scope", strings.Repeat("s", 129)}, 2, "--scope"},
		{"clients: bad scope", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "https://a.example/cb", "--scope", "é"}, 2, "--scope"},
		{"clients: ftp to localhost", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "ftp://localhost/cb", "--scope", "a"}, 2, "not allowed"},
		{"clients: credentials in redirect", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "https://u:p@a.example/cb", "--scope", "a"}, 2, "credentials"},
		{"clients: agent without code", []string{"clients", "create", db, "--name", "n", "--grant", "urn:deputy:params:oauth:grant-type:agent-token", "--scope", "a", "--agent"}, 2, "authorization_code"},
		{"clients: first-party agent", []string{"clients", "create", db, "--name", "n", "--grant", "authorization_code", "--redirect-uri", "https://a.example/cb", "--scope", "a", "--agent", "--first-party"}, 2, "do not mix"},
		// The apps service's rules, the same as the apps API's and the pages'.
		{"apps: long name", []string{"apps", "create", db, "--owner", "x", "--name", strings.Repeat("n", 65), "--scope", "projects:read"}, 2, "--name: at most 64"},
		{"clients: control character in name", []string{"clients", "create", db, "--name", "a\x1bb", "--grant", "authorization_code", "--redirect-uri", "https://a.example/cb", "--scope", "a"}, 2, "--name"},
		{"clients: public agent platform", []string{"clients", "create", db, "--name", "n", "--grant", protocol.GrantTypeAgentToken, "--public", "--scope", "a"}, 2, "confidential"},
		{"clients: redirect without code", []string{"clients", "create", db, "--name", "n", "--grant", protocol.GrantTypeAgentToken, "--redirect-uri", "https://a.example/cb", "--scope", "a"}, 2, "--redirect-uri"},
		{"clients: refresh alone", []string{"clients", "create", db, "--name", "n", "--grant", "refresh_token", "--scope", "a"}, 2, "--grant"},
		{"keys: short secret", []string{"keys", "rotate", db, "--system-secret", "short"}, 1, "at least 32"},
		{"postgres needs a secret", []string{"keys", "rotate", "--database-url", "postgres://nobody@127.0.0.1:1/x", "--system-secret="}, 1, "required with PostgreSQL"},
	}
	for _, tt := range tests {
		code, _, errs := cli(t, tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.msg) {
			t.Errorf("%s: exit %d %q; want %d containing %q", tt.name, code, errs, tt.code, tt.msg)
		}
	}
}

func TestResolveSystemSecret(t *testing.T) {
	t.Parallel()
	dsn := storagetest.SQLite.NewDSN(t)
	log := discardLogger()
	first, err := resolveSystemSecret(dsn, nil, log)
	if err != nil || len(first) < plugin.MinSystemSecretLength {
		t.Fatalf("first start: %q, %v", first, err)
	}
	again, err := resolveSystemSecret(dsn, nil, log)
	if err != nil || !bytes.Equal(first, again) {
		t.Errorf("restart does not reuse the stored secret")
	}
	if _, err := resolveSystemSecret("postgres://x@127.0.0.1/db", nil, log); err == nil {
		t.Errorf("PostgreSQL without a secret accepted")
	}
	if got, err := resolveSystemSecret("postgres://x@127.0.0.1/db", testSecret, log); err != nil || !bytes.Equal(got, testSecret) {
		t.Errorf("configured secret: %q, %v", got, err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
