package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// maxAuthorizationLen caps the Authorization header the middleware looks at;
// anything longer is no token of ours and is refused without being read.
const maxAuthorizationLen = 8192

// Middleware protects a resource server's routes with deputy tokens. It routes
// on the token's prefix alone: dpy_agt_ to the agent-token verifier, dpy_at_
// to the opaque access-token verifier; anything else is refused. Its
// RequireScopes has the shape of gorilla/mux's MiddlewareFunc.
type Middleware struct {
	// Agent verifies dpy_agt_ agent tokens (agenttoken.AgentVerifier); nil
	// refuses them.
	Agent AgentTokenVerifier
	// Opaque verifies dpy_at_ access tokens, re-checking their owner; nil
	// refuses them.
	Opaque AccessTokenVerifier
	// Org returns the organization a request acts in. A token bound to
	// another organization is refused; a nil Org, or one returning "",
	// refuses every agent token, which is always bound to one.
	Org func(*http.Request) string
	// ApprovalURL builds the link a user follows to approve missing scopes
	// for an agent session of one agent platform (client), returned in 403
	// bodies for agent tokens. The approval is bound to (organization,
	// user, client, session), so the link names all but the user, who is
	// whoever signs in to approve. nil leaves it out.
	ApprovalURL func(org, client, session string, missing []string) string
	// Logger receives internal verification errors. Default slog.Default().
	Logger *slog.Logger
	// OnRefuse, when set, is called for each request the middleware
	// refuses, with the kind of token it carried (KindAgent, KindAccess,
	// or KindNone when it carried none) and one of the Refused* reasons:
	// deputy's metrics count them. It must be cheap and must not block.
	OnRefuse func(kind, reason string)

	// Resource is the URI of the resource this middleware protects (RFC
	// 8707's resource indicator, RFC 9728's resource identifier), e.g.
	// https://mcp.example.com/mcp; compared in canonical form
	// (protocol.CanonicalResource). With it:
	//
	//   - a token must be for it: a token whose audience does not name it
	//     is 401 invalid_token (a token for another resource is not a token
	//     for this one); a token for no particular resource is accepted
	//     only with AllowNoAudience;
	//   - every 401 and 403 challenge carries resource_metadata, the URL of
	//     its RFC 9728 metadata (MetadataURL), which MetadataHandler serves.
	//
	// Without it (a resource server that predates resource indicators) no
	// audience is checked. A Resource that is no URI refuses every token
	// and has no metadata.
	Resource string
	// AllowNoAudience accepts, at a Resource, tokens for no particular
	// resource: opaque tokens issued before the IdP configured resources
	// (they live an hour), and tokens of clients that named no resource
	// where the IdP has no default resource. Default false: a token must
	// name this resource.
	AllowNoAudience bool
	// Metadata is the rest of the RFC 9728 document MetadataHandler serves
	// (its resource is Resource, its bearer_methods_supported "header"
	// unless set).
	Metadata ProtectedResourceMetadata
	// ChallengeScopes are asked for by every challenge, besides the scopes
	// of the route (a 401) or those of the token and the route (a 403):
	// e.g. offline_access, so that MCP clients, which ask for exactly the
	// challenge's scope, get a refresh token.
	ChallengeScopes []string
}

// KindNone is the token kind OnRefuse reports for a request without a
// bearer token.
const KindNone = "none"

// Why the middleware refused a request, as OnRefuse reports it.
const (
	// RefusedNoToken: no Authorization header, or another scheme (401).
	RefusedNoToken = "no_token"
	// RefusedBadRequest: more than one Authorization header (400).
	RefusedBadRequest = "bad_request"
	// RefusedInvalidToken: the token is not valid here: malformed,
	// expired, wrongly signed, revoked, another organization's (401).
	RefusedInvalidToken = "invalid_token"
	// RefusedWrongResource: a valid token for another resource, or for
	// no particular resource where the middleware wants its own (401
	// invalid_token).
	RefusedWrongResource = "wrong_resource"
	// RefusedVerifierError: the verifier failed (a bug, an error it could
	// not classify); the caller is answered 401 invalid_token and the error
	// is logged.
	RefusedVerifierError = "verifier_error"
	// RefusedUnavailable: the verifier could not decide now (ErrUnavailable:
	// the database cannot be reached); 503 with Retry-After, the error
	// logged.
	RefusedUnavailable = "unavailable"
	// RefusedInsufficientScope: a valid token without a required scope (403).
	RefusedInsufficientScope = "insufficient_scope"
)

