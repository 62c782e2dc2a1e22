package plugin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// publicCodeClient stores a public authorization-code client (as a
// dynamically registered MCP client is) and returns its oauth2 config.
func (e *env) publicCodeClient(agent bool, scopes ...string) oauth2.Config {
	e.t.Helper()
	const redirect = "http://127.0.0.1:9/callback"
	c := &storage.Client{
		ID: storage.NewID(8), Name: "an MCP client", RedirectURIs: []string{redirect},
		GrantTypes: []string{"authorization_code", "refresh_token"}, ResponseTypes: []string{"code"},
		Scopes: scopes, Public: true, TokenEndpointAuthMethod: "none", Agent: agent,
	}
	if err := e.store.CreateClient(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	return oauth2.Config{
		ClientID: c.ID, RedirectURL: redirect, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: e.srv.URL + plugin.AuthorizePath, TokenURL: e.srv.URL + plugin.TokenPath, AuthStyle: oauth2.AuthStyleInParams},
	}
}

// TestAgentClientWritesAreApprovals: the write scopes a user grants an agent
// client at the authorization endpoint are an approval bound to that
// authorization. They count while it lasts (Config.GrantLifespan); after it
// lapses, or once the user revokes it on the grants page, the resource
// middleware and introspection drop them at once and a refresh issues read
// scopes only, while the read scopes live on with the refresh token. A
// client that is not an agent keeps what it was granted.
func TestAgentClientWritesAreApprovals(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		clock := testkit.NewClock(time.Now())
		e := newEnvWith(t, s, func(p *plugin.Plugin) { plugin.SetClock(p, clock.Now) })
		rs := e.resourceServer()
		ctx := context.Background()
		scopes := []string{"docs:read", "docs:write", "offline_access"}
		agent := e.publicCodeClient(true, scopes...)
		plain := e.publicCodeClient(false, scopes...)

		authorize := func(cfg oauth2.Config) *oauth2.Token {
			t.Helper()
			verifier := oauth2.GenerateVerifier()
			code := e.code("alice", "acme", cfg, oauth2.S256ChallengeOption(verifier))
			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		refresh := func(cfg oauth2.Config, tok *oauth2.Token) *oauth2.Token {
			t.Helper()
			// Expire the access token locally so that the source refreshes.
			next, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Unix(1, 0)}).Token()
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			return next
		}
		// What each side sees of a token: the scope the token response
		// named, introspection, and the resource middleware's verifier.
		check := func(what string, tok *oauth2.Token, want string) {
			t.Helper()
			if in := e.introspect(rs, tok.AccessToken); !in.Active || in.Scope != want {
				t.Errorf("%s: introspection %+v, want scope %q", what, in, want)
			}
			id, err := e.p.AccessTokenVerifier().VerifyAccessToken(ctx, tok.AccessToken, "acme")
			if err != nil || scope.Join(id.Scopes) != want {
				t.Errorf("%s: middleware sees %v (%v), want %q", what, id, err, want)
			}
		}
		responseScope := func(tok *oauth2.Token) string {
			s, _ := tok.Extra("scope").(string)
			return s
		}
		type grantList struct {
			Grants []struct {
				ID        string   `json:"id"`
				ClientID  string   `json:"clientId"`
				SessionID string   `json:"sessionId"`
				Scopes    []string `json:"scopes"`
				Org       string   `json:"organization"`
			} `json:"grants"`
		}
		grants := func() grantList {
			t.Helper()
			var gl grantList
			st, body := e.call("alice", http.MethodGet, "/agent/grants", nil)
			e.must(http.StatusOK, st, body, &gl)
			return gl
		}

		// Each approval at the authorization endpoint is counted as one, and
		// a revocation on the grants page as one (deputy_consent_events_total).
		reg := prometheus.NewRegistry()
		if err := e.p.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(metrics.Close)
		_, step := testkit.MetricSteps(t, func() map[string]float64 { return scrape(t, metrics.Client(), metrics.URL) })
		codeFlow := map[string]float64{
			`deputy_token_requests_total{grant_type="authorization_code",outcome="success"}`: 1,
		}

		tok := authorize(agent)
		step("an agent client's authorization with a write scope", map[string]float64{
			`deputy_consent_events_total{event="approved"}`:                                  1,
			`deputy_token_requests_total{grant_type="authorization_code",outcome="success"}`: 1,
		})
		plainTok := authorize(plain)
		step("a client that is not an agent: no approval", codeFlow)
		if got := responseScope(tok); got != "docs:read docs:write offline_access" {
			t.Errorf("token response scope %q", got)
		}
		check("approved", tok, "docs:read docs:write offline_access")
		gl := grants()
		if len(gl.Grants) != 1 || gl.Grants[0].ClientID != agent.ClientID || gl.Grants[0].SessionID == "" ||
			gl.Grants[0].Org != "acme" || scope.Join(gl.Grants[0].Scopes) != "docs:write" {
			t.Fatalf("the approval is not listed with alice's grants: %+v", gl)
		}
		// Within the approval a refresh keeps the write scope.
		tok = refresh(agent, tok)
		check("refreshed within the approval", tok, "docs:read docs:write offline_access")

		// The approval lapses: the live access token loses docs:write at
		// once, and so does every refresh from then on.
		clock.Advance(plugin.DefaultGrantLifespan + time.Second)
		check("approval lapsed", tok, "docs:read offline_access")
		if in := e.introspect(rs, tok.RefreshToken); !in.Active || in.Scope != "docs:read offline_access" {
			t.Errorf("refresh token after the approval: %+v", in)
		}
		tok = refresh(agent, tok)
		if got := responseScope(tok); got != "docs:read offline_access" {
			t.Errorf("refresh after the approval lapsed: scope %q", got)
		}
		check("refreshed after the approval", tok, "docs:read offline_access")
		tok = refresh(agent, tok)
		check("refreshed again", tok, "docs:read offline_access")
		// A client that is not an agent keeps what the user granted.
		check("not an agent", plainTok, "docs:read docs:write offline_access")

		// Re-authorizing is a new approval, for the new authorization only.
		again := authorize(agent)
		check("re-approved", again, "docs:read docs:write offline_access")
		check("the old authorization", tok, "docs:read offline_access")
		gl = grants()
		if len(gl.Grants) != 1 || gl.Grants[0].SessionID == "" {
			t.Fatalf("grants after re-approval: %+v", gl)
		}
		// Revoking it on the grants page takes the write scope away at once.
		// From here (refreshes and checks in between are not this test's
		// business), the revocation alone.
		_, step = testkit.MetricSteps(t, func() map[string]float64 { return scrape(t, metrics.Client(), metrics.URL) })
		st, body := e.call("alice", http.MethodDelete, "/agent/grants/"+url.PathEscape(gl.Grants[0].ID), nil)
		e.must(http.StatusNoContent, st, body, nil)
		step("a revocation on the grants page", map[string]float64{`deputy_consent_events_total{event="revoked"}`: 1})
		check("revoked", again, "docs:read offline_access")
		again = refresh(agent, again)
		check("refreshed after revocation", again, "docs:read offline_access")
	})
}
