package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/internal/secheaders"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// scopeOfflineAccess asks for a refresh token (OpenID Connect Core §11,
// fosite's default RefreshTokenScopes).
const scopeOfflineAccess = "offline_access"

// maxBody caps every request body deputy reads.
const maxBody = 64 << 10

// OAuth2Handler serves kit mode's endpoints with deputy's own provider
// (Provider): token, introspection and revocation behind TokenEndpointGuard,
// and the RFC 8414 metadata. Mount it at the Issuer's root: its paths are
// TokenPath, IntrospectionPath, RevocationPath and MetadataPath. The
// authorization endpoint is the host's (see Authorize).
//
// The token and revocation endpoints and the metadata answer any web
// origin (CORS, without credentials: see CORS), so that browser-based
// clients can use them; introspection is for resource servers, and stays
// same-origin.
func (p *Plugin) OAuth2Handler() http.Handler {
	p.Provider()
	mux := http.NewServeMux()
	token := CORS(p.guard(endpointToken, http.HandlerFunc(p.token)), http.MethodPost)
	mux.Handle("POST "+TokenPath, token)
	mux.Handle("OPTIONS "+TokenPath, token)
	mux.Handle("POST "+IntrospectionPath, p.guard(endpointIntrospection, http.HandlerFunc(p.introspect)))
	revoke := CORS(p.guard(endpointRevocation, http.HandlerFunc(p.revoke)), http.MethodPost)
	mux.Handle("POST "+RevocationPath, revoke)
	mux.Handle("OPTIONS "+RevocationPath, revoke)
	metadata := CORS(http.HandlerFunc(p.metadata), http.MethodGet, http.MethodHead)
	mux.Handle("GET "+MetadataPath, metadata)
	mux.Handle("OPTIONS "+MetadataPath, metadata)
	return mux
}

// reportClientAuth tells the client-authentication limiter how the
// request's client authentication ended, from the error of the fosite call
// that authenticated the client (its own error, never the bytes of the
// answer): invalid_client is a failed authentication (a wrong secret, an
// unknown client, a method the client may not use); success and every other
// error are not, a database that could not be reached included (the client
// was never judged).
func reportClientAuth(r *http.Request, err error) {
	ratelimit.Report(r.Context(), errors.Is(err, fosite.ErrInvalidClient) && !errors.Is(err, storage.ErrUnavailable))
}

// unavailable answers an OAuth endpoint's request when err shows the
// database could not be reached (storage.ErrUnavailable): 503 with RFC 6749's
// temporarily_unavailable and a Retry-After, the detail logged. Without it
// fosite answers a database outage as server_error (500), as invalid_client
// (the client could not be loaded, which would also charge the client-auth
// limiter), or, at introspection and revocation, as a plain success
// ({"active":false}, 200) that is a lie. It reports whether it answered.
func (p *Plugin) unavailable(w http.ResponseWriter, r *http.Request, endpoint string, err error) bool {
	if httperr.Classify(err) != httperr.Unavailable {
		return false
	}
	httperr.Answer(w, r, p.cfg.Logger, "deputy: "+endpoint, detailed{err}, func(c httperr.Class) {
		h := w.Header()
		h.Set("Content-Type", "application/json;charset=UTF-8")
		secheaders.SetNoStore(h)
		w.WriteHeader(c.Status)
		_ = json.NewEncoder(w).Encode(struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}{fosite.ErrTemporarilyUnavailable.ErrorField, "The authorization server is temporarily unable to handle the request; retry later."})
	})
	return true
}

// detailed is an error logged with fosite's description, debug and cause.
type detailed struct{ err error }

func (d detailed) Error() string { return oauthErrorDetail(d.err) }
func (d detailed) Unwrap() error { return d.err }

// oauthErrorDetail is err with fosite's description, debug and cause.
func oauthErrorDetail(err error) string {
	detail := err.Error()
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) {
		detail = rfc.GetDescription() + " " + rfc.Debug()
		if c := rfc.Cause(); c != nil {
			detail += ": " + c.Error()
		}
	}
	return detail
}

// logOAuthError logs the detail of errors that are deputy's fault; fosite
// answers them to the client as a bare server_error.
func (p *Plugin) logOAuthError(r *http.Request, endpoint string, err error) {
	if err == nil || !errors.Is(err, fosite.ErrServerError) && !errors.Is(err, fosite.ErrTemporarilyUnavailable) {
		return
	}
	p.cfg.Logger.ErrorContext(r.Context(), "deputy: "+endpoint, "err", oauthErrorDetail(err))
}

