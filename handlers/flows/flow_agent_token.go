package flows

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// maxSubjectTokenLength bounds the subject token looked up.
const maxSubjectTokenLength = 1024

var _ fosite.TokenEndpointHandler = (*AgentTokenGrantHandler)(nil)

// AgentTokenGrantHandler is the urn:deputy:params:oauth:grant-type:agent-token
// grant, shaped like RFC 8693 token exchange: an agent platform (a
// confidential client allowed the grant) presents a user's access token and
// an agent session, and gets a short-lived agent token that is read-only
// unless the user approved more for that session. Nothing is stored.
type AgentTokenGrantHandler struct {
	Minter *agenttoken.Minter
	// AccessTokenStrategy and AccessTokenStorage resolve the subject token,
	// exactly as fosite's introspection does: in plugin mode they are the
	// host's, so any access token the host issued (any prefix) is a subject.
	AccessTokenStrategy oauth2.AccessTokenStrategy
	AccessTokenStorage  oauth2.AccessTokenStorage
	// Sessions decodes the subject token's stored session and says which
	// user and organization it acts for.
	Sessions SessionCodec
	// Apps re-checks a subject token of one of deputy's apps.
	Apps AppTokens
	// Resources are the RFC 8707 resources an agent token may be for.
	Resources *Resources
	Config    interface {
		fosite.AudienceStrategyProvider
	}
	Logger *slog.Logger
}

// AgentTokenGrantFactory returns a compose.Factory for the grant, to list
// beside fosite's own factories in compose.Compose. The strategy must be an
// oauth2.AccessTokenStrategy and the storage an oauth2.AccessTokenStorage.
// sessions reads the stored sessions of subject tokens (the host's session
// type in plugin mode). resources are the RFC 8707 resources (nil: none).
func AgentTokenGrantFactory(m *agenttoken.Minter, sessions SessionCodec, apps AppTokens, resources *Resources) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &AgentTokenGrantHandler{
			Minter:              m,
			AccessTokenStrategy: strategy.(oauth2.AccessTokenStrategy),
			AccessTokenStorage:  storage.(oauth2.AccessTokenStorage),
			Sessions:            sessions,
			Apps:                apps,
			Resources:           resources,
			Config:              config,
			Logger:              m.Logger,
		}
	}
}

func (c *AgentTokenGrantHandler) CanSkipClientAuth(ctx context.Context, requester fosite.AccessRequester) bool {
	return false
}

func (c *AgentTokenGrantHandler) CanHandleTokenEndpointRequest(ctx context.Context, requester fosite.AccessRequester) bool {
	return requester.GetGrantTypes().ExactOne(protocol.GrantTypeAgentToken)
}

// HandleTokenEndpointRequest checks everything that needs no database: the
// client, and the shape of every parameter.
func (c *AgentTokenGrantHandler) HandleTokenEndpointRequest(ctx context.Context, request fosite.AccessRequester) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	client := request.GetClient()
	if client.IsPublic() {
		return errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHint("A public client may not use the agent-token grant."))
	}
	if !client.GetGrantTypes().Has(protocol.GrantTypeAgentToken) {
		return errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHintf("The OAuth 2.0 Client is not allowed to use authorization grant '%s'.", protocol.GrantTypeAgentToken))
	}
	form := request.GetRequestForm()
	if len(form[protocol.ParamSubjectToken]) != 1 || form.Get(protocol.ParamSubjectToken) == "" {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("Exactly one '%s' is required.", protocol.ParamSubjectToken))
	}
	if form.Get(protocol.ParamSubjectTokenType) != protocol.TokenTypeAccessToken {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("'%s' must be '%s'.", protocol.ParamSubjectTokenType, protocol.TokenTypeAccessToken))
	}
	if len(form[protocol.ParamAgentSessionID]) != 1 || !protocol.ValidAgentSessionID(form.Get(protocol.ParamAgentSessionID)) {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("'%s' must be %s.", protocol.ParamAgentSessionID, protocol.AgentSessionIDRule))
	}
	if len(form[protocol.ParamOrganization]) != 1 || !protocol.ValidOrganization(form.Get(protocol.ParamOrganization)) {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("'%s' is required: %s.", protocol.ParamOrganization, protocol.OrganizationRule))
	}
	for _, s := range request.GetRequestedScopes() {
		if !protocol.ValidScopeToken(s) {
			return errorsx.WithStack(fosite.ErrInvalidScope.WithHintf("Every requested scope must be %s.", protocol.ScopeTokenRule))
		}
	}
	if aud := request.GetRequestedAudience(); len(aud) > 0 {
		if err := c.Config.GetAudienceStrategy(ctx)(client.GetAudience(), aud); err != nil {
			return audienceError(err)
		}
	}
	if _, err := c.Resources.Requested(form); err != nil {
		return err
	}
	return nil
}

