package consent

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/storage"
)

// listGrants answers GET /agent/grants: the caller's unexpired grants, as
// JSON {"grants": [...]} or, for a browser, a page with Revoke buttons.
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
	if gs == nil {
		gs = []*storage.AgentGrant{}
	}
	if !html {
		writeJSON(w, http.StatusOK, map[string]any{"grants": gs})
		return
	}
	page := &GrantsPage{UserID: user, UserName: h.displayName(r.Context(), user), CSS: h.cssPath}
	for _, g := range gs {
		page.Grants = append(page.Grants, GrantView{
			ID: g.ID, Organization: g.Organization, SessionID: g.AgentSessionID,
			Scopes: g.ScopeList(), ExpiresAt: g.ExpiresAt,
			RevokeAction: h.grantsPath + "/" + url.PathEscape(g.ID) + "/revoke",
		})
	}
	h.render(w, r, http.StatusOK, TemplateGrants, page)
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
	h.log.InfoContext(r.Context(), "consent: revoked", "user", user, "grant", id)
	if r.Method == http.MethodPost {
		secure(w)
		http.Redirect(w, r, h.grantsPath, http.StatusSeeOther)
		return
	}
	secure(w)
	w.WriteHeader(http.StatusNoContent)
}
