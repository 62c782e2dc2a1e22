package apps

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// Limits of an app.
const (
	MaxNameLength     = protocol.MaxClientNameLength // characters
	MaxRedirectURIs   = 10
	MaxURILength      = protocol.MaxURILength
	MaxScopes         = 100
	MaxAudiences      = 10
	MaxAudienceLength = 512
	MaxSecretsPerApp  = 10
)

// Token endpoint authentication methods an app may declare. fosite accepts
// basic and post for every confidential client; see docs/apps.md.
const (
	TokenAuthBasic = protocol.TokenAuthBasic
	TokenAuthPost  = protocol.TokenAuthPost
	// TokenAuthNone is a public client's: no secret, PKCE only.
	TokenAuthNone = protocol.TokenAuthNone
)

// The fields a FieldError names: the apps API's JSON names. A transport
// with names of its own (a form field, a command-line flag) translates them.
const (
	FieldName                    = "name"
	FieldIconURL                 = "iconUrl"
	FieldRedirectURIs            = "redirectUris"
	FieldGrantTypes              = "grantTypes"
	FieldScopes                  = "scopes"
	FieldAudience                = "audience"
	FieldTokenEndpointAuthMethod = "tokenEndpointAuthMethod"
	FieldOwner                   = "owner"
	FieldPublic                  = "public"
	FieldAgent                   = "agent"
	FieldSecrets                 = "secrets"
)

// appIDBytes is the randomness of an app id (hex-encoded: 32 characters).
const appIDBytes = 16

// Input is what a user may set on an app: through the apps API, the
// settings pages, or Service.Create from Go. Empty GrantTypes means
// client_credentials; empty TokenEndpointAuthMethod means
// client_secret_basic.
type Input struct {
	Name                    string
	IconURL                 string
	RedirectURIs            []string
	GrantTypes              []string
	Scopes                  []string
	Audience                []string
	TokenEndpointAuthMethod string
}

// AdminInput is an app only an administrator's tools make (the demo's CLI,
// the host's Go code through Service.AdminCreate): anything Input allows,
// plus the agent-token grant, public and first-party clients, and a
// client_credentials app owned by any user.
type AdminInput struct {
	Input
	// Owner is the user whose authority a client_credentials app's tokens
	// carry: required with client_credentials, refused without it.
	Owner string
	// FirstParty clients skip the host's consent screen.
	FirstParty bool
	// Public clients (native apps) have no secret and use PKCE.
	Public bool
	// Agent clients (MCP clients, say) act for whoever authorizes them: the
	// write scopes a user grants them are approvals that expire after the
	// grant lifespan (storage.Client.Agent). Only authorization_code
	// clients, never first-party ones.
	Agent bool
}

// path is who is asking: a user (the apps API, the settings pages) or an
// administrator's tool.
type path int

const (
	userPath path = iota
	adminPath
)

// Validate applies the rules of an administrator's app to in without
// storing anything: what a command line checks before it opens a database.
// catalog is as Config.Catalog. Service.AdminCreate applies the same rules.
func Validate(in AdminInput, catalog *scope.Catalog) error {
	return apply(&storage.Client{}, in, adminPath, catalog)
}

// apply validates in for the given path and copies it onto c; it leaves c
// alone when it refuses. Every error is a *FieldError. The owner of a
// user's client_credentials app is the caller's to set.
func apply(c *storage.Client, in AdminInput, p path, catalog *scope.Catalog) error {
	name, err := checkName(in.Name)
	if err != nil {
		return err
	}
	if in.IconURL != "" {
		if err := checkIconURL(in.IconURL); err != nil {
			return invalid(FieldIconURL, "%s", err)
		}
	}
	grants, err := checkGrantTypes(in.GrantTypes, p)
	if err != nil {
		return err
	}
	cc := scope.Contains(grants, protocol.GrantTypeClientCredentials)
	code := scope.Contains(grants, protocol.GrantTypeAuthorizationCode)
	agent := scope.Contains(grants, protocol.GrantTypeAgentToken)

	switch {
	case p == adminPath && cc && in.Owner == "":
		return invalid(FieldOwner, "a client_credentials app needs an owner, whose authority its tokens carry")
	case in.Owner != "" && !cc:
		return invalid(FieldOwner, "only a client_credentials app has an owner; an authorization_code app acts for whoever consents")
	case in.Public && cc:
		return invalid(FieldPublic, "a public client has no secret, so it cannot use client_credentials")
	case in.Public && agent:
		return invalid(FieldPublic, "the agent-token grant needs a confidential client")
	case in.Agent && !code:
		return invalid(FieldAgent, "only a client users authorize (authorization_code) is an agent; an agent platform's agent tokens already need approvals")
	case in.Agent && in.FirstParty:
		return invalid(FieldAgent, "an agent and a first-party client do not mix: an agent's write scopes need the user's approval on the consent screen")
	}

	if len(in.RedirectURIs) > MaxRedirectURIs {
		return invalid(FieldRedirectURIs, "at most %d", MaxRedirectURIs)
	}
	switch {
	case cc && len(in.RedirectURIs) > 0:
		return invalid(FieldRedirectURIs, "a client_credentials app has no redirect URIs")
	case code && len(in.RedirectURIs) == 0:
		return invalid(FieldRedirectURIs, "an authorization_code app needs at least one")
	case !code && len(in.RedirectURIs) > 0:
		return invalid(FieldRedirectURIs, "only an authorization_code app has redirect URIs")
	}
	for i, u := range in.RedirectURIs {
		if err := protocol.CheckRedirectURI(u); err != nil {
			return invalid(FieldRedirectURIs, "[%d] %s", i, err)
		}
	}

	scopes, err := checkScopes(in.Scopes, cc, catalog)
	if err != nil {
		return err
	}

	if len(in.Audience) > MaxAudiences {
		return invalid(FieldAudience, "at most %d", MaxAudiences)
	}
	for i, a := range in.Audience {
		if a == "" || len(a) > MaxAudienceLength || strings.IndexFunc(a, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
			return invalid(FieldAudience, "[%d] must be 1 to %d printable characters without spaces", i, MaxAudienceLength)
		}
	}

	method := in.TokenEndpointAuthMethod
	switch {
	case in.Public && (method == "" || method == TokenAuthNone):
		method = TokenAuthNone
	case in.Public:
		return invalid(FieldTokenEndpointAuthMethod, "a public client authenticates with %s", TokenAuthNone)
	case method == "":
		method = TokenAuthBasic
	case method != TokenAuthBasic && method != TokenAuthPost:
		return invalid(FieldTokenEndpointAuthMethod, "must be %s or %s", TokenAuthBasic, TokenAuthPost)
	}

	c.Name = name
	c.IconURL = in.IconURL
	c.RedirectURIs = in.RedirectURIs
	c.GrantTypes = grants
	c.Scopes = scopes
	c.Audience = in.Audience
	c.TokenEndpointAuthMethod = method
	c.Public = in.Public
	if code {
		c.ResponseTypes = []string{"code"}
	} else {
		c.ResponseTypes = nil
	}
	if p == adminPath {
		c.FirstParty = in.FirstParty
		c.Agent = in.Agent
		c.SetOwner(in.Owner)
	}
	return nil
}

