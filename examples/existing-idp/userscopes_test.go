package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestUserScopesNeverKeptInHost: in plugin mode the host serves its token
// endpoint, and deputy keeps no user's scopes there even with
// Config.UserScopesCacheTTL set: a scope the host takes from bob, left
// unreported, is gone from his app's next token. Plugin.UserChanged is
// still the host's to call (it moves the revision in deputy's store, for
// any kit-mode replica on the same database) and answers nil.
func TestUserScopesNeverKeptInHost(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st, func(c *plugin.Config) { c.UserScopesCacheTTL = time.Minute })
		bob := e.signIn("bob", "bob-password")
		var app plugin.App
		if c := bob.json(http.MethodPost, "/deputy/api/apps", map[string]any{
			"name": "bob's exporter", "grantTypes": []string{"client_credentials"}, "scopes": []string{"projects:read"},
		}, &app); c != http.StatusCreated {
			t.Fatalf("create app: %d", c)
		}
		var sec plugin.Secret
		if c := bob.json(http.MethodPost, "/deputy/api/apps/"+app.ID+"/secrets", nil, &sec); c != http.StatusCreated {
			t.Fatalf("create secret: %d", c)
		}
		for range 2 {
			tok, err := e.ccToken(app.ID, sec.Secret)
			if err != nil || tok.Extra("scope") != "projects:read" {
				t.Fatalf("token: %v, scope %v", err, tok.Extra("scope"))
			}
		}
		e.h.mu.Lock()
		e.h.users["bob"].scopes = nil // unreported
		e.h.mu.Unlock()
		tok, err := e.ccToken(app.ID, sec.Secret)
		if err == nil && tok.Extra("scope") != "" {
			t.Errorf("token after bob lost projects:read, unreported: scope %v, want none", tok.Extra("scope"))
		}
		if err := e.p.UserChanged(context.Background(), "bob"); err != nil {
			t.Errorf("UserChanged in plugin mode: %v", err)
		}
	})
}
