package plugin

import (
	"context"

	"github.com/ory/fosite"
)

// This file is RFC 8707 resource indicators: Config.Resources become the
// audience of the tokens deputy's and the host's handlers issue.

// Resources returns Config.Resources in canonical form, and the default
// resource ("" for none).
func (p *Plugin) Resources() (resources []string, def string) {
	return p.resources.List(), p.resources.Default()
}

// ResolveResources puts the resources an authorization request names
// (resource, RFC 8707), in canonical form, into its requested audience; a
// request that names neither a resource nor an audience gets the default
// resource. A resource that is not one of Config.Resources is
// invalid_target, which WriteAuthorizeError redirects to the client.
// GrantScopes calls it (and grants the requested audience); a host calls it
// as soon as fosite has accepted the request, so that an unknown resource
// is refused before any consent page. It may be called more than once.
func (p *Plugin) ResolveResources(ar fosite.Requester) error {
	return p.resources.ForAuthorization(ar)
}

// AudienceStrategy returns the audience matching strategy the provider's
// fosite.Config must use (kit mode's does): any client may ask for
// Config.Resources, every other audience goes to host (the host's
// strategy; fosite's default when nil). fosite checks the audience of a
// refresh token at every refresh, so without it a token for a resource
// cannot be refreshed.
func (p *Plugin) AudienceStrategy(host fosite.AudienceMatchingStrategy) fosite.AudienceMatchingStrategy {
	return p.resources.AudienceStrategy(host)
}

// checkAudienceStrategy logs, when deputy's factories are composed, a
// provider whose audience strategy refuses the configured resources: its
// host forgot AudienceStrategy, and every resource would be refused.
func (p *Plugin) checkAudienceStrategy(cfg fosite.Configurator) {
	resources := p.resources.List()
	sp, ok := cfg.(fosite.AudienceStrategyProvider)
	if len(resources) == 0 || !ok {
		return
	}
	if err := sp.GetAudienceStrategy(context.Background())(nil, resources); err != nil {
		p.cfg.Logger.Error("deputy: the provider's fosite.Config refuses Config.Resources as audience: set its AudienceMatchingStrategy to Plugin.AudienceStrategy(…)", "err", err)
	}
}