// PopulateTokenEndpointResponse resolves the subject token, computes the
// scopes and mints the token, answering in RFC 8693's shape.
func (c *AgentTokenGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, response fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	form := request.GetRequestForm()
	userID, presented, subjectAudience, err := c.subject(ctx, form.Get(protocol.ParamSubjectToken), form.Get(protocol.ParamOrganization))
	if err != nil {
		return err
	}
	audience, err := c.audience(request, subjectAudience)
	if err != nil {
		return err
	}
	client := request.GetClient()
	tok, err := c.Minter.Mint(ctx, agenttoken.MintRequest{
		UserID:         userID,
		Organization:   form.Get(protocol.ParamOrganization),
		AgentSessionID: form.Get(protocol.ParamAgentSessionID),
		ClientID:       client.GetID(),
		SubjectScopes:  presented,
		ClientScopes:   append([]string{}, client.GetScopes()...),
		Requested:      request.GetRequestedScopes(),
		Audience:       audience,
	})
	switch {
	case err == nil:
	case errors.Is(err, agenttoken.ErrInvalidAgentSession), errors.Is(err, agenttoken.ErrInvalidOrganization):
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHint(err.Error()))
	case errors.Is(err, scope.ErrUserNotFound), errors.Is(err, scope.ErrUserDisabled):
		return errorsx.WithStack(fosite.ErrInvalidGrant.WithHint("The user of the subject token can no longer act."))
	case errors.Is(err, agenttoken.ErrNoScopes):
		return errorsx.WithStack(fosite.ErrInvalidScope.WithHint("None of the requested scopes can be granted to this agent session."))
	case errors.Is(err, storage.ErrStaleClient):
		// The agent platform changed since the token endpoint read it
		// (storage.PinClient): nothing was minted, and the endpoint reads
		// the client again and retries; no error of ours to log.
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err))
	default:
		c.logger().ErrorContext(ctx, "deputy: minting an agent token", "client_id", client.GetID(), "err", err)
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err))
	}
	for _, s := range tok.Scopes {
		request.GrantScope(s)
	}
	for _, a := range audience {
		request.GrantAudience(a)
	}
	request.GetSession().SetExpiresAt(fosite.AccessToken, tok.ExpiresAt)
	response.SetAccessToken(tok.Token)
	response.SetTokenType("Bearer")
	response.SetExtra("issued_token_type", protocol.TokenTypeAccessToken)
	response.SetExtra("expires_in", tok.ExpiresIn())
	response.SetExtra("scope", scope.Join(tok.Scopes))
	return nil
}

