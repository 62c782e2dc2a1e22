package flows

import (
	"encoding/json"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/token/jwt"

	"github.com/deputyauth/deputy/internal/jsonread"
)

// DecodeJSON sets s from data exactly as json.Unmarshal([]byte(data), s)
// does. The store decodes the session of every token it looks up with it
// (an agent mint's subject token, every introspection), and encoding/json's
// reflection over fosite's nested session was a measurable share of a
// mint. Text in the layout AppendJSON writes, with plain ASCII strings, is
// read by hand; anything else goes to encoding/json. TestSessionDecodeJSON
// and FuzzSessionDecodeJSON compare the two.
func (s *Session) DecodeJSON(data string) error {
	var d decodedSession
	if d.read(data) {
		d.apply(s)
		return nil
	}
	return json.Unmarshal([]byte(data), s)
}

// decodedSession is what read found, applied to a session only once the
// whole text was read.
type decodedSession struct {
	headers                           bool // {"extra":null}, not null
	expiresNull                       bool
	expires                           []expiry
	username, subject, organization   string
	hasOrganization                   bool
	jti, iss, sub, nonce, atHash, acr string
	cHash                             string
	aud, amr                          []string
	exp, iat, rat, authTime           time.Time
	claimsPresent                     bool
}

type expiry struct {
	kind fosite.TokenType
	at   time.Time
}

// read parses AppendJSON's layout, reporting false at anything else.
func (d *decodedSession) read(data string) bool {
	p := jsonread.New(data)
	if !p.Literal(`{"id_token_claims":`) {
		return false
	}
	if !p.Literal("null") {
		d.claimsPresent = true
		var ok bool
		for _, f := range [...]struct {
			key string
			str *string
		}{{`{"jti":`, &d.jti}, {`,"iss":`, &d.iss}, {`,"sub":`, &d.sub}} {
			if !p.Literal(f.key) {
				return false
			}
			if *f.str, ok = p.Str(); !ok {
				return false
			}
		}
		if !p.Literal(`,"aud":`) {
			return false
		}
		if d.aud, ok = p.Strings(); !ok || !p.Literal(`,"nonce":`) {
			return false
		}
		if d.nonce, ok = p.Str(); !ok {
			return false
		}
		for _, f := range [...]struct {
			key string
			at  *time.Time
		}{{`,"exp":`, &d.exp}, {`,"iat":`, &d.iat}, {`,"rat":`, &d.rat}, {`,"auth_time":`, &d.authTime}} {
			if !p.Literal(f.key) {
				return false
			}
			if *f.at, ok = p.Time(); !ok {
				return false
			}
		}
		if !p.Literal(`,"at_hash":`) {
			return false
		}
		if d.atHash, ok = p.Str(); !ok || !p.Literal(`,"acr":`) {
			return false
		}
		if d.acr, ok = p.Str(); !ok || !p.Literal(`,"amr":`) {
			return false
		}
		if d.amr, ok = p.Strings(); !ok || !p.Literal(`,"c_hash":`) {
			return false
		}
		if d.cHash, ok = p.Str(); !ok || !p.Literal(`,"ext":null}`) {
			return false
		}
	}
	switch {
	case p.Literal(`,"headers":null`):
	case p.Literal(`,"headers":{"extra":null}`):
		d.headers = true
	default:
		return false
	}
	if !p.Literal(`,"expires_at":`) {
		return false
	}
	if p.Literal("null") {
		d.expiresNull = true
	} else {
		if !p.Next('{') {
			return false
		}
		if !p.Next('}') {
			for {
				k, ok := p.Str()
				if !ok || !p.Next(':') {
					return false
				}
				at, ok := p.Time()
				if !ok {
					return false
				}
				d.expires = append(d.expires, expiry{fosite.TokenType(k), at})
				if p.Next('}') {
					break
				}
				if !p.Next(',') {
					return false
				}
			}
		}
	}
	var ok bool
	if !p.Literal(`,"username":`) {
		return false
	}
	if d.username, ok = p.Str(); !ok || !p.Literal(`,"subject":`) {
		return false
	}
	if d.subject, ok = p.Str(); !ok {
		return false
	}
	if p.Literal(`,"organization":`) {
		if d.organization, ok = p.Str(); !ok {
			return false
		}
		d.hasOrganization = true
	}
	return p.Next('}') && p.Done()
}

// apply sets s as json.Unmarshal would have: pointers and maps that are
// already there are filled, not replaced, and a key that is absent leaves
// its field alone.
func (d *decodedSession) apply(s *Session) {
	if !d.claimsPresent {
		s.Claims = nil
	} else {
		if s.Claims == nil {
			s.Claims = &jwt.IDTokenClaims{}
		}
		c := s.Claims
		c.JTI, c.Issuer, c.Subject, c.Audience, c.Nonce = d.jti, d.iss, d.sub, d.aud, d.nonce
		c.ExpiresAt, c.IssuedAt, c.RequestedAt, c.AuthTime = d.exp, d.iat, d.rat, d.authTime
		c.AccessTokenHash, c.AuthenticationContextClassReference = d.atHash, d.acr
		c.AuthenticationMethodsReferences, c.CodeHash, c.Extra = d.amr, d.cHash, nil
	}
	if !d.headers {
		s.Headers = nil
	} else {
		if s.Headers == nil {
			s.Headers = &jwt.Headers{}
		}
		s.Headers.Extra = nil
	}
	if d.expiresNull {
		s.ExpiresAt = nil
	} else {
		if s.ExpiresAt == nil {
			s.ExpiresAt = make(map[fosite.TokenType]time.Time, len(d.expires))
		}
		for _, e := range d.expires {
			s.ExpiresAt[e.kind] = e.at
		}
	}
	s.Username, s.Subject = d.username, d.subject
	if d.hasOrganization {
		s.Organization = d.organization
	}
}
