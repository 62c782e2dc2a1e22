package consent

import (
	"context"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// GrantStorage keeps users' approvals (agent grants), one per organization,
// user, agent platform (client) and agent session. storage.Store implements
// it.
type GrantStorage interface {
	// ApproveAgentGrant merges scopes into the grant, creating it if
	// needed, moves its expiry to expiresAt and records an "approved" audit
	// event, atomically.
	ApproveAgentGrant(ctx context.Context, org, userID, clientID, sessionID string, scopes []string, expiresAt time.Time) (*storage.AgentGrant, error)
	// AgentGrantScopes returns the scopes of the unexpired grant, or nil.
	AgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, error)
	// ListAgentGrants returns userID's unexpired grants, newest first.
	ListAgentGrants(ctx context.Context, userID string, at time.Time) ([]*storage.AgentGrant, error)
	// RevokeAgentGrant deletes grant id if it is userID's, recording a
	// "revoked" audit event; storage.ErrNotFound otherwise.
	RevokeAgentGrant(ctx context.Context, userID, id string) error
}

// AuditStorage appends to the audit log. storage.Store implements it.
type AuditStorage interface {
	AppendAudit(ctx context.Context, e *storage.AuditEvent) error
}

// Storage is what the consent handler keeps its state in.
type Storage interface {
	GrantStorage
	AuditStorage
}

var _ Storage = (*storage.Store)(nil)
