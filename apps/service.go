// Package apps is the one owner of deputy's apps (the OAuth2 clients deputy
// stores): what an app may be, who may see and change it, and its secrets.
// The apps API (plugin), the demo IdP's settings pages and its command line
// are transports over one Service, the way Hydra keeps client/validator.go
// apart from client/handler.go: they decode their input, call the Service
// with the caller's user id, and map its typed errors (FieldError naming the
// field, ErrForbidden, ErrNotFound, …) to their own answers.
//
// Two ways in. A user (Service.Create, Update, …) may make a
// client_credentials app owned by themselves, and an administrator (Config.
// IsAdmin) also an authorization_code app, which has no owner; neither ever
// the agent-token grant. An administrator's tool (Service.AdminCreate) may
// make any client: an agent platform, a public or first-party client, an
// app owned by any user. The input rules themselves (scope tokens, redirect
// URIs, grant types) come from internal/protocol.
package apps

import (
	"context"
	"errors"
	"fmt"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// Store is what the Service needs of deputy's storage; *storage.Store
// implements it.
type Store interface {
	Client(ctx context.Context, id string) (*storage.Client, error)
	ListClients(ctx context.Context, ownerUserID string) ([]*storage.Client, error)
	CreateClient(ctx context.Context, c *storage.Client) error
	UpdateClient(ctx context.Context, c *storage.Client) error
	DeleteClient(ctx context.Context, id string) error

	CreateClientSecret(ctx context.Context, clientID string, hash []byte, displayPrefix string) (*storage.ClientSecret, error)
	ListClientSecrets(ctx context.Context, clientID string) ([]*storage.ClientSecret, error)
	CountClientSecrets(ctx context.Context, clientID string) (int, error)
	DeleteClientSecret(ctx context.Context, clientID, secretID string) error

	ListAuthorizedApps(ctx context.Context, userID string) ([]*storage.AuthorizedApp, error)
	RevokeClientTokensForSubject(ctx context.Context, clientID, userID string) error

	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// Config configures a Service. Store is required.
type Config struct {
	Store Store
	// Catalog, when it has entries, is the only scopes an app may hold
	// (with the protocol scopes openid and offline_access on an app that
	// acts for whoever consents). Default: any scope token.
	Catalog *scope.Catalog
	// IsAdmin reports whether userID manages every user's apps. Default:
	// nobody does.
	IsAdmin func(ctx context.Context, userID string) bool
}

// Service creates, reads, changes and deletes apps and their secrets.
type Service struct {
	store   Store
	catalog *scope.Catalog
	isAdmin func(ctx context.Context, userID string) bool
}

// New returns the Service of cfg.
func New(cfg Config) *Service {
	s := &Service{store: cfg.Store, catalog: cfg.Catalog, isAdmin: cfg.IsAdmin}
	if s.isAdmin == nil {
		s.isAdmin = func(context.Context, string) bool { return false }
	}
	return s
}

// Create makes an app for caller: a client_credentials app (the default)
// owned by caller, or, for an administrator, an authorization_code app
// without an owner. It has no secret yet (CreateSecret).
func (s *Service) Create(ctx context.Context, caller string, in Input) (*storage.Client, error) {
	c, err := s.newUserApp(ctx, caller, in)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateClient(ctx, c); err != nil {
		return nil, fmt.Errorf("apps: create app: %w", err)
	}
	return c, nil
}

// CreateWithSecret is Create with the app's first secret, stored in the
// same transaction. The secret is returned once and kept nowhere.
func (s *Service) CreateWithSecret(ctx context.Context, caller string, in Input) (*storage.Client, string, error) {
	c, err := s.newUserApp(ctx, caller, in)
	if err != nil {
		return nil, "", err
	}
	secret, err := s.storeWithSecret(ctx, c)
	if err != nil {
		return nil, "", err
	}
	return c, secret, nil
}

// newUserApp validates a user's app and fills in its id and owner.
func (s *Service) newUserApp(ctx context.Context, caller string, in Input) (*storage.Client, error) {
	c := &storage.Client{ID: storage.NewID(appIDBytes)}
	if err := apply(c, AdminInput{Input: in}, userPath, s.catalog); err != nil {
		return nil, err
	}
	if c.GetGrantTypes().Has(protocol.GrantTypeClientCredentials) {
		c.SetOwner(caller)
	} else if !s.isAdmin(ctx, caller) {
		// An authorization_code app has no owner (it acts for whoever
		// consents), so nobody but an administrator could manage it.
		return nil, forbidden(FieldGrantTypes, "only an administrator may create an authorization_code app")
	}
	return c, nil
}

// AdminCreate makes any client an administrator may: an agent platform
// (the agent-token grant, which no user ever gives), a public or
// first-party authorization_code client, a client_credentials app owned by
// in.Owner. A confidential client's first secret is stored in the same
// transaction and returned once; a public client has none ("").
func (s *Service) AdminCreate(ctx context.Context, in AdminInput) (*storage.Client, string, error) {
	c := &storage.Client{ID: storage.NewID(appIDBytes)}
	if err := apply(c, in, adminPath, s.catalog); err != nil {
		return nil, "", err
	}
	if c.Public {
		if err := s.store.CreateClient(ctx, c); err != nil {
			return nil, "", fmt.Errorf("apps: create client: %w", err)
		}
		return c, "", nil
	}
	secret, err := s.storeWithSecret(ctx, c)
	if err != nil {
		return nil, "", err
	}
	return c, secret, nil
}

// storeWithSecret stores c and its first secret in one transaction.
func (s *Service) storeWithSecret(ctx context.Context, c *storage.Client) (string, error) {
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		return "", fmt.Errorf("apps: generate secret: %w", err)
	}
	err = s.store.InTx(ctx, func(ctx context.Context) error {
		if err := s.store.CreateClient(ctx, c); err != nil {
			return err
		}
		_, err := s.store.CreateClientSecret(ctx, c.ID, hash, prefix)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("apps: create app with secret: %w", err)
	}
	return secret, nil
}

// Get returns app id if caller may manage it: its owner or an
// administrator. Anyone else gets ErrNotFound, as for an app that does not
// exist, so app ids cannot be probed. The secrets' hashes are not loaded.
func (s *Service) Get(ctx context.Context, caller, id string) (*storage.Client, error) {
	c, err := s.store.Client(ctx, id)
	// An id the database cannot even hold (a NUL byte or invalid UTF-8 on
	// PostgreSQL) names no app either.
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("apps: load app: %w", err)
	}
	if c.Owner() != caller && !s.isAdmin(ctx, caller) {
		return nil, ErrNotFound
	}
	c.SecretHashes, c.SecretIDs = nil, nil
	return c, nil
}

// List returns the apps of owner, newest first. owner "" means all the
// caller may manage: every app for an administrator, the caller's own for
// anyone else. Only an administrator may list another user's apps
// (ErrForbidden).
func (s *Service) List(ctx context.Context, caller, owner string) ([]*storage.Client, error) {
	switch {
	case owner == "" && !s.isAdmin(ctx, caller):
		owner = caller
	case owner != "" && owner != caller && !s.isAdmin(ctx, caller):
		return nil, fmt.Errorf("only an administrator may list another user's apps: %w", ErrForbidden)
	}
	cs, err := s.store.ListClients(ctx, owner)
	if err != nil {
		return nil, fmt.Errorf("apps: list apps: %w", err)
	}
	return cs, nil
}

// Update replaces what caller may set on app id with in. Empty GrantTypes
// keeps the app's; an app never changes between client_credentials and
// authorization_code (whom its tokens act for would change silently). A
// client only an administrator's tools make (public, or with the
// agent-token grant) is refused: those tools change it.
func (s *Service) Update(ctx context.Context, caller, id string, in Input) (*storage.Client, error) {
	c, err := s.Get(ctx, caller, id)
	if err != nil {
		return nil, err
	}
	if c.Public {
		return nil, invalid(FieldPublic, "a public client is changed with an administrator's tools")
	}
	if c.Registration != "" {
		// Its metadata is its registration's (RFC 7592) or its document's;
		// an administrator may delete it.
		return nil, invalid(FieldName, "a client that registered itself is changed through its registration, not here; delete it instead")
	}
	wasCC := c.GetGrantTypes().Has(protocol.GrantTypeClientCredentials)
	if len(in.GrantTypes) == 0 {
		in.GrantTypes = c.GrantTypes
	}
	next := *c
	if err := apply(&next, AdminInput{Input: in}, userPath, s.catalog); err != nil {
		return nil, err
	}
	if next.GetGrantTypes().Has(protocol.GrantTypeClientCredentials) != wasCC {
		return nil, invalid(FieldGrantTypes, "an app cannot change between client_credentials and authorization_code; create a new app")
	}
	if err := s.store.UpdateClient(ctx, &next); errors.Is(err, storage.ErrNotFound) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("apps: update app: %w", err)
	}
	return &next, nil
}

