package integration

import (
	"context"
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
// client to write once after the user approves, short enough to wait out.
const mcpGrantLifespan = "8s"

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

// TestMCPTypeScriptSDKPreRegisteredClient: a pre-registered public agent
// client that sends no state, driven by the official MCP TypeScript SDK,
// connects to /mcp (401, discovery, sign-in and consent, PKCE S256, iss
// checked), lists the tools, reads with list_projects, meets HTTP 403
// insufficient_scope on create_project, authorizes again through the consent
// page (which presents the write as a time-boxed approval), writes, and once
// the approval's lifespan has passed is back to read-only after a refresh,
// its next write refused again.
func TestMCPTypeScriptSDKPreRegisteredClient(t *testing.T) {
	t.Parallel()
	if os.Getenv("DEPUTY_URL") != "" {
		t.Skip("needs servers of its own with a short approval lifespan (--grant-lifespan)")
	}
	dir := mcpDriver(t)
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			tg := startReplica(t, b.NewDSN(t), newSecret(t), "", "--grant-lifespan", mcpGrantLifespan)
			c := tg.cli(t, "clients", "create", "--name", "MCP e2e (TypeScript SDK)",
				"--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", mcpRedirect,
				"--scope", "projects:read projects:write offline_access", "--public", "--agent")
			runMCPClient(t, dir,
				"MCP_URL="+tg.URL+"/mcp",
				"ISSUER="+tg.URL,
				"CLIENT_ID="+str(t, c, "client_id"),
				"REDIRECT_URI="+mcpRedirect,
				"USERNAME=alice",
				"PASSWORD="+alicePassword,
				"WRITE_TOOL_ORG="+demoOrg,
			)
		})
	}
}
