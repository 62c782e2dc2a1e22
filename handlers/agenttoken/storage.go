package agenttoken

import (
	"context"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// KeyStorage keeps the agent-token signing keys, shared by every replica on
// the same database. storage.Store implements it.
type KeyStorage interface {
	// SigningKeys returns the keys still published at at.
	SigningKeys(ctx context.Context, at time.Time) ([]*storage.SigningKey, error)
	// CreateFirstSigningKey stores k as the active key unless the store
	// already has one; false when another replica won.
	CreateFirstSigningKey(ctx context.Context, k *storage.SigningKey) (bool, error)
	// RotateSigningKeys makes k the active key, keeping the others published
	// for retain; storage.ErrConflict when a concurrent rotation won.
	RotateSigningKeys(ctx context.Context, k *storage.SigningKey, retain time.Duration) error
}

// GrantStorage reads what a user approved for an agent session of one agent
// platform (client). storage.Store implements it.
type GrantStorage interface {
	// AgentGrantScopes returns the scopes approved for (org, user, client,
	// session) and unexpired at at, or nil when there is none (always for
	// an empty clientID).
	AgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, error)
}

var (
	_ KeyStorage   = (*storage.Store)(nil)
	_ GrantStorage = (*storage.Store)(nil)
)
