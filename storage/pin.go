package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrStaleClient reports that a client read earlier in the request (from a
// cache, PinClient) has changed or is gone: its row no longer has the
// revision that was read. Nothing was written. The caller reads the client
// again and retries, or answers as if the database were briefly away.
//
// It is also the answer when the user whose scopes the request took from
// memory (PinUser) has changed: the statement cannot tell which of the two
// moved, and the caller reads both again.
var ErrStaleClient = errors.New("storage: the client changed during the request")

type pinKey struct{}

// clientPin is the client a request uses and the revision it was read at,
// and the agent grant the request will ask for (PrefetchAgentGrant).
type clientPin struct {
	id       string
	revision int64
	grant    grantPrefetch

	// user is the user whose scopes the request took from memory (PinUser)
	// and the revision they were read at; "" for none.
	user         string
	userRevision int64
}

// grantPrefetch is an agent grant to read with the request's subject
// token, and, once read, what was found.
type grantPrefetch struct {
	org, sessionID string

	fetched bool
	userID  string     // the subject token's subject: the grant's user
	scopes  stringList // nil for no grant
	expires time.Time  // of the grant found
	current bool       // the pinned client still had its revision

	withUser     bool  // read the subject's user revision too (PrefetchUserRevision)
	userRevision int64 // read with it: 0 for no row
}

// WithClientPin returns a context in which PinClient can record the client
// a request authenticated. Only a request that writes or reads its outcome
// through a pinned statement (a token insert, an agent mint's grant query)
// should carry one.
func WithClientPin(ctx context.Context) context.Context {
	return context.WithValue(ctx, pinKey{}, &clientPin{})
}

// PinClient records that the request in ctx (WithClientPin) acts on c as
// read at c.Revision, which may be a copy held in memory. From then on the
// store's token inserts for c, and its agent-grant lookups for c, succeed
// only while the client's row still has that revision: checked in the
// insert's own statement, and for a grant in its own query or in the
// subject-token lookup that prefetched it (PrefetchAgentGrant). A secret
// deleted, an app narrowed or deleted through any replica is then
// ErrStaleClient, not a token. Without WithClientPin it does nothing.
func PinClient(ctx context.Context, c *Client) {
	if p, ok := ctx.Value(pinKey{}).(*clientPin); ok && c != nil {
		*p = clientPin{id: c.ID, revision: c.Revision}
	}
}

// PrefetchAgentGrant asks that the access-token lookup of the request in
// ctx, an agent-token grant by the pinned client (PinClient), also read
// the grant for (org, the token's subject, that client, sessionID) and the
// client's revision, in the same statement. AgentGrantScopes then answers
// from it when asked for exactly that binding, and ErrStaleClient when the
// client had changed: the mint costs one round trip, not two. It does
// nothing without a pin.
//
// The grant and the revision are then read at the subject token's lookup,
// before the mint asks the Directory for the user's scopes, not after: a
// revocation or a change of the platform committed while the Directory
// answers takes effect at the next mint. Every mint still reflects one
// moment within its own request.
func PrefetchAgentGrant(ctx context.Context, org, sessionID string) {
	if p, ok := ctx.Value(pinKey{}).(*clientPin); ok && p.id != "" {
		p.grant = grantPrefetch{org: org, sessionID: sessionID}
	}
}

// PrefetchUserRevision asks that the prefetching lookup of the request in
// ctx (PrefetchAgentGrant, which it follows) also read the revision of the
// subject token's user (BumpUserRevision), for PrefetchedUserRevision. It
// does nothing without a prefetch, or over a Backend that does not keep
// user revisions (UserRevisions).
func PrefetchUserRevision(ctx context.Context) {
	if p, ok := ctx.Value(pinKey{}).(*clientPin); ok && p.id != "" && p.grant.org != "" && !p.grant.fetched {
		p.grant.withUser = true
	}
}

// PrefetchedUserRevision returns the revision of userID read by the
// request's prefetching lookup (PrefetchUserRevision), when it read one for
// that user and the pinned client was still current.
func PrefetchedUserRevision(ctx context.Context, userID string) (int64, bool) {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || !p.grant.fetched || !p.grant.withUser || !p.grant.current || p.grant.userID != userID || userID == "" {
		return 0, false
	}
	return p.grant.userRevision, true
}

// PinUser records that the request in ctx, which pinned its client
// (PinClient), used userID's scopes as they were at revision (UserRevision),
// maybe from memory. From then on the store's token inserts for the pinned
// client succeed only while the user's revision is still that one, checked
// in the insert's own statement; otherwise ErrStaleClient. It reports
// whether the pin was recorded: not without a client pin, nor when another
// user is pinned already.
func PinUser(ctx context.Context, userID string, revision int64) bool {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || p.id == "" || userID == "" {
		return false
	}
	// One user at one revision a request: a second pin must not leave
	// an answer used under the first unchecked.
	if p.user != "" && (p.user != userID || p.userRevision != revision) {
		return false
	}
	p.user, p.userRevision = userID, revision
	return true
}

// PinnedUser returns the user pinned in ctx (PinUser) and the revision it
// was pinned at, for a Backend that checks user pins (UserRevisions).
func PinnedUser(ctx context.Context) (string, int64, bool) {
	return pinnedUser(ctx)
}

// pinnedUser returns the user pinned in ctx (PinUser) and its revision.
func pinnedUser(ctx context.Context) (string, int64, bool) {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || p.id == "" || p.user == "" {
		return "", 0, false
	}
	return p.user, p.userRevision, true
}

// pendingPrefetch returns the grant prefetch the access-token lookup in
// ctx should do, if any.
func pendingPrefetch(ctx context.Context) (*clientPin, bool) {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || p.id == "" || p.grant.org == "" || p.grant.fetched {
		return nil, false
	}
	return p, true
}

// prefetchedGrant answers AgentGrantScopes from the prefetch in ctx when it
// is for exactly this binding: the scopes (nil for none) unexpired at at,
// or ErrStaleClient.
func prefetchedGrant(ctx context.Context, org, userID, clientID, sessionID string, at time.Time) ([]string, bool, error) {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || !p.grant.fetched || p.id != clientID || p.grant.org != org || p.grant.userID != userID || p.grant.sessionID != sessionID {
		return nil, false, nil
	}
	if !p.grant.current {
		return nil, true, fmt.Errorf("storage: agent grant scopes: client %q: %w", clientID, ErrStaleClient)
	}
	if p.grant.scopes == nil || !p.grant.expires.After(at) {
		return nil, true, nil
	}
	return slices.Clone([]string(p.grant.scopes)), true, nil
}

// ForgetPin clears what PinClient recorded in ctx, for a retry that reads
// the client again.
func ForgetPin(ctx context.Context) {
	if p, ok := ctx.Value(pinKey{}).(*clientPin); ok {
		*p = clientPin{}
	}
}

// ClientPinChecker is implemented by a Backend that honours client pins:
// its token inserts and AgentGrantScopes for the client PinnedRevision
// names succeed only while the client's row has that revision (read in the
// same statement, or in the lookup that prefetched the grant), and return
// ErrStaleClient otherwise (the conformance suite's PinnedClient and
// PrefetchedGrant). A Backend may ignore PrefetchAgentGrant: it only saves
// a round trip.
// The plugin keeps clients in memory only over a Backend that says so.
type ClientPinChecker interface {
	ChecksClientPins() bool
}

// ChecksClientPins reports that Store honours client pins.
func (s *Store) ChecksClientPins() bool { return true }

// PinnedRevision returns the revision clientID was pinned at in ctx
// (PinClient), for a Backend that checks pins (ClientPinChecker).
func PinnedRevision(ctx context.Context, clientID string) (int64, bool) {
	return pinnedRevision(ctx, clientID)
}

// pinnedRevision returns the revision clientID was pinned at in ctx.
func pinnedRevision(ctx context.Context, clientID string) (int64, bool) {
	p, ok := ctx.Value(pinKey{}).(*clientPin)
	if !ok || p.id == "" || p.id != clientID {
		return 0, false
	}
	return p.revision, true
}

// UserRevisions is implemented by a Backend that keeps a revision per user
// and honours user pins: its token inserts for a request with a pinned
// user (PinnedUser) succeed only while that user is at the pinned
// revision, ErrStaleClient otherwise, and it may read the subject's
// revision in a prefetching lookup (PrefetchUserRevision) or leave it
// unread, which only costs the cache its hits on mints (the conformance
// suite's PinnedUser). Kit mode's token endpoint keeps users' scopes in
// memory only over a Backend whose ChecksUserPins says so, and only when
// the host reports every change (plugin.Config.UserScopesCacheTTL). A type
// that embeds *Store but writes tokens its own way must not say so.
type UserRevisions interface {
	ChecksUserPins() bool
	// UserRevision returns userID's revision: 0 for a user never bumped.
	UserRevision(ctx context.Context, userID string) (int64, error)
	// BumpUserRevision moves userID's revision on, inside the transaction
	// ctx carries if any.
	BumpUserRevision(ctx context.Context, userID string) error
}

var _ UserRevisions = (*Store)(nil)

// ChecksUserPins reports that Store honours user pins.
func (s *Store) ChecksUserPins() bool { return true }

// userAtRevision is true while userID (the first argument) has the
// pinned revision (the second); a user never bumped has no row and is at 0.
const userAtRevision = `COALESCE((SELECT revision FROM user_revisions WHERE user_id = ?), 0) = ?`

// UserRevision implements UserRevisions.
func (s *Store) UserRevision(ctx context.Context, userID string) (int64, error) {
	var revision int64
	err := s.getPrepared(ctx, &revision, `SELECT COALESCE((SELECT revision FROM user_revisions WHERE user_id = ?), 0)`, userID)
	if err != nil {
		return 0, fmt.Errorf("storage: user revision: %w", err)
	}
	return revision, nil
}

// BumpUserRevision implements UserRevisions.
func (s *Store) BumpUserRevision(ctx context.Context, userID string) error {
	_, err := s.exec(ctx, `INSERT INTO user_revisions (user_id, revision) VALUES (?, 1)
		ON CONFLICT (user_id) DO UPDATE SET revision = user_revisions.revision + 1`, userID)
	if err != nil {
		return fmt.Errorf("storage: bump user revision: %w", err)
	}
	return nil
}
