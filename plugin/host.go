package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	fositestorage "github.com/ory/fosite/storage"

	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// This file is plugin mode: what a host that keeps its own fosite provider
// calls to add deputy to it.

// HostStorage is what deputy needs of a host's fosite storage: clients and
// the OAuth2 token storage, with revocation. fosite's MemoryStore and any
// storage that serves fosite's OAuth2 handlers has it.
type HostStorage interface {
	fosite.ClientManager
	oauth2.CoreStorage
	oauth2.TokenRevocationStorage
}

// Storage is a host's storage with deputy's apps added: GetClient serves the
// host's clients from the host's storage and deputy's apps from deputy's
// tables; everything else is the host's. PKCE, OpenID Connect and
// transactions go to the host's storage when it has them.
type Storage struct {
	HostStorage
	p *Plugin
}

var (
	_ HostStorage                        = (*Storage)(nil)
	_ pkce.PKCERequestStorage            = (*Storage)(nil)
	_ openid.OpenIDConnectRequestStorage = (*Storage)(nil)
	_ fositestorage.Transactional        = (*Storage)(nil)
)

// WrapStorage returns the host's storage with deputy's apps added, for the
// host to hand compose.Compose instead of its own.
func (p *Plugin) WrapStorage(host HostStorage) *Storage {
	return &Storage{HostStorage: host, p: p}
}

// GetClient asks the host's storage first, so that the host's clients cost
// deputy nothing; a client the host does not know is one of deputy's
// apps, whose secret hashes are marked for SecretsHasher, or, with
// Config.ClientRegistration.MetadataDocuments, the client a metadata
// document describes when the id is its https URL.
func (s *Storage) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := s.HostStorage.GetClient(ctx, id)
	if !errors.Is(err, fosite.ErrNotFound) {
		return c, err
	}
	doc, app, err := s.p.lookupClient(ctx, id)
	switch {
	case errors.Is(err, fosite.ErrNotFound):
		// For the client-authentication limiter at the host's endpoints:
		// an unknown client is refused like a wrong secret, so that its
		// 429s do not tell which client ids exist.
		clientsecret.NoteUnknownClient(ctx)
		return nil, err
	case err != nil:
		return nil, err
	case doc != nil:
		return doc, nil
	}
	return hostAppView{app}, nil
}

// hostAppView is one of deputy's apps as the host's fosite sees it: its
// secret hashes marked as deputy's, so that the host's hasher hands them to
// deputy's (clientsecret.HostHasher).
type hostAppView struct{ *storage.Client }

func (a hostAppView) GetHashedSecret() []byte { return clientsecret.Mark(a.Client.GetHashedSecret()) }

func (a hostAppView) GetRotatedHashes() [][]byte {
	hashes := a.Client.GetRotatedHashes()
	out := make([][]byte, len(hashes))
	for i, h := range hashes {
		out[i] = clientsecret.Mark(h)
	}
	return out
}

var errNoHostSupport = errors.New("deputy: the host's storage does not implement this")

// hostAs returns the host's storage as a T, for the optional interfaces a
// host's factories may need.
func hostAs[T any](s *Storage, what string) (T, error) {
	h, ok := s.HostStorage.(T)
	if !ok {
		return h, fmt.Errorf("%w: %s", errNoHostSupport, what)
	}
	return h, nil
}

func (s *Storage) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	h, err := hostAs[pkce.PKCERequestStorage](s, "PKCE")
	if err != nil {
		return err
	}
	return h.CreatePKCERequestSession(ctx, signature, r)
}

func (s *Storage) GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	h, err := hostAs[pkce.PKCERequestStorage](s, "PKCE")
	if err != nil {
		return nil, err
	}
	return h.GetPKCERequestSession(ctx, signature, session)
}

func (s *Storage) DeletePKCERequestSession(ctx context.Context, signature string) error {
	h, err := hostAs[pkce.PKCERequestStorage](s, "PKCE")
	if err != nil {
		return err
	}
	return h.DeletePKCERequestSession(ctx, signature)
}

func (s *Storage) CreateOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) error {
	h, err := hostAs[openid.OpenIDConnectRequestStorage](s, "OpenID Connect")
	if err != nil {
		return err
	}
	return h.CreateOpenIDConnectSession(ctx, code, r)
}

func (s *Storage) GetOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) (fosite.Requester, error) {
	h, err := hostAs[openid.OpenIDConnectRequestStorage](s, "OpenID Connect")
	if err != nil {
		return nil, err
	}
	return h.GetOpenIDConnectSession(ctx, code, r)
}

func (s *Storage) DeleteOpenIDConnectSession(ctx context.Context, code string) error {
	h, err := hostAs[openid.OpenIDConnectRequestStorage](s, "OpenID Connect")
	if err != nil {
		return err
	}
	return h.DeleteOpenIDConnectSession(ctx, code)
}

// BeginTX, Commit and Rollback are the host's transactions where it has
// them, and do nothing where it has none (as fosite does without them).
func (s *Storage) BeginTX(ctx context.Context) (context.Context, error) {
	if h, ok := s.HostStorage.(fositestorage.Transactional); ok {
		return h.BeginTX(ctx)
	}
	return ctx, nil
}

func (s *Storage) Commit(ctx context.Context) error {
	if h, ok := s.HostStorage.(fositestorage.Transactional); ok {
		return h.Commit(ctx)
	}
	return nil
}

