package flows

import (
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
)

// Session is the fosite session deputy stores with every token: fosite's
// OpenID Connect session (so a host can add ID tokens) plus the organization
// the token is bound to. The token endpoint, the host's authorize endpoint
// and every lookup must use this type, because fosite decodes a stored
// session into whatever session the caller hands it.
type Session struct {
	openid.DefaultSession
	// Organization the token is bound to; "" where the IdP has none.
	Organization string `json:"organization,omitempty"`
}

// NewSession returns a session for subject bound to org.
func NewSession(subject, org string) *Session {
	s := &Session{DefaultSession: *openid.NewDefaultSession(), Organization: org}
	s.Subject = subject
	// Ready for an ID token should a host add OpenID Connect.
	s.Claims.Subject = subject
	return s
}

// Clone is needed because DefaultSession's would return a DefaultSession.
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	c := *s
	if d, ok := s.DefaultSession.Clone().(*openid.DefaultSession); ok && d != nil {
		c.DefaultSession = *d
	}
	return &c
}

// GetOrganization returns the organization the token is bound to.
func (s *Session) GetOrganization() string {
	if s == nil {
		return ""
	}
	return s.Organization
}

// SetOrganization binds the session to org.
func (s *Session) SetOrganization(org string) { s.Organization = org }

// GetExtraClaims puts the organization into introspection responses as
// "org". The map is built on each call: the session keeps no other extra
// claims, so there is nothing for a caller's change to persist into.
func (s *Session) GetExtraClaims() map[string]interface{} {
	if s == nil || s.Organization == "" {
		return map[string]interface{}{}
	}
	return map[string]interface{}{"org": s.Organization}
}
