package plugin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
)

// DefaultClientCacheTTL is Config.ClientCacheTTL's default.
const DefaultClientCacheTTL = time.Minute

// clientCache keeps deputy's own clients, with their secret hashes, in
// memory for kit mode's token endpoint, so that a client_credentials token
// costs one SQL round trip (the token insert) and an agent token one (the
// subject token, read with the session's grant: storage.PrefetchAgentGrant),
// not one more each for the client.
//
// A remembered client is never trusted on its own: the request pins it
// (storage.PinClient), and the database says whether the client's row still
// has the revision that was remembered, in the statement the outcome rests
// on: the token insert, or for an agent token the subject token's lookup,
// whose answer the mint's grant check replays. Any change to
// the client or its secrets, made through any replica, moves the revision
// on, so the next token with the old copy is refused (storage.ErrStaleClient)
// and the token endpoint reads the client again and retries (Plugin.token).
// Any other failure of a request answered from memory is retried from the
// database too (retry), so that no refusal is ever a stale copy's.
// A deleted secret, a narrowed or deleted app stop working at once, on
// every replica. The owner's scopes are kept only with
// Config.UserScopesCacheTTL, under the same kind of check (userscopes.go).
//
// It answers only the grants whose every write or outcome goes through a
// pinned statement (client_credentials and the agent-token grant), and only
// requests whose secret is one of the remembered hashes: any other secret
// (a new one made on another replica, a wrong one) reads the database, as
// it did without the cache.
type clientCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.RWMutex
	clients map[string]cachedClient

	// users keeps the Directory's answers (Config.UserScopesCacheTTL);
	// nil when off.
	users *userScopesCache
}

type cachedClient struct {
	client  storage.Client
	expires time.Time
}

// newClientCache returns a cache keeping clients for ttl; nil (no cache)
// for a ttl below zero.
func newClientCache(ttl time.Duration) *clientCache {
	if ttl < 0 {
		return nil
	}
	if ttl == 0 {
		ttl = DefaultClientCacheTTL
	}
	return &clientCache{ttl: ttl, now: time.Now, clients: map[string]cachedClient{}}
}

type tokenRequestKey struct{}

// tokenRequest is the token endpoint's request as the cache sees it: the
// HTTP request, and which client the current attempt pinned and whether
// that copy came from memory.
type tokenRequest struct {
	r         *http.Request
	clientID  string
	fromCache bool

	// scopesKey is the user-scope answer the attempt used or kept
	// (userScopesCache), and scopesFromCache whether it came from memory.
	scopesKey       *userScopesKey
	scopesFromCache bool
}

// withTokenRequest marks ctx as the token endpoint's handling of r, which
// the cache may answer (cached) and learn from (remember). It also makes
// room for the request's client pin (storage.WithClientPin).
func (cc *clientCache) withTokenRequest(ctx context.Context, r *http.Request) context.Context {
	if cc == nil {
		return ctx
	}
	return context.WithValue(storage.WithClientPin(ctx), tokenRequestKey{}, &tokenRequest{r: r})
}

// cacheable returns the token request in ctx when its grant is one the
// cache serves.
func cacheable(ctx context.Context) (*tokenRequest, bool) {
	t, ok := ctx.Value(tokenRequestKey{}).(*tokenRequest)
	if !ok {
		return nil, false
	}
	switch t.r.PostForm.Get("grant_type") {
	case protocol.GrantTypeClientCredentials, protocol.GrantTypeAgentToken:
		return t, true
	}
	return nil, false
}

// cached returns a copy of the remembered client id, pinned in ctx, when
// ctx is a cacheable token request whose secret is one of its hashes.
func (cc *clientCache) cached(ctx context.Context, id string) *storage.Client {
	if cc == nil {
		return nil
	}
	t, ok := cacheable(ctx)
	if !ok {
		return nil
	}
	cc.mu.RLock()
	e, ok := cc.clients[id]
	cc.mu.RUnlock()
	if !ok || !cc.now().Before(e.expires) || !hasSecret(&e.client, presentedSecret(t.r)) {
		return nil
	}
	c := e.client // the slices are shared and never written
	cc.pin(ctx, t, &c)
	t.clientID, t.fromCache = c.ID, true
	return &c
}

