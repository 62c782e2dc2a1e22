package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"
)

// AgentGrant is a user's standing approval of scopes for one agent session
// of one agent platform (client) in one organization. The binding is
// (organization, user, client, session): a grant unlocks nothing for
// another client that happens to use the same session id. Grants written
// before the client was part of the binding have ClientID "" and unlock
// nothing.
type AgentGrant struct {
	ID             string     `db:"id" json:"id"`
	Organization   string     `db:"organization" json:"organization"`
	UserID         string     `db:"user_id" json:"userId"`
	ClientID       string     `db:"client_id" json:"clientId"`
	AgentSessionID string     `db:"agent_session_id" json:"sessionId"`
	Scopes         stringList `db:"scopes" json:"scopes"`
	CreatedAt      time.Time  `db:"created_at" json:"createdAt"`
	UpdatedAt      time.Time  `db:"updated_at" json:"updatedAt"`
	ExpiresAt      time.Time  `db:"expires_at" json:"expiresAt"`
}

// ScopeList returns the granted scopes as a plain slice.
func (g *AgentGrant) ScopeList() []string { return []string(g.Scopes) }

const grantColumns = `id, organization, user_id, client_id, agent_session_id, scopes, created_at, updated_at, expires_at`

// Audit event names.
const (
	AuditApproved = "approved"
	AuditDenied   = "denied"
	AuditRevoked  = "revoked"
)

// AuditEvent is one row of the append-only audit log.
type AuditEvent struct {
	ID             int64      `db:"id" json:"id"`
	Event          string     `db:"event" json:"event"`
	ActorUserID    string     `db:"actor_user_id" json:"actor"`
	Organization   string     `db:"organization" json:"organization"`
	ClientID       string     `db:"client_id" json:"clientId"`
	AgentSessionID string     `db:"agent_session_id" json:"sessionId"`
	Scopes         stringList `db:"scopes" json:"scopes"`
	GrantID        string     `db:"grant_id" json:"grantId,omitempty"`
	CreatedAt      time.Time  `db:"created_at" json:"createdAt"`
}

// NewID returns a random identifier of n bytes, hex-encoded.
func NewID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("storage: crypto/rand failed: " + err.Error()) // the OS has no entropy; nothing is safe
	}
	return hex.EncodeToString(b)
}