// maxStaleClientAttempts bounds how often the token endpoint starts over
// when the client changed during the request (storage.ErrStaleClient) or
// was read from memory (clientCache.retry).
const maxStaleClientAttempts = 3

// token is the RFC 6749 token endpoint.
func (p *Plugin) token(w http.ResponseWriter, r *http.Request) {
	ctx := p.clients.withTokenRequest(r.Context(), r)
	provider := p.Provider()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var (
		ar       fosite.AccessRequester
		resp     fosite.AccessResponder
		err      error
		accepted bool // the client authenticated and the request was valid
	)
	for attempt := 1; ; attempt++ {
		ar, err = provider.NewAccessRequest(ctx, r, flows.NewSession("", ""))
		if accepted = err == nil; accepted {
			resp, err = provider.NewAccessResponse(ctx, ar)
		}
		// A client that changed since it was read, or any failure of one
		// read from memory: nothing was issued; read it again from the
		// database and start over (clientcache.go).
		if attempt == maxStaleClientAttempts || !p.clients.retry(ctx, err) {
			break
		}
	}
	if accepted {
		reportClientAuth(r, nil)
	} else {
		reportClientAuth(r, err)
	}
	if errors.Is(err, storage.ErrStaleClient) {
		// The client (or the user whose kept scopes an attempt used)
		// changed under every attempt, an administrator at work on it:
		// answered like a database away for a moment.
		err = fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	if p.unavailable(w, r, "token endpoint", err) {
		return
	}
	if err != nil {
		p.logOAuthError(r, "token endpoint", err)
		provider.WriteAccessError(ctx, w, ar, err)
		return
	}
	provider.WriteAccessResponse(ctx, w, ar, resp)
}

// introspect is the RFC 7662 endpoint. The caller authenticates as a client
// (HTTP Basic) or with an access token of its own; the answer re-checks the
// token's user (flows.UserCheckingValidator).
func (p *Plugin) introspect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	provider := p.Provider()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ir, err := provider.NewIntrospectionRequest(ctx, r, flows.NewSession("", ""))
	if p.unavailable(w, r, "introspection endpoint", err) {
		ratelimit.Report(ctx, false)
		return
	}
	// fosite refuses introspection's HTTP Basic credentials with
	// request_unauthorized, not invalid_client (answered as such below).
	ratelimit.Report(ctx, err != nil && basicAuthFailed(r, err))
	if err != nil {
		p.logOAuthError(r, "introspection endpoint", unwrapInactive(err))
		if basicAuthFailed(r, err) {
			// fosite tells "Unable to find OAuth 2.0 Client" (an unknown
			// id) from "credentials are invalid" (a known one): an oracle
			// for which client ids exist. Give the one answer the token and
			// revocation endpoints give both, which RFC 7662 §2.3 asks for
			// (RFC 6749 §5.2's invalid_client, 401).
			provider.WriteAccessError(ctx, w, nil, fosite.ErrInvalidClient)
			return
		}
		provider.WriteIntrospectionError(ctx, w, err)
		return
	}
	provider.WriteIntrospectionResponse(ctx, w, ir)
}

// basicAuthFailed reports that fosite refused an introspection request's
// HTTP Basic client credentials: with Basic and no bearer token, a
// request_unauthorized answer is the client's authentication (an id or
// secret that does not decode, an unknown id, a wrong secret). Only the
// answer's own error counts: an inactive token's token_inactive may wrap a
// request_unauthorized of the token's check, and stays active:false.
func basicAuthFailed(r *http.Request, err error) bool {
	if fosite.ErrorToRFC6749Error(err).ErrorField != fosite.ErrRequestUnauthorized.ErrorField || fosite.AccessTokenFromRequest(r) != "" {
		return false
	}
	_, _, ok := r.BasicAuth()
	return ok
}

// unwrapInactive digs the cause out of fosite's "token is inactive", which
// hides a Directory outage behind a plain active:false.
func unwrapInactive(err error) error {
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) && errors.Is(err, fosite.ErrInactiveToken) && rfc.Cause() != nil {
		return rfc.Cause()
	}
	return err
}

// revoke is the RFC 7009 endpoint: 200 for a revoked or unknown token.
func (p *Plugin) revoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	provider := p.Provider()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	err := provider.NewRevocationRequest(ctx, r)
	reportClientAuth(r, err)
	if p.unavailable(w, r, "revocation endpoint", err) {
		return
	}
	p.logOAuthError(r, "revocation endpoint", err)
	provider.WriteRevocationResponse(ctx, w, err)
}

