package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage"
)

// The sample protected API: a resource server would live elsewhere, but
// keeping one here lets a newcomer walk the whole loop against one process:
// GET works with a read-only agent token, POST answers 403
// insufficient_scope until the user approves projects:write.

type project struct {
	ID           string    `db:"id" json:"id"`
	Organization string    `db:"organization" json:"organization"`
	Name         string    `db:"name" json:"name"`
	CreatedBy    string    `db:"created_by" json:"createdBy"`
	CreatedAt    time.Time `db:"created_at" json:"createdAt"`
}

// projectsResponse names who asked, so that the demo shows whose authority
// a token carried.
type projectsResponse struct {
	Organization string     `json:"organization"`
	Projects     []*project `json:"projects"`
	Caller       caller     `json:"caller"`
}

type caller struct {
	Subject      string   `json:"sub"`
	ClientID     string   `json:"clientId,omitempty"`
	AgentSession string   `json:"agentSession,omitempty"`
	Scopes       []string `json:"scopes"`
	Kind         string   `json:"kind"`
}

func callerOf(id *resource.Identity) caller {
	return caller{Subject: id.Subject, ClientID: id.ClientID, AgentSession: id.AgentSession, Scopes: id.Scopes, Kind: id.Kind}
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": msg})
}

func (s *server) handleListProjects(w http.ResponseWriter, r *http.Request) {
	org := mux.Vars(r)["org"]
	id, ok := resource.IdentityFrom(r.Context())
	if !ok {
		apiError(w, http.StatusUnauthorized, "invalid_token", "a bearer token is required")
		return
	}
	ps, err := s.listProjects(r.Context(), org)
	if err != nil {
		s.internalError(w, r, "list projects", err)
		return
	}
	writeJSON(w, http.StatusOK, projectsResponse{Organization: org, Projects: ps, Caller: callerOf(id)})
}

func (s *server) handleCreateProject(w http.ResponseWriter, r *http.Request) {
	org := mux.Vars(r)["org"]
	id, ok := resource.IdentityFrom(r.Context())
	if !ok {
		apiError(w, http.StatusUnauthorized, "invalid_token", "a bearer token is required")
		return
	}
	var in struct {
		Name string `json:"name"`
	}
	body := http.MaxBytesReader(w, r.Body, maxFormBytes)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			apiError(w, http.StatusBadRequest, "invalid_request", "body must be a JSON object like {\"name\": \"…\"}")
			return
		}
		if dec.Decode(&struct{}{}) != io.EOF {
			apiError(w, http.StatusBadRequest, "invalid_request", "body must hold one JSON object")
			return
		}
	} else {
		r.Body = body
		if err := r.ParseForm(); err != nil {
			apiError(w, http.StatusBadRequest, "invalid_request", "the form could not be read")
			return
		}
		in.Name = r.PostForm.Get("name")
	}
	in.Name = strings.TrimSpace(in.Name)
	if !validProjectName(in.Name) {
		apiError(w, http.StatusBadRequest, "invalid_request", "name: 1–100 characters required")
		return
	}
	p, err := s.createProject(r.Context(), org, in.Name, id.Subject)
	if err != nil {
		s.internalError(w, r, "create project", err)
		return
	}
	s.log.InfoContext(r.Context(), "project created", "org", org, "sub", id.Subject, "client_id", id.ClientID, "agent_session", id.AgentSession)
	writeJSON(w, http.StatusCreated, p)
}

// validProjectName: 1–100 characters of valid UTF-8 (after trimming).
func validProjectName(name string) bool {
	return name != "" && utf8.ValidString(name) && utf8.RuneCountInString(name) <= 100
}

// listProjects returns org's projects, oldest first; never nil.
func (s *server) listProjects(ctx context.Context, org string) ([]*project, error) {
	ps := []*project{}
	err := s.st.Select(ctx, &ps, `SELECT id, organization, name, created_by, created_at
		FROM idp_projects WHERE organization = ? ORDER BY created_at, id`, org)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		p.CreatedAt = p.CreatedAt.UTC()
	}
	return ps, nil
}

// createProject stores a project named name in org, created by user.
func (s *server) createProject(ctx context.Context, org, name, user string) (*project, error) {
	p := &project{
		ID:           "prj_" + storage.NewID(8),
		Organization: org,
		Name:         name,
		CreatedBy:    user,
		CreatedAt:    time.Now().UTC().Truncate(time.Microsecond),
	}
	_, err := s.st.Exec(ctx, `INSERT INTO idp_projects (id, organization, name, created_by, created_at)
		VALUES (?, ?, ?, ?, ?)`, p.ID, p.Organization, p.Name, p.CreatedBy, p.CreatedAt)
	if err != nil {
		return nil, err
	}
	return p, nil
}
