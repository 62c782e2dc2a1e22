package plugin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestSpanTrees: one client_credentials request and one mint, each under a
// root span of the test's, record the tree of spans deputy (and fosite,
// from the provider of deputy's span) start: the endpoint, fosite's
// request and response, every storage call, the mint. Storage spans carry
// the dialect and the statement text, never a value.
func TestSpanTrees(t *testing.T) {
	exp := testkit.RecordSpans()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		app := e.ccApp("alice", "docs:read")
		sec := e.createSecret("alice", app.ID)
		tracer := otel.Tracer("test")

		ctx, root := tracer.Start(context.Background(), "test.cc")
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"docs:read"}}
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, plugin.TokenPath, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(app.ID, sec.Secret)
		w := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(w, req)
		root.End()
		if w.Code != http.StatusOK {
			t.Fatalf("token: %d %s", w.Code, w.Body.String())
		}
		got := testkit.SpanTree(exp.GetSpans(), root.SpanContext().TraceID())
		want := "test.cc\n" +
			"  deputy.oauth2.token\n" +
			"    Fosite.NewAccessRequest\n" +
			"      SELECT clients\n" +
			"    Fosite.NewAccessResponse\n" +
			"      INSERT oauth2_access_tokens\n"
		if got != want {
			t.Errorf("client_credentials span tree:\n%s\nwant:\n%s", got, want)
		}
		for _, sp := range exp.GetSpans() {
			if sp.SpanContext.TraceID() != root.SpanContext().TraceID() || sp.Name != "INSERT oauth2_access_tokens" {
				continue
			}
			attrs := map[string]string{}
			for _, kv := range sp.Attributes {
				attrs[string(kv.Key)] = kv.Value.String()
			}
			system := map[storage.Dialect]string{storage.Postgres: "postgresql", storage.SQLite: "sqlite"}[s.Dialect()]
			if attrs["db.system.name"] != system || !strings.HasPrefix(attrs["db.query.text"], "INSERT INTO oauth2_access_tokens (") || strings.Contains(attrs["db.query.text"], sec.Secret) {
				t.Errorf("storage span attributes: %v", attrs)
			}
		}

		ctx, root = tracer.Start(context.Background(), "test.mint")
		if _, err := e.p.Minter().Mint(ctx, agenttoken.MintRequest{UserID: "alice", Organization: "acme", AgentSessionID: "s1", ClientID: "platform"}); err != nil {
			t.Fatal(err)
		}
		root.End()
		got = testkit.SpanTree(exp.GetSpans(), root.SpanContext().TraceID())
		want = "test.mint\n" +
			"  deputy.agent_token.mint\n" +
			"    SELECT agent_grants\n"
		if got != want {
			t.Errorf("mint span tree:\n%s\nwant:\n%s", got, want)
		}
	})
}
