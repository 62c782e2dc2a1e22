package flows

import (
	"context"
	"errors"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

// OwnedClient is a client whose tokens act as its owner: storage.Client.
type OwnedClient interface {
	fosite.Client
	// Owner is the owning user's id, "" for an unowned client.
	Owner() string
}

var _ fosite.TokenEndpointHandler = (*OwnedClientCredentialsGrantHandler)(nil)

// OwnedClientCredentialsGrantHandler is client_credentials for apps that act
// as their owner. It differs from fosite's ClientCredentialsGrantHandler in
// three ways: the token's subject is the app's owner; its scopes are
// requested ∩ the app's scopes ∩ what the owner holds in the organization
// today; and an app without an owner, or whose owner is gone or disabled,
// gets an error and never a token. It replaces fosite's handler: register
// only one of the two.
type OwnedClientCredentialsGrantHandler struct {
	*oauth2.HandleHelper
	Directory scope.Directory
	Config    interface {
		fosite.ScopeStrategyProvider
		fosite.AudienceStrategyProvider
		fosite.AccessTokenLifespanProvider
	}
}

// HandleTokenEndpointRequest implements https://tools.ietf.org/html/rfc6749#section-4.4.2
func (c *OwnedClientCredentialsGrantHandler) HandleTokenEndpointRequest(ctx context.Context, request fosite.AccessRequester) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}

	// The client has already been authenticated by the access request
	// handler; a public client cannot have been, and may not act as anyone.
	client := request.GetClient()
	if client.IsPublic() {
		return errorsx.WithStack(fosite.ErrInvalidGrant.WithHint("The OAuth 2.0 Client is marked as public and is thus not allowed to use authorization grant 'client_credentials'."))
	}
	if !client.GetGrantTypes().Has(protocol.GrantTypeClientCredentials) {
		return errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHint("The OAuth 2.0 Client is not allowed to use authorization grant 'client_credentials'."))
	}
	owned, ok := client.(OwnedClient)
	if !ok || owned.Owner() == "" {
		// Without an owner a token would act for nobody and be capped by
		// nothing; such an app is a configuration error, not a grant.
		return errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHint("Only an app with an owner may use authorization grant 'client_credentials'."))
	}

	form := request.GetRequestForm()
	org := form.Get(protocol.ParamOrganization)
	if len(form[protocol.ParamOrganization]) > 1 || (org != "" && !protocol.ValidOrganization(org)) {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("The optional '%s' parameter must be %s.", protocol.ParamOrganization, protocol.OrganizationRule))
	}

	for _, s := range request.GetRequestedScopes() {
		if !c.Config.GetScopeStrategy(ctx)(client.GetScopes(), s) {
			return errorsx.WithStack(fosite.ErrInvalidScope.WithHintf("The OAuth 2.0 Client is not allowed to request scope '%s'.", s))
		}
	}
	if err := c.Config.GetAudienceStrategy(ctx)(client.GetAudience(), request.GetRequestedAudience()); err != nil {
		return audienceError(err)
	}

	// Asking for no scope asks for everything the app may have, which is
	// then capped like any request.
	requested := []string(request.GetRequestedScopes())
	if len(requested) == 0 {
		requested = client.GetScopes()
	}
	granted, err := EffectiveScopes(ctx, c.Directory, client, owned.Owner(), org, requested)
	if cannotAct(err) {
		return errorsx.WithStack(fosite.ErrInvalidClient.WithHint("The app's owner can no longer act.").WithWrap(err).WithDebug(err.Error()))
	}
	if err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	for _, s := range granted {
		request.GrantScope(s)
	}
	for _, a := range request.GetRequestedAudience() {
		request.GrantAudience(a)
	}

	sess := request.GetSession()
	switch s := sess.(type) {
	case *Session:
		s.SetSubject(owned.Owner())
		s.IDTokenClaims().Subject = owned.Owner()
		s.SetOrganization(org)
	default:
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(errors.New("deputy: the token endpoint must use flows.Session")).WithDebugf("session is %T", sess))
	}

	atLifespan := fosite.GetEffectiveLifespan(client, fosite.GrantTypeClientCredentials, fosite.AccessToken, c.Config.GetAccessTokenLifespan(ctx))
	sess.SetExpiresAt(fosite.AccessToken, time.Now().UTC().Add(atLifespan))
	return nil
}

// PopulateTokenEndpointResponse implements https://tools.ietf.org/html/rfc6749#section-4.4.3
func (c *OwnedClientCredentialsGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, response fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	atLifespan := fosite.GetEffectiveLifespan(request.GetClient(), fosite.GrantTypeClientCredentials, fosite.AccessToken, c.Config.GetAccessTokenLifespan(ctx))
	_, err := c.IssueAccessToken(ctx, atLifespan, request, response)
	return err
}

func (c *OwnedClientCredentialsGrantHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (c *OwnedClientCredentialsGrantHandler) CanHandleTokenEndpointRequest(_ context.Context, requester fosite.AccessRequester) bool {
	// grant_type REQUIRED. Value MUST be set to "client_credentials".
	return requester.GetGrantTypes().ExactOne(protocol.GrantTypeClientCredentials)
}

// OwnedClientCredentialsFactory builds the handler for compose.Compose, in
// place of compose.OAuth2ClientCredentialsGrantFactory.
func OwnedClientCredentialsFactory(dir scope.Directory) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &OwnedClientCredentialsGrantHandler{
			HandleHelper: &oauth2.HandleHelper{
				AccessTokenStrategy: strategy.(oauth2.AccessTokenStrategy),
				AccessTokenStorage:  storage.(oauth2.AccessTokenStorage),
				Config:              config,
			},
			Directory: dir,
			Config:    config,
		}
	}
}
