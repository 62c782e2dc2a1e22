package plugin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// scrape reads a /metrics answer in the text format into series → value,
// a series being the line's name and labels as written
// (`deputy_token_requests_total{grant_type="client_credentials",outcome="success"}`).
func scrape(t *testing.T, c *http.Client, url string) map[string]float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	return testkit.ParseMetrics(t, resp.Body)
}

// TestMetrics: what a token request, a failed client authentication, a
// mint, a middleware refusal and an approval add to deputy's counters,
// scraped from the handler a host serves its registry with, kit mode.
func TestMetrics(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		reg := prometheus.NewRegistry()
		if err := e.p.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(metrics.Close)
		last, step := testkit.MetricSteps(t, func() map[string]float64 { return scrape(t, metrics.Client(), metrics.URL) })
		for _, name := range []string{"deputy_signing_key_age_seconds", `deputy_database_errors_total{kind="unavailable"}`, "deputy_database_available"} {
			if _, ok := last[name]; !ok {
				t.Errorf("no %s in the first scrape", name)
			}
		}
		if last["deputy_database_available"] != 1 {
			t.Errorf("deputy_database_available %v, want 1", last["deputy_database_available"])
		}

		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		step("creating an app", nil)

		e.mustToken(app.ID, sec.Secret, "acme", "docs:read")
		d := step("a client_credentials token", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="success"}`: 1,
		})
		if d[`deputy_token_request_duration_seconds_count{grant_type="client_credentials",status_class="2xx"}`] != 1 {
			t.Errorf("the token request's duration was not observed once: %v", d)
		}

		if _, err := e.token(app.ID, "dpy_cs_wrong", "acme", oauth2.AuthStyleInHeader); err == nil {
			t.Fatal("a wrong secret got a token")
		}
		step("a wrong secret", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="invalid_client"}`: 1,
			`deputy_client_auth_failures_total`:                                                     1,
		})

		// Introspection with a wrong secret is a failed client
		// authentication, not a token request.
		st, _ := e.form(plugin.IntrospectionPath, app.ID, "dpy_cs_wrong", url.Values{"token": {"x"}})
		if st != http.StatusUnauthorized {
			t.Fatalf("introspection with a wrong secret: %d", st)
		}
		step("introspection with a wrong secret", map[string]float64{`deputy_client_auth_failures_total`: 1})

		// A mint from Go, a refusal by the middleware, an approval.
		ctx := context.Background()
		if err := s.CreateClient(ctx, &storage.Client{ID: "platform", Name: "Platform", GrantTypes: []string{plugin.GrantTypeAgentToken}}); err != nil {
			t.Fatal(err)
		}
		tok, err := e.p.Minter().Mint(ctx, agenttoken.MintRequest{UserID: "alice", Organization: "acme", AgentSessionID: "s1", ClientID: "platform"})
		if err != nil {
			t.Fatal(err)
		}
		step("a mint", map[string]float64{`deputy_agent_tokens_minted_total`: 1})

		r := mux.NewRouter()
		mw := e.p.Middleware(func(r *http.Request) string { return mux.Vars(r)["org"] })
		ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
		r.Handle("/orgs/{org}/docs", mw.RequireScopes("docs:write")(ok))
		for _, auth := range []string{"Bearer " + tok.Token, "", "Bearer dpy_agt_garbage"} {
			req := httptest.NewRequest(http.MethodPost, "/orgs/acme/docs", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			r.ServeHTTP(httptest.NewRecorder(), req)
		}
		step("three refusals", map[string]float64{
			`deputy_resource_refusals_total{reason="insufficient_scope",token_kind="agent"}`: 1,
			`deputy_resource_refusals_total{reason="no_token",token_kind="none"}`:            1,
			`deputy_resource_refusals_total{reason="invalid_token",token_kind="agent"}`:      1,
		})

		approve := func(decision string) {
			t.Helper()
			body := `{"organization":"acme","clientId":"platform","sessionId":"s1","scopes":["docs:write"],"decision":"` + decision + `"}`
			st, out := e.call("alice", http.MethodPost, plugin.ApprovePath, body)
			if st != http.StatusOK {
				t.Fatalf("%s: %d %s", decision, st, out)
			}
		}
		approve("approve")
		step("an approval", map[string]float64{`deputy_consent_events_total{event="approved"}`: 1})
		approve("deny")
		step("a denial", map[string]float64{`deputy_consent_events_total{event="denied"}`: 1})

		// Wrong secrets until the limiter refuses: the refusal is counted
		// as such, not as a token request.
		failed := 0
		for range 20 {
			st, _ := e.form(plugin.TokenPath, app.ID, "dpy_cs_wrong", url.Values{"grant_type": {"client_credentials"}})
			if st == http.StatusTooManyRequests {
				break
			}
			failed++
		}
		step("failures until the limiter refuses", map[string]float64{
			`deputy_token_requests_total{grant_type="client_credentials",outcome="invalid_client"}`: float64(failed),
			`deputy_client_auth_failures_total`:                                                     float64(failed),
			`deputy_client_auth_rate_limited_total`:                                                 1,
		})
	})
}
