package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	fositestorage "github.com/ory/fosite/storage"

	"github.com/deputyauth/deputy/internal/jsonread"
	"github.com/deputyauth/deputy/internal/jsonwrite"
)

var (
	_ fosite.ClientManager               = (*Store)(nil)
	_ oauth2.AuthorizeCodeStorage        = (*Store)(nil)
	_ oauth2.AccessTokenStorage          = (*Store)(nil)
	_ oauth2.RefreshTokenStorage         = (*Store)(nil)
	_ oauth2.TokenRevocationStorage      = (*Store)(nil)
	_ oauth2.CoreStorage                 = (*Store)(nil)
	_ pkce.PKCERequestStorage            = (*Store)(nil)
	_ openid.OpenIDConnectRequestStorage = (*Store)(nil)
	_ fositestorage.Transactional        = (*Store)(nil)
)

// requestTable names a table holding one kind of fosite request.
type requestTable string

const (
	codesTable   requestTable = "oauth2_authorize_codes"
	accessTable  requestTable = "oauth2_access_tokens"
	refreshTable requestTable = "oauth2_refresh_tokens"
	pkceTable    requestTable = "oauth2_pkce"
	oidcTable    requestTable = "oauth2_oidc"
)

// secretFormFields never reach a row: they are credentials, and a database
// dump must not be a key ring.
var secretFormFields = []string{
	"client_secret", "password", "code", "code_verifier", "refresh_token",
	"token", "subject_token", "actor_token", "assertion", "client_assertion",
	"access_token", "id_token_hint",
}

// appendSanitizedForm appends form without secretFormFields, byte for byte
// the JSON encoding/json gives such a url.Values, without copying the map
// or the map encoder's reflection and key sorting: the form is encoded with
// every token.
func appendSanitizedForm(dst []byte, form url.Values) []byte {
	dst, _ = jsonwrite.Map(dst, form, notSecretFormField, appendStrings) // appendStrings never fails
	return dst
}

func notSecretFormField(k string) bool { return !slices.Contains(secretFormFields, k) }

func appendStrings(dst []byte, v []string) ([]byte, error) { return jsonwrite.Strings(dst, v), nil }

// jsonAppender is a session that appends its own JSON, the same bytes as
// encoding/json's (flows.Session): every token stores its session, and
// encoding/json's reflection over fosite's claims was a measurable share
// of a token's allocations.
type jsonAppender interface {
	AppendJSON(dst []byte) ([]byte, error)
}

// encodeBufs holds the scratch space of a row's JSON columns, which are
// copied into strings for the driver.
var encodeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// decodeForm decodes a stored form into *form as json.Unmarshal does. The
// form appendSanitizedForm writes (compact, plain ASCII, no escapes) is
// parsed here, its keys and values sharing data's memory; anything else,
// older rows included, goes to json.Unmarshal. The agent-token grant
// decodes its subject token's form on every mint.
func decodeForm(data string, form *url.Values) error {
	if *form != nil && parsePlainForm(data, *form) {
		return nil
	}
	clear(*form)
	return json.Unmarshal([]byte(data), form)
}

// parsePlainForm parses {"key":["value",...] or null,...} into form, and
// reports false at the first thing it does not expect.
func parsePlainForm(s string, form url.Values) bool {
	p := jsonread.New(s)
	if !p.Next('{') {
		return false
	}
	if p.Next('}') {
		return p.Done()
	}
	for {
		k, ok := p.Str()
		if !ok || !p.Next(':') {
			return false
		}
		vals, ok := p.Strings()
		if !ok {
			return false
		}
		form[k] = vals
		if p.Next('}') {
			return p.Done()
		}
		if !p.Next(',') {
			return false
		}
	}
}

// requestRow is a stored fosite request.
type requestRow struct {
	Signature         string       `db:"signature"`
	RequestID         string       `db:"request_id"`
	ClientID          string       `db:"client_id"`
	Subject           string       `db:"subject"`
	RequestedAt       time.Time    `db:"requested_at"`
	ExpiresAt         sql.NullTime `db:"expires_at"`
	RequestedScopes   stringList   `db:"requested_scopes"`
	GrantedScopes     stringList   `db:"granted_scopes"`
	RequestedAudience stringList   `db:"requested_audience"`
	GrantedAudience   stringList   `db:"granted_audience"`
	FormData          string       `db:"form_data"`
	SessionData       string       `db:"session_data"`
	Active            bool         `db:"active"`
}

const requestColumns = `signature, request_id, client_id, subject, requested_at, expires_at,
	requested_scopes, granted_scopes, requested_audience, granted_audience, form_data, session_data, active`

