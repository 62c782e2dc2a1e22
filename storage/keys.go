package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SigningKey is one agent-token signing key. The store keeps the private half
// sealed by the caller; it never sees it in the clear.
type SigningKey struct {
	ID         string       `db:"id"`
	Algorithm  string       `db:"algorithm"`
	PublicKey  []byte       `db:"public_key"`
	PrivateKey []byte       `db:"private_key"`
	Active     bool         `db:"active"`
	CreatedAt  time.Time    `db:"created_at"`
	RetiredAt  sql.NullTime `db:"retired_at"`
	DropAfter  sql.NullTime `db:"drop_after"`
}

const signingKeyColumns = `id, algorithm, public_key, private_key, active, created_at, retired_at, drop_after`

// SigningKeys returns the keys still published at time at: the active one
// first, then retired ones newest first.
func (s *Store) SigningKeys(ctx context.Context, at time.Time) ([]*SigningKey, error) {
	var ks []*SigningKey
	err := s.selectAll(ctx, &ks, `SELECT `+signingKeyColumns+` FROM signing_keys
		WHERE active OR drop_after IS NULL OR drop_after > ?
		ORDER BY active DESC, created_at DESC, id`, at.UTC())
	if err != nil {
		return nil, fmt.Errorf("storage: signing keys: %w", err)
	}
	return ks, nil
}

// CreateFirstSigningKey stores k as the active key unless there already is
// one, and reports whether k was stored. Replicas starting together may all
// call it: the unique index on the active flag lets exactly one win, and the
// others read the winner back with SigningKeys.
func (s *Store) CreateFirstSigningKey(ctx context.Context, k *SigningKey) (bool, error) {
	k.Active = true
	k.CreatedAt = now()
	k.RetiredAt, k.DropAfter = sql.NullTime{}, sql.NullTime{}
	res, err := s.exec(ctx, `INSERT INTO signing_keys (`+signingKeyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		k.ID, k.Algorithm, k.PublicKey, k.PrivateKey, true, k.CreatedAt, nil, nil)
	if err != nil {
		return false, fmt.Errorf("storage: create signing key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("storage: create signing key: %w", err)
	}
	return n == 1, nil
}

// RotateSigningKeys makes k the active key in one transaction: the key active
// until now is retired and kept for retain (the longest a token it signed may
// still be valid), and keys whose retention has run out are deleted. A
// rotation racing another one fails with ErrConflict rather than leaving two
// active keys; the caller may retry.
func (s *Store) RotateSigningKeys(ctx context.Context, k *SigningKey, retain time.Duration) error {
	err := s.InTx(ctx, func(ctx context.Context) error {
		t := now()
		if _, err := s.exec(ctx, `UPDATE signing_keys SET active = ?, retired_at = ?, drop_after = ? WHERE active`,
			false, t, t.Add(retain)); err != nil {
			return err
		}
		if _, err := s.exec(ctx, `DELETE FROM signing_keys WHERE NOT active AND drop_after IS NOT NULL AND drop_after <= ?`, t); err != nil {
			return err
		}
		k.Active = true
		k.CreatedAt = t
		k.RetiredAt, k.DropAfter = sql.NullTime{}, sql.NullTime{}
		_, err := s.exec(ctx, `INSERT INTO signing_keys (`+signingKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			k.ID, k.Algorithm, k.PublicKey, k.PrivateKey, true, k.CreatedAt, nil, nil)
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("signing key rotation raced another: %w", err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("storage: rotate signing keys: %w", err)
	}
	return nil
}

// DeleteDroppedSigningKeys deletes retired keys whose retention ended before
// at, returning how many went.
func (s *Store) DeleteDroppedSigningKeys(ctx context.Context, at time.Time) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM signing_keys WHERE NOT active AND drop_after IS NOT NULL AND drop_after <= ?`, at.UTC())
	if err != nil {
		return 0, fmt.Errorf("storage: delete dropped signing keys: %w", err)
	}
	return res.RowsAffected()
}
