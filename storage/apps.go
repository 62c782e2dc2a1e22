package storage

import (
	"context"
	"database/sql"
	"fmt"
	"github.com/deputyauth/deputy/internal/protocol"
	"sort"
	"time"
)

// ClientSecret is what deputy keeps of an app's secret: never the secret,
// only its SHA-256 hash (which is not exposed here) and what a person needs
// to recognise it.
type ClientSecret struct {
	ID            string       `db:"id"`
	ClientID      string       `db:"client_id"`
	DisplayPrefix string       `db:"display_prefix"`
	CreatedAt     time.Time    `db:"created_at"`
	LastUsedAt    sql.NullTime `db:"last_used_at"`
}

const secretColumns = `id, client_id, display_prefix, created_at, last_used_at`

// CreateClientSecret stores the hash of a new secret of clientID.
// ErrNotFound when the client does not exist; ErrConflict when the hash is
// already stored (which, for 256-bit random secrets, means a caller bug).
func (s *Store) CreateClientSecret(ctx context.Context, clientID string, hash []byte, displayPrefix string) (*ClientSecret, error) {
	cs := &ClientSecret{
		ID:            NewID(16),
		ClientID:      clientID,
		DisplayPrefix: displayPrefix,
		CreatedAt:     now(),
	}
	// INSERT … SELECT inserts nothing for a missing client, which is cheaper
	// to recognise in both dialects than a foreign-key error.
	err := s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.exec(ctx, `INSERT INTO client_secrets (id, client_id, secret_hash, display_prefix, created_at)
			SELECT ?, id, ?, ?, ? FROM clients WHERE id = ?`,
			cs.ID, hash, cs.DisplayPrefix, cs.CreatedAt, clientID)
		if err != nil {
			return fmt.Errorf("storage: client secret: %w", err)
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("storage: client %q: %w", clientID, err)
		}
		return s.bumpRevision(ctx, clientID)
	})
	if err != nil {
		return nil, err
	}
	return cs, nil
}

// bumpRevision marks a change to clientID's secrets: copies of the client
// held in memory with the old revision stop issuing tokens (PinClient).
func (s *Store) bumpRevision(ctx context.Context, clientID string) error {
	_, err := s.exec(ctx, `UPDATE clients SET revision = revision + 1 WHERE id = ?`, clientID)
	return err
}

// ListClientSecrets returns the secrets of clientID, newest first.
func (s *Store) ListClientSecrets(ctx context.Context, clientID string) ([]*ClientSecret, error) {
	var out []*ClientSecret
	err := s.selectAll(ctx, &out, `SELECT `+secretColumns+` FROM client_secrets
		WHERE client_id = ? ORDER BY created_at DESC, id`, clientID)
	return out, err
}

// CountClientSecrets returns how many secrets clientID has.
func (s *Store) CountClientSecrets(ctx context.Context, clientID string) (int, error) {
	var n int
	err := s.get(ctx, &n, `SELECT COUNT(*) FROM client_secrets WHERE client_id = ?`, clientID)
	return n, err
}

// DeleteClientSecret removes one secret of clientID. The next token request
// with it fails, on every replica: the client's revision moves on, so no
// copy of the client held in memory issues another token (PinClient).
// ErrNotFound when clientID has no such secret.
//
// The access tokens the secret obtained (their stored form names it under
// protocol.SecretIDFormKey) are deleted with it, in the same transaction,
// so that they stop working at once and the token lookup needs no second
// query to find out.
func (s *Store) DeleteClientSecret(ctx context.Context, clientID, secretID string) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.exec(ctx, `DELETE FROM client_secrets WHERE id = ? AND client_id = ?`, secretID, clientID)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return fmt.Errorf("storage: client secret %q: %w", secretID, err)
		}
		if err := s.bumpRevision(ctx, clientID); err != nil {
			return err
		}
		// form_data is the JSON of the sanitized url.Values, keys sorted:
		// the stamp appears exactly as below. Secret ids are hex, so the
		// pattern holds no LIKE wildcard.
		stamp := `%"` + protocol.SecretIDFormKey + `":["` + secretID + `"]%`
		_, err = s.exec(ctx, `DELETE FROM `+string(accessTable)+` WHERE client_id = ? AND form_data LIKE ?`, clientID, stamp)
		return err
	})
}