func newRequestRow(signature string, r fosite.Requester, expiryOf fosite.TokenType) (*requestRow, error) {
	row := &requestRow{
		Signature:         signature,
		RequestID:         r.GetID(),
		ClientID:          r.GetClient().GetID(),
		RequestedAt:       r.GetRequestedAt().UTC(),
		RequestedScopes:   stringList(r.GetRequestedScopes()),
		GrantedScopes:     stringList(r.GetGrantedScopes()),
		RequestedAudience: stringList(r.GetRequestedAudience()),
		GrantedAudience:   stringList(r.GetGrantedAudience()),
		Active:            true,
	}
	if row.RequestedAt.IsZero() {
		row.RequestedAt = now()
	}
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	*buf = appendSanitizedForm((*buf)[:0], r.GetRequestForm())
	row.FormData = string(*buf)
	if sess := r.GetSession(); sess != nil {
		var err error
		if a, ok := sess.(jsonAppender); ok {
			*buf, err = a.AppendJSON((*buf)[:0])
		} else {
			*buf, err = json.Marshal(sess)
		}
		if err != nil {
			return nil, fmt.Errorf("storage: encode session: %w", err)
		}
		row.SessionData = string(*buf)
		row.Subject = sess.GetSubject()
		if exp := sess.GetExpiresAt(expiryOf); !exp.IsZero() {
			row.ExpiresAt = sql.NullTime{Time: exp.UTC(), Valid: true}
		}
	} else {
		row.SessionData = "{}"
	}
	return row, nil
}

// toRequest rebuilds the fosite request; session, when not nil, is filled
// from the stored session and becomes the request's session.
func (row *requestRow) toRequest(client fosite.Client, session fosite.Session) (*fosite.Request, error) {
	r := &fosite.Request{
		ID:                row.RequestID,
		RequestedAt:       row.RequestedAt,
		Client:            client,
		RequestedScope:    fosite.Arguments(row.RequestedScopes),
		GrantedScope:      fosite.Arguments(row.GrantedScopes),
		RequestedAudience: fosite.Arguments(row.RequestedAudience),
		GrantedAudience:   fosite.Arguments(row.GrantedAudience),
		Form:              url.Values{},
		Session:           session,
	}
	if err := decodeForm(row.FormData, &r.Form); err != nil {
		return nil, fmt.Errorf("storage: decode form of request %s: %w", row.RequestID, err)
	}
	if d, ok := session.(sessionDecoder); ok {
		if err := d.DecodeJSON(row.SessionData); err != nil {
			return nil, fmt.Errorf("storage: decode session of request %s: %w", row.RequestID, err)
		}
	} else if session != nil {
		if err := json.Unmarshal([]byte(row.SessionData), session); err != nil {
			return nil, fmt.Errorf("storage: decode session of request %s: %w", row.RequestID, err)
		}
	}
	return r, nil
}

// sessionDecoder is a session that decodes its stored JSON itself, exactly
// as json.Unmarshal would (flows.Session, whose AppendJSON wrote it).
type sessionDecoder interface {
	DecodeJSON(data string) error
}

func (s *Store) createRequest(ctx context.Context, t requestTable, signature string, r fosite.Requester, expiryOf fosite.TokenType) error {
	row, err := newRequestRow(signature, r, expiryOf)
	if err != nil {
		return err
	}
	args := []any{row.Signature, row.RequestID, row.ClientID, row.Subject, row.RequestedAt, row.ExpiresAt,
		row.RequestedScopes, row.GrantedScopes, row.RequestedAudience, row.GrantedAudience,
		row.FormData, row.SessionData, row.Active}
	var pin []any
	user, userRevision, userPinned := pinnedUser(ctx)
	if revision, ok := pinnedRevision(ctx, row.ClientID); ok {
		pin = []any{row.ClientID, revision}
		if userPinned {
			pin = append(pin, user, userRevision)
		}
	} else if userPinned {
		// The user's scopes were taken from memory under another client's
		// pin: nothing here checks them, so nothing goes in.
		return fmt.Errorf("storage: %s: client %q not the pinned one: %w", t, row.ClientID, ErrStaleClient)
	}
	if t == accessTable && !s.InTransaction(ctx) {
		return s.insertAccessToken(ctx, row, args, pin)
	}
	if pin == nil {
		_, err = s.execPrepared(ctx, `INSERT INTO `+string(t)+` (`+requestColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		if errors.Is(err, ErrConflict) {
			return fmt.Errorf("storage: %s: %w", t, ErrConflict)
		}
		return err
	}
	// The client was read earlier, maybe from a cache (PinClient): the row
	// goes in only if the client's row still has that revision, decided by
	// the database in this one statement.
	res, err := s.execPrepared(ctx, pinnedInsert(t, s.flavor.shareLock, len(pin) == 4), append(args, pin...)...)
	if errors.Is(err, ErrConflict) {
		return fmt.Errorf("storage: %s: %w", t, ErrConflict)
	}
	if err != nil {
		return err
	}
	if err := oneRow(res); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("storage: %s: client %q: %w", t, row.ClientID, ErrStaleClient)
	} else if err != nil {
		return err
	}
	return nil
}

