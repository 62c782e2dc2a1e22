package storage

import (
	"context"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	fositestorage "github.com/ory/fosite/storage"
)

// Backend is everything deputy asks of its storage: fosite's storage
// interfaces (kit mode's provider), and deputy's apps and secrets, agent
// grants, audit log, signing keys, expiry sweep, migrations and health.
// *Store implements it; the conformance suite (storage/conformance) is
// what another implementation must pass. The plugin takes a Backend, not a
// *Store, so that no concrete store type sits in the seam a host sees.
//
// A Backend may also check client pins (ClientPinChecker, PinnedRevision,
// the suite's PinnedClient): only then does kit mode's token endpoint keep
// clients in memory.
//
// Errors follow this package's contract: ErrNotFound for a missing row,
// ErrConflict for a duplicate, ErrInvalidInput for a value the database
// cannot hold, ErrUnavailable when it cannot be reached, tested with
// errors.Is.
type Backend interface {
	fosite.ClientManager
	oauth2.CoreStorage
	oauth2.TokenRevocationStorage
	pkce.PKCERequestStorage
	openid.OpenIDConnectRequestStorage
	fositestorage.Transactional

	CreateClient(ctx context.Context, c *Client) error
	UpdateClient(ctx context.Context, c *Client) error
	DeleteClient(ctx context.Context, id string) error
	Client(ctx context.Context, id string) (*Client, error)
	ListClients(ctx context.Context, ownerUserID string) ([]*Client, error)
	MarkClientUsed(ctx context.Context, id string) error
	SaveMetadataDocumentClient(ctx context.Context, c *Client) error

	CreateClientSecret(ctx context.Context, clientID string, hash []byte, displayPrefix string) (*ClientSecret, error)
	ListClientSecrets(ctx context.Context, clientID string) ([]*ClientSecret, error)
	CountClientSecrets(ctx context.Context, clientID string) (int, error)
	DeleteClientSecret(ctx context.Context, clientID, secretID string) error
	TouchClientSecret(ctx context.Context, hash []byte, at time.Time) error

	ListAuthorizedApps(ctx context.Context, userID string) ([]*AuthorizedApp, error)
	RevokeClientTokensForSubject(ctx context.Context, clientID, userID string) error

	ApproveAgentGrant(ctx context.Context, org, userID, clientID, sessionID string, scopes []string, expiresAt time.Time) (*AgentGrant, error)
	AgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, error)
	ListAgentGrants(ctx context.Context, userID string, at time.Time) ([]*AgentGrant, error)
	RevokeAgentGrant(ctx context.Context, userID, id string) error

	AppendAudit(ctx context.Context, e *AuditEvent) error
	ListAudit(ctx context.Context, userID string) ([]*AuditEvent, error)

	SigningKeys(ctx context.Context, at time.Time) ([]*SigningKey, error)
	CreateFirstSigningKey(ctx context.Context, k *SigningKey) (bool, error)
	RotateSigningKeys(ctx context.Context, k *SigningKey, retain time.Duration) error
	DeleteDroppedSigningKeys(ctx context.Context, at time.Time) (int64, error)

	DeleteExpired(ctx context.Context, before time.Time) (int64, error)
	Migrate(ctx context.Context) error
	SchemaVersion(ctx context.Context) (int, error)

	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	Ping(ctx context.Context) error
	Health() Health
}

var _ Backend = (*Store)(nil)
