package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/jsonread"
	"github.com/deputyauth/deputy/internal/jsonwrite"
)

// stringList is a []string kept in one TEXT column as a JSON array.
type stringList []string

// Value writes the list as encoding/json does (jsonwrite: every token
// stores four lists), nil as [].
func (l stringList) Value() (driver.Value, error) {
	if l == nil {
		return "[]", nil
	}
	var buf [256]byte
	return string(jsonwrite.Strings(buf[:0], l)), nil
}

// Scan reads a list as json.Unmarshal does; what Value writes is parsed
// without it (internal/jsonread), the strings sharing one copy of the column.
func (l *stringList) Scan(src any) error {
	var text string
	switch v := src.(type) {
	case string:
		text = v
	case []byte:
		text = string(v) // the driver reuses v
	case nil:
		*l = nil
		return nil
	default:
		return fmt.Errorf("storage: cannot scan %T into a string list", src)
	}
	p := jsonread.New(text)
	if vals, ok := p.Strings(); ok && p.Done() {
		*l = vals
		return nil
	}
	*l = nil
	return json.Unmarshal([]byte(text), (*[]string)(l))
}

// Client is a fosite client: deputy calls it an app. An app that may use
// client_credentials has an owner, whose authority its tokens carry.
type Client struct {
	ID                      string     `db:"id"`
	Name                    string     `db:"name"`
	IconURL                 string     `db:"icon_url"`
	RedirectURIs            stringList `db:"redirect_uris"`
	GrantTypes              stringList `db:"grant_types"`
	ResponseTypes           stringList `db:"response_types"`
	Scopes                  stringList `db:"scopes"`
	Audience                stringList `db:"audience"`
	TokenEndpointAuthMethod string     `db:"token_endpoint_auth_method"`
	Public                  bool       `db:"public"`
	// FirstParty clients skip the host's consent screen.
	FirstParty bool `db:"first_party"`
	// Agent clients act for whoever authorizes them (MCP clients): the
	// write scopes a user grants them at the authorization endpoint are an
	// approval that lasts the grant lifespan, not as long as the refresh
	// token (flows.Approvals).
	Agent       bool           `db:"agent"`
	OwnerUserID sql.NullString `db:"owner_user_id"`
	CreatedAt   time.Time      `db:"created_at"`
	UpdatedAt   time.Time      `db:"updated_at"`

	// Registration is how a client that came without a person came:
	// RegistrationDynamic or RegistrationMetadataDocument; "" for an app a
	// person made (the apps API, the host).
	Registration string `db:"registration"`
	// RegistrationTokenHash is the SHA-256 hash of a dynamic client's RFC
	// 7592 registration access token; nil for every other client.
	RegistrationTokenHash []byte `db:"registration_token_hash"`
	// UnusedExpiresAt is when a registration that has never had a token
	// issued is deleted by DeleteExpired; not Valid for every other client,
	// and cleared by MarkClientUsed.
	UnusedExpiresAt sql.NullTime `db:"unused_expires_at"`

	// Revision is bumped by every change to the row and to the client's
	// secrets (migration 0007): a copy of the client held in memory is
	// current while the row still has its revision (PinClient). A new row
	// starts at a random revision, so that a client deleted and created
	// again under the same id does not pass for the copy of the old one.
	Revision int64 `db:"revision"`

	// SecretHashes are the SHA-256 hashes of the client's live secrets,
	// filled by GetClient. Any of them authenticates the client.
	SecretHashes [][]byte `db:"-"`
	// SecretIDs are the ids of those secrets, in the same order.
	SecretIDs []string `db:"-"`
}

var (
	_ fosite.Client                   = (*Client)(nil)
	_ fosite.ClientWithSecretRotation = (*Client)(nil)
)

func (c *Client) GetID() string { return c.ID }

// GetHashedSecret returns the first live secret's hash; fosite tries
// GetRotatedHashes for the rest, which is how several secrets coexist.
func (c *Client) GetHashedSecret() []byte {
	if len(c.SecretHashes) == 0 {
		return nil
	}
	return c.SecretHashes[0]
}

func (c *Client) GetRotatedHashes() [][]byte {
	if len(c.SecretHashes) < 2 {
		return nil
	}
	return c.SecretHashes[1:]
}

