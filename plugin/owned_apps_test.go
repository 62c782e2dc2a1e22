package plugin_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

func TestOwnedAppTokenCarriesOwnerAndCappedScopes(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		app := e.ccApp("alice", "docs:read", "docs:write", "admin:read")
		sec := e.createSecret("alice", app.ID)

		// alice holds docs:read and docs:write in acme, admin:read only in
		// globex: acme's token must not carry admin:read.
		tok := e.mustToken(app.ID, sec.Secret, "acme", "docs:read", "docs:write", "admin:read")
		if !strings.HasPrefix(tok.AccessToken, protocol.AccessTokenPrefix) {
			t.Fatalf("access token %q lacks the %s prefix", tok.AccessToken, protocol.AccessTokenPrefix)
		}
		if got := tok.Extra("scope"); got != "docs:read docs:write" {
			t.Errorf("token response scope = %v, want the capped set", got)
		}
		in := e.introspect(rs, tok.AccessToken)
		if !in.Active || in.Sub != "alice" || in.Scope != "docs:read docs:write" || in.ClientID != app.ID || in.Org != "acme" {
			t.Errorf("introspection = %+v", in)
		}

		// The middleware's verifier agrees, and refuses the token for
		// another organization.
		id, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), tok.AccessToken, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if id.Subject != "alice" || id.Kind != resource.KindAccess || strings.Join(id.Scopes, " ") != "docs:read docs:write" || id.ClientID != app.ID {
			t.Errorf("identity = %+v", id)
		}
		if _, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), tok.AccessToken, "globex"); !errors.Is(err, resource.ErrInvalidToken) {
			t.Errorf("acme token in globex: err = %v, want ErrInvalidToken", err)
		}

		// Without organization, the token answers for the host: the demo
		// directory's union of alice's scopes, still capped by the request.
		tok = e.mustToken(app.ID, sec.Secret, "", "admin:read", "docs:read")
		if in := e.introspect(rs, tok.AccessToken); in.Scope != "admin:read docs:read" || in.Org != "" {
			t.Errorf("org-less introspection = %+v", in)
		}
		// ...and, used against one organization, only what she holds there.
		id, err = e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), tok.AccessToken, "acme")
		if err != nil || strings.Join(id.Scopes, " ") != "docs:read" || id.Organization != "acme" {
			t.Errorf("org-less token in acme: %+v, %v", id, err)
		}

		// No scope parameter asks for everything the app may have.
		tok = e.mustToken(app.ID, sec.Secret, "acme")
		if in := e.introspect(rs, tok.AccessToken); in.Scope != "docs:read docs:write" {
			t.Errorf("scope-less request introspects as %+v", in)
		}

		// A scope the app may not have is refused, not dropped.
		if _, err := e.token(app.ID, sec.Secret, "acme", oauth2.AuthStyleInHeader, "docs:read", "billing:read"); oauthErrorCode(err) != "invalid_scope" {
			t.Errorf("scope outside the app: err = %v, want invalid_scope", err)
		}

		// client_secret_post works as well as client_secret_basic.
		if _, err := e.token(app.ID, sec.Secret, "acme", oauth2.AuthStyleInParams, "docs:read"); err != nil {
			t.Errorf("client_secret_post: %v", err)
		}
	})
}

func TestOwnerLosingAScope(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		app := e.ccApp("alice", "docs:read", "docs:write")
		sec := e.createSecret("alice", app.ID)
		old := e.mustToken(app.ID, sec.Secret, "acme", "docs:read", "docs:write")

		e.dir.Set("alice", "acme", "docs:read")

		fresh := e.mustToken(app.ID, sec.Secret, "acme", "docs:read", "docs:write")
		if in := e.introspect(rs, fresh.AccessToken); in.Scope != "docs:read" {
			t.Errorf("new token introspects as %+v, want only docs:read", in)
		}
		if in := e.introspect(rs, old.AccessToken); !in.Active || in.Scope != "docs:read" {
			t.Errorf("old token introspects as %+v, want active with only docs:read", in)
		}
		id, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), old.AccessToken, "acme")
		if err != nil || strings.Join(id.Scopes, " ") != "docs:read" {
			t.Errorf("verifier: %+v, %v", id, err)
		}

		// Narrowing the app itself drops the scope from its live tokens too.
		e.dir.Set("alice", "acme", "docs:read", "docs:write")
		st, body := e.call("alice", http.MethodPut, "/api/apps/"+app.ID, map[string]any{"name": app.Name, "scopes": []string{"docs:write"}})
		e.must(http.StatusOK, st, body, nil)
		if in := e.introspect(rs, old.AccessToken); in.Scope != "docs:write" {
			t.Errorf("after narrowing the app, old token introspects as %+v", in)
		}
	})
}

func TestDisabledOrGoneOwner(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		for _, tc := range []struct {
			name string
			gone func(d *testkit.Directory)
		}{
			{"disabled", func(d *testkit.Directory) { d.Disable("alice") }},
			{"deleted", func(d *testkit.Directory) { d.Remove("alice") }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, s)
				rs := e.resourceServer()
				app := e.ccApp("alice", "docs:read")
				sec := e.createSecret("alice", app.ID)
				old := e.mustToken(app.ID, sec.Secret, "acme", "docs:read")

				tc.gone(e.dir)

				tok, err := e.token(app.ID, sec.Secret, "acme", oauth2.AuthStyleInHeader, "docs:read")
				if code := oauthErrorCode(err); code != "invalid_client" {
					t.Errorf("token for a %s owner: %v, %v; want invalid_client", tc.name, tok, err)
				}
				if in := e.introspect(rs, old.AccessToken); in.Active {
					t.Errorf("old token of a %s owner introspects active: %+v", tc.name, in)
				}
				if _, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), old.AccessToken, "acme"); !errors.Is(err, resource.ErrInvalidToken) {
					t.Errorf("verifier: %v, want ErrInvalidToken", err)
				}
			})
		}
	})
}

