package flows

import (
	"context"
	"errors"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
)

var _ fosite.TokenEndpointHandler = (*OwnedClientCredentialsGrantHandler)(nil)

// OwnedClientCredentialsGrantHandler is client_credentials for deputy's apps,
// which act as their owner. It differs from fosite's
// ClientCredentialsGrantHandler in that the token's subject is the app's
// owner; its scopes are requested ∩ the app's scopes ∩ what the owner holds
// in the organization today, decided when the token is issued, whatever a
// host's token endpoint granted after NewAccessRequest; an app whose owner
// is gone or disabled gets an error and never a token; and the token names
// the secret that obtained it (SecretIDKey), so that it dies with it.
//
// Clients that are not deputy's apps are not its business: with StepAside
// it answers fosite.ErrUnknownRequest for them, so that a host's own
// client_credentials handler (see HostClientsOnly) serves them unchanged.
// Without it (kit mode, where deputy's is the only handler), it refuses
// them with unauthorized_client.
type OwnedClientCredentialsGrantHandler struct {
	*oauth2.HandleHelper
	Directory scope.Directory
	// StepAside leaves clients that are not deputy's apps to other handlers.
	StepAside bool
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
	owned, err := c.app(request)
	if err != nil {
		return err
	}
	form := request.GetRequestForm()
	org := form.Get(protocol.ParamOrganization)
	if len(form[protocol.ParamOrganization]) > 1 || (org != "" && !protocol.ValidOrganization(org)) {
		return errorsx.WithStack(fosite.ErrInvalidRequest.WithHintf("The optional '%s' parameter must be %s.", protocol.ParamOrganization, protocol.OrganizationRule))
	}
	for _, s := range request.GetRequestedScopes() {
		if !c.Config.GetScopeStrategy(ctx)(owned.GetScopes(), s) {
			return errorsx.WithStack(fosite.ErrInvalidScope.WithHintf("The OAuth 2.0 Client is not allowed to request scope '%s'.", s))
		}
	}
	if err := c.Config.GetAudienceStrategy(ctx)(owned.GetAudience(), request.GetRequestedAudience()); err != nil {
		return audienceError(err)
	}
	// The subject is set now, for a host that reads the session between
	// NewAccessRequest and NewAccessResponse; the scopes are decided when
	// the token is issued.
	if err := bindSession(request.GetSession(), owned.Owner(), org); err != nil {
		return err
	}
	atLifespan := fosite.GetEffectiveLifespan(owned, fosite.GrantTypeClientCredentials, fosite.AccessToken, c.Config.GetAccessTokenLifespan(ctx))
	request.GetSession().SetExpiresAt(fosite.AccessToken, time.Now().UTC().Add(atLifespan))
	return nil
}

// app returns the request's client as one of deputy's apps with an owner,
// or the error for a client that is not one: fosite.ErrUnknownRequest when
// stepping aside for others' clients.
func (c *OwnedClientCredentialsGrantHandler) app(request fosite.AccessRequester) (OwnedClient, error) {
	client := request.GetClient()
	owned := ownedClient(client)
	if owned == nil && c.StepAside {
		return nil, fosite.ErrUnknownRequest
	}
	// The client has already been authenticated by the access request
	// handler; a public client cannot have been, and may not act as anyone.
	if client.IsPublic() {
		return nil, errorsx.WithStack(fosite.ErrInvalidGrant.WithHint("The OAuth 2.0 Client is marked as public and is thus not allowed to use authorization grant 'client_credentials'."))
	}
	if !client.GetGrantTypes().Has(protocol.GrantTypeClientCredentials) {
		return nil, errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHint("The OAuth 2.0 Client is not allowed to use authorization grant 'client_credentials'."))
	}
	if owned == nil {
		// Without an owner a token would act for nobody and be capped by
		// nothing; such an app is a configuration error, not a grant.
		return nil, errorsx.WithStack(fosite.ErrUnauthorizedClient.WithHint("Only an app with an owner may use authorization grant 'client_credentials'."))
	}
	return owned, nil
}

// bindSession makes sess act for subject in org. deputy's Session and the
// sessions of fosite and its openid package have a subject setter; a host
// session that cannot be bound to an organization leaves the token unbound,
// which the re-check at every use caps at the organization of that use.
func bindSession(sess fosite.Session, subject, org string) error {
	s, ok := sess.(interface{ SetSubject(string) })
	if !ok {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(errors.New("deputy: the token endpoint's session has no SetSubject")).WithDebugf("session is %T", sess))
	}
	s.SetSubject(subject)
	if o, ok := sess.(interface{ IDTokenClaims() *jwt.IDTokenClaims }); ok && o.IDTokenClaims() != nil {
		o.IDTokenClaims().Subject = subject
	}
	if o, ok := sess.(interface{ SetOrganization(string) }); ok {
		o.SetOrganization(org)
	}
	return nil
}