// joinedRequestRow is a stored request with its client's columns, so a token
// lookup is one indexed query and not two.
type joinedRequestRow struct {
	requestRow
	C Client `db:"c"`
}

// fields are the scan destinations of getRequest's columns, in their
// order: every token lookup scans one such row, and sqlx's matching of
// columns to fields by reflection was a measurable share of it
// (TestJoinedRequestFields compares the two).
func (row *joinedRequestRow) fields() []any {
	c := &row.C
	return []any{
		&row.Signature, &row.RequestID, &row.ClientID, &row.Subject, &row.RequestedAt, &row.ExpiresAt,
		&row.RequestedScopes, &row.GrantedScopes, &row.RequestedAudience, &row.GrantedAudience, &row.FormData,
		&row.SessionData, &row.Active,
		&c.ID, &c.Name, &c.IconURL, &c.RedirectURIs, &c.GrantTypes, &c.ResponseTypes, &c.Scopes, &c.Audience,
		&c.TokenEndpointAuthMethod, &c.Public, &c.FirstParty, &c.Agent, &c.OwnerUserID, &c.CreatedAt, &c.UpdatedAt,
		&c.Registration,
	}
}

const joinedClientColumns = `c.id AS "c.id", c.name AS "c.name", c.icon_url AS "c.icon_url",
	c.redirect_uris AS "c.redirect_uris", c.grant_types AS "c.grant_types",
	c.response_types AS "c.response_types", c.scopes AS "c.scopes", c.audience AS "c.audience",
	c.token_endpoint_auth_method AS "c.token_endpoint_auth_method", c.public AS "c.public",
	c.first_party AS "c.first_party", c.agent AS "c.agent", c.owner_user_id AS "c.owner_user_id",
	c.created_at AS "c.created_at", c.updated_at AS "c.updated_at", c.registration AS "c.registration"`

// getRequestQuery reads one request of table t, joined with its client, in
// the order of joinedRequestRow.fields.
func getRequestQuery(t requestTable) string {
	return `SELECT r.signature, r.request_id, r.client_id, r.subject, r.requested_at, r.expires_at,
		r.requested_scopes, r.granted_scopes, r.requested_audience, r.granted_audience, r.form_data,
		r.session_data, r.active, ` + joinedClientColumns + `
		FROM ` + string(t) + ` r JOIN clients c ON c.id = r.client_id WHERE r.signature = ?`
}

// getAccessTokenWithGrant is getRequest's query for an agent-token grant's
// subject token (PrefetchAgentGrant): the token and its client, the grant
// for (org, the token's subject, the pinned client, session) whatever its
// expiry, and the pinned client's revision, in one statement. The grant's
// unique binding and the clients' primary key keep it one row.
func (s *Store) getAccessTokenWithGrant(ctx context.Context, signature string, row *joinedRequestRow, pin *clientPin) error {
	l := &grantLookup{signature: signature, pin: pin}
	ctx, span := s.startSpan(ctx, accessTokensWithGrant[boolIndex(pin.grant.withUser)][1])
	var err error
	if s.InTransaction(ctx) {
		err = s.lookUpAccessTokensWithGrant(ctx, []*grantLookup{l})
	} else {
		err = s.grantLookups.Do(ctx, l, s.lookUpAccessTokensWithGrant)
	}
	if err == nil && !l.found {
		err = sql.ErrNoRows
	}
	s.observe(span, err)
	if err != nil {
		return err
	}
	*row = l.row
	g := &pin.grant
	g.fetched, g.userID = true, row.Subject
	g.current = l.revision.Valid && l.revision.Int64 == pin.revision
	g.userRevision = l.userRevision.Int64 // no row: 0
	if l.scopes.Valid && l.expires.Valid {
		g.scopes, g.expires = l.scopes.V, l.expires.Time
	}
	return nil
}

