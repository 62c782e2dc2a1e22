package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// bearer adds a token to every request, as an MCP client's auth does.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// mcpSession connects the go-sdk's client to the demo's /mcp with token.
func mcpSession(t *testing.T, idp *testIdP, token string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "deputy-test", Version: "1"}, nil)
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint:   idp.URL + MCPPath,
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}},
	}, nil)
	if err != nil {
		t.Fatalf("connect to /mcp: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// postMCP sends one JSON-RPC message to /mcp and returns the answer.
func postMCP(t *testing.T, idp *testIdP, token, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, idp.URL+MCPPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestMCPServer: /mcp is an MCP server behind deputy's middleware. Without
// a token it is 401; a read-only token connects, lists the two tools and
// calls list_projects; its create_project is an HTTP 403 insufficient_scope
// naming every scope the call needs (what an MCP client re-authorizes
// with); a token with projects:write creates.
func TestMCPServer(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		idp := startIdP(t, b)
		ctx := context.Background()
		oc := testClient(t, idp, true)

		if resp := postMCP(t, idp, "", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); resp.StatusCode != http.StatusUnauthorized ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("no token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}

		oc.Scopes = []string{"projects:read"}
		forMCP := oauth2.SetAuthURLParam("resource", idp.URL+MCPPath)
		read := userToken(t, idp, oc, "alice", demoAlicePassword, forMCP)
		cs := mcpSession(t, idp, read.AccessToken)
		tools, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
		if strings.Join(names, " ") != "create_project list_projects" {
			t.Errorf("tools: %v", names)
		}
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_projects"})
		if err != nil || res.IsError {
			t.Fatalf("list_projects: %v %+v", err, res)
		}
		var listed listProjectsOut
		raw, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(raw, &listed); err != nil || listed.Organization != demoOrg {
			t.Errorf("list_projects answered %s (%v)", raw, err)
		}

		call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_project","arguments":{"name":"from MCP"}}}`
		resp := postMCP(t, idp, read.AccessToken, call)
		if want := `Bearer error="insufficient_scope", scope="offline_access projects:read projects:write"`; resp.StatusCode != http.StatusForbidden ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), want) {
			t.Errorf("create_project with a read-only token: %d %q, want 403 %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
		}
		// The same call in a batch is found too.
		if resp := postMCP(t, idp, read.AccessToken, "["+call+"]"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("create_project in a batch with a read-only token: %d", resp.StatusCode)
		}

		oc.Scopes = []string{"projects:read", "projects:write"}
		write := userToken(t, idp, oc, "alice", demoAlicePassword, forMCP)
		ws := mcpSession(t, idp, write.AccessToken)
		res, err = ws.CallTool(ctx, &mcp.CallToolParams{Name: "create_project", Arguments: map[string]any{"name": "from MCP"}})
		if err != nil || res.IsError {
			t.Fatalf("create_project: %v %+v", err, res)
		}
		res, err = ws.CallTool(ctx, &mcp.CallToolParams{Name: "create_project", Arguments: map[string]any{"name": " "}})
		if err != nil || !res.IsError {
			t.Errorf("create_project without a name: %v %+v, want a tool error", err, res)
		}
		res, err = ws.CallTool(ctx, &mcp.CallToolParams{Name: "list_projects", Arguments: map[string]any{"organization": "globex"}})
		if err != nil || !res.IsError {
			t.Errorf("list_projects of an organization alice is not in: %v %+v, want a tool error", err, res)
		}
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_projects", Arguments: map[string]any{"organization": demoOrg}})
		if err != nil || res.IsError {
			t.Fatal(err, res)
		}
		raw, _ = json.Marshal(res.StructuredContent)
		if !strings.Contains(string(raw), `"name":"from MCP"`) || !strings.Contains(string(raw), `"createdBy"`) {
			t.Errorf("the created project is not listed: %s", raw)
		}
	})
}
