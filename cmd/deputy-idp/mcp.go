package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/scope"
)

// The demo's MCP server: /mcp speaks MCP's Streamable HTTP transport
// (modelcontextprotocol/go-sdk) behind deputy's resource middleware, with
// two tools over the sample projects: list_projects needs projects:read,
// create_project projects:write. An MCP client that calls create_project
// with a read-only token gets an HTTP 403 insufficient_scope challenge,
// which is what MCP clients answer by authorizing again for the write: the
// step-up deputy turns into an approval (README, "MCP").

// MCPPath is where the MCP server is mounted.
const MCPPath = "/mcp"

// maxMCPBody caps a request body the scope check reads; the SDK has its
// own (larger) limit.
const maxMCPBody = 1 << 20

// Tool names and the scopes each needs beyond mcpBaseScopes.
const (
	toolListProjects  = "list_projects"
	toolCreateProject = "create_project"
)

// mcpBaseScopes is what every MCP request needs: connecting and listing
// tools is reading.
var mcpBaseScopes = []string{"projects:read"}

var mcpToolScopes = map[string][]string{
	toolListProjects:  {"projects:read"},
	toolCreateProject: {"projects:read", "projects:write"},
}

type listProjectsIn struct {
	Organization string `json:"organization,omitempty" jsonschema:"the organization, e.g. acme; may be left out by a user who belongs to exactly one"`
}

type listProjectsOut struct {
	Organization string     `json:"organization"`
	Projects     []*project `json:"projects"`
}

type createProjectIn struct {
	Organization string `json:"organization,omitempty" jsonschema:"the organization, e.g. acme; may be left out by a user who belongs to exactly one"`
	Name         string `json:"name" jsonschema:"the new project's name, 1 to 100 characters"`
}

// mcpHandler builds /mcp: the middleware (401 without a valid token; 403
// insufficient_scope naming the scopes the call needs), then the identity
// handed to the SDK as its TokenInfo, then the SDK's stateless Streamable
// HTTP handler. Stateless: every request stands alone, so replicas need no
// shared session state and a refreshed token is simply the next request's.
func (s *server) mcpHandler() http.Handler {
	srv := mcp.NewServer(&mcp.Implementation{Name: "deputy-idp", Title: "deputy demo projects", Version: "1"}, &mcp.ServerOptions{
		Instructions: "Projects of the user's organizations. Reading needs projects:read; create_project needs projects:write, which the user approves for a limited time.",
		Logger:       s.log,
	})
	mcp.AddTool(srv, &mcp.Tool{
		Name:        toolListProjects,
		Title:       "List projects",
		Description: "List the projects of an organization.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, s.toolListProjects)
	mcp.AddTool(srv, &mcp.Tool{
		Name:        toolCreateProject,
		Title:       "Create a project",
		Description: "Create a project in an organization. Needs the user's approval (projects:write).",
	}, s.toolCreateProject)
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{
		Stateless:    true,
		JSONResponse: true,
		Logger:       s.log,
	})
	// The SDK takes the caller from its own TokenInfo: hand it the
	// identity deputy's middleware verified (the token is not read again).
	withIdentity := auth.RequireBearerToken(func(_ context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		id, ok := resource.IdentityFrom(r.Context())
		if !ok {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{
			Scopes: id.Scopes,
			UserID: id.Subject,
			Extra:  map[string]any{"client_id": id.ClientID, "organization": id.Organization},
		}, nil
	}, &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})(sdk)
	return s.mcpScopes(withIdentity)
}

// mcpScopes puts deputy's middleware in front of next with the scopes the
// request's JSON-RPC messages need: a tools/call of create_project needs
// projects:write as well, anything else projects:read. It reads the body
// (at most maxMCPBody) and hands it on unchanged; a body it cannot read as
// JSON-RPC needs only the base scopes and is left to the SDK to refuse.
func (s *server) mcpScopes(next http.Handler) http.Handler {
	m := s.deputy.mcp
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		required := mcpBaseScopes
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxMCPBody+1))
			if err != nil {
				apiError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
				return
			}
			if len(body) > maxMCPBody {
				apiError(w, http.StatusRequestEntityTooLarge, "invalid_request", "the request body is too large")
				return
			}
			required = scope.Union(required, toolScopes(body))
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		m.RequireScopes(required...)(next).ServeHTTP(w, r)
	})
}