// getRequest loads a request by signature. An inactive request is returned
// together with inactiveErr, as fosite's reuse detection requires.
func (s *Store) getRequest(ctx context.Context, t requestTable, signature string, session fosite.Session, inactiveErr error) (fosite.Requester, error) {
	var row joinedRequestRow
	var err error
	if pin, ok := pendingPrefetch(ctx); ok && t == accessTable {
		err = s.getAccessTokenWithGrant(ctx, signature, &row, pin)
	} else {
		err = s.run(ctx, getRequestQuery(t), true, func(st statement) error {
			return st.QueryRowxContext(ctx, signature).Scan(row.fields()...)
		})
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("storage: %s: %w", t, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	client := row.C
	req, err := row.toRequest(&client, session)
	if err != nil {
		return nil, err
	}
	if !row.Active && inactiveErr != nil {
		return req, inactiveErr
	}
	return req, nil
}

func (s *Store) deleteRequest(ctx context.Context, t requestTable, signature string) error {
	res, err := s.exec(ctx, `DELETE FROM `+string(t)+` WHERE signature = ?`, signature)
	if err != nil {
		return err
	}
	if err := oneRow(res); err != nil {
		return fmt.Errorf("storage: %s: %w", t, err)
	}
	return nil
}

// Authorization codes.

func (s *Store) CreateAuthorizeCodeSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createRequest(ctx, codesTable, signature, r, fosite.AuthorizeCode)
}

func (s *Store) GetAuthorizeCodeSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.getRequest(ctx, codesTable, signature, session, fosite.ErrInvalidatedAuthorizeCode)
}

// InvalidateAuthorizeCodeSession marks a code used; a second use then finds
// it inactive and fosite revokes everything issued from it (RFC 6749 §4.1.2).
//
// Only an active code is invalidated, and the row count says whether this
// call did it: of two redemptions racing past fosite's read of the code,
// exactly one gets nil, and the other fosite.ErrInvalidatedAuthorizeCode
// (PostgreSQL makes the second UPDATE wait for the first's transaction,
// then finds the row inactive). A code that does not exist is ErrNotFound.
func (s *Store) InvalidateAuthorizeCodeSession(ctx context.Context, signature string) error {
	res, err := s.exec(ctx, `UPDATE oauth2_authorize_codes SET active = FALSE WHERE signature = ? AND active`, signature)
	if err != nil {
		return err
	}
	if err := oneRow(res); !errors.Is(err, ErrNotFound) {
		return err
	}
	var n int
	if err := s.get(ctx, &n, `SELECT COUNT(*) FROM oauth2_authorize_codes WHERE signature = ?`, signature); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("storage: %s: %w", codesTable, ErrNotFound)
	}
	return fmt.Errorf("storage: %s: %w", codesTable, fosite.ErrInvalidatedAuthorizeCode)
}

// Access tokens.

func (s *Store) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createRequest(ctx, accessTable, signature, r, fosite.AccessToken)
}

// GetAccessTokenSession returns fosite.ErrNotFound for a revoked token:
// revocation deletes access tokens, there is nothing to detect reuse of.
func (s *Store) GetAccessTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	req, err := s.getRequest(ctx, accessTable, signature, session, fosite.ErrInactiveToken)
	if errors.Is(err, fosite.ErrInactiveToken) {
		return nil, fmt.Errorf("storage: access token: %w", ErrNotFound)
	}
	return req, err
}

func (s *Store) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return s.deleteRequest(ctx, accessTable, signature)
}

// RevokeAccessToken deletes every access token of the request.
func (s *Store) RevokeAccessToken(ctx context.Context, requestID string) error {
	_, err := s.exec(ctx, `DELETE FROM oauth2_access_tokens WHERE request_id = ?`, requestID)
	return err
}

// Refresh tokens.

func (s *Store) CreateRefreshTokenSession(ctx context.Context, signature, accessSignature string, r fosite.Requester) error {
	if err := s.createRequest(ctx, refreshTable, signature, r, fosite.RefreshToken); err != nil {
		return err
	}
	if accessSignature == "" {
		return nil
	}
	_, err := s.exec(ctx, `UPDATE oauth2_refresh_tokens SET access_signature = ? WHERE signature = ?`, accessSignature, signature)
	return err
}

// GetRefreshTokenSession returns an inactive (rotated or revoked) token with
// fosite.ErrInactiveToken, so fosite can detect reuse and revoke the family.
func (s *Store) GetRefreshTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.getRequest(ctx, refreshTable, signature, session, fosite.ErrInactiveToken)
}

