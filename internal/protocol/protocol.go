// Package protocol owns deputy's wire-level constants: what every part of
// deputy (token endpoint, resource middleware, consent, plugin, the demo IdP)
// must agree on byte for byte.
package protocol

// Prefixes of deputy's opaque tokens. They tell a reader (and a secret
// scanner) what a string is, and let the middleware route a token without
// parsing it.
const (
	AccessTokenPrefix   = "dpy_at_"
	RefreshTokenPrefix  = "dpy_rt_"
	AuthorizeCodePrefix = "dpy_ac_"
)

// AgentTokenPrefix marks an agent capability token: the middleware routes on
// it without parsing anything else.
const AgentTokenPrefix = "dpy_agt_"