// Delete deletes app id with its secrets and every token it holds.
func (s *Service) Delete(ctx context.Context, caller, id string) error {
	c, err := s.Get(ctx, caller, id)
	if err != nil {
		return err
	}
	if err := s.store.DeleteClient(ctx, c.ID); errors.Is(err, storage.ErrNotFound) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("apps: delete app: %w", err)
	}
	return nil
}

// CreateSecret adds a secret to app id, at most MaxSecretsPerApp of them,
// and returns it once: only its hash is kept.
func (s *Service) CreateSecret(ctx context.Context, caller, id string) (*storage.ClientSecret, string, error) {
	c, err := s.Get(ctx, caller, id)
	if err != nil {
		return nil, "", err
	}
	// Checked before the insert, so two concurrent requests may end one
	// over the limit; the limit is housekeeping, not a security boundary.
	n, err := s.store.CountClientSecrets(ctx, c.ID)
	if err != nil {
		return nil, "", fmt.Errorf("apps: count secrets: %w", err)
	}
	if n >= MaxSecretsPerApp {
		return nil, "", &FieldError{Field: FieldSecrets, Err: ErrTooManySecrets,
			Message: fmt.Sprintf("an app has at most %d secrets; delete one first", MaxSecretsPerApp)}
	}
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		return nil, "", fmt.Errorf("apps: generate secret: %w", err)
	}
	cs, err := s.store.CreateClientSecret(ctx, c.ID, hash, prefix)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("apps: create secret: %w", err)
	}
	return cs, secret, nil
}