func TestDeletedSecretAppAndRevocation(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		app := e.ccApp("alice", "docs:read")
		s1 := e.createSecret("alice", app.ID)
		s2 := e.createSecret("alice", app.ID)

		// Rotation: both secrets work until one is deleted.
		e.mustToken(app.ID, s1.Secret, "acme")
		e.mustToken(app.ID, s2.Secret, "acme")
		st, body := e.call("alice", http.MethodDelete, "/api/apps/"+app.ID+"/secrets/"+s1.ID, nil)
		e.must(http.StatusNoContent, st, body, nil)
		if _, err := e.token(app.ID, s1.Secret, "acme", oauth2.AuthStyleInHeader); oauthErrorCode(err) != "invalid_client" {
			t.Errorf("deleted secret: err = %v, want invalid_client", err)
		}
		tok := e.mustToken(app.ID, s2.Secret, "acme")

		// Revocation answers 200 and the token is inactive afterwards.
		st, body = e.form(plugin.RevocationPath, app.ID, s2.Secret, url.Values{"token": {tok.AccessToken}})
		if st != http.StatusOK {
			t.Errorf("revoke: %d %s", st, body)
		}
		if in := e.introspect(rs, tok.AccessToken); in.Active {
			t.Errorf("revoked token is active: %+v", in)
		}
		// Revoking an unknown token is also 200 (RFC 7009 §2.2).
		if st, body := e.form(plugin.RevocationPath, app.ID, s2.Secret, url.Values{"token": {"dpy_at_nothing.here"}}); st != http.StatusOK {
			t.Errorf("revoke unknown: %d %s", st, body)
		}

		// Deleting the app ends its tokens.
		tok = e.mustToken(app.ID, s2.Secret, "acme")
		st, body = e.call("alice", http.MethodDelete, "/api/apps/"+app.ID, nil)
		e.must(http.StatusNoContent, st, body, nil)
		if in := e.introspect(rs, tok.AccessToken); in.Active {
			t.Errorf("token of a deleted app is active: %+v", in)
		}
		if _, err := e.p.AccessTokenVerifier().VerifyAccessToken(context.Background(), tok.AccessToken, ""); !errors.Is(err, resource.ErrInvalidToken) {
			t.Errorf("verifier on a deleted app's token: %v", err)
		}
		if _, err := e.token(app.ID, s2.Secret, "acme", oauth2.AuthStyleInHeader); oauthErrorCode(err) != "invalid_client" {
			t.Errorf("deleted app: err = %v, want invalid_client", err)
		}
	})
}

func TestSecretShownOnceAndNeverStored(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		rs := e.resourceServer()
		e.bodies = nil
		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		if !strings.HasPrefix(sec.Secret, protocol.ClientSecretPrefix) || len(sec.Secret) != len(protocol.ClientSecretPrefix)+43 {
			t.Fatalf("secret %q is not dpy_cs_ + base64url(32 bytes)", sec.Secret)
		}
		if sec.DisplayPrefix != sec.Secret[:clientsecret.SecretDisplayPrefixLen] {
			t.Errorf("display prefix %q", sec.DisplayPrefix)
		}
		tok := e.mustToken(app.ID, sec.Secret, "acme")
		// Every read route of the app, after the secret exists and was used.
		for _, path := range []string{"/api/apps", "/api/apps?owner=me", "/api/apps/" + app.ID, "/api/apps/" + app.ID + "/secrets", "/api/authorized-apps"} {
			st, body := e.call("alice", http.MethodGet, path, nil)
			e.must(http.StatusOK, st, body, nil)
		}
		e.call(admin, http.MethodGet, "/api/apps", nil)
		random := strings.TrimPrefix(sec.Secret, protocol.ClientSecretPrefix)
		n := 0
		for _, b := range e.bodies {
			n += strings.Count(string(b), random)
		}
		if n != 1 {
			t.Errorf("the secret appears %d times in API responses, want exactly once", n)
		}
		var listed []plugin.Secret
		_, body := e.call("alice", http.MethodGet, "/api/apps/"+app.ID+"/secrets", nil)
		e.must(http.StatusOK, http.StatusOK, body, &listed)
		if len(listed) != 1 || listed[0].Secret != "" || listed[0].ID != sec.ID || listed[0].DisplayPrefix != sec.DisplayPrefix {
			t.Errorf("listed secrets = %+v", listed)
		}

		// Neither the secret nor the token is in any row of any table.
		e.introspect(rs, tok.AccessToken)
		tokenKey, _, _ := strings.Cut(strings.TrimPrefix(tok.AccessToken, protocol.AccessTokenPrefix), ".")
		for table, text := range storagetest.Dump(t, s) {
			for what, needle := range map[string]string{"client secret": random, "access token": tokenKey} {
				if strings.Contains(text, needle) {
					t.Errorf("table %s holds the %s", table, what)
				}
			}
		}
	})
}
