package flows

import (
	"encoding/json"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"

	"github.com/deputyauth/deputy/internal/jsonwrite"
)

// Session is the fosite session deputy stores with every token: fosite's
// OpenID Connect session (so a host can add ID tokens) plus the organization
// the token is bound to. The token endpoint, the host's authorize endpoint
// and every lookup must use this type, because fosite decodes a stored
// session into whatever session the caller hands it. A type that embeds
// Session inherits AppendJSON and DecodeJSON, which know only Session's
// fields: it must define both itself.
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

// AppendJSON appends what encoding/json writes for the session, byte for
// byte, without its reflection: the store encodes every token's session
// with it. Through json.Marshal a MarshalJSON would have cost more than the
// reflection it saved (encoding/json re-scans a marshaler's output), so it
// is a method of its own. A session carrying what deputy never puts there
// (extra claims or headers) is handed to encoding/json.
// TestSessionAppendJSON fills every field fosite declares, so a field added
// by a fosite upgrade fails it rather than going missing from stored
// sessions.
func (s *Session) AppendJSON(dst []byte) ([]byte, error) {
	c, h := s.Claims, s.Headers
	if (c == nil || c.Extra == nil) && (h == nil || h.Extra == nil) {
		if b, err := s.appendJSON(dst); err == nil {
			return b, nil
		}
		// A time encoding/json refuses: its error, below.
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append(dst, b...), nil
}

func (s *Session) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"id_token_claims":`...)
	if c := s.Claims; c == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"jti":`...)
		b = jsonwrite.String(b, c.JTI)
		b = append(b, `,"iss":`...)
		b = jsonwrite.String(b, c.Issuer)
		b = append(b, `,"sub":`...)
		b = jsonwrite.String(b, c.Subject)
		b = append(b, `,"aud":`...)
		b = jsonwrite.Strings(b, c.Audience)
		b = append(b, `,"nonce":`...)
		b = jsonwrite.String(b, c.Nonce)
		for _, t := range [...]struct {
			name string
			at   time.Time
		}{{`,"exp":`, c.ExpiresAt}, {`,"iat":`, c.IssuedAt}, {`,"rat":`, c.RequestedAt}, {`,"auth_time":`, c.AuthTime}} {
			b = append(b, t.name...)
			if b, err = jsonwrite.Time(b, t.at); err != nil {
				return nil, err
			}
		}
		b = append(b, `,"at_hash":`...)
		b = jsonwrite.String(b, c.AccessTokenHash)
		b = append(b, `,"acr":`...)
		b = jsonwrite.String(b, c.AuthenticationContextClassReference)
		b = append(b, `,"amr":`...)
		b = jsonwrite.Strings(b, c.AuthenticationMethodsReferences)
		b = append(b, `,"c_hash":`...)
		b = jsonwrite.String(b, c.CodeHash)
		b = append(b, `,"ext":null}`...)
	}
	if s.Headers == nil {
		b = append(b, `,"headers":null`...)
	} else {
		b = append(b, `,"headers":{"extra":null}`...)
	}
	b = append(b, `,"expires_at":`...)
	if s.ExpiresAt == nil {
		b = append(b, "null"...)
	} else if b, err = jsonwrite.Map(b, s.ExpiresAt, nil, jsonwrite.Time); err != nil {
		return nil, err
	}
	b = append(b, `,"username":`...)
	b = jsonwrite.String(b, s.Username)
	b = append(b, `,"subject":`...)
	b = jsonwrite.String(b, s.Subject)
	if s.Organization != "" {
		b = append(b, `,"organization":`...)
		b = jsonwrite.String(b, s.Organization)
	}
	return append(b, '}'), nil
}