// toolScopes returns the scopes the tools/call messages in body need: one
// JSON-RPC message or a batch of them.
func toolScopes(body []byte) []string {
	type message struct {
		Method string `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	var msgs []message
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		if json.Unmarshal(body, &msgs) != nil {
			return nil
		}
	} else {
		var one message
		if json.Unmarshal(body, &one) != nil {
			return nil
		}
		msgs = []message{one}
	}
	var out []string
	for _, m := range msgs {
		if m.Method == "tools/call" {
			out = scope.Union(out, mcpToolScopes[m.Params.Name])
		}
	}
	return out
}

// errToolScope is a tool call whose token lacks the tool's scope; the
// middleware answers those with 403 before the tool runs, so this is the
// tool's own belt and braces.
var errToolScope = errors.New("this token lacks the scope the tool needs")

// toolCaller returns who calls a tool, checked to hold want.
func toolCaller(req *mcp.CallToolRequest, want string) (*auth.TokenInfo, error) {
	var ti *auth.TokenInfo
	if req.Extra != nil {
		ti = req.Extra.TokenInfo
	}
	if ti == nil || ti.UserID == "" {
		return nil, errors.New("no authenticated user")
	}
	if !scope.Contains(ti.Scopes, want) {
		return nil, fmt.Errorf("%w: %s", errToolScope, want)
	}
	return ti, nil
}

// toolOrganization resolves the organization a tool acts in: the one named,
// or the user's only one. The user must hold want there today, and a token
// bound to an organization acts in no other.
func (s *server) toolOrganization(ctx context.Context, ti *auth.TokenInfo, named, want string) (string, error) {
	org := strings.TrimSpace(named)
	if bound, _ := ti.Extra["organization"].(string); bound != "" {
		if org != "" && org != bound {
			return "", fmt.Errorf("this token is for organization %q", bound)
		}
		org = bound
	}
	if org == "" {
		ms, err := s.users.memberships(ctx, ti.UserID)
		if err != nil {
			return "", err
		}
		if len(ms) != 1 {
			return "", errors.New("name the organization: you belong to more than one")
		}
		org = ms[0].Organization
	}
	held, err := s.dir.UserScopes(ctx, ti.UserID, org)
	if err != nil {
		return "", err
	}
	if !scope.Contains(held, want) {
		return "", fmt.Errorf("you do not hold %s in organization %q", want, org)
	}
	return org, nil
}

func (s *server) toolListProjects(ctx context.Context, req *mcp.CallToolRequest, in listProjectsIn) (*mcp.CallToolResult, listProjectsOut, error) {
	ti, err := toolCaller(req, "projects:read")
	if err != nil {
		return nil, listProjectsOut{}, err
	}
	org, err := s.toolOrganization(ctx, ti, in.Organization, "projects:read")
	if err != nil {
		return nil, listProjectsOut{}, err
	}
	ps, err := s.listProjects(ctx, org)
	if err != nil {
		s.log.ErrorContext(ctx, "mcp: list projects", "err", err)
		return nil, listProjectsOut{}, errors.New("the projects could not be read; try again")
	}
	return nil, listProjectsOut{Organization: org, Projects: ps}, nil
}

func (s *server) toolCreateProject(ctx context.Context, req *mcp.CallToolRequest, in createProjectIn) (*mcp.CallToolResult, *project, error) {
	ti, err := toolCaller(req, "projects:write")
	if err != nil {
		return nil, nil, err
	}
	name := strings.TrimSpace(in.Name)
	if !validProjectName(name) {
		return nil, nil, errors.New("name: 1 to 100 characters required")
	}
	org, err := s.toolOrganization(ctx, ti, in.Organization, "projects:write")
	if err != nil {
		return nil, nil, err
	}
	p, err := s.createProject(ctx, org, name, ti.UserID)
	if err != nil {
		s.log.ErrorContext(ctx, "mcp: create project", "err", err)
		return nil, nil, errors.New("the project could not be created; try again")
	}
	client, _ := ti.Extra["client_id"].(string)
	s.log.InfoContext(ctx, "project created over MCP", "org", org, "sub", ti.UserID, "client_id", client)
	return nil, p, nil
}