// Metadata is the RFC 8414 authorization server metadata document.
type Metadata struct {
	Issuer                                     string   `json:"issuer"`
	AuthorizationEndpoint                      string   `json:"authorization_endpoint"`
	TokenEndpoint                              string   `json:"token_endpoint"`
	IntrospectionEndpoint                      string   `json:"introspection_endpoint"`
	RevocationEndpoint                         string   `json:"revocation_endpoint"`
	JWKSURI                                    string   `json:"jwks_uri,omitempty"`
	ScopesSupported                            []string `json:"scopes_supported,omitempty"`
	ResponseTypesSupported                     []string `json:"response_types_supported"`
	GrantTypesSupported                        []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported          []string `json:"token_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethodsSupported  []string `json:"introspection_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethodsSupported     []string `json:"revocation_endpoint_auth_methods_supported"`
	CodeChallengeMethodsSupported              []string `json:"code_challenge_methods_supported"`
	AuthorizationResponseIssParameterSupported bool     `json:"authorization_response_iss_parameter_supported"`
	// Config.ClientRegistration's: registration_endpoint and
	// client_id_metadata_document_supported.
	RegistrationMetadata
	// ProtectedResources are Config.Resources (RFC 9728 §4).
	ProtectedResources []string `json:"protected_resources,omitempty"`
}

// Metadata returns the document served at MetadataPath.
func (p *Plugin) Metadata() Metadata {
	iss := p.cfg.Issuer
	grants := p.grantTypes()
	var scopes []string
	for _, e := range p.catalog.Entries() {
		scopes = append(scopes, e.Name)
	}
	// Refresh tokens are asked for with offline_access (fosite's
	// RefreshTokenScopes): a client that does not see it here never asks,
	// and its user consents again every hour.
	if !scope.Contains(scopes, scopeOfflineAccess) {
		scopes = append(scopes, scopeOfflineAccess)
	}
	return Metadata{
		Issuer:                 iss,
		AuthorizationEndpoint:  iss + AuthorizePath,
		TokenEndpoint:          iss + TokenPath,
		IntrospectionEndpoint:  iss + IntrospectionPath,
		RevocationEndpoint:     iss + RevocationPath,
		JWKSURI:                p.jwksURI(),
		ScopesSupported:        scopes,
		ResponseTypesSupported: []string{"code"},
		GrantTypesSupported:    grants,
		// none: public clients (PKCE, no secret), which deputy's store
		// holds (the CLI's --public, dynamic registration), authenticate
		// with their client_id alone at the token and revocation endpoints.
		TokenEndpointAuthMethodsSupported: []string{"client_secret_basic", "client_secret_post", "none"},
		// fosite's introspection takes HTTP Basic or a bearer token, not
		// client_secret_post.
		IntrospectionEndpointAuthMethodsSupported: []string{"client_secret_basic"},
		RevocationEndpointAuthMethodsSupported:    []string{"client_secret_basic", "client_secret_post", "none"},
		CodeChallengeMethodsSupported:             []string{"S256"},
		// RFC 9207: WrapProvider puts iss in every authorization response.
		AuthorizationResponseIssParameterSupported: true,
		RegistrationMetadata:                       p.RegistrationMetadata(),
		ProtectedResources:                         p.resources.List(),
	}
}

func (p *Plugin) metadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	if err := json.NewEncoder(w).Encode(p.Metadata()); err != nil {
		p.cfg.Logger.WarnContext(r.Context(), "deputy: writing metadata", "err", err)
	}
}

// jwksURI is where Handler publishes the agent-token keys; "" without
// Config.Agents.
func (p *Plugin) jwksURI() string {
	if p.keys == nil {
		return ""
	}
	return p.cfg.Issuer + p.cfg.MountPath + JWKSPath
}

// Authorize completes an authorization request the host has parsed with
// NewAuthorizeRequest (kit mode), for userID, whom the host has
// logged in and who has consented to consented in org (nil: every scope
// requested). The scopes granted are those consented, requested, allowed
// to the client and held by the user today (GrantScopes); a user who can no
// longer act is answered access_denied. Errors go back to the client as
// fosite writes them.
func (p *Plugin) Authorize(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, userID, org string, consented []string) {
	ctx := r.Context()
	provider := p.Provider()
	if err := p.GrantScopes(ctx, ar, userID, org, consented); err != nil {
		provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	resp, err := provider.NewAuthorizeResponse(ctx, ar, flows.NewSession(userID, org))
	if errors.Is(err, storage.ErrUnavailable) {
		// RFC 6749 §4.1.2.1's temporarily_unavailable, not server_error.
		err = fosite.ErrTemporarilyUnavailable.WithWrap(err)
	}
	if err != nil {
		p.logOAuthError(r, "authorize endpoint", err)
		provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	provider.WriteAuthorizeResponse(ctx, w, ar, resp)
}