// canonicalResource returns Resource in canonical form, "" for none or for
// one that is no URI.
func (m *Middleware) canonicalResource() string {
	c, err := protocol.CanonicalResource(m.Resource)
	if err != nil {
		return ""
	}
	return c
}

// forThisResource reports whether a token for audience may be used here.
func (m *Middleware) forThisResource(audience []string) bool {
	switch {
	case m.Resource == "":
		return true
	case len(audience) == 0:
		return m.AllowNoAudience
	}
	// The common case costs a comparison: resources are stored canonical,
	// as plugin.MiddlewareFor sets Resource.
	for _, a := range audience {
		if a == m.Resource {
			return true
		}
	}
	want := m.canonicalResource()
	if want == "" {
		return false // a Resource that is no URI refuses every token
	}
	for _, a := range audience {
		if c, err := protocol.CanonicalResource(a); err == nil && c == want {
			return true
		}
	}
	return false
}

// insufficientScope is the 403 body.
type insufficientScope struct {
	Error         string   `json:"error"`
	MissingScopes []string `json:"missing_scopes"`
	ApprovalURL   string   `json:"approval_url,omitempty"`
}

// RequireScopes returns middleware that lets a request through only with a
// valid token holding every one of scopes, and puts its Identity in the
// request's context (IdentityFrom).
func (m *Middleware) RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	required := scope.Normalize(scopes)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := m.authenticate(w, r, required)
			if !ok {
				return
			}
			if missing := scope.Missing(required, id.Scopes); len(missing) > 0 {
				m.InsufficientScope(w, id, required...)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
		})
	}
}

// Authenticate verifies the request's bearer token and returns whom it
// speaks for, answering the request itself (401, 400 for a malformed
// request, 503 when the verifier cannot tell now) when there is no valid
// one. required are the scopes the route needs, named in the 401
// challenge; a handler that checks scopes itself (a tool of an MCP server)
// calls InsufficientScope when one is missing.
func (m *Middleware) Authenticate(w http.ResponseWriter, r *http.Request, required ...string) (*Identity, bool) {
	return m.authenticate(w, r, scope.Normalize(required))
}

func (m *Middleware) authenticate(w http.ResponseWriter, r *http.Request, required []string) (*Identity, bool) {
	unauthorized := func(errorCode, description string) {
		m.challenge(w, http.StatusUnauthorized, errorCode, description, scope.Union(required, m.ChallengeScopes))
	}
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		m.refused(KindNone, RefusedNoToken)
		unauthorized("", "")
		return nil, false
	}
	if len(values) > 1 {
		m.refused(KindNone, RefusedBadRequest)
		m.challenge(w, http.StatusBadRequest, "invalid_request", "", nil)
		return nil, false
	}
	h := values[0]
	if len(h) > maxAuthorizationLen {
		m.refused(KindNone, RefusedInvalidToken)
		unauthorized("invalid_token", "")
		return nil, false
	}
	scheme, token, found := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Another scheme is no attempt at a bearer token: say what we accept.
		m.refused(KindNone, RefusedNoToken)
		unauthorized("", "")
		return nil, false
	}
	token = strings.TrimSpace(token)
	if !found || token == "" {
		m.refused(KindNone, RefusedInvalidToken)
		unauthorized("invalid_token", "")
		return nil, false
	}
	var org string
	if m.Org != nil {
		org = m.Org(r)
	}
	id, err := m.verify(r, token, org)
	if err != nil {
		kind := KindAccess
		if strings.HasPrefix(token, protocol.AgentTokenPrefix) {
			kind = KindAgent
		}
		switch {
		case errors.Is(err, ErrInvalidToken):
			m.refused(kind, RefusedInvalidToken)
		case errors.Is(err, ErrUnavailable):
			m.logger().ErrorContext(r.Context(), "deputy: verifying a bearer token: unavailable", "err", err)
			m.refused(kind, RefusedUnavailable)
			m.unavailable(w)
			return nil, false
		default:
			// An internal failure: log it, but the caller still only learns
			// that the token did not pass, never a 500 for token text.
			m.logger().ErrorContext(r.Context(), "deputy: verifying a bearer token", "err", err)
			m.refused(kind, RefusedVerifierError)
		}
		unauthorized("invalid_token", "")
		return nil, false
	}
	if !m.forThisResource(id.Audience) {
		m.refused(id.Kind, RefusedWrongResource)
		unauthorized("invalid_token", "The token is not for this resource.")
		return nil, false
	}
	return id, true
}

