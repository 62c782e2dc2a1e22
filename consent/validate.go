package consent

import (
	"fmt"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// MaxScopes caps how many scopes one approval may name: generous for real
// use, and it keeps a hostile request from making deputy store or render
// megabytes. What an organization, a session id and a scope may be is
// internal/protocol's rule, the same the agent-token grant applies, so any
// approval consent stores is one the grant can mint from.
const MaxScopes = 100

// approval is a validated approve/deny request. The binding it names is
// (Organization, the approving user, ClientID, SessionID).
type approval struct {
	Organization string
	ClientID     string // the agent platform
	SessionID    string
	Scopes       []string // normalized
	Decision     string
}

const (
	decisionApprove = "approve"
	decisionDeny    = "deny"
)

// inputError is a problem with what the client sent; its text is safe to
// show to the client.
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func badInput(format string, args ...any) error {
	return &inputError{msg: fmt.Sprintf(format, args...)}
}

func checkOrganization(org string) error {
	switch {
	case org == "":
		return badInput("organization is required")
	case !protocol.ValidOrganization(org):
		return badInput("organization must be %s", protocol.OrganizationRule)
	}
	return nil
}

func checkClientID(id string) error {
	switch {
	case id == "":
		return badInput("clientId is required: the agent platform the approval is for")
	case !protocol.ValidClientID(id):
		return badInput("clientId must be %s", protocol.ClientIDRule)
	}
	return nil
}

func checkSessionID(id string) error {
	switch {
	case id == "":
		return badInput("sessionId is required")
	case !protocol.ValidAgentSessionID(id):
		return badInput("sessionId must be %s", protocol.AgentSessionIDRule)
	}
	return nil
}

// checkScopes validates requested scopes against the syntax and, when the
// catalog has entries, against the catalog. It returns them normalized.
func (h *Handler) checkScopes(requested []string, required bool) ([]string, error) {
	if len(requested) > MaxScopes {
		return nil, badInput("at most %d scopes may be requested at once", MaxScopes)
	}
	closed := len(h.catalog.Entries()) > 0
	var unknown []string
	for _, s := range requested {
		if !protocol.ValidScopeToken(s) {
			return nil, badInput("scope %q is not a valid scope name: it must be %s", truncate(s, 64), protocol.ScopeTokenRule)
		}
		if closed && !h.catalog.Known(s) {
			unknown = append(unknown, s)
		}
	}
	if len(unknown) > 0 {
		return nil, badInput("unknown scopes: %s", scope.Join(scope.Normalize(unknown)))
	}
	out := scope.Normalize(requested)
	if required && len(out) == 0 {
		return nil, badInput("scopes: at least one scope is required")
	}
	return out, nil
}

// check validates a decoded request.
func (h *Handler) check(org, client, session string, scopes []string, decision string) (*approval, error) {
	if err := checkOrganization(org); err != nil {
		return nil, err
	}
	if err := checkClientID(client); err != nil {
		return nil, err
	}
	if err := checkSessionID(session); err != nil {
		return nil, err
	}
	if decision != decisionApprove && decision != decisionDeny {
		return nil, badInput("decision must be %q or %q", decisionApprove, decisionDeny)
	}
	s, err := h.checkScopes(scopes, decision == decisionApprove)
	if err != nil {
		return nil, err
	}
	return &approval{Organization: org, ClientID: client, SessionID: session, Scopes: s, Decision: decision}, nil
}

// truncate shortens s for an error message, keeping it valid UTF-8 enough
// for %q to render.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