func (s *Storage) Rollback(ctx context.Context) error {
	if h, ok := s.HostStorage.(fositestorage.Transactional); ok {
		return h.Rollback(ctx)
	}
	return nil
}

// SecretsHasher returns the hasher the host's fosite.Config must use: it
// compares deputy's apps' secrets (SHA-256, marked by WrapStorage) itself
// and every other hash with host, the host's own hasher (fosite's bcrypt
// when nil).
func (p *Plugin) SecretsHasher(host fosite.Hasher) fosite.Hasher {
	if host == nil {
		host = &fosite.BCrypt{Config: &fosite.Config{}}
	}
	return clientsecret.HostHasher{Deputy: p.hasher, Host: host}
}

// HostClientsOnly wraps the host's factories so that their token-endpoint
// handlers leave deputy's owned apps to deputy's client-credentials handler
// (flows.HostClientsOnly). Wrap all of them: an owned app may only use
// client_credentials, and fosite's own handler would otherwise issue it a
// second token, uncapped and acting for nobody.
func (p *Plugin) HostClientsOnly(factories ...compose.Factory) []compose.Factory {
	return flows.HostClientsOnly(factories...)
}

// GrantScopes decides what an authorization grants: of the scopes the
// user consented to (nil: all requested), those requested, allowed to the
// client, and held by userID in org today; protocol scopes (openid,
// offline_access) need only the client's allowance. It replaces the
// request's granted scopes, whatever the host granted before. A user who
// can no longer act is fosite.ErrAccessDenied. It grants the requested
// audience, with the resources the request names (ResolveResources: an
// unknown one is invalid_target, and nothing is recorded).
//
// For an agent client (flows.AgentClient: every dynamically registered or
// metadata-document client, and clients marked as agents), the write scopes
// granted are recorded as the user's approval, which lasts
// Config.GrantLifespan: call GrantScopes only once the user has consented.
func (p *Plugin) GrantScopes(ctx context.Context, ar fosite.Requester, userID, org string, consented []string) error {
	// The audience: the resources the request names (or the default
	// resource), and the audiences fosite checked against the client's.
	if err := p.ResolveResources(ar); err != nil {
		return err
	}
	requested := []string(ar.GetRequestedScopes())
	if consented != nil {
		requested = scope.Intersect(requested, consented)
	}
	granted, err := flows.EffectiveScopes(ctx, p.cfg.Directory, ar.GetClient(), userID, org, requested)
	switch {
	case errors.Is(err, ErrUserNotFound), errors.Is(err, ErrUserDisabled):
		return fosite.ErrAccessDenied.WithHint("The user can no longer act.")
	case err != nil:
		p.cfg.Logger.ErrorContext(ctx, "deputy: granting scopes", "err", err)
		return fosite.ErrServerError.WithWrap(err)
	}
	// In the order requested, as fosite would have granted them.
	var ordered []string
	for _, s := range ar.GetRequestedScopes() {
		if scope.Contains(granted, s) && !scope.Contains(ordered, s) {
			ordered = append(ordered, s)
		}
	}
	if err := flows.SetGrantedScopes(ar, ordered); err != nil {
		p.cfg.Logger.ErrorContext(ctx, "deputy: granting scopes", "err", err)
		return fosite.ErrServerError.WithWrap(err)
	}
	if err := p.approve(ctx, ar, userID, org, ordered); err != nil {
		if errors.Is(err, storage.ErrUnavailable) {
			p.cfg.Logger.ErrorContext(ctx, "deputy: recording an approval: database unavailable", "err", err)
			return fosite.ErrTemporarilyUnavailable.WithWrap(err)
		}
		p.cfg.Logger.ErrorContext(ctx, "deputy: recording an approval", "err", err)
		return fosite.ErrServerError.WithWrap(err)
	}
	for _, a := range ar.GetRequestedAudience() {
		ar.GrantAudience(a)
	}
	return nil
}

// approve records the write scopes granted to an agent client as the
// user's approval for this authorization (flows.Approvals): an agent grant
// bound to (org, user, client, the authorization's request id) that expires
// after Config.GrantLifespan, listed and revocable on the user's grants
// page. Other clients' grants, and grants without a write scope, record
// nothing.
func (p *Plugin) approve(ctx context.Context, ar fosite.Requester, userID, org string, granted []string) error {
	if !flows.IsAgentClient(ar.GetClient()) {
		return nil
	}
	writes := p.approvals().Writes(granted)
	if len(writes) == 0 {
		return nil
	}
	_, err := p.cfg.Store.ApproveAgentGrant(ctx, org, userID, ar.GetClient().GetID(), flows.ApprovalSession(ar), writes, p.now().Add(p.cfg.GrantLifespan))
	if err == nil {
		p.metrics.consentEvent(storage.AuditApproved)
	}
	return err
}

// TokenEndpointGuard wraps the host's token, introspection and revocation
// endpoints: the client-authentication failure limiter
// (Config.ClientAuthLimit), a body cap, no-store answers, the refusal of a
// parameter included more than once (400 invalid_request, RFC 6749 §3.2;
// fosite would act on the first value), and the record of which of
// deputy's secrets authenticated a request, which the token of an owned app
// carries so that it dies with its secret. deputy's client-credentials
// handler refuses to issue a token without it.
//
// It also starts the endpoint's span and counts deputy's metrics: token
// requests (those with a grant_type) by grant type and outcome, and
// client-authentication failures.
func (p *Plugin) TokenEndpointGuard(next http.Handler) http.Handler {
	return p.guard(endpointUnknown, next)
}