// PopulateTokenEndpointResponse implements https://tools.ietf.org/html/rfc6749#section-4.4.3
func (c *OwnedClientCredentialsGrantHandler) PopulateTokenEndpointResponse(ctx context.Context, request fosite.AccessRequester, response fosite.AccessResponder) error {
	if !c.CanHandleTokenEndpointRequest(ctx, request) {
		return fosite.ErrUnknownRequest // not this grant: fosite moves on; no stack to capture on every other grant's request
	}
	owned, err := c.app(request)
	if err != nil {
		return err
	}
	// The cap is applied here, when the token is issued, so that nothing a
	// host granted after NewAccessRequest survives it. Asking for no scope
	// asks for everything the app may have, capped like any request.
	requested := []string(request.GetRequestedScopes())
	if len(requested) == 0 {
		requested = owned.GetScopes()
	}
	org := request.GetRequestForm().Get(protocol.ParamOrganization)
	granted, err := EffectiveScopes(ctx, c.Directory, owned, owned.Owner(), org, requested)
	if cannotAct(err) {
		return errorsx.WithStack(fosite.ErrInvalidClient.WithHint("The app's owner can no longer act.").WithWrap(err).WithDebug(err.Error()))
	}
	if err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	if err := setGranted(request, granted, request.GetRequestedAudience()); err != nil {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(err).WithDebug(err.Error()))
	}
	if err := bindSession(request.GetSession(), owned.Owner(), org); err != nil {
		return err
	}

	// The token names the secret that obtained it. The hasher noted which
	// one matched in the request's context (clientsecret.WithMatch, set by
	// the token endpoint's guard).
	hash, ok := clientsecret.MatchedHash(ctx)
	secretID := ""
	if ok {
		secretID = owned.SecretIDFor(hash)
	}
	if secretID == "" {
		return errorsx.WithStack(fosite.ErrServerError.WithWrap(errNoSecretMatch).WithDebug(errNoSecretMatch.Error()))
	}
	request.GetRequestForm().Set(SecretIDKey, secretID)

	atLifespan := fosite.GetEffectiveLifespan(owned, fosite.GrantTypeClientCredentials, fosite.AccessToken, c.Config.GetAccessTokenLifespan(ctx))
	token, signature, err := c.AccessTokenStrategy.GenerateAccessToken(ctx, request)
	if err != nil {
		return err
	}
	if err := c.AccessTokenStorage.CreateAccessTokenSession(ctx, signature, request.Sanitize([]string{SecretIDKey, protocol.ParamOrganization})); err != nil {
		return err
	}
	response.SetAccessToken(token)
	response.SetTokenType("bearer")
	expiresIn := atLifespan
	if exp := request.GetSession().GetExpiresAt(fosite.AccessToken); !exp.IsZero() {
		expiresIn = time.Until(exp)
	}
	response.SetExpiresIn(expiresIn)
	response.SetScopes(request.GetGrantedScopes())
	return nil
}

// errNoSecretMatch is a token request of one of deputy's apps that did not
// go through the token endpoint's guard (plugin.TokenEndpointGuard), so no
// one noted which secret authenticated it: a configuration error, answered
// as server_error rather than issuing a token that could outlive its secret.
var errNoSecretMatch = errors.New("deputy: no record of the secret that authenticated the app; mount the token endpoint behind deputy's TokenEndpointGuard")

func (c *OwnedClientCredentialsGrantHandler) CanSkipClientAuth(context.Context, fosite.AccessRequester) bool {
	return false
}

func (c *OwnedClientCredentialsGrantHandler) CanHandleTokenEndpointRequest(_ context.Context, requester fosite.AccessRequester) bool {
	// grant_type REQUIRED. Value MUST be set to "client_credentials".
	return requester.GetGrantTypes().ExactOne(protocol.GrantTypeClientCredentials)
}

// OwnedClientCredentialsFactory builds the handler for compose.Compose. In
// kit mode (stepAside false) it replaces compose.OAuth2ClientCredentialsGrantFactory;
// in plugin mode it sits beside the host's handler, wrapped by HostClientsOnly.
func OwnedClientCredentialsFactory(dir scope.Directory, stepAside bool) compose.Factory {
	return func(config fosite.Configurator, storage interface{}, strategy interface{}) interface{} {
		return &OwnedClientCredentialsGrantHandler{
			HandleHelper: &oauth2.HandleHelper{
				AccessTokenStrategy: strategy.(oauth2.AccessTokenStrategy),
				AccessTokenStorage:  storage.(oauth2.AccessTokenStorage),
				Config:              config,
			},
			Directory: dir,
			StepAside: stepAside,
			Config:    config,
		}
	}
}