func (c *Client) GetRedirectURIs() []string          { return c.RedirectURIs }
func (c *Client) GetGrantTypes() fosite.Arguments    { return fosite.Arguments(c.GrantTypes) }
func (c *Client) GetResponseTypes() fosite.Arguments { return fosite.Arguments(c.ResponseTypes) }
func (c *Client) GetScopes() fosite.Arguments        { return fosite.Arguments(c.Scopes) }
func (c *Client) IsPublic() bool                     { return c.Public }
func (c *Client) GetAudience() fosite.Arguments      { return fosite.Arguments(c.Audience) }

// IsAgent reports whether the client is an agent (see Agent): marked so,
// or registered without a person (dynamically or by metadata document),
// which is always an agent.
func (c *Client) IsAgent() bool { return c.Agent || c.Registration != "" }

// GetName is the app's display name: what the consent pages call the agent
// platform an approval is for.
func (c *Client) GetName() string { return c.Name }

// HasSecret reports whether the secret with id is still live.
func (c *Client) HasSecret(id string) bool { return slices.Contains(c.SecretIDs, id) }

// SecretIDFor returns the id of the live secret whose hash is hash, "" for
// none.
func (c *Client) SecretIDFor(hash []byte) string {
	for i, h := range c.SecretHashes {
		if bytes.Equal(h, hash) && i < len(c.SecretIDs) {
			return c.SecretIDs[i]
		}
	}
	return ""
}

// How a client that came without a person came (Client.Registration).
const (
	// RegistrationDynamic: registered itself with RFC 7591 dynamic
	// registration; managed with RFC 7592 and its registration access
	// token.
	RegistrationDynamic = "dynamic"
	// RegistrationMetadataDocument: a client whose id is the URL of a
	// client ID metadata document it hosts. The row is a copy of the
	// document, kept so that token lookups find their client; the document
	// itself is the client's truth.
	RegistrationMetadataDocument = "metadata_document"
)

// Unverified reports whether the client registered itself: nobody at the
// IdP vouched for its name, so consent pages say so.
func (c *Client) Unverified() bool { return c.Registration != "" }

// RegistrationUnused reports whether the client is a registration that has
// not had a token issued yet (MarkClientUsed records the first).
func (c *Client) RegistrationUnused() bool { return c.UnusedExpiresAt.Valid }

// Owner returns the owning user's id, or "" for an unowned client.
func (c *Client) Owner() string { return c.OwnerUserID.String }

// SetOwner sets the owning user ("" for none).
func (c *Client) SetOwner(userID string) {
	c.OwnerUserID = sql.NullString{String: userID, Valid: userID != ""}
}

const clientColumns = `id, name, icon_url, redirect_uris, grant_types, response_types, scopes, audience,
	token_endpoint_auth_method, public, first_party, agent, owner_user_id, created_at, updated_at,
	registration, registration_token_hash, unused_expires_at`

// clientSelectColumns are clientColumns and the revision, which only the
// store sets: newRevision on insert, one more on every change.
const clientSelectColumns = clientColumns + `, revision`

// newRevision is a new client row's first revision: random, below 2^62 so
// that bumps never overflow a BIGINT.
func newRevision() int64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("storage: crypto/rand failed: " + err.Error()) // the OS has no entropy; nothing is safe
	}
	return int64(binary.BigEndian.Uint64(b[:])>>2) | 1
}

// CreateClient inserts c, setting its timestamps. ErrConflict if the id exists.
func (s *Store) CreateClient(ctx context.Context, c *Client) error {
	c.CreatedAt = now()
	c.UpdatedAt = c.CreatedAt
	if c.TokenEndpointAuthMethod == "" {
		c.TokenEndpointAuthMethod = "client_secret_basic"
	}
	revision := newRevision()
	_, err := s.exec(ctx, `INSERT INTO clients (`+clientSelectColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Name, c.IconURL, c.RedirectURIs, c.GrantTypes, c.ResponseTypes, c.Scopes, c.Audience,
		c.TokenEndpointAuthMethod, c.Public, c.FirstParty, c.Agent, c.OwnerUserID, c.CreatedAt, c.UpdatedAt,
		c.Registration, c.RegistrationTokenHash, utcNullTime(c.UnusedExpiresAt), revision)
	if err != nil {
		return fmt.Errorf("storage: client %q: %w", c.ID, err)
	}
	c.Revision = revision
	return nil
}

