package plugin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/registration"
	"github.com/deputyauth/deputy/storage"
)

// This file is clients that register themselves (Config.ClientRegistration):
// the RFC 7591/7592 endpoint Handler serves, and Client ID Metadata
// Documents, served through GetClient (kit mode's store, plugin mode's
// WrapStorage) so that fosite's authorize and token flows see an ordinary
// public client.

// RegistrationPath is where Handler serves RFC 7591 dynamic registration,
// below MountPath; RFC 7592 management of a client is at
// RegistrationPath/<client_id>.
const RegistrationPath = "/oauth2/register"

// enableRegistration builds what Config.ClientRegistration turns on.
func (p *Plugin) enableRegistration() error {
	cr := p.cfg.ClientRegistration
	if !cr.Dynamic && !cr.MetadataDocuments {
		return nil
	}
	policy := registration.Policy{
		Scopes:          cr.Scopes,
		AuthMethods:     cr.AuthMethods,
		UnusedLifetime:  cr.UnusedLifetime,
		MaxRedirectURIs: cr.MaxRedirectURIs,
	}
	if len(policy.Scopes) == 0 {
		for _, e := range p.catalog.Entries() {
			policy.Scopes = append(policy.Scopes, e.Name)
		}
		if len(policy.Scopes) == 0 {
			return errors.New("deputy: invalid config: ClientRegistration.Scopes: required when Config.Scopes is empty")
		}
		policy.Scopes = append(policy.Scopes, "offline", "offline_access")
	}
	policy, err := policy.WithDefaults()
	if err != nil {
		return fmt.Errorf("deputy: invalid config: ClientRegistration: %w", err)
	}
	p.registrationPolicy = policy
	if cr.Dynamic {
		p.registration, err = registration.New(registration.Config{
			Store:   p.cfg.Store,
			Policy:  policy,
			Path:    p.cfg.MountPath + RegistrationPath,
			BaseURL: p.registrationEndpoint(),
			Limit:   cr.Limit,
			Source:  cr.Source,
			Logger:  p.cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("deputy: invalid config: ClientRegistration: %w", err)
		}
	}
	if cr.MetadataDocuments {
		p.documents, err = registration.NewDocuments(registration.DocumentsConfig{
			Policy:        policy,
			AllowLoopback: cr.AllowLoopbackDocuments,
			Timeout:       cr.DocumentTimeout,
			MaxBytes:      cr.DocumentMaxBytes,
			MinCache:      cr.DocumentMinCache,
			MaxCache:      cr.DocumentMaxCache,
			Logger:        p.cfg.Logger,
		})
		if err != nil {
			return fmt.Errorf("deputy: invalid config: ClientRegistration: %w", err)
		}
		if cr.AllowLoopbackDocuments {
			p.cfg.Logger.Warn("deputy: client metadata documents may be fetched from loopback addresses (ClientRegistration.AllowLoopbackDocuments): for development and tests only")
		}
	}
	return nil
}

// registrationEndpoint is the public URL of RegistrationPath; "" without
// dynamic registration.
func (p *Plugin) registrationEndpoint() string {
	if !p.cfg.ClientRegistration.Dynamic {
		return ""
	}
	return p.cfg.Issuer + p.cfg.MountPath + RegistrationPath
}

// RegistrationMetadata is what a plugin-mode host adds to its own RFC 8414
// metadata document for Config.ClientRegistration (kit mode's Metadata
// has it already): embed it in the host's metadata struct.
type RegistrationMetadata struct {
	RegistrationEndpoint              string `json:"registration_endpoint,omitempty"`
	ClientIDMetadataDocumentSupported bool   `json:"client_id_metadata_document_supported,omitempty"`
}

// RegistrationMetadata returns the metadata fields of
// Config.ClientRegistration: registration_endpoint with Dynamic,
// client_id_metadata_document_supported with MetadataDocuments.
func (p *Plugin) RegistrationMetadata() RegistrationMetadata {
	return RegistrationMetadata{
		RegistrationEndpoint:              p.registrationEndpoint(),
		ClientIDMetadataDocumentSupported: p.documents != nil,
	}
}

// errDocumentCopy is GetClient's answer for the stored copy of a metadata
// document's client asked for by its id with documents turned off: the
// copy only serves its tokens' lookups; the document is the client.
var errDocumentCopy = fmt.Errorf("%w: a metadata document client, and metadata documents are off", fosite.ErrNotFound)

// lookupClient is GetClient for deputy's own clients, in either mode: a
// client_id that is a metadata document's URL is the document's (with
// Config.ClientRegistration.MetadataDocuments), anything else one of
// deputy's clients.
func (p *Plugin) lookupClient(ctx context.Context, id string) (fosite.Client, *storage.Client, error) {
	if p.documents != nil && p.documents.IsDocumentID(id) {
		c, err := p.documents.Client(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		return c, nil, nil
	}
	c, err := p.cfg.Store.Client(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if c.Registration == storage.RegistrationMetadataDocument {
		return nil, nil, errDocumentCopy
	}
	return nil, c, nil
}

// kitStorage is deputy's store as kit mode's provider uses it: clients
// looked up by lookupClient, and a metadata document's client copied into
// the clients table when it is issued an authorization code, so that the
// lookups of its code and tokens (which join their client) find it.
type kitStorage struct {
	storage.Backend
	p *Plugin
}

func (k kitStorage) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	if c := k.p.clients.cached(ctx, id); c != nil {
		return c, nil
	}
	doc, c, err := k.p.lookupClient(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case doc != nil:
		return kitDocumentClient{doc.(*registration.DocumentClient)}, nil
	}
	k.p.clients.remember(ctx, c)
	return c, nil
}

func (k kitStorage) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	if doc, ok := r.GetClient().(kitDocumentClient); ok {
		c := doc.StorageClient()
		c.UnusedExpiresAt = sql.NullTime{Time: time.Now().Add(k.p.registrationPolicy.UnusedLifetime), Valid: true}
		if err := k.Backend.SaveMetadataDocumentClient(ctx, c); err != nil {
			return err
		}
	}
	return k.Backend.CreateAuthorizeCodeSession(ctx, signature, r)
}

// kitDocumentClient is a metadata document's client in kit mode, whose
// stored copy is marked used by its first token
// (flows.RegistrationUsageHandler): whether it was is the copy's to say,
// so every code exchange asks (an UPDATE that changes nothing after the
// first).
type kitDocumentClient struct{ *registration.DocumentClient }

func (kitDocumentClient) RegistrationUnused() bool { return true }

// ClientView is what a consent screen shows of the client an
// authorization request is for (DescribeClient).
type ClientView struct {
	ID string
	// Name is the client's display name, "" when it has none.
	Name string
	// Unverified: the client registered itself (dynamic registration, a
	// metadata document); nobody at the IdP vouched for its name. Show it.
	Unverified bool
	// MetadataDocument: the client's id is the URL of its metadata
	// document, whose host vouches for it as much as any web page does.
	MetadataDocument bool
	// RedirectHost is where the response will go: the redirect URI's host
	// (and port), or its scheme for a private-use scheme
	// ("com.example.app:"). Show it, above all for an unverified client.
	RedirectHost string
	// FirstParty clients skip consent (see storage.Client.FirstParty).
	FirstParty bool
}

// DescribeClient returns what a consent screen shows of ar's client. A
// host's own consent screen (plugin mode) or the demo's (kit mode) names
// the client with it and says when it is unverified.
func DescribeClient(ar fosite.AuthorizeRequester) ClientView {
	c := ar.GetClient()
	v := ClientView{ID: c.GetID()}
	if n, ok := c.(interface{ GetName() string }); ok {
		v.Name = n.GetName()
	}
	if u, ok := c.(interface{ Unverified() bool }); ok {
		v.Unverified = u.Unverified()
	}
	if sc, ok := c.(*storage.Client); ok {
		v.FirstParty = sc.FirstParty && !sc.Unverified()
	}
	_, v.MetadataDocument = c.(*registration.DocumentClient)
	if k, ok := c.(kitDocumentClient); ok && k.DocumentClient != nil {
		v.MetadataDocument = true
	}
	v.RedirectHost = redirectHost(ar.GetRedirectURI())
	return v
}

func redirectHost(u *url.URL) string {
	switch {
	case u == nil:
		return ""
	case u.Host != "":
		return u.Host
	default:
		return u.Scheme + ":"
	}
}