// verify routes on the prefix alone: agent tokens to the agent verifier,
// everything else to the opaque verifier, whose token strategy (deputy's
// dpy_at_ in kit mode, the host's in plugin mode) knows its own tokens. A
// verifier that panics is a bug, but token text must not be able to turn it
// into a 500.
func (m *Middleware) verify(r *http.Request, token, org string) (id *Identity, err error) {
	defer func() {
		if p := recover(); p != nil {
			id, err = nil, fmt.Errorf("verifier panicked: %v", p)
		}
	}()
	switch {
	case strings.HasPrefix(token, protocol.AgentTokenPrefix):
		if m.Agent == nil {
			return nil, ErrInvalidToken
		}
		id, err = m.Agent.Verify(r.Context(), token, org)
	case m.Opaque != nil:
		id, err = m.Opaque.VerifyAccessToken(r.Context(), token, org)
	default:
		return nil, ErrInvalidToken
	}
	if err == nil && id == nil {
		err = errors.New("verifier returned neither identity nor error")
	}
	return id, err
}

// InsufficientScope answers 403 insufficient_scope to a request whose
// token (id) lacks some of required. The challenge's scope is every scope
// the route requires, not only the missing ones (RFC 6750 §3.1: "the scope
// necessary to access the requested resource"), with what the token holds
// and ChallengeScopes: an MCP client re-authorizes with exactly that scope
// (the SDKs of MCP authorization 2025-11-25 replace their scope with it,
// whose "Scope Challenge Handling" recommends including the scopes already
// granted), and would otherwise lose the ones the route also needs and what
// it holds for other routes. The JSON body names the missing scopes and, for
// an agent token, the page where the user approves them (ApprovalURL).
func (m *Middleware) InsufficientScope(w http.ResponseWriter, id *Identity, required ...string) {
	m.refused(id.Kind, RefusedInsufficientScope)
	missing := scope.Missing(scope.Normalize(required), id.Scopes)
	body := insufficientScope{Error: "insufficient_scope", MissingScopes: missing}
	if id.Kind == KindAgent && m.ApprovalURL != nil {
		body.ApprovalURL = m.ApprovalURL(id.Organization, id.ClientID, id.AgentSession, missing)
	}
	m.challenge(w, http.StatusForbidden, "insufficient_scope", "", scope.Union(id.Scopes, required, m.ChallengeScopes))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	json.NewEncoder(w).Encode(body) //nolint:errcheck // the client went away
}

// challenge sets the WWW-Authenticate header of a refusal (RFC 6750 §3):
// the error, its description, the scopes to ask for, and where this
// resource's metadata is (RFC 9728 §5.1). The 403 writes its own status
// and body; every other refusal is written here.
func (m *Middleware) challenge(w http.ResponseWriter, status int, errorCode, description string, scopes []string) {
	var params []string
	if errorCode != "" {
		params = append(params, `error="`+errorCode+`"`)
	}
	if description != "" {
		params = append(params, `error_description="`+description+`"`)
	}
	if len(scopes) > 0 {
		params = append(params, `scope="`+scope.Join(scope.Normalize(scopes))+`"`)
	}
	if u := m.MetadataURL(); u != "" {
		params = append(params, `resource_metadata="`+u+`"`)
	}
	value := "Bearer"
	if len(params) > 0 {
		value += " " + strings.Join(params, ", ")
	}
	w.Header().Set("WWW-Authenticate", value)
	w.Header().Set("Cache-Control", "no-store")
	if status != http.StatusForbidden {
		w.WriteHeader(status)
	}
}

// unavailable answers a request whose token could not be verified now:
// no challenge (the token was not found wanting), RFC 6749's error code.
func (m *Middleware) unavailable(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Retry-After", protocol.RetryAfterUnavailable)
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"the token could not be checked now; try again shortly"}` + "\n"))
}

func (m *Middleware) refused(kind, reason string) {
	if m.OnRefuse != nil {
		m.OnRefuse(kind, reason)
	}
}

func (m *Middleware) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}
