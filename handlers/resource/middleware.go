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
	// RefusedVerifierError: the verifier failed (the database, a bug); the
	// caller is answered 401 invalid_token and the error is logged.
	RefusedVerifierError = "verifier_error"
	// RefusedInsufficientScope: a valid token without a required scope (403).
	RefusedInsufficientScope = "insufficient_scope"
)

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
			id, ok := m.authenticate(w, r)
			if !ok {
				return
			}
			if missing := scope.Missing(required, id.Scopes); len(missing) > 0 {
				m.refused(id.Kind, RefusedInsufficientScope)
				m.forbid(w, id, required, missing)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
		})
	}
}

// authenticate verifies the request's bearer token, answering the request
// itself when there is no valid one.
func (m *Middleware) authenticate(w http.ResponseWriter, r *http.Request) (*Identity, bool) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		m.refused(KindNone, RefusedNoToken)
		challenge(w, http.StatusUnauthorized, `Bearer`)
		return nil, false
	}
	if len(values) > 1 {
		m.refused(KindNone, RefusedBadRequest)
		challenge(w, http.StatusBadRequest, `Bearer error="invalid_request"`)
		return nil, false
	}
	h := values[0]
	if len(h) > maxAuthorizationLen {
		m.refused(KindNone, RefusedInvalidToken)
		challenge(w, http.StatusUnauthorized, `Bearer error="invalid_token"`)
		return nil, false
	}
	scheme, token, found := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		// Another scheme is no attempt at a bearer token: say what we accept.
		m.refused(KindNone, RefusedNoToken)
		challenge(w, http.StatusUnauthorized, `Bearer`)
		return nil, false
	}
	token = strings.TrimSpace(token)
	if !found || token == "" {
		m.refused(KindNone, RefusedInvalidToken)
		challenge(w, http.StatusUnauthorized, `Bearer error="invalid_token"`)
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
		if !errors.Is(err, ErrInvalidToken) {
			// An internal failure: log it, but the caller still only learns
			// that the token did not pass, never a 500 for token text.
			m.logger().ErrorContext(r.Context(), "deputy: verifying a bearer token", "err", err)
			m.refused(kind, RefusedVerifierError)
		} else {
			m.refused(kind, RefusedInvalidToken)
		}
		challenge(w, http.StatusUnauthorized, `Bearer error="invalid_token"`)
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

// forbid answers 403 insufficient_scope. The challenge's scope is every
// scope the route requires, not only the missing ones (RFC 6750 §3.1: "the
// scope necessary to access the requested resource"): an MCP client
// re-authorizes with exactly that scope, and a token for the missing
// scopes alone would lose the ones the route also needs. The body names
// the missing ones.
func (m *Middleware) forbid(w http.ResponseWriter, id *Identity, required, missing []string) {
	body := insufficientScope{Error: "insufficient_scope", MissingScopes: missing}
	if id.Kind == KindAgent && m.ApprovalURL != nil {
		body.ApprovalURL = m.ApprovalURL(id.Organization, id.ClientID, id.AgentSession, missing)
	}
	w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", scope="`+strings.Join(required, " ")+`"`)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusForbidden)
	json.NewEncoder(w).Encode(body) //nolint:errcheck // the client went away
}

func challenge(w http.ResponseWriter, status int, value string) {
	w.Header().Set("WWW-Authenticate", value)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
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