func (s *Store) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	return s.deleteRequest(ctx, refreshTable, signature)
}

// RevokeRefreshToken deactivates every refresh token of the request. They are
// kept, inactive, so that a later use is recognised as reuse.
//
// Only active rows are touched: a row already inactive is neither rewritten
// nor locked, so that revocations of one family racing with each other
// (reuse detected by several requests at once) do not lock the family's
// rows in different orders and deadlock on PostgreSQL.
func (s *Store) RevokeRefreshToken(ctx context.Context, requestID string) error {
	_, err := s.exec(ctx, `UPDATE oauth2_refresh_tokens SET active = FALSE WHERE request_id = ? AND active`, requestID)
	return err
}

// RotateRefreshToken retires the presented refresh token and the request's
// access tokens, as fosite v0.49 defines rotation: the old refresh token
// turns inactive (a replay is then detected as reuse) and the access tokens
// issued with it stop working. fosite then stores the new pair under the
// same request id, in the same transaction.
//
// fosite checks that the token is active before this, outside the
// transaction, so the check that decides is here: only the presented token,
// and only while it is still active, is retired, and the row count says
// whether this call did it. Of parallel refreshes with one token exactly one
// rotates (PostgreSQL makes the others' UPDATE wait for the winner's
// transaction, then finds the row inactive); the others get
// fosite.ErrInactiveToken, also when the row is gone, and the refresh grant
// (flows.RefreshTokenGrantHandler in handlers/flows) answers them as reuse.
func (s *Store) RotateRefreshToken(ctx context.Context, requestID string, refreshSignature string) error {
	return s.InTx(ctx, func(ctx context.Context) error {
		res, err := s.execPrepared(ctx, `UPDATE oauth2_refresh_tokens SET active = FALSE WHERE signature = ? AND request_id = ? AND active`, refreshSignature, requestID)
		if err != nil {
			return err
		}
		if err := oneRow(res); errors.Is(err, ErrNotFound) {
			return fmt.Errorf("storage: refresh token rotation: not the request's active refresh token: %w", fosite.ErrInactiveToken)
		} else if err != nil {
			return err
		}
		// The family has one active refresh token at a time; any other is
		// retired with it all the same.
		if err := s.RevokeRefreshToken(ctx, requestID); err != nil {
			return err
		}
		return s.RevokeAccessToken(ctx, requestID)
	})
}

// PKCE.

func (s *Store) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createRequest(ctx, pkceTable, signature, r, fosite.AuthorizeCode)
}

func (s *Store) GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	return s.getRequest(ctx, pkceTable, signature, session, nil)
}

func (s *Store) DeletePKCERequestSession(ctx context.Context, signature string) error {
	return s.deleteRequest(ctx, pkceTable, signature)
}

// OpenID Connect requests, keyed by authorization code.

func (s *Store) CreateOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) error {
	return s.createRequest(ctx, oidcTable, code, r, fosite.AuthorizeCode)
}

func (s *Store) GetOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) (fosite.Requester, error) {
	return s.getRequest(ctx, oidcTable, code, r.GetSession(), nil)
}

func (s *Store) DeleteOpenIDConnectSession(ctx context.Context, code string) error {
	return s.deleteRequest(ctx, oidcTable, code)
}

// DeleteExpired removes every row that expired before the given time: stored
// requests of every kind, seen JWT ids, agent grants, and registrations
// that never had a token issued (their secrets with them). It returns how
// many rows went.
func (s *Store) DeleteExpired(ctx context.Context, before time.Time) (int64, error) {
	before = before.UTC()
	var total int64
	for _, q := range expirySweeps {
		res, err := s.exec(ctx, q, before)
		if err != nil {
			return total, fmt.Errorf("storage: delete expired: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// expirySweeps are the statements DeleteExpired runs, each with one time
// argument. Tables that later migrations add list their sweep here.
var expirySweeps = []string{
	`DELETE FROM oauth2_authorize_codes WHERE expires_at < ?`,
	`DELETE FROM oauth2_access_tokens WHERE expires_at < ?`,
	`DELETE FROM oauth2_refresh_tokens WHERE expires_at < ?`,
	`DELETE FROM oauth2_pkce WHERE expires_at < ?`,
	`DELETE FROM oauth2_oidc WHERE expires_at < ?`,
	`DELETE FROM oauth2_jti WHERE expires_at < ?`,
	`DELETE FROM agent_grants WHERE expires_at < ?`,
	`DELETE FROM clients WHERE unused_expires_at < ?`,
}
