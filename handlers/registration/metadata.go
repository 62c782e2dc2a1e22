package registration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// RFC 7591 §3.2.2 error codes.
const (
	ErrInvalidRedirectURI    = "invalid_redirect_uri"
	ErrInvalidClientMetadata = "invalid_client_metadata"
)

// Error is an RFC 7591 §3.2.2 error: what a registration answers with 400,
// and why a metadata document is refused.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Description }

func badMetadata(format string, args ...any) *Error {
	return &Error{Code: ErrInvalidClientMetadata, Description: fmt.Sprintf(format, args...)}
}

func badRedirect(format string, args ...any) *Error {
	return &Error{Code: ErrInvalidRedirectURI, Description: fmt.Sprintf(format, args...)}
}

// Defaults and bounds of Policy.
const (
	DefaultUnusedLifetime  = 24 * time.Hour
	DefaultMaxRedirectURIs = 10
)

// Policy is what a client that registers itself may be, by either way:
// unowned, agent (its write scopes are time-boxed approvals), the
// authorization_code grant with refresh_token optional and nothing else,
// response type code, redirect URIs that protocol.CheckRedirectURI accepts
// (https, loopback http on any port, private-use schemes).
type Policy struct {
	// Scopes a client that registers itself may ask for: every one of
	// them, whatever its registration's scope named. A dynamic client that
	// names another is refused; a metadata document's others are ignored.
	// Required.
	Scopes []string
	// AuthMethods a dynamic client may choose: protocol.TokenAuthNone (a
	// public client, PKCE only) and protocol.TokenAuthBasic (a secret, sent
	// with HTTP Basic). Default: both. A metadata document's client is
	// always public ("none"): the draft forbids shared secrets.
	AuthMethods []string
	// UnusedLifetime is how long a registration that never had a token
	// issued lives before DeleteExpired removes it. Default 24 hours.
	UnusedLifetime time.Duration
	// MaxRedirectURIs bounds redirect_uris. Default 10.
	MaxRedirectURIs int
}

// WithDefaults returns the policy with its defaults filled in, or an error
// naming what is wrong with it.
func (p Policy) WithDefaults() (Policy, error) {
	if len(p.Scopes) == 0 {
		return p, fmt.Errorf("registration: Scopes: at least one scope a registered client may ask for")
	}
	for _, s := range p.Scopes {
		if !protocol.ValidScopeToken(s) {
			return p, fmt.Errorf("registration: Scopes: %q is not a valid scope", s)
		}
	}
	p.Scopes = scope.Normalize(p.Scopes)
	if len(p.AuthMethods) == 0 {
		p.AuthMethods = []string{protocol.TokenAuthNone, protocol.TokenAuthBasic}
	}
	for _, m := range p.AuthMethods {
		if m != protocol.TokenAuthNone && m != protocol.TokenAuthBasic {
			return p, fmt.Errorf("registration: AuthMethods: %q: want %q or %q", m, protocol.TokenAuthNone, protocol.TokenAuthBasic)
		}
	}
	switch {
	case p.UnusedLifetime < 0:
		return p, fmt.Errorf("registration: UnusedLifetime must not be negative")
	case p.UnusedLifetime == 0:
		p.UnusedLifetime = DefaultUnusedLifetime
	}
	switch {
	case p.MaxRedirectURIs < 0:
		return p, fmt.Errorf("registration: MaxRedirectURIs must not be negative")
	case p.MaxRedirectURIs == 0:
		p.MaxRedirectURIs = DefaultMaxRedirectURIs
	}
	return p, nil
}

// metadata is the RFC 7591 §2 client metadata deputy reads, from a
// registration request or a metadata document. Fields deputy does not keep
// (client_uri, contacts, tos_uri, software_id, …) are ignored, as RFC 7591
// §2 asks of metadata a server does not understand.
type metadata struct {
	present map[string]bool

	clientID, clientSecret string
	redirectURIs           []string
	authMethod             string
	grantTypes             []string
	responseTypes          []string
	name, logoURI, scope   string
}

// Metadata fields deputy reads, and the ones a client may never set.
const (
	fieldClientID         = "client_id"
	fieldClientSecret     = "client_secret"
	fieldRedirectURIs     = "redirect_uris"
	fieldAuthMethod       = "token_endpoint_auth_method"
	fieldGrantTypes       = "grant_types"
	fieldResponseTypes    = "response_types"
	fieldName             = "client_name"
	fieldLogoURI          = "logo_uri"
	fieldScope            = "scope"
	fieldSecretExpiresAt  = "client_secret_expires_at"
	fieldClientIDIssuedAt = "client_id_issued_at"
)