// ListSecrets returns the secrets of app id, newest first.
func (s *Service) ListSecrets(ctx context.Context, caller, id string) ([]*storage.ClientSecret, error) {
	c, err := s.Get(ctx, caller, id)
	if err != nil {
		return nil, err
	}
	ss, err := s.store.ListClientSecrets(ctx, c.ID)
	if err != nil {
		return nil, fmt.Errorf("apps: list secrets: %w", err)
	}
	return ss, nil
}

// DeleteSecret deletes one secret of app id: it stops authenticating at
// once, and the access tokens it obtained die with it.
func (s *Service) DeleteSecret(ctx context.Context, caller, id, secretID string) error {
	c, err := s.Get(ctx, caller, id)
	if err != nil {
		return err
	}
	err = s.store.DeleteClientSecret(ctx, c.ID, secretID)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		return ErrSecretNotFound
	}
	if err != nil {
		return fmt.Errorf("apps: delete secret: %w", err)
	}
	return nil
}

// ListAuthorized returns the apps holding live tokens that act for caller,
// most recent first.
func (s *Service) ListAuthorized(ctx context.Context, caller string) ([]*storage.AuthorizedApp, error) {
	as, err := s.store.ListAuthorizedApps(ctx, caller)
	if err != nil {
		return nil, fmt.Errorf("apps: list authorized apps: %w", err)
	}
	return as, nil
}

// RevokeAuthorized ends every token app id holds for caller.
// ErrNotAuthorized when it holds none (already revoked, or not an app
// holding anything of the caller's).
func (s *Service) RevokeAuthorized(ctx context.Context, caller, id string) error {
	err := s.store.RevokeClientTokensForSubject(ctx, id, caller)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		return ErrNotAuthorized
	}
	if err != nil {
		return fmt.Errorf("apps: revoke authorized app: %w", err)
	}
	return nil
}
