package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// scrape reads the IdP's /metrics into series → value.
func (e *idp) scrape() map[string]float64 {
	e.t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	return testkit.ParseMetrics(e.t, resp.Body)
}

// TestMetricsInHostRegistry: deputy's collectors, registered in the IdP's
// own registry and scraped from its /metrics, count what happens at the
// IdP's token endpoint (its own clients' requests too: the guard wraps the
// endpoint), at deputy's middleware and at deputy's consent, exactly.
func TestMetricsInHostRegistry(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, st *storage.Store) {
		e := startIdP(t, st)
		last, step := testkit.MetricSteps(t, e.scrape)
		if last["deputy_database_available"] != 1 {
			t.Errorf("deputy_database_available %v, want 1", last["deputy_database_available"])
		}

		if _, err := e.ccToken("host-cc", "host-cc-secret", "projects:read"); err != nil {
			t.Fatal(err)
		}
		step("the IdP's own client's token", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="success"}`: 1,
		})
		if _, err := e.ccToken("host-cc", "wrong", "projects:read"); err == nil {
			t.Fatal("a wrong secret got a token")
		}
		step("a wrong secret", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="invalid_client"}`: 1,
			`deputy_client_auth_failures_total`:                                                     1,
		})
		if c, _ := e.api(http.MethodGet, "dpy_agt_garbage"); c != http.StatusUnauthorized {
			t.Fatalf("the API with a garbage agent token: %d", c)
		}
		step("a refusal", map[string]float64{`deputy_resource_refusals_total{reason="invalid_token",token_kind="agent"}`: 1})

		platID, _, err := e.p.CreateAgentPlatform(context.Background(), plugin.AgentPlatform{Name: "Agents", Scopes: []string{"projects:read", "projects:write"}})
		if err != nil {
			t.Fatal(err)
		}
		alice := e.signIn("alice", "alice-password")
		if c := alice.json(http.MethodPost, "/deputy/agent/approve", map[string]any{
			"organization": "acme", "clientId": platID, "sessionId": "chat-1",
			"scopes": []string{"projects:write"}, "decision": "approve",
		}, nil); c != http.StatusOK {
			t.Fatalf("approve: %d", c)
		}
		step("an approval", map[string]float64{`deputy_consent_events_total{event="approved"}`: 1})
	})
}
