package plugin

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// userScopesCache keeps the Directory's answers (a user's scopes in an
// organization) in memory for kit mode's token endpoint, so that a
// client_credentials token or an agent mint of a host whose Directory is
// SQL costs no round trip for it (issue 14: deputy-idp's Directory was
// the one round trip it paid more than the plugin cells).
//
// As with clients (clientcache.go), a remembered answer is never trusted
// on its own. Each is kept with the user's revision (storage.UserRevisions)
// read before the Directory was asked, and the host moves the revision on
// with every change to what the user holds (Plugin.UserChanged), in the
// change's transaction or after it commits. The database then says whether
// the copy is current, in the statement the outcome rests on:
//
//   - client_credentials: the request pins the user at the copy's revision
//     (storage.PinUser) and the token insert goes in only while the user is
//     still at it; otherwise storage.ErrStaleClient and the token endpoint
//     starts over from the Directory (clientCache.retry).
//   - agent-token grant: the subject token's lookup, which already reads
//     the session's grant and the platform's revision, reads the user's
//     revision too (storage.PrefetchUserRevision); the copy is used only if
//     it was kept at that revision. Nothing is written after the mint, so
//     the revision read at the lookup is the moment the mint reflects, as
//     for the grant.
//
// Any failure of an attempt that used a copy starts over from the
// Directory, so that no refusal is ever a stale copy's (a scope the user
// was just given, refused). A user disabled or narrowed, through any
// replica or another process, stops getting tokens with the old scopes at
// once. Errors (a user not found or disabled) are never kept.
type userScopesCache struct {
	dir  scope.Directory
	revs storage.UserRevisions
	ttl  time.Duration
	now  func() time.Time

	mu      sync.RWMutex
	entries map[userScopesKey]cachedUserScopes
}

// userScopesKey is one Directory question.
type userScopesKey struct{ userID, org string }

type cachedUserScopes struct {
	scopes   []string
	revision int64
	expires  time.Time
}

// newUserScopesCache returns a cache over dir keeping answers for ttl; nil
// (no cache) for a ttl of zero or below.
func newUserScopesCache(dir scope.Directory, revs storage.UserRevisions, ttl time.Duration) *userScopesCache {
	if ttl <= 0 {
		return nil
	}
	return &userScopesCache{dir: dir, revs: revs, ttl: ttl, now: time.Now, entries: map[userScopesKey]cachedUserScopes{}}
}

// UserScopes implements scope.Directory: from memory inside kit mode's
// token endpoint, for client_credentials and the agent-token grant once
// the client is pinned; the Directory's own answer everywhere else.
func (c *userScopesCache) UserScopes(ctx context.Context, userID, org string) ([]string, error) {
	t, ok := cacheable(ctx)
	if !ok || t.clientID == "" || userID == "" {
		return c.dir.UserScopes(ctx, userID, org)
	}
	key := userScopesKey{userID, org}
	switch t.r.PostForm.Get("grant_type") {
	case protocol.GrantTypeAgentToken:
		revision, ok := storage.PrefetchedUserRevision(ctx, userID)
		if !ok {
			return c.dir.UserScopes(ctx, userID, org)
		}
		t.scopesKey = &key
		if e, ok := c.cached(key); ok && e.revision == revision {
			t.scopesFromCache = true
			return slices.Clone(e.scopes), nil
		}
		return c.ask(ctx, key, revision)
	case protocol.GrantTypeClientCredentials:
		if e, ok := c.cached(key); ok && storage.PinUser(ctx, userID, e.revision) {
			t.scopesKey, t.scopesFromCache = &key, true
			return slices.Clone(e.scopes), nil
		}
		revision, err := c.revs.UserRevision(ctx, userID)
		if err != nil {
			return nil, fmt.Errorf("deputy: user revision: %w", err)
		}
		if !storage.PinUser(ctx, userID, revision) {
			return c.dir.UserScopes(ctx, userID, org)
		}
		t.scopesKey = &key
		return c.ask(ctx, key, revision)
	}
	return c.dir.UserScopes(ctx, userID, org)
}

// ask asks the Directory, after revision was read, and keeps its answer
// at that revision.
func (c *userScopesCache) ask(ctx context.Context, key userScopesKey, revision int64) ([]string, error) {
	scopes, err := c.dir.UserScopes(ctx, key.userID, key.org)
	if err != nil {
		return nil, err
	}
	kept := slices.Clone(scopes)
	c.mu.Lock()
	defer c.mu.Unlock()
	makeRoom(c.entries)
	c.entries[key] = cachedUserScopes{scopes: kept, revision: revision, expires: c.now().Add(c.ttl)}
	return scopes, nil
}

// cached returns the unexpired answer kept for key.
func (c *userScopesCache) cached(key userScopesKey) (cachedUserScopes, bool) {
	c.mu.RLock()
	e, ok := c.entries[key]
	c.mu.RUnlock()
	return e, ok && c.now().Before(e.expires)
}

// forget drops key's answer: an attempt that used it failed.
func (c *userScopesCache) forget(key userScopesKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.entries, key)
	c.mu.Unlock()
}

// maxCachedEntries bounds the memory each of the token endpoint's caches
// takes.
const maxCachedEntries = 10_000

// makeRoom drops a tenth of m when it is full, whichever entries the map
// yields first, so that the next misses find room without scanning again.
// The caller holds m's lock.
func makeRoom[K comparable, V any](m map[K]V) {
	if len(m) < maxCachedEntries {
		return
	}
	for k := range m {
		if len(m) < maxCachedEntries*9/10 {
			break
		}
		delete(m, k)
	}
}

// UserChanged tells deputy that what userID holds has changed: their
// account's state (disabled, deleted) or any of their memberships. With
// Config.UserScopesCacheTTL set, the host must call it for every such
// change and every affected user, in the change's own transaction (the
// context storage.Backend's InTx gives, when the host's tables share
// deputy's database; then nothing can fail between the two) or after it
// commits, never before: every replica's token endpoint then stops using
// what it kept of the user's scopes at its next token. An error means the
// change was not reported: retry it, or the kept answers stand until they
// expire. Without the cache it costs one write and changes nothing. Over
// a Backend that keeps no user revisions it does nothing.
func (p *Plugin) UserChanged(ctx context.Context, userID string) error {
	revs, ok := p.cfg.Store.(storage.UserRevisions)
	if !ok {
		return nil
	}
	if err := revs.BumpUserRevision(ctx, userID); err != nil {
		return fmt.Errorf("deputy: user changed: %w", err)
	}
	return nil
}
