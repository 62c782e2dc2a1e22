package storage

import (
	"context"
	"errors"
)

// ErrStaleClient reports that a client read earlier in the request (from a
// cache, PinClient) has changed or is gone: its row no longer has the
// revision that was read. Nothing was written. The caller reads the client
// again and retries, or answers as if the database were briefly away.
var ErrStaleClient = errors.New("storage: the client changed during the request")

type pinKey struct{}

// clientPin is the client a request uses and the revision it was read at.
type clientPin struct {
	id       string
	revision int64
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
// only while the client's row still has that revision, checked in the same
// statement: a secret deleted, an app narrowed or deleted through any
// replica is then ErrStaleClient, not a token. Without WithClientPin it
// does nothing.
func PinClient(ctx context.Context, c *Client) {
	if p, ok := ctx.Value(pinKey{}).(*clientPin); ok && c != nil {
		p.id, p.revision = c.ID, c.Revision
	}
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
// names succeed only while the client's row has that revision, and
// return ErrStaleClient otherwise (the conformance suite's PinnedClient).
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
