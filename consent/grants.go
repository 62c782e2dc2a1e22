package consent

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/storage"
)

// grantJSON is a grant as the API lists it: the stored grant and the
// display name of its agent platform, when the client has one.
type grantJSON struct {
	*storage.AgentGrant
	ClientName string `json:"clientName,omitempty"`
	// ClientUnverified: the client registered itself (an MCP client).
	ClientUnverified bool `json:"clientUnverified,omitempty"`
}

// listGrants answers GET /agent/grants: the caller's unexpired grants, as
// JSON {"grants": [...]} or, for a browser, a page with Revoke buttons. Each
// names its agent platform (client id and name).
func (h *Handler) listGrants(w http.ResponseWriter, r *http.Request) {
	html := wantsHTML(r)
	var user string
	if html {
		user = h.pageSession(w, r)
	} else {
		user = h.mustSession(w, r)
	}
	if user == "" {
		return
	}
	gs, err := h.store.ListAgentGrants(r.Context(), user, h.clock())
	if err != nil {
		h.internal(w, r, "list grants", err)
		return
	}
	plats, err := h.platforms(r.Context(), gs)
	if err != nil {
		h.internal(w, r, "list grants: clients", err)
		return
	}
	if !html {
		out := make([]grantJSON, 0, len(gs))
		for _, g := range gs {
			p := plats[g.ClientID]
			out = append(out, grantJSON{AgentGrant: g, ClientName: p.Name, ClientUnverified: p.Unverified})
		}
		writeJSON(w, http.StatusOK, map[string]any{"grants": out})
		return
	}
	page := &GrantsPage{UserID: user, UserName: h.displayName(r.Context(), user), CSS: h.cssPath}
	for _, g := range gs {
		p := plats[g.ClientID]
		page.Grants = append(page.Grants, GrantView{
			ID: g.ID, Organization: g.Organization, ClientID: g.ClientID, ClientName: p.Name, ClientUnverified: p.Unverified,
			SessionID: g.AgentSessionID, Scopes: g.ScopeList(), ExpiresAt: g.ExpiresAt,
			RevokeAction: h.grantsPath + "/" + url.PathEscape(g.ID) + "/revoke",
		})
	}
	h.render(w, r, http.StatusOK, TemplateGrants, page)
}

// platforms maps the client ids of gs to their agent platforms, one lookup
// per distinct client. A client that no longer exists (or a grant from
// before grants named one) has no name.
func (h *Handler) platforms(ctx context.Context, gs []*storage.AgentGrant) (map[string]platform, error) {
	plats := map[string]platform{}
	for _, g := range gs {
		if _, seen := plats[g.ClientID]; seen || g.ClientID == "" {
			continue
		}
		p, err := h.findPlatform(ctx, g.ClientID)
		switch {
		case errors.Is(err, errUnknownClient):
			plats[g.ClientID] = platform{ID: g.ClientID}
		case err != nil:
			return nil, err
		default:
			plats[g.ClientID] = *p
		}
	}
	return plats, nil
}

// revoke answers DELETE /agent/grants/{id} with 204, and the grants page's
// POST /agent/grants/{id}/revoke with 303 back to the list. Only the
// caller's own grants can be revoked; any other id is 404, so the answer
// does not reveal whether another user's grant exists. The agent loses the
// grant's scopes at its next mint; tokens already minted live out their
// (short) lifetime.
func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	user := h.mustSession(w, r)
	if user == "" {
		return
	}
	id := mux.Vars(r)["id"]
	if id == "" || len(id) > 128 {
		h.fail(w, r, http.StatusNotFound, "not_found", "no such grant")
		return
	}
	err := h.store.RevokeAgentGrant(r.Context(), user, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		h.fail(w, r, http.StatusNotFound, "not_found", "no such grant")
		return
	case err != nil:
		h.internal(w, r, "revoke", err)
		return
	}
	h.event(storage.AuditRevoked)
	h.log.InfoContext(r.Context(), "consent: revoked", "user", user, "grant", id)
	if r.Method == http.MethodPost {
		secure(w)
		http.Redirect(w, r, h.grantsPath, http.StatusSeeOther)
		return
	}
	secure(w)
	w.WriteHeader(http.StatusNoContent)
}
