package consent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// authenticate resolves the first-party session of r. The host's
// authenticator sees a copy of r without its Authorization header and body,
// so that even an authenticator that (wrongly) accepts bearer tokens cannot
// turn an agent's token into an approver, and cannot consume the body.
func (h *Handler) authenticate(r *http.Request) (string, error) {
	c := r.Clone(r.Context())
	c.Header.Del("Authorization")
	c.Body = http.NoBody
	c.ContentLength = 0
	user, err := h.sessions.Authenticate(c)
	if err == nil && user == "" {
		err = ErrNoSession
	}
	return user, err
}

// mustSession authenticates a request that changes state. A request that
// carries an Authorization header is refused outright: bearer tokens are
// never a session, and an agent that holds both its token and a path to
// the user's cookies should not be able to blur the two. It answers the
// request itself and returns "" when the caller may not proceed.
func (h *Handler) mustSession(w http.ResponseWriter, r *http.Request) string {
	if r.Header.Get("Authorization") != "" {
		h.fail(w, r, http.StatusForbidden, "session_required",
			"bearer tokens cannot approve or revoke: sign in with a browser and use the approval page")
		return ""
	}
	user, err := h.authenticate(r)
	switch {
	case errors.Is(err, ErrNoSession):
		h.fail(w, r, http.StatusUnauthorized, "login_required", "sign in to approve or revoke agent access")
		return ""
	case err != nil:
		h.internal(w, r, "authenticate", err)
		return ""
	}
	return user
}

// pageSession authenticates a page view, redirecting a visitor without a
// session to the host's login with a way back here.
func (h *Handler) pageSession(w http.ResponseWriter, r *http.Request) string {
	user, err := h.authenticate(r)
	switch {
	case errors.Is(err, ErrNoSession):
		h.redirectToLogin(w, r)
		return ""
	case err != nil:
		h.internal(w, r, "authenticate", err)
		return ""
	}
	return user
}

