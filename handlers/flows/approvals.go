package flows

import (
	"context"
	"fmt"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// Step-up is deputy's approval. An agent client (an MCP client, which acts
// for whoever authorizes it) that a user grants write scopes at the
// authorization endpoint gets them as an approval: an agent grant that
// lasts the grant lifespan, listed with the user's agent grants and
// revocable there, not a permission as long-lived as the refresh token.
//
// The grant's binding is (organization, user, client, session), and the
// session of an authorization is its request id: fosite gives every token
// of one authorization (the code, then each access and refresh token, across
// refresh rotations) that authorization's id. So an approval belongs to the
// tokens the user approved it for, and to no other installation of the same
// client (a metadata-document client id is shared by every copy of an app).
// Re-authorizing starts a new session, with a new approval if it asks for
// writes.
//
// A token's write scopes count only while its approval lasts: the resource
// middleware and introspection drop the others, and a refresh issues
// tokens without them. Read scopes (and the protocol scopes) last as long
// as the refresh token.

// AgentClient is implemented by clients that may be agents; deputy's
// storage.Client does. A host's client type implements it to opt in.
type AgentClient interface {
	IsAgent() bool
}

// IsAgentClient reports whether c is an agent client.
func IsAgentClient(c fosite.Client) bool {
	a, ok := c.(AgentClient)
	return ok && a.IsAgent()
}

// ApprovalStorage finds a live approval: deputy's agent grants
// (storage.Store.AgentGrantScopes, one indexed query).
type ApprovalStorage interface {
	AgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, error)
}

// Approvals decides which write scopes of an agent client's token still
// count. The zero value (no Grants) applies no approval: every scope counts.
type Approvals struct {
	Grants  ApprovalStorage
	Catalog *scope.Catalog
	// Now is the clock approvals expire by. Default time.Now.
	Now func() time.Time
}

// ApprovalSession is the agent session an authorization's approval is
// bound to: the authorization's request id.
func ApprovalSession(r fosite.Requester) string { return r.GetID() }

// Writes returns the scopes of s that need an approval: those the catalog
// says write. Protocol scopes (offline_access, openid) never do.
func (a Approvals) Writes(s []string) []string {
	var out []string
	for _, n := range s {
		if a.Catalog.IsWrite(n) && !scope.Contains(protocol.ProtocolScopes, n) {
			out = append(out, n)
		}
	}
	return out
}

func (a Approvals) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// Cap returns scopes (a token of req's, acting for user in org) without the
// write scopes that no live approval covers, in their order. Tokens of
// clients that are not agents, and tokens without write scopes, are
// returned as they are without a lookup.
func (a Approvals) Cap(ctx context.Context, req fosite.Requester, user, org string, scopes []string) ([]string, error) {
	if a.Grants == nil || !IsAgentClient(req.GetClient()) {
		return scopes, nil
	}
	writes := a.Writes(scopes)
	if len(writes) == 0 {
		return scopes, nil
	}
	approved, err := a.Grants.AgentGrantScopes(ctx, org, user, req.GetClient().GetID(), ApprovalSession(req), a.now())
	if err != nil {
		return nil, fmt.Errorf("deputy: approvals: %w", err)
	}
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if !scope.Contains(writes, s) || scope.Contains(approved, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

var _ fosite.TokenEndpointHandler = (*RefreshApprovalHandler)(nil)

// RefreshApprovalHandler narrows a refresh of an agent client's tokens to
// what its approval still covers: after the approval expired or was
// revoked, the new access and refresh tokens carry only the read scopes.
// It does nothing itself but narrow: compose it after the refresh handler
// (deputy's or a host's), whose HandleTokenEndpointRequest has loaded the
// original request's scopes by then and whose PopulateTokenEndpointResponse
// issues what is left.
type RefreshApprovalHandler struct {
	Approvals Approvals
	Sessions  SessionCodec
}

func (h *RefreshApprovalHandler) CanHandleTokenEndpointRequest(_ context.Context, r fosite.AccessRequester) bool {
	return r.GetGrantTypes().ExactOne(protocol.GrantTypeRefreshToken) && IsAgentClient(r.GetClient())
}

func (h *RefreshApprovalHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (h *RefreshApprovalHandler) HandleTokenEndpointRequest(ctx context.Context, r fosite.AccessRequester) error {
	if !h.CanHandleTokenEndpointRequest(ctx, r) {
		return fosite.ErrUnknownRequest
	}
	user, org := h.Sessions.IdentityOf(r.GetSession())
	capped, err := h.Approvals.Cap(ctx, r, user, org, r.GetGrantedScopes())
	if err == nil {
		err = setGranted(r, capped, nil)
	}
	if err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	// Not this handler's grant to answer: the refresh handler issues.
	return fosite.ErrUnknownRequest
}

func (h *RefreshApprovalHandler) PopulateTokenEndpointResponse(context.Context, fosite.AccessRequester, fosite.AccessResponder) error {
	return fosite.ErrUnknownRequest
}

// RefreshApprovalFactory builds the handler for compose.Compose; list it
// after the refresh handler.
func RefreshApprovalFactory(a Approvals, sessions SessionCodec) compose.Factory {
	return func(fosite.Configurator, interface{}, interface{}) interface{} {
		return &RefreshApprovalHandler{Approvals: a, Sessions: sessions}
	}
}