// ApproveAgentGrant merges scopes into the one grant for (org, user, client,
// session), creating it if needed, sets its expiry to expiresAt, and appends
// an "approved" audit event, all in one transaction. Concurrent approvals of
// the same binding serialise on the row, so none of their scopes is lost.
// clientID must not be empty: an approval is always for one agent platform.
func (s *Store) ApproveAgentGrant(ctx context.Context, org, userID, clientID, sessionID string, scopes []string, expiresAt time.Time) (*AgentGrant, error) {
	if clientID == "" {
		return nil, errors.New("storage: approve agent grant: the client is required")
	}
	var g AgentGrant
	err := s.InTx(ctx, func(ctx context.Context) error {
		t := now()
		// Insert or touch the row first: the upsert takes the row lock in
		// PostgreSQL (and SQLite's immediate transaction holds the database),
		// so the read-merge-write below cannot interleave with another.
		if _, err := s.exec(ctx, `INSERT INTO agent_grants (`+grantColumns+`) VALUES (?, ?, ?, ?, ?, '[]', ?, ?, ?)
			ON CONFLICT (organization, user_id, client_id, agent_session_id) DO UPDATE SET updated_at = excluded.updated_at`,
			NewID(16), org, userID, clientID, sessionID, t, t, expiresAt.UTC()); err != nil {
			return err
		}
		if err := s.get(ctx, &g, `SELECT `+grantColumns+` FROM agent_grants
			WHERE organization = ? AND user_id = ? AND client_id = ? AND agent_session_id = ?`, org, userID, clientID, sessionID); err != nil {
			return err
		}
		// Scopes of an expired grant do not carry over into a new approval.
		prior := []string(g.Scopes)
		if g.ExpiresAt.Before(t) {
			prior = nil
		}
		g.Scopes = mergeScopes(prior, scopes)
		g.UpdatedAt = t
		g.ExpiresAt = expiresAt.UTC().Truncate(time.Microsecond)
		if _, err := s.exec(ctx, `UPDATE agent_grants SET scopes = ?, updated_at = ?, expires_at = ? WHERE id = ?`,
			g.Scopes, g.UpdatedAt, g.ExpiresAt, g.ID); err != nil {
			return err
		}
		return s.AppendAudit(ctx, &AuditEvent{Event: AuditApproved, ActorUserID: userID, Organization: org,
			ClientID: clientID, AgentSessionID: sessionID, Scopes: stringList(scopes), GrantID: g.ID})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: approve agent grant: %w", err)
	}
	return &g, nil
}

func mergeScopes(a, b []string) stringList {
	seen := map[string]struct{}{}
	out := stringList{}
	for _, s := range append(append([]string{}, a...), b...) {
		if _, ok := seen[s]; ok || s == "" {
			continue
		}
		seen[s] = struct{}{}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// AgentGrantScopes returns the scopes of the unexpired grant for (org, user,
// client, session) at time at, or nil. It is the one indexed query an
// agent-token mint makes (the binding's unique index), or none when the
// subject token's lookup read the grant already (PrefetchAgentGrant). An empty clientID
// finds nothing: no client is "no client".
func (s *Store) AgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, error) {
	if clientID == "" {
		return nil, nil
	}
	if scopes, ok, err := prefetchedGrant(ctx, org, userID, clientID, sessionID, at); ok {
		return scopes, err
	}
	if revision, pinned := pinnedRevision(ctx, clientID); pinned {
		return s.pinnedAgentGrantScopes(ctx, org, userID, clientID, sessionID, at, revision)
	}
	var scopes stringList
	err := s.getPrepared(ctx, &scopes, `SELECT scopes FROM agent_grants
		WHERE organization = ? AND user_id = ? AND client_id = ? AND agent_session_id = ? AND expires_at > ?`,
		org, userID, clientID, sessionID, at.UTC())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("storage: agent grant scopes: %w", err)
	}
	return []string(scopes), nil
}

// pinnedAgentGrantScopes is AgentGrantScopes for a client read earlier in
// the request (PinClient), maybe from a cache: the same indexed grant
// lookup, joined to the client's row at its pinned revision, so that the
// one query also says whether the client is still as it was read.
// ErrStaleClient when it is not.
func (s *Store) pinnedAgentGrantScopes(ctx context.Context, org, userID, clientID, sessionID string, at time.Time, revision int64) ([]string, error) {
	var rows []struct {
		Scopes sql.Null[stringList] `db:"scopes"`
	}
	err := s.selectPrepared(ctx, &rows, `SELECT g.scopes FROM clients c
		LEFT JOIN agent_grants g ON g.organization = ? AND g.user_id = ? AND g.client_id = c.id
			AND g.agent_session_id = ? AND g.expires_at > ?
		WHERE c.id = ? AND c.revision = ?`,
		org, userID, sessionID, at.UTC(), clientID, revision)
	if err != nil {
		return nil, fmt.Errorf("storage: agent grant scopes: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("storage: agent grant scopes: client %q: %w", clientID, ErrStaleClient)
	}
	if !rows[0].Scopes.Valid {
		return nil, nil
	}
	return []string(rows[0].Scopes.V), nil
}

// ListAgentGrants returns userID's unexpired grants, newest first.
func (s *Store) ListAgentGrants(ctx context.Context, userID string, at time.Time) ([]*AgentGrant, error) {
	var gs []*AgentGrant
	err := s.selectAll(ctx, &gs, `SELECT `+grantColumns+` FROM agent_grants
		WHERE user_id = ? AND expires_at > ? ORDER BY updated_at DESC, id`, userID, at.UTC())
	return gs, err
}

// RevokeAgentGrant deletes grant id if userID holds it, appending a "revoked"
// audit event. ErrNotFound for a grant that is not userID's.
func (s *Store) RevokeAgentGrant(ctx context.Context, userID, id string) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		var g AgentGrant
		err := s.get(ctx, &g, `SELECT `+grantColumns+` FROM agent_grants WHERE id = ? AND user_id = ?`, id, userID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: agent grant %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := s.exec(ctx, `DELETE FROM agent_grants WHERE id = ?`, id); err != nil {
			return err
		}
		return s.AppendAudit(ctx, &AuditEvent{Event: AuditRevoked, ActorUserID: userID, Organization: g.Organization,
			ClientID: g.ClientID, AgentSessionID: g.AgentSessionID, Scopes: g.Scopes, GrantID: g.ID})
	})
}

// AppendAudit appends e, stamping its time.
func (s *Store) AppendAudit(ctx context.Context, e *AuditEvent) error {
	e.CreatedAt = now()
	_, err := s.exec(ctx, `INSERT INTO audit_events (event, actor_user_id, organization, client_id, agent_session_id, scopes, grant_id, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, e.Event, e.ActorUserID, e.Organization, e.ClientID, e.AgentSessionID, e.Scopes, e.GrantID, e.CreatedAt)
	return err
}

// ListAudit returns the audit events whose actor is userID ("" for all), oldest first.
func (s *Store) ListAudit(ctx context.Context, userID string) ([]*AuditEvent, error) {
	var es []*AuditEvent
	var err error
	const cols = `id, event, actor_user_id, organization, client_id, agent_session_id, scopes, grant_id, created_at`
	if userID == "" {
		err = s.selectAll(ctx, &es, `SELECT `+cols+` FROM audit_events ORDER BY id`)
	} else {
		err = s.selectAll(ctx, &es, `SELECT `+cols+` FROM audit_events WHERE actor_user_id = ? ORDER BY id`, userID)
	}
	return es, err
}