// parseMetadata reads one JSON object of client metadata. Every value of a
// field deputy reads must have the field's JSON type.
func parseMetadata(body []byte) (*metadata, *Error) {
	if !utf8.Valid(body) {
		return nil, badMetadata("the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil || fields == nil {
		return nil, badMetadata("the body must be one JSON object of client metadata")
	}
	if dec.More() {
		return nil, badMetadata("the body must be one JSON object of client metadata")
	}
	md := &metadata{present: map[string]bool{}}
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{fieldClientID, &md.clientID},
		{fieldClientSecret, &md.clientSecret},
		{fieldAuthMethod, &md.authMethod},
		{fieldName, &md.name},
		{fieldLogoURI, &md.logoURI},
		{fieldScope, &md.scope},
	} {
		if raw, ok := fields[f.name]; ok && !isNull(raw) {
			md.present[f.name] = true
			if err := json.Unmarshal(raw, f.dst); err != nil {
				return nil, badMetadata("%s must be a string", f.name)
			}
		}
	}
	for _, f := range []struct {
		name string
		dst  *[]string
	}{
		{fieldRedirectURIs, &md.redirectURIs},
		{fieldGrantTypes, &md.grantTypes},
		{fieldResponseTypes, &md.responseTypes},
	} {
		if raw, ok := fields[f.name]; ok && !isNull(raw) {
			md.present[f.name] = true
			if err := json.Unmarshal(raw, f.dst); err != nil {
				if f.name == fieldRedirectURIs {
					return nil, badRedirect("%s must be an array of strings", f.name)
				}
				return nil, badMetadata("%s must be an array of strings", f.name)
			}
		}
	}
	for _, name := range []string{fieldSecretExpiresAt, fieldClientIDIssuedAt} {
		if raw, ok := fields[name]; ok && !isNull(raw) {
			md.present[name] = true
		}
	}
	return md, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// kind is how the client registers: its defaults and rules differ.
type kind int

const (
	dynamic kind = iota
	metadataDocument
)

// client checks md against the policy and returns the client it
// describes (without id). Its errors are RFC 7591's.
func (p *Policy) client(md *metadata, k kind) (*storage.Client, *Error) {
	c := &storage.Client{Public: false, Agent: true}

	// Redirect URIs: the only way back to a client that registered itself.
	if len(md.redirectURIs) == 0 {
		return nil, badRedirect("redirect_uris: at least one is required")
	}
	if len(md.redirectURIs) > p.MaxRedirectURIs {
		return nil, badRedirect("redirect_uris: at most %d", p.MaxRedirectURIs)
	}
	for i, u := range md.redirectURIs {
		if err := protocol.CheckRedirectURI(u); err != nil {
			return nil, badRedirect("redirect_uris[%d] %q: %s", i, truncate(u), err)
		}
		if !slices.Contains(c.RedirectURIs, u) {
			c.RedirectURIs = append(c.RedirectURIs, u)
		}
	}

	// Grants: authorization_code, and refresh_token if asked for.
	grants := scope.Normalize(md.grantTypes)
	if len(grants) == 0 {
		grants = []string{protocol.GrantTypeAuthorizationCode} // RFC 7591 §2's default
	}
	for _, g := range grants {
		if g != protocol.GrantTypeAuthorizationCode && g != protocol.GrantTypeRefreshToken {
			return nil, badMetadata("grant_types: %q is not allowed: a client that registers itself uses authorization_code and refresh_token only", truncate(g))
		}
	}
	if !slices.Contains(grants, protocol.GrantTypeAuthorizationCode) {
		return nil, badMetadata("grant_types: authorization_code is required (refresh_token alone obtains nothing)")
	}
	c.GrantTypes = grants
	for _, rt := range md.responseTypes {
		if rt != "code" {
			return nil, badMetadata("response_types: %q is not allowed: only code", truncate(rt))
		}
	}
	c.ResponseTypes = []string{"code"}

	// How it authenticates at the token endpoint.
	method := md.authMethod
	switch k {
	case dynamic:
		if method == "" {
			method = protocol.TokenAuthBasic // RFC 7591 §2's default
		}
		if !slices.Contains(p.AuthMethods, method) {
			return nil, badMetadata("token_endpoint_auth_method: %q is not allowed here: use one of %s", truncate(method), strings.Join(p.AuthMethods, ", "))
		}
	case metadataDocument:
		if method == "" {
			method = protocol.TokenAuthNone
		}
		if method != protocol.TokenAuthNone {
			return nil, badMetadata("token_endpoint_auth_method: %q is not allowed for a metadata document client: only none (shared secrets are forbidden, private_key_jwt is not supported here)", truncate(method))
		}
		if md.present[fieldClientSecret] || md.present[fieldSecretExpiresAt] {
			return nil, badMetadata("a metadata document must not carry client_secret or client_secret_expires_at")
		}
	}
	c.TokenEndpointAuthMethod = method
	c.Public = method == protocol.TokenAuthNone

	// Scopes.
	requested := strings.Fields(md.scope)
	for _, s := range requested {
		if !protocol.ValidScopeToken(s) {
			return nil, badMetadata("scope: %q is not a valid scope", truncate(s))
		}
	}
	// A dynamic client naming a scope the policy does not offer is
	// refused (it would fail at its first authorization); a document is
	// written for every server its client talks to, so its other scopes
	// are no error. Either way the client may then ask for every scope of
	// the policy, not only those it named (RFC 7591 §3.2.1 lets the server
	// replace them): MCP clients register with the scope of their first
	// challenge (projects:read) and step up later (projects:write,
	// offline_access), which a narrower registration would refuse as
	// invalid_scope. Nothing is lost by it: a client that registers itself
	// could as well have named every scope, and every grant is still
	// capped by the user's consent and holdings, its writes by the
	// approval's lifespan.
	if k != metadataDocument {
		for _, s := range requested {
			if !slices.Contains(p.Scopes, s) {
				return nil, badMetadata("scope: %q is not offered here; offered: %s", truncate(s), strings.Join(p.Scopes, " "))
			}
		}
	}
	c.Scopes = slices.Clone(p.Scopes)

	// What the consent page shows: unverified, so only checked for shape.
	name, err := protocol.CheckClientName(md.name)
	if err != nil {
		return nil, badMetadata("client_name: %s", err)
	}
	c.Name = name
	if md.logoURI != "" {
		if err := checkLogoURI(md.logoURI); err != nil {
			return nil, badMetadata("logo_uri: %s", err)
		}
		c.IconURL = md.logoURI
	}
	return c, nil
}

func checkLogoURI(raw string) error {
	if len(raw) > protocol.MaxURILength {
		return fmt.Errorf("longer than %d characters", protocol.MaxURILength)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
		strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("must be an absolute https URL")
	}
	return nil
}

// truncate keeps error messages short whatever the client sent.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	for i := max; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}
