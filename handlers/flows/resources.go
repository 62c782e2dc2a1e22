package flows

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/ory/fosite"
	"github.com/ory/x/errorsx"

	"github.com/deputyauth/deputy/internal/protocol"
)

// ErrInvalidTarget is RFC 8707 §2's answer to a resource indicator the
// authorization server does not know, cannot parse, or may not issue a
// token for here (one the grant does not cover).
var ErrInvalidTarget = &fosite.RFC6749Error{
	ErrorField:       protocol.ErrorInvalidTarget,
	DescriptionField: "The requested resource is invalid, missing, unknown, or malformed.",
	CodeField:        http.StatusBadRequest,
}

// Resources are the protected resources (RFC 8707) this authorization
// server issues tokens for, by canonical URI (protocol.CanonicalResource),
// and the one a request that names none gets. A token's resources are its
// fosite audience: stored with opaque tokens (the granted audience,
// introspection's aud) and the aud of agent tokens. The zero value (and
// nil) knows no resource: every resource indicator is invalid_target.
type Resources struct {
	known []string
	def   string
}

// NewResources canonicalizes uris and def. def must be one of them, or ""
// for the only one when there is exactly one (none otherwise).
func NewResources(uris []string, def string) (*Resources, error) {
	r := &Resources{}
	for _, raw := range uris {
		c, err := protocol.CanonicalResource(raw)
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", raw, err)
		}
		if !slices.Contains(r.known, c) {
			r.known = append(r.known, c)
		}
	}
	switch {
	case def != "":
		c, err := protocol.CanonicalResource(def)
		if err != nil {
			return nil, fmt.Errorf("default resource %q: %w", def, err)
		}
		if !slices.Contains(r.known, c) {
			return nil, fmt.Errorf("default resource %q is not one of the resources", def)
		}
		r.def = c
	case len(r.known) == 1:
		r.def = r.known[0]
	}
	return r, nil
}

// List returns the resources' canonical URIs.
func (r *Resources) List() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.known)
}

// Default is the resource a request that names none gets; "" for none.
func (r *Resources) Default() string {
	if r == nil {
		return ""
	}
	return r.def
}

// Has reports whether canonical is one of the resources.
func (r *Resources) Has(canonical string) bool {
	return r != nil && slices.Contains(r.known, canonical)
}

// Requested returns the canonical resources form names (every resource
// parameter), nil for none, or ErrInvalidTarget for one that does not
// parse or is not one of the resources.
func (r *Resources) Requested(form url.Values) ([]string, error) {
	var out []string
	for _, raw := range form[protocol.ParamResource] {
		c, err := protocol.CanonicalResource(raw)
		if err != nil {
			return nil, errorsx.WithStack(ErrInvalidTarget.WithHintf("The resource %q is not %s: %s.", raw, protocol.ResourceRule, err))
		}
		if !r.Has(c) {
			return nil, errorsx.WithStack(ErrInvalidTarget.WithHintf("The resource %q is not one this authorization server issues tokens for.", raw))
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// ForAuthorization adds to an authorization request's requested audience
// the resources it names, or the default resource when it names neither a
// resource nor an audience; ErrInvalidTarget for a resource that is not
// one of them. It may be called more than once on a request.
func (r *Resources) ForAuthorization(ar fosite.Requester) error {
	asked, err := r.Requested(ar.GetRequestForm())
	if err != nil {
		return err
	}
	requested := slices.Clone(ar.GetRequestedAudience())
	if len(asked) == 0 && len(requested) == 0 && r.Default() != "" {
		asked = []string{r.Default()}
	}
	for _, a := range asked {
		if !slices.Contains(requested, a) {
			requested = append(requested, a)
		}
	}
	ar.SetRequestedAudience(requested)
	return nil
}

// AudienceStrategy returns an audience matching strategy that lets every
// client ask for the resources, and leaves every other audience to next
// (fosite's default when nil). fosite asks it at the authorization
// endpoint, at the token endpoint and, for the audience a refresh token
// carries, at every refresh: the provider's fosite.Config must use it.
func (r *Resources) AudienceStrategy(next fosite.AudienceMatchingStrategy) fosite.AudienceMatchingStrategy {
	if next == nil {
		next = fosite.DefaultAudienceMatchingStrategy
	}
	return func(haystack, needle []string) error {
		var others []string
		for _, n := range needle {
			if !r.Has(n) {
				others = append(others, n)
			}
		}
		if len(others) == 0 {
			return nil
		}
		return next(haystack, others)
	}
}