// subject resolves a deputy access token to its user, the scopes it
// presents and its audience. The scopes are never nil (scope.Intersect
// returns an empty slice), so that a token granted nothing caps at nothing.
func (c *AgentTokenGrantHandler) subject(ctx context.Context, token, org string) (string, []string, []string, error) {
	bad := func(hint string) error {
		return errorsx.WithStack(fosite.ErrInvalidGrant.WithHint(hint))
	}
	// Only a stored access token: never an agent token (no chaining), a
	// refresh token or an authorization code, none of which the access
	// token storage holds.
	if strings.HasPrefix(token, protocol.AgentTokenPrefix) || len(token) > maxSubjectTokenLength {
		return "", nil, nil, bad("The subject token is not an access token issued by this server.")
	}
	sig := c.AccessTokenStrategy.AccessTokenSignature(ctx, token)
	if sig == "" {
		return "", nil, nil, bad("The subject token is not an access token issued by this server.")
	}
	or, err := c.AccessTokenStorage.GetAccessTokenSession(ctx, sig, c.Sessions.NewSession())
	if errors.Is(err, fosite.ErrNotFound) {
		return "", nil, nil, bad("The subject token is unknown, revoked or expired.")
	}
	if err != nil {
		c.logger().ErrorContext(ctx, "deputy: looking up a subject token", "err", err)
		return "", nil, nil, errorsx.WithStack(fosite.ErrServerError.WithWrap(err))
	}
	// The HMAC check and the expiry; the lookup above found the row by
	// signature only.
	if err := c.AccessTokenStrategy.ValidateAccessToken(ctx, or, token); err != nil {
		return "", nil, nil, bad("The subject token is invalid or expired.")
	}
	if exp := or.GetSession().GetExpiresAt(fosite.AccessToken); exp.IsZero() || !exp.After(time.Now()) {
		return "", nil, nil, bad("The subject token has expired.")
	}
	user, bound := c.Sessions.IdentityOf(or.GetSession())
	if user == "" {
		return "", nil, nil, bad("The subject token does not act for a user.")
	}
	// A subject token bound to one organization lends no authority in another.
	if bound != "" && bound != org {
		return "", nil, nil, bad("The subject token is bound to another organization.")
	}
	if err := c.Apps.Check(ctx, or, user); revoked(err) {
		return "", nil, nil, bad("The subject token's app or secret is gone.")
	} else if err != nil {
		c.logger().ErrorContext(ctx, "deputy: checking a subject token's app", "err", err)
		return "", nil, nil, errorsx.WithStack(fosite.ErrServerError.WithWrap(err))
	}
	// What the token was granted, and its client is still allowed today.
	presented := scope.Intersect(or.GetGrantedScopes(), or.GetClient().GetScopes())
	if presented == nil {
		presented = []string{}
	}
	return user, presented, or.GetGrantedAudience(), nil
}

// audience is what the agent token is for: the resources (RFC 8707) and
// audiences the request names, or else the subject token's audience, or
// else the default resource; none at all leaves the Minter's (the issuer:
// no particular resource). A resource the subject token's audience does not
// cover is invalid_target: exchanging a user's token never widens where it
// may be used. An audience the request names is the agent platform's own
// (checked against its registered audiences).
func (c *AgentTokenGrantHandler) audience(request fosite.AccessRequester, subject []string) ([]string, error) {
	asked, err := c.Resources.Requested(request.GetRequestForm())
	if err != nil {
		return nil, err
	}
	if len(subject) > 0 {
		for _, a := range asked {
			if !slices.Contains(subject, a) {
				return nil, errorsx.WithStack(ErrInvalidTarget.WithHintf("The resource %q is not in the subject token's audience.", a))
			}
		}
	}
	out := asked
	for _, a := range request.GetRequestedAudience() {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	switch {
	case len(out) > 0:
	case len(subject) > 0:
		out = slices.Clone(subject)
	case c.Resources.Default() != "":
		out = []string{c.Resources.Default()}
	}
	return out, nil
}

// audienceError is the audience strategy's refusal without its cause. A
// requested audience that does not parse is the client's fault, but fosite
// wraps the *url.Error, which is also a net.Error, so an HTTP layer that
// guessed outages from net.Error would answer the 400 as a 503 (storage now
// classifies its own errors as storage.ErrUnavailable; this stays so that no
// guesser can be misled).
func audienceError(err error) error {
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) && rfc.CodeField < 500 {
		return errorsx.WithStack(rfc.WithWrap(nil))
	}
	return err
}

func (c *AgentTokenGrantHandler) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}