// TouchClientSecret records that the secret with this hash authenticated at
// at. Callers throttle it; it is not meant to run on every token request.
func (s *Store) TouchClientSecret(ctx context.Context, hash []byte, at time.Time) error {
	_, err := s.exec(ctx, `UPDATE client_secrets SET last_used_at = ? WHERE secret_hash = ?`,
		at.UTC().Truncate(time.Microsecond), hash)
	return err
}

// AuthorizedApp is an app holding live tokens that act for a user.
type AuthorizedApp struct {
	Client *Client
	// Scopes is the union of the scopes granted to the app's live tokens.
	Scopes []string
	// LastAuthorizedAt is when the newest of those tokens was issued.
	LastAuthorizedAt time.Time
}

// ListAuthorizedApps returns the apps holding live (active, unexpired)
// access or refresh tokens whose subject is userID, most recent first.
func (s *Store) ListAuthorizedApps(ctx context.Context, userID string) ([]*AuthorizedApp, error) {
	type tokenRow struct {
		ClientID      string     `db:"client_id"`
		GrantedScopes stringList `db:"granted_scopes"`
		RequestedAt   time.Time  `db:"requested_at"`
	}
	var rows []tokenRow
	t := now()
	err := s.selectAll(ctx, &rows, `SELECT client_id, granted_scopes, requested_at FROM oauth2_access_tokens
			WHERE subject = ? AND active AND (expires_at IS NULL OR expires_at > ?)
		UNION ALL
		SELECT client_id, granted_scopes, requested_at FROM oauth2_refresh_tokens
			WHERE subject = ? AND active AND (expires_at IS NULL OR expires_at > ?)`,
		userID, t, userID, t)
	if err != nil {
		return nil, err
	}
	byClient := map[string]*AuthorizedApp{}
	scopes := map[string][]string{}
	for _, r := range rows {
		a, ok := byClient[r.ClientID]
		if !ok {
			a = &AuthorizedApp{}
			byClient[r.ClientID] = a
		}
		if r.RequestedAt.After(a.LastAuthorizedAt) {
			a.LastAuthorizedAt = r.RequestedAt
		}
		scopes[r.ClientID] = append(scopes[r.ClientID], r.GrantedScopes...)
	}
	out := make([]*AuthorizedApp, 0, len(byClient))
	for id, a := range byClient {
		c, err := s.Client(ctx, id)
		if err != nil {
			return nil, err
		}
		c.SecretHashes = nil
		a.Client = c
		a.Scopes = normalize(scopes[id])
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastAuthorizedAt.Equal(out[j].LastAuthorizedAt) {
			return out[i].LastAuthorizedAt.After(out[j].LastAuthorizedAt)
		}
		return out[i].Client.ID < out[j].Client.ID
	})
	return out, nil
}

// RevokeClientTokensForSubject ends every token and pending authorization
// code clientID holds for userID, in one transaction. Refresh tokens and
// codes are kept inactive so that a later use is recognised as reuse.
// ErrNotFound when there was nothing live to revoke.
func (s *Store) RevokeClientTokensForSubject(ctx context.Context, clientID, userID string) error {
	var n int64
	err := s.InTx(ctx, func(ctx context.Context) error {
		for _, q := range []string{
			`DELETE FROM oauth2_access_tokens WHERE client_id = ? AND subject = ?`,
			`UPDATE oauth2_refresh_tokens SET active = FALSE WHERE client_id = ? AND subject = ? AND active`,
			`UPDATE oauth2_authorize_codes SET active = FALSE WHERE client_id = ? AND subject = ? AND active`,
		} {
			res, err := s.exec(ctx, q, clientID, userID)
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("storage: tokens of client %q for user: %w", clientID, ErrNotFound)
	}
	return nil
}

// normalize sorts s and drops duplicates and empties.
func normalize(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if v == "" || (i > 0 && v == s[i-1]) {
			continue
		}
		out = append(out, v)
	}
	return out
}