// pin pins c in ctx, and for an agent-token grant asks that the subject
// token's lookup read the session's grant with it (one round trip a mint),
// and the user's revision when users' scopes are kept.
func (cc *clientCache) pin(ctx context.Context, t *tokenRequest, c *storage.Client) {
	storage.PinClient(ctx, c)
	if form := t.r.PostForm; form.Get("grant_type") == protocol.GrantTypeAgentToken {
		storage.PrefetchAgentGrant(ctx, form.Get(protocol.ParamOrganization), form.Get(protocol.ParamAgentSessionID))
		if cc.users != nil {
			storage.PrefetchUserRevision(ctx)
		}
	}
}

// remember keeps c, just read from the database for a cacheable token
// request, and pins it in ctx.
func (cc *clientCache) remember(ctx context.Context, c *storage.Client) {
	if cc == nil {
		return
	}
	t, ok := cacheable(ctx)
	if !ok || c.Registration != "" {
		return
	}
	cc.pin(ctx, t, c)
	t.clientID, t.fromCache = c.ID, false
	now := cc.now()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	makeRoom(cc.clients)
	cc.clients[c.ID] = cachedClient{client: *c, expires: now.Add(cc.ttl)}
}

// retry reports whether the token request in ctx, whose attempt failed
// with err, should start over from the database: when the client or the
// pinned user changed under it (storage.ErrStaleClient), and when its
// client or its user's scopes came from memory at all, whatever the error.
// A remembered copy may be behind on anything checked before the pinned
// statement (its scopes, its audience, its owner; a scope the user was
// just given): the answer must be the database's and the Directory's, and
// a secret deleted since must be refused as invalid_client, charged to the
// limiter. Wrong secrets never come from memory, so this costs a failing
// request of a real client one more read. It forgets the copies and
// clears the pins.
func (cc *clientCache) retry(ctx context.Context, err error) bool {
	t, ok := ctx.Value(tokenRequestKey{}).(*tokenRequest)
	if !ok || err == nil {
		return false
	}
	fromMemory := t.clientID != "" && t.fromCache || t.scopesFromCache
	pinned := t.clientID != "" || t.scopesKey != nil
	if !fromMemory && !(pinned && errors.Is(err, storage.ErrStaleClient)) {
		return false
	}
	if t.clientID != "" {
		cc.forget(t.clientID)
	}
	if t.scopesKey != nil {
		cc.users.forget(*t.scopesKey)
	}
	t.clientID, t.fromCache, t.scopesKey, t.scopesFromCache = "", false, nil, false
	storage.ForgetPin(ctx)
	return true
}

// forget drops id: its copy was found stale.
func (cc *clientCache) forget(id string) {
	if cc == nil {
		return
	}
	cc.mu.Lock()
	delete(cc.clients, id)
	cc.mu.Unlock()
}

// presentedSecret is the client secret r carries, HTTP Basic first (its
// parts form-encoded, RFC 6749 §2.3.1, as fosite reads them), "" for none.
func presentedSecret(r *http.Request) string {
	if _, secret, ok := r.BasicAuth(); ok {
		s, err := url.QueryUnescape(secret)
		if err != nil {
			return ""
		}
		return s
	}
	return r.PostForm.Get("client_secret")
}

// hasSecret reports whether secret is one of c's live secrets.
func hasSecret(c *storage.Client, secret string) bool {
	for _, h := range c.SecretHashes {
		if secret != "" && clientsecret.MatchesHash(secret, h) {
			return true
		}
	}
	return false
}
