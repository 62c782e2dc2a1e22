package integration

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestReplicas runs three server processes on one PostgreSQL schema with one
// system secret, the way a deployment behind a load balancer does, and checks
// that what one replica does is what the others see.
func TestReplicas(t *testing.T) {
	if os.Getenv("DEPUTY_URL") != "" {
		t.Skip("replicas are started by the test; DEPUTY_URL names a single server")
	}
	t.Parallel()
	dsn := storagetest.Postgres.NewDSN(t)
	secret := newSecret(t)
	// The first replica migrates and seeds; the others start on top of it.
	// Behind a load balancer every replica has the same public issuer, the
	// first one's URL here; tokens name it, and every replica checks it.
	replicas := []*target{startServer(t, dsn, secret)}
	for range 2 {
		replicas = append(replicas, startReplica(t, dsn, secret, replicas[0].URL))
	}
	a, b, c := replicas[0], replicas[1], replicas[2]

	plat := newPlatform(t, a)
	user := plat.userToken(t, newBrowser(t, a.URL), "alice", alicePassword, "projects:read", "projects:write")
	session := randomName("sess-")

	t.Run("agent token minted on one verifies on all", func(t *testing.T) {
		agt := plat.mint(t, user.AccessToken, session, demoOrg)
		for i, r := range replicas {
			callAPI(t, r.URL, http.MethodGet, demoOrg, agt.Raw).wantStatus(t, "agent token on replica "+string(rune('A'+i)), http.StatusOK)
		}
		// The user's opaque token, stored by A, works on C's token endpoint.
		platC := *plat
		platC.base = c.URL
		if got := platC.mint(t, user.AccessToken, session, demoOrg); !got.has("projects:read") {
			t.Fatalf("mint on C with a token issued by A: scopes %v", got.Scopes)
		}
	})

	t.Run("approval on one is honoured by the others", func(t *testing.T) {
		s := randomName("sess-")
		alice := newBrowser(t, b.URL)
		alice.login("alice", alicePassword)
		if status, _, body := approve(alice, demoOrg, plat.ID, s, "projects:write"); status != http.StatusOK {
			t.Fatalf("approve on B: status %d\n%s", status, body)
		}
		platC := *plat
		platC.base = c.URL
		agt := platC.mint(t, user.AccessToken, s, demoOrg)
		if !agt.has("projects:write") {
			t.Fatalf("mint on C after approval on B: scopes %v", agt.Scopes)
		}
		callAPI(t, a.URL, http.MethodPost, demoOrg, agt.Raw).wantStatus(t, "write on A", http.StatusCreated)
	})

	t.Run("secret deleted through one fails on another at once", func(t *testing.T) {
		alice := newBrowser(t, a.URL)
		alice.login("alice", alicePassword)
		app := createOwnedApp(t, alice, "projects:read")
		// B and C remember the app (their client caches) before the
		// secret goes.
		for _, r := range []*target{b, c} {
			for range 2 {
				if _, err := app.config(r.URL, "projects:read").Token(oauthCtx()); err != nil {
					t.Fatalf("token on %s with a secret created on A: %v", r.URL, err)
				}
			}
		}
		status, body := alice.jsonCall(http.MethodDelete, "/api/apps/"+url.PathEscape(app.ID)+"/secrets/"+url.PathEscape(app.SecretID), nil, nil)
		if status/100 != 2 {
			t.Fatalf("delete secret on A: status %d\n%s", status, body)
		}
		for _, r := range []*target{b, c} {
			_, err := app.config(r.URL, "projects:read").Token(oauthCtx())
			if code := tokenError(err); code != "invalid_client" {
				t.Errorf("token on %s with the deleted secret: %q, want invalid_client", r.URL, code)
			}
		}
	})

	// Each replica keeps the clients its token endpoint serves in memory
	// (plugin/clientcache.go). These change a client through A after B
	// and C have it in memory: the change holds on them at once.
	warm := func(t *testing.T, app *ownedApp) {
		t.Helper()
		for _, r := range []*target{b, c} {
			for range 2 {
				if _, err := app.config(r.URL).Token(oauthCtx()); err != nil {
					t.Fatalf("warm-up token on %s: %v", r.URL, err)
				}
			}
		}
	}
	t.Run("app narrowed through one is narrow on the others at once", func(t *testing.T) {
		alice := newBrowser(t, a.URL)
		alice.login("alice", alicePassword)
		app := createOwnedApp(t, alice, "projects:read", "projects:write")
		warm(t, app)
		status, body := alice.jsonCall(http.MethodPut, "/api/apps/"+url.PathEscape(app.ID), map[string]any{
			"name": "narrowed", "grantTypes": []string{"client_credentials"}, "scopes": []string{"projects:read"},
		}, nil)
		if status != http.StatusOK {
			t.Fatalf("narrow app on A: status %d\n%s", status, body)
		}
		for _, r := range []*target{b, c} {
			tok, err := app.config(r.URL).Token(oauthCtx())
			if err != nil {
				t.Fatalf("token on %s after narrowing: %v", r.URL, err)
			}
			if got, _ := tok.Extra("scope").(string); got != "projects:read" {
				t.Errorf("token on %s after the app was narrowed on A: scope %q, want projects:read", r.URL, got)
			}
		}
	})
	t.Run("app deleted through one fails on the others at once", func(t *testing.T) {
		alice := newBrowser(t, a.URL)
		alice.login("alice", alicePassword)
		app := createOwnedApp(t, alice, "projects:read")
		warm(t, app)
		if status, body := alice.jsonCall(http.MethodDelete, "/api/apps/"+url.PathEscape(app.ID), nil, nil); status/100 != 2 {
			t.Fatalf("delete app on A: status %d\n%s", status, body)
		}
		for _, r := range []*target{b, c} {
			_, err := app.config(r.URL).Token(oauthCtx())
			if code := tokenError(err); code != "invalid_client" {
				t.Errorf("token on %s of the deleted app: %q, want invalid_client", r.URL, code)
			}
		}
	})
	t.Run("agent platform narrowed through one mints narrow on the others at once", func(t *testing.T) {
		p := platformWithScopes(t, a, "projects:read projects:write")
		s := randomName("sess-")
		alice := newBrowser(t, a.URL)
		alice.login("alice", alicePassword)
		if status, _, body := approve(alice, demoOrg, p.ID, s, "projects:write"); status != http.StatusOK {
			t.Fatalf("approve on A: status %d\n%s", status, body)
		}
		for _, r := range []*target{b, c} {
			q := *p
			q.base = r.URL
			for range 2 {
				if agt := q.mint(t, user.AccessToken, s, demoOrg); !agt.has("projects:write") {
					t.Fatalf("warm-up mint on %s: scopes %v", r.URL, agt.Scopes)
				}
			}
		}
		// Platforms are an administrator's tools' (the apps API refuses
		// the grant): this test process changes the row as one more
		// replica would.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := storage.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		row, err := st.Client(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		row.Scopes = []string{"projects:read"}
		if err := st.UpdateClient(ctx, row); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*target{b, c} {
			q := *p
			q.base = r.URL
			if agt := q.mint(t, user.AccessToken, s, demoOrg); agt.has("projects:write") {
				t.Errorf("mint on %s after the platform was narrowed on A: scopes %v, want no projects:write", r.URL, agt.Scopes)
			}
		}
	})

	// Each replica keeps users' scopes too (plugin/userscopes.go). These
	// change a user through the CLI, one more process on the database,
	// after B and C have the user's scopes in memory for an owned app's
	// tokens and an agent's mints: the change holds on them at once.
	t.Run("user narrowed and disabled through the CLI holds on every replica at once", func(t *testing.T) {
		name, pw := randomName("erin-"), randomName("pw-")
		a.cli(t, "users", "create", "--username", name, "--password", pw, "--org", demoOrg, "--scope", "projects:read projects:write")
		erin := newBrowser(t, a.URL)
		erin.login(name, pw)
		app := createOwnedApp(t, erin, "projects:read", "projects:write")
		subject := plat.userToken(t, newBrowser(t, a.URL), name, pw, "projects:read", "projects:write")
		s := randomName("sess-")
		cc := func(r *target) (string, string) {
			tok, err := app.config(r.URL).Token(oauthCtx())
			if err != nil {
				return "", tokenError(err)
			}
			got, _ := tok.Extra("scope").(string)
			return got, ""
		}
		mint := func(r *target) (string, string) {
			q := *plat
			q.base = r.URL
			tok, err := q.agentConfig(subject.AccessToken, s, demoOrg).Token(oauthCtx())
			if err != nil {
				return "", tokenError(err)
			}
			got, _ := tok.Extra("scope").(string)
			return got, ""
		}
		for _, r := range []*target{b, c} {
			for range 2 {
				if got, code := cc(r); code != "" || got != "projects:read projects:write" {
					t.Fatalf("warm-up token on %s: %q %s", r.URL, got, code)
				}
				if got, code := mint(r); code != "" || got != "projects:read" {
					t.Fatalf("warm-up mint on %s: %q %s", r.URL, got, code)
				}
			}
		}
		a.cli(t, "users", "set-scopes", "--username", name, "--org", demoOrg, "--scope", "")
		for _, r := range []*target{b, c} {
			if got, code := cc(r); got != "" {
				t.Errorf("token on %s after the user lost every scope: %q %s, want none", r.URL, got, code)
			}
			if got, code := mint(r); code == "" {
				t.Errorf("mint on %s after the user lost every scope: %q, want an error", r.URL, got)
			}
		}
		a.cli(t, "users", "set-scopes", "--username", name, "--org", demoOrg, "--scope", "projects:read")
		for _, r := range []*target{b, c} {
			if got, code := cc(r); code != "" || got != "projects:read" {
				t.Errorf("token on %s after the user got projects:read back: %q %s", r.URL, got, code)
			}
		}
		a.cli(t, "users", "disable", "--username", name)
		for _, r := range []*target{b, c} {
			if got, code := cc(r); code == "" {
				t.Errorf("token on %s for a disabled owner: %q, want an error", r.URL, got)
			}
			if got, code := mint(r); code == "" {
				t.Errorf("mint on %s for a disabled user: %q, want an error", r.URL, got)
			}
		}
	})

	t.Run("key rotation through the CLI is honoured by all", func(t *testing.T) {
		before := plat.mint(t, user.AccessToken, session, demoOrg)
		a.cliRaw(t, "keys", "rotate")

		// Each replica keeps its key set in memory and reloads it on its own
		// schedule (agenttoken.DefaultKeyRefreshInterval), so the first
		// replica to sign with the new key does so while the others may
		// not know it yet: its token must verify on them at once, through
		// their reload on an unknown kid. The deadlines bound a broken
		// cache; they are not timing assertions.
		mintOn := func(r *target) *agentToken {
			p := *plat
			p.base = r.URL
			return p.mint(t, user.AccessToken, session, demoOrg)
		}
		var first *agentToken
		for deadline := time.Now().Add(3 * time.Minute); first == nil; {
			for _, r := range replicas {
				if agt := mintOn(r); agt.Kid != before.Kid {
					first = agt
					break
				}
			}
			if first == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no replica signs with a new key after keys rotate (still kid %s)", before.Kid)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		for _, r := range replicas {
			callAPI(t, r.URL, http.MethodGet, demoOrg, first.Raw).wantStatus(t, "new kid "+first.Kid+" on "+r.URL+" right after rotation", http.StatusOK)
		}

		// Then every replica moves to the new key.
		after := []*agentToken{first}
		for _, r := range replicas {
			var agt *agentToken
			for deadline := time.Now().Add(3 * time.Minute); ; {
				agt = mintOn(r)
				if agt.Kid != before.Kid || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if agt.Kid != first.Kid {
				t.Fatalf("replica %s signs with kid %s after keys rotate, want %s", r.URL, agt.Kid, first.Kid)
			}
			after = append(after, agt)
		}
		// Every token, the old one and each replica's new one, verifies
		// on every replica.
		for _, agt := range append([]*agentToken{before}, after...) {
			for _, r := range replicas {
				callAPI(t, r.URL, http.MethodGet, demoOrg, agt.Raw).wantStatus(t, "kid "+agt.Kid+" on "+r.URL, http.StatusOK)
			}
		}
		// And the JWKS every replica publishes lists both keys.
		for _, r := range replicas {
			kids := jwksKids(t, r.URL)
			if !kids[before.Kid] || !kids[first.Kid] {
				t.Errorf("JWKS of %s lists %v, want %s and %s", r.URL, kids, before.Kid, first.Kid)
			}
		}
	})
}

// jwksKids fetches /.well-known/jwks.json and returns the key ids in it.
func jwksKids(t testing.TB, base string) map[string]bool {
	t.Helper()
	resp, err := httpClient.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := decodeJSON(resp, &doc); err != nil {
		t.Fatalf("JWKS of %s: %v", base, err)
	}
	kids := map[string]bool{}
	for _, k := range doc.Keys {
		kids[k.Kid] = true
	}
	return kids
}