// UpdateClient replaces the mutable fields of the client with c.ID. How
// the client registered, its registration token and its unused expiry are
// not among them: they change only with the client's registration
// (MarkClientUsed, SaveMetadataDocumentClient), so that an update racing
// with the client's first token cannot mark it unused again.
func (s *Store) UpdateClient(ctx context.Context, c *Client) error {
	c.UpdatedAt = now()
	res, err := s.exec(ctx, `UPDATE clients SET name = ?, icon_url = ?, redirect_uris = ?, grant_types = ?,
		response_types = ?, scopes = ?, audience = ?, token_endpoint_auth_method = ?, public = ?,
		first_party = ?, agent = ?, owner_user_id = ?, updated_at = ?, revision = revision + 1 WHERE id = ?`,
		c.Name, c.IconURL, c.RedirectURIs, c.GrantTypes, c.ResponseTypes, c.Scopes, c.Audience,
		c.TokenEndpointAuthMethod, c.Public, c.FirstParty, c.Agent, c.OwnerUserID, c.UpdatedAt, c.ID)
	if err != nil {
		return err
	}
	return oneRow(res)
}

// DeleteClient removes the client, its secrets (ON DELETE CASCADE) and every
// request it was issued, in one transaction, so those tokens stop
// introspecting at once. The token tables have no foreign key to clients:
// on PostgreSQL each insert would lock the client's row FOR KEY SHARE, and
// the token endpoint's concurrent inserts for one client then share that
// lock through a MultiXact on every request (docs/performance.md). A token
// row whose client is gone is dead anyway: every token lookup joins clients.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.exec(ctx, `DELETE FROM clients WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if err := oneRow(res); err != nil {
			return err
		}
		for _, t := range []requestTable{accessTable, refreshTable, codesTable, pkceTable, oidcTable} {
			if _, err := s.exec(ctx, `DELETE FROM `+string(t)+` WHERE client_id = ?`, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// clientRow is a client joined with at most one of its secrets.
type clientRow struct {
	Client
	SecretHash []byte         `db:"secret_hash"`
	SecretID   sql.NullString `db:"secret_id"`
}

// GetClient loads a client and all its secret hashes in one round trip; it
// implements fosite.ClientManager. fosite.ErrNotFound when there is none.
func (s *Store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	return s.Client(ctx, id)
}

// Client is GetClient with the concrete type.
func (s *Store) Client(ctx context.Context, id string) (*Client, error) {
	var rows []clientRow
	err := s.selectPrepared(ctx, &rows, `SELECT c.id, c.name, c.icon_url, c.redirect_uris, c.grant_types,
		c.response_types, c.scopes, c.audience, c.token_endpoint_auth_method, c.public, c.first_party,
		c.agent, c.owner_user_id, c.created_at, c.updated_at, c.registration, c.registration_token_hash,
		c.unused_expires_at, c.revision, s.secret_hash, s.id AS secret_id
		FROM clients c LEFT JOIN client_secrets s ON s.client_id = c.id
		WHERE c.id = ? ORDER BY s.created_at DESC`, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("storage: client %q: %w", id, fosite.ErrNotFound)
	}
	c := rows[0].Client
	for _, r := range rows {
		if r.SecretHash != nil {
			c.SecretHashes = append(c.SecretHashes, r.SecretHash)
			c.SecretIDs = append(c.SecretIDs, r.SecretID.String)
		}
	}
	return &c, nil
}

// ListClients returns clients, newest first; ownerUserID "" lists all.
func (s *Store) ListClients(ctx context.Context, ownerUserID string) ([]*Client, error) {
	var cs []*Client
	var err error
	if ownerUserID == "" {
		err = s.selectAll(ctx, &cs, `SELECT `+clientSelectColumns+` FROM clients ORDER BY created_at DESC, id`)
	} else {
		err = s.selectAll(ctx, &cs, `SELECT `+clientSelectColumns+` FROM clients WHERE owner_user_id = ? ORDER BY created_at DESC, id`, ownerUserID)
	}
	return cs, err
}

// MarkClientUsed records that a registration had its first token issued:
// it is no longer swept as unused. Calling it again, or for a client that
// is no registration, changes nothing. It leaves the revision alone: it is
// called by the token request it records, whose pinned client (PinClient)
// must stay current, and it changes nothing a token request checks.
func (s *Store) MarkClientUsed(ctx context.Context, id string) error {
	_, err := s.exec(ctx, `UPDATE clients SET unused_expires_at = NULL WHERE id = ? AND unused_expires_at IS NOT NULL`, id)
	return err
}

// SaveMetadataDocumentClient stores c, a client known by its client ID
// metadata document (c.Registration is RegistrationMetadataDocument), or
// refreshes the copy stored before: name, icon, redirect URIs, grant and
// response types and scopes. A copy not yet used keeps its unused expiry
// moved to c's; a used one stays used. ErrConflict when c.ID belongs to a
// client that is not a metadata document's.
func (s *Store) SaveMetadataDocumentClient(ctx context.Context, c *Client) error {
	if c.Registration != RegistrationMetadataDocument {
		return fmt.Errorf("storage: client %q: %w: not a metadata document client", c.ID, ErrInvalidInput)
	}
	c.CreatedAt = now()
	c.UpdatedAt = c.CreatedAt
	if c.TokenEndpointAuthMethod == "" {
		c.TokenEndpointAuthMethod = "none"
	}
	res, err := s.exec(ctx, `INSERT INTO clients (`+clientSelectColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, icon_url = excluded.icon_url,
			redirect_uris = excluded.redirect_uris, grant_types = excluded.grant_types,
			response_types = excluded.response_types, scopes = excluded.scopes, agent = excluded.agent,
			updated_at = excluded.updated_at, revision = clients.revision + 1,
			unused_expires_at = CASE WHEN clients.unused_expires_at IS NULL THEN NULL ELSE excluded.unused_expires_at END
		WHERE clients.registration = excluded.registration`,
		c.ID, c.Name, c.IconURL, c.RedirectURIs, c.GrantTypes, c.ResponseTypes, c.Scopes, c.Audience,
		c.TokenEndpointAuthMethod, c.Public, c.FirstParty, c.Agent, c.OwnerUserID, c.CreatedAt, c.UpdatedAt,
		c.Registration, c.RegistrationTokenHash, utcNullTime(c.UnusedExpiresAt), newRevision())
	if err != nil {
		return fmt.Errorf("storage: client %q: %w", c.ID, err)
	}
	if err := oneRow(res); err != nil {
		return fmt.Errorf("storage: client %q: %w: the id is another client's", c.ID, ErrConflict)
	}
	return nil
}

// utcNullTime is t in UTC, truncated to what both dialects keep.
func utcNullTime(t sql.NullTime) sql.NullTime {
	if !t.Valid {
		return t
	}
	return sql.NullTime{Time: t.Time.UTC().Truncate(time.Microsecond), Valid: true}
}

// ClientAssertionJWTValid reports fosite.ErrJTIKnown when jti was seen and
// has not expired.
func (s *Store) ClientAssertionJWTValid(ctx context.Context, jti string) error {
	var exp time.Time
	err := s.get(ctx, &exp, `SELECT expires_at FROM oauth2_jti WHERE jti = ?`, jti)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if exp.After(time.Now()) {
		return fosite.ErrJTIKnown
	}
	return nil
}

// SetClientAssertionJWT records jti until exp, sweeping expired ids first as
// fosite's contract asks. A jti still live is fosite.ErrJTIKnown.
func (s *Store) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		if _, err := s.exec(ctx, `DELETE FROM oauth2_jti WHERE expires_at < ?`, now()); err != nil {
			return err
		}
		_, err := s.exec(ctx, `INSERT INTO oauth2_jti (jti, expires_at) VALUES (?, ?)`, jti, exp.UTC())
		if errors.Is(err, ErrConflict) {
			return fosite.ErrJTIKnown
		}
		return err
	})
}

func oneRow(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fosite.ErrNotFound
	}
	return nil
}
