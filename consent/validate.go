package consent

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/deputyauth/deputy/scope"
)

// Limits on what a request may name. They are generous for real use and
// keep a hostile request from making deputy store or render megabytes.
const (
	MaxSessionIDLen    = 128
	MaxOrganizationLen = 256
	MaxScopeLen        = 256
	MaxScopes          = 100
)

// ValidSessionID reports whether id is an agent session id deputy accepts:
// 1–128 characters of [A-Za-z0-9._:-]. The agent-token grant applies the
// same rule, so a grant can always be found by the session that minted.
func ValidSessionID(id string) bool {
	if len(id) == 0 || len(id) > MaxSessionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '-':
		default:
			return false
		}
	}
	return true
}

// validScopeToken reports whether s is a scope-token of RFC 6749 §3.3:
// printable ASCII without space, '"' or '\'.
func validScopeToken(s string) bool {
	if len(s) == 0 || len(s) > MaxScopeLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// approval is a validated approve/deny request.
type approval struct {
	Organization string
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
	case len(org) > MaxOrganizationLen:
		return badInput("organization is longer than %d bytes", MaxOrganizationLen)
	case !utf8.ValidString(org):
		return badInput("organization is not valid UTF-8")
	case strings.IndexFunc(org, unicode.IsControl) >= 0:
		return badInput("organization contains control characters")
	}
	return nil
}

func checkSessionID(id string) error {
	switch {
	case id == "":
		return badInput("sessionId is required")
	case len(id) > MaxSessionIDLen:
		return badInput("sessionId is longer than %d characters", MaxSessionIDLen)
	case !ValidSessionID(id):
		return badInput("sessionId may contain only letters, digits and . _ : -")
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
		if !validScopeToken(s) {
			return nil, badInput("scope %q is not a valid scope name (printable ASCII, no spaces, at most %d characters)", truncate(s, 64), MaxScopeLen)
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
func (h *Handler) check(org, session string, scopes []string, decision string) (*approval, error) {
	if err := checkOrganization(org); err != nil {
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
	return &approval{Organization: org, SessionID: session, Scopes: s, Decision: decision}, nil
}

// truncate shortens s for an error message, keeping it valid UTF-8 enough
// for %q to render.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