// checkName returns the name trimmed, if it is 1 to MaxNameLength
// characters of text without control characters.
func checkName(raw string) (string, error) {
	name, err := protocol.CheckClientName(raw)
	switch {
	case err != nil:
		return "", invalid(FieldName, "%s", err)
	case name == "":
		return "", invalid(FieldName, "required")
	}
	return name, nil
}

// checkGrantTypes accepts ["client_credentials"] (the default) or
// authorization_code with an optional refresh_token; an administrator may
// also grant the agent-token grant, alone or beside authorization_code.
// client_credentials is never mixed with anything.
func checkGrantTypes(in []string, p path) ([]string, error) {
	gs := scope.Normalize(in)
	if len(gs) == 0 {
		return []string{protocol.GrantTypeClientCredentials}, nil
	}
	for _, g := range gs {
		switch g {
		case protocol.GrantTypeClientCredentials, protocol.GrantTypeAuthorizationCode, protocol.GrantTypeRefreshToken:
		case protocol.GrantTypeAgentToken:
			if p != adminPath {
				return nil, invalid(FieldGrantTypes, "the agent-token grant is given only by an administrator's tools")
			}
		default:
			return nil, invalid(FieldGrantTypes, "unsupported grant type %q", g)
		}
	}
	switch {
	case scope.Contains(gs, protocol.GrantTypeClientCredentials) && len(gs) > 1:
		return nil, invalid(FieldGrantTypes, "client_credentials cannot be mixed with other grant types: its tokens act as the app's owner, an authorization_code app's act for whoever consents")
	case scope.Contains(gs, protocol.GrantTypeRefreshToken) && !scope.Contains(gs, protocol.GrantTypeAuthorizationCode):
		return nil, invalid(FieldGrantTypes, "refresh_token needs authorization_code")
	}
	return gs, nil
}

// checkScopes returns the scopes normalized, if each is a scope token and,
// when the catalog has entries, one of them; protocol scopes (openid,
// offline_access) are allowed too on an app that acts for whoever consents.
// A client_credentials app needs at least one.
func checkScopes(in []string, cc bool, catalog *scope.Catalog) ([]string, error) {
	scopes := scope.Normalize(in)
	if len(scopes) > MaxScopes {
		return nil, invalid(FieldScopes, "at most %d", MaxScopes)
	}
	if cc && len(scopes) == 0 {
		return nil, invalid(FieldScopes, "a client_credentials app needs at least one scope")
	}
	closed := len(catalog.Entries()) > 0
	for _, s := range scopes {
		if !protocol.ValidScopeToken(s) {
			return nil, invalid(FieldScopes, "%q is not a scope token (%s)", s, protocol.ScopeTokenRule)
		}
		feature := !cc && scope.Contains(protocol.ProtocolScopes, s)
		if closed && !feature && !catalog.Known(s) {
			return nil, invalid(FieldScopes, "unknown scope %q", s)
		}
	}
	return scopes, nil
}

func checkIconURL(raw string) error {
	if len(raw) > MaxURILength {
		return fmt.Errorf("longer than %d characters", MaxURILength)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return errors.New("must be an absolute http(s) URL")
	}
	return nil
}
