package integration

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// The MCP end-to-end tests run the official MCP TypeScript SDK client
// (integration/mcp-ts, @modelcontextprotocol/sdk pinned by its
// package-lock.json, installed by `npm ci` there; .ci/run does it) against
// the real deputy-idp binary and its /mcp server.

// mcpGrantLifespan is the servers' approval lifespan: long enough for the
// client to write once after the user approves on a loaded machine, short
// enough to wait out (the tests wait in parallel).
const mcpGrantLifespan = "15s"

// mcpRedirect is the pre-registered client's redirect URI (loopback, RFC
// 8252). Nothing listens on it: the scripted browser reads the code from
// the redirect.
const mcpRedirect = "http://127.0.0.1:33418/callback"

// mcpDriver returns the directory of the TypeScript driver, failing the test
// when Node or the installed SDK is missing under CI (CI=true, or
// DEPUTY_REQUIRE_NODE=1) and skipping it elsewhere.
func mcpDriver(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("mcp-ts")
	if err != nil {
		t.Fatal(err)
	}
	required := os.Getenv("CI") == "true" || os.Getenv("DEPUTY_REQUIRE_NODE") == "1"
	missing := func(format string, args ...any) {
		t.Helper()
		if required {
			t.Fatalf(format+" (CI must run this test: .ci/run installs it with `npm ci` in integration/mcp-ts)", args...)
		}
		t.Skipf(format+"; MCP end-to-end test skipped (run `npm ci` in integration/mcp-ts)", args...)
	}
	if _, err := exec.LookPath("node"); err != nil {
		missing("no node on PATH: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		missing("the MCP TypeScript SDK is not installed: %v", err)
	}
	return dir
}

// runMCPClient runs the driver with env and fails t unless every step held.
func runMCPClient(t *testing.T, dir string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "client.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the MCP TypeScript client failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `{"step":"done"}`) {
		t.Fatalf("the MCP TypeScript client did not finish:\n%s", out)
	}
	t.Logf("MCP TypeScript client:\n%s", out)
	return string(out)
}

// mcpServer starts a deputy-idp for the MCP tests on backend b: its own
// (never DEPUTY_URL's, whose approvals last an hour), with a short approval
// lifespan, env added to its environment and flags to `serve`.
func mcpServer(t *testing.T, b storagetest.Backend, env []string, flags ...string) *target {
	t.Helper()
	return startReplicaEnv(t, b.NewDSN(t), newSecret(t), "", env, append([]string{"--grant-lifespan", mcpGrantLifespan}, flags...)...)
}

// mcpClientEnv is the driver's environment for tg, plus more.
func mcpClientEnv(tg *target, more ...string) []string {
	return append([]string{
		"MCP_URL=" + tg.URL + "/mcp",
		"ISSUER=" + tg.URL,
		"REDIRECT_URI=" + mcpRedirect,
		"USERNAME=alice",
		"PASSWORD=" + alicePassword,
		"WRITE_TOOL_ORG=" + demoOrg,
		// The sample API: the server's other resource (RFC 8707).
		"OTHER_RESOURCE=" + tg.URL + "/api",
	}, more...)
}

// eachMCPBackend runs fn on each dialect, but not against DEPUTY_URL.
func eachMCPBackend(t *testing.T, fn func(t *testing.T, b storagetest.Backend)) {
	t.Helper()
	if os.Getenv("DEPUTY_URL") != "" {
		t.Skip("needs servers of its own with a short approval lifespan (--grant-lifespan)")
	}
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, b)
		})
	}
}

// The three tests below each drive the whole story: the TypeScript SDK
// client connects to /mcp (401, discovery, sign-in and consent scripted
// like a browser, PKCE S256, iss checked), lists the tools, reads with
// list_projects, meets HTTP 403 insufficient_scope on create_project,
// authorizes again through the consent page (which presents the write as a
// time-boxed approval), writes, and once the approval's lifespan has passed
// is back to read-only after a refresh, its next write refused. They differ
// in how the client came to be known.

// TestMCPTypeScriptSDKPreRegisteredClient: a public agent client an
// administrator registered, which sends no state.
func TestMCPTypeScriptSDKPreRegisteredClient(t *testing.T) {
	t.Parallel()
	dir := mcpDriver(t)
	eachMCPBackend(t, func(t *testing.T, b storagetest.Backend) {
		tg := mcpServer(t, b, nil)
		c := tg.cli(t, "clients", "create", "--name", "MCP e2e (TypeScript SDK)",
			"--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", mcpRedirect,
			"--scope", "projects:read projects:write offline_access", "--public", "--agent")
		runMCPClient(t, dir, mcpClientEnv(tg, "CLIENT_ID="+str(t, c, "client_id"))...)
	})
}

// TestMCPTypeScriptSDKDynamicRegistration: the SDK registers the client
// itself (RFC 7591) from the advertised registration endpoint.
func TestMCPTypeScriptSDKDynamicRegistration(t *testing.T) {
	t.Parallel()
	dir := mcpDriver(t)
	eachMCPBackend(t, func(t *testing.T, b storagetest.Backend) {
		tg := mcpServer(t, b, nil)
		runMCPClient(t, dir, mcpClientEnv(tg)...)
	})
}

// TestMCPTypeScriptSDKMetadataDocument: the client id is the https URL of
// the client's metadata document, served on loopback by the test (the
// server fetches it with --loopback-metadata-documents and trusts the test
// server's certificate through SSL_CERT_FILE).
func TestMCPTypeScriptSDKMetadataDocument(t *testing.T) {
	t.Parallel()
	dir := mcpDriver(t)
	var docURL string
	doc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mcp-client.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		json.NewEncoder(w).Encode(map[string]any{
			"client_id":                  docURL,
			"client_name":                "deputy MCP e2e (metadata document)",
			"redirect_uris":              []string{mcpRedirect},
			"grant_types":                []string{"authorization_code", "refresh_token"},
			"response_types":             []string{"code"},
			"token_endpoint_auth_method": "none",
		})
	}))
	t.Cleanup(doc.Close)
	docURL = doc.URL + "/mcp-client.json"
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: doc.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	eachMCPBackend(t, func(t *testing.T, b storagetest.Backend) {
		tg := mcpServer(t, b, []string{"SSL_CERT_FILE=" + ca}, "--loopback-metadata-documents")
		runMCPClient(t, dir, mcpClientEnv(tg, "CLIENT_METADATA_URL="+docURL)...)
	})
}