// redirectToLogin sends the browser to LoginURL?return_to=<this page>. The
// return URL is a path on this site only, so a login page that honours it
// cannot be made into an open redirect by deputy.
func (h *Handler) redirectToLogin(w http.ResponseWriter, r *http.Request) {
	back := r.URL.RequestURI()
	if !strings.HasPrefix(back, "/") || strings.HasPrefix(back, "//") || strings.Contains(back, `\`) {
		back = h.approvePath
	}
	target := h.loginURL
	if u, err := url.Parse(h.loginURL); err == nil {
		q := u.Query()
		q.Set("return_to", back)
		u.RawQuery = q.Encode()
		target = u.String()
	}
	secure(w)
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// approvePage renders GET /agent/approve?organization=&client=&session=&scope=.
func (h *Handler) approvePage(w http.ResponseWriter, r *http.Request) {
	user := h.pageSession(w, r)
	if user == "" {
		return
	}
	q := r.URL.Query()
	var requested []string
	for _, v := range q["scope"] {
		requested = append(requested, strings.Fields(v)...)
	}
	a, err := h.check(q.Get("organization"), q.Get("client"), q.Get("session"), requested, decisionApprove)
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	plat, err := h.findPlatform(r.Context(), a.ClientID)
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	held, ok := h.userScopes(w, r, user, a.Organization)
	if !ok {
		return
	}
	page := &ApprovePage{
		UserID:       user,
		UserName:     h.displayName(r.Context(), user),
		Organization: a.Organization,
		ClientID:     plat.ID,
		ClientName:   plat.Name,
		SessionID:    a.SessionID,
		// An agent platform registered by an administrator is verified;
		// one that registered itself is not, and the page says so.
		ClientUnverified: plat.Unverified,
		Grantable:        scope.Intersect(a.Scopes, held),
		Lifespan:         h.lifespan,
		Action:           h.approvePath,
		GrantsURL:        h.grantsPath,
		CSS:              h.cssPath,
	}
	for _, s := range a.Scopes {
		e, _ := h.catalog.Lookup(s)
		page.Scopes = append(page.Scopes, ScopeView{
			Name: s, Description: e.Description, Write: e.Write, Holdable: scope.Contains(held, s),
		})
	}
	current, err := h.store.AgentGrantScopes(r.Context(), a.Organization, user, a.ClientID, a.SessionID, h.clock())
	if err != nil {
		h.internal(w, r, "current grant", err)
		return
	}
	page.Current = current
	h.render(w, r, http.StatusOK, TemplateApprove, page)
}

// userScopes asks the directory what user holds in org. A user the
// directory no longer knows, or has disabled, can grant nothing.
func (h *Handler) userScopes(w http.ResponseWriter, r *http.Request, user, org string) ([]string, bool) {
	held, err := h.directory.UserScopes(r.Context(), user, org)
	switch {
	case errors.Is(err, scope.ErrUserNotFound), errors.Is(err, scope.ErrUserDisabled):
		h.fail(w, r, http.StatusForbidden, "access_denied", "your account cannot grant access in this organization")
		return nil, false
	case err != nil:
		h.internal(w, r, "directory", err)
		return nil, false
	}
	return held, true
}

func (h *Handler) badRequest(w http.ResponseWriter, r *http.Request, err error) {
	var ie *inputError
	if errors.As(err, &ie) {
		h.fail(w, r, http.StatusBadRequest, "invalid_request", ie.msg)
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		h.fail(w, r, http.StatusRequestEntityTooLarge, "request_too_large", "request body is larger than 64 KiB")
		return
	}
	h.internal(w, r, "request", err)
}

// approveBody is the JSON form of POST /agent/approve. The approver is not
// in it: it comes from the session alone. ClientID is the agent platform the
// approval is for.
type approveBody struct {
	Organization string   `json:"organization"`
	ClientID     string   `json:"clientId"`
	SessionID    string   `json:"sessionId"`
	Scopes       []string `json:"scopes"`
	Decision     string   `json:"decision"`
}

// readApproval decodes and validates a POST body, JSON or urlencoded form,
// of at most MaxBodyBytes.
func (h *Handler) readApproval(w http.ResponseWriter, r *http.Request) (*approval, error) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, errUnsupportedMedia
	}
	switch mt {
	case "application/json":
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, bodyError(err)
		}
		var b approveBody
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, jsonError(err)
		}
		return h.check(b.Organization, b.ClientID, b.SessionID, b.Scopes, b.Decision)
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err
			}
			return nil, badInput("request body is not a valid form")
		}
		f := r.PostForm
		var scopes []string
		for _, v := range f["scopes"] {
			scopes = append(scopes, strings.Fields(v)...)
		}
		return h.check(f.Get("organization"), f.Get("clientId"), f.Get("sessionId"), scopes, f.Get("decision"))
	default:
		return nil, errUnsupportedMedia
	}
}

var errUnsupportedMedia = errors.New("consent: unsupported media type")

// bodyError classifies an error reading the request body where it happens:
// it is always the client's. A body over MaxBodyBytes stays a
// *http.MaxBytesError (413); anything else (a body that ends before its
// Content-Length, io.ErrUnexpectedEOF, or a connection that broke
// mid-body) is a 400. Left unclassified it would reach internal as a
// server error: a 500, and, while io.ErrUnexpectedEOF still read as a
// dropped database connection, a 503 logged "database unavailable".
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return badInput("the request body ended early or could not be read")
}

// jsonError turns a decoding error into a message for the client.
func jsonError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		switch {
		case te.Field == "":
			return badInput("request body must be a JSON object")
		case te.Field == "scopes" || strings.HasPrefix(te.Field, "scopes."):
			return badInput("scopes must be an array of strings")
		default:
			return badInput("%s must be a string", te.Field)
		}
	}
	return badInput("request body is not valid JSON")
}

// approve handles POST /agent/approve.
func (h *Handler) approve(w http.ResponseWriter, r *http.Request) {
	user := h.mustSession(w, r)
	if user == "" {
		return
	}
	a, err := h.readApproval(w, r)
	if errors.Is(err, errUnsupportedMedia) {
		h.fail(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type",
			"send application/json or application/x-www-form-urlencoded")
		return
	}
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	// The platform must exist, approving or denying: the audit log names
	// it, and the grant is bound to it.
	if _, err := h.findPlatform(r.Context(), a.ClientID); err != nil {
		h.badRequest(w, r, err)
		return
	}
	if a.Decision == decisionDeny {
		h.deny(w, r, user, a)
		return
	}
	held, ok := h.userScopes(w, r, user, a.Organization)
	if !ok {
		return
	}
	// Bound to the approver's authority today: an approval can never hand
	// an agent more than the approving user holds.
	granted := scope.Intersect(a.Scopes, held)
	if len(granted) == 0 {
		h.fail(w, r, http.StatusForbidden, "access_denied",
			"you hold none of the requested scopes in organization "+a.Organization+", so there is nothing you can approve: "+scope.Join(a.Scopes))
		return
	}
	g, err := h.store.ApproveAgentGrant(r.Context(), a.Organization, user, a.ClientID, a.SessionID, granted, h.clock().Add(h.lifespan))
	if err != nil {
		h.internal(w, r, "approve", err)
		return
	}
	h.event(storage.AuditApproved)
	h.log.InfoContext(r.Context(), "consent: approved", "user", user, "organization", a.Organization,
		"client", a.ClientID, "session", a.SessionID, "scopes", scope.Join(granted), "grant", g.ID)
	if isForm(r) {
		h.redirectDone(w, r, decisionApprove, a)
		return
	}
	writeJSON(w, http.StatusOK, approveResponse{
		Decision:   decisionApprove,
		AgentGrant: g,
		NotGranted: scope.Missing(a.Scopes, granted),
	})
}

// approveResponse is the grant as stored, plus what the approval could not
// grant because the approver does not hold it.
type approveResponse struct {
	Decision string `json:"decision"`
	*storage.AgentGrant
	NotGranted []string `json:"notGranted,omitempty"`
}

// deny records the refusal. It writes no grant and leaves an existing one
// alone: revoking is a separate, explicit act.
func (h *Handler) deny(w http.ResponseWriter, r *http.Request, user string, a *approval) {
	err := h.store.AppendAudit(r.Context(), &storage.AuditEvent{
		Event: storage.AuditDenied, ActorUserID: user, Organization: a.Organization,
		ClientID: a.ClientID, AgentSessionID: a.SessionID, Scopes: a.Scopes,
	})
	if err != nil {
		h.internal(w, r, "deny", err)
		return
	}
	h.event(storage.AuditDenied)
	h.log.InfoContext(r.Context(), "consent: denied", "user", user, "organization", a.Organization,
		"client", a.ClientID, "session", a.SessionID, "scopes", scope.Join(a.Scopes))
	if isForm(r) {
		h.redirectDone(w, r, decisionDeny, a)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"decision": decisionDeny})
}

// redirectDone answers a form post with 303 to the confirmation page, so a
// browser reload does not post the form again.
func (h *Handler) redirectDone(w http.ResponseWriter, r *http.Request, decision string, a *approval) {
	q := url.Values{"decision": {decision}, "organization": {a.Organization}, "client": {a.ClientID}, "session": {a.SessionID}}
	secure(w)
	http.Redirect(w, r, h.donePath+"?"+q.Encode(), http.StatusSeeOther)
}

// donePage renders GET /agent/approve/done: what the user just decided and,
// for an approval, the grant as it now stands.
func (h *Handler) donePage(w http.ResponseWriter, r *http.Request) {
	user := h.pageSession(w, r)
	if user == "" {
		return
	}
	q := r.URL.Query()
	a := &approval{Organization: q.Get("organization"), ClientID: q.Get("client"), SessionID: q.Get("session"), Decision: q.Get("decision")}
	err := checkOrganization(a.Organization)
	if err == nil {
		err = checkClientID(a.ClientID)
	}
	if err == nil {
		err = checkSessionID(a.SessionID)
	}
	if err == nil && a.Decision != decisionApprove && a.Decision != decisionDeny {
		err = badInput("decision must be %q or %q", decisionApprove, decisionDeny)
	}
	var plat *platform
	if err == nil {
		plat, err = h.findPlatform(r.Context(), a.ClientID)
	}
	if err != nil {
		h.badRequest(w, r, err)
		return
	}
	page := &DonePage{
		Decision: a.Decision, Organization: a.Organization, ClientID: plat.ID, ClientName: plat.Name,
		SessionID: a.SessionID, GrantsURL: h.grantsPath, CSS: h.cssPath,
	}
	if a.Decision == decisionApprove {
		gs, err := h.store.ListAgentGrants(r.Context(), user, h.clock())
		if err != nil {
			h.internal(w, r, "list grants", err)
			return
		}
		for _, g := range gs {
			if g.Organization == a.Organization && g.ClientID == a.ClientID && g.AgentSessionID == a.SessionID {
				page.Scopes, page.ExpiresAt = g.ScopeList(), g.ExpiresAt
			}
		}
	}
	h.render(w, r, http.StatusOK, TemplateDone, page)
}

// displayName is Config.UserName of user, or the id itself.
func (h *Handler) displayName(ctx context.Context, user string) string {
	if h.userName != nil {
		if name := h.userName(ctx, user); name != "" {
			return name
		}
	}
	return user
}
