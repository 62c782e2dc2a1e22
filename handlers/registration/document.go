package registration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
)

// Defaults of DocumentsConfig.
const (
	DefaultDocumentTimeout    = 5 * time.Second
	DefaultDocumentMaxBytes   = 16 << 10
	DefaultDocumentMinCache   = time.Minute
	DefaultDocumentCache      = 5 * time.Minute
	DefaultDocumentMaxCache   = 24 * time.Hour
	DefaultDocumentFailCache  = 10 * time.Second
	DefaultDocumentMaxEntries = 1000
	DefaultDocumentMaxFetches = 8
)

// DocumentsConfig configures Documents.
type DocumentsConfig struct {
	// Policy is what a client may be; a document is read as RFC 7591
	// metadata under it (see Policy).
	Policy Policy
	// AllowLoopback lets documents be fetched from loopback addresses, and
	// client ids be http://127.0.0.1…, http://[::1]… or http://localhost…
	// URLs: for development and tests only. Every other non-public address
	// is refused whatever it says.
	AllowLoopback bool
	// Timeout bounds one fetch, connection to last byte. Default 5s.
	Timeout time.Duration
	// MaxBytes bounds a document. Default 16 KiB.
	MaxBytes int64
	// MinCache and MaxCache bound how long a document is kept: its
	// Cache-Control max-age, or DefaultCache without one, clamped to them.
	// Defaults 1 minute, 5 minutes and 24 hours. no-store and no-cache are
	// held to MinCache, which bounds how often a client's server is asked.
	MinCache, DefaultCache, MaxCache time.Duration
	// FailCache is how long a failed fetch is remembered, so that a flood
	// of requests naming one bad document costs one fetch. Default 10s.
	FailCache time.Duration
	// MaxEntries bounds the cache. Default 1000.
	MaxEntries int
	// MaxFetches bounds fetches in flight at once; a request beyond it
	// fails instead of waiting. Default 8.
	MaxFetches int
	Logger     *slog.Logger

	// Test seams: trust these roots for https (a test server's), resolve
	// names with lookup, tell the time with clock.
	rootCAs *x509.CertPool
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	clock   func() time.Time
}

// Documents is deputy's view of Client ID Metadata Documents
// (draft-ietf-oauth-client-id-metadata-document, as MCP 2025-11-25 uses
// them): a client whose id is an https URL is described by the JSON
// document at that URL. Client fetches the document (never from a
// non-public address, never following a redirect, within a size limit and
// a timeout), checks it (its client_id is the URL exactly; RFC 7591
// metadata under the Policy; a public client), and keeps it as long as its
// HTTP caching headers say, within bounds.
type Documents struct {
	cfg  DocumentsConfig
	http *http.Client
	sem  chan struct{}

	mu       sync.Mutex
	cache    map[string]*cached
	inflight map[string]*fetchCall
}

type cached struct {
	client  *DocumentClient
	err     error
	expires time.Time
}

type fetchCall struct {
	done   chan struct{}
	client *DocumentClient
	err    error
}

// NewDocuments checks cfg and returns the fetcher.
func NewDocuments(cfg DocumentsConfig) (*Documents, error) {
	var err error
	if cfg.Policy, err = cfg.Policy.WithDefaults(); err != nil {
		return nil, err
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.Timeout, DefaultDocumentTimeout}, {&cfg.MinCache, DefaultDocumentMinCache},
		{&cfg.DefaultCache, DefaultDocumentCache}, {&cfg.MaxCache, DefaultDocumentMaxCache},
		{&cfg.FailCache, DefaultDocumentFailCache},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.MinCache > cfg.MaxCache {
		return nil, fmt.Errorf("registration: document MinCache %s is above MaxCache %s", cfg.MinCache, cfg.MaxCache)
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultDocumentMaxBytes
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultDocumentMaxEntries
	}
	if cfg.MaxFetches <= 0 {
		cfg.MaxFetches = DefaultDocumentMaxFetches
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.clock == nil {
		cfg.clock = time.Now
	}
	dialer := &guardedDialer{loopback: cfg.AllowLoopback, timeout: cfg.Timeout, lookup: cfg.lookup}
	transport := &http.Transport{
		Proxy:                  nil, // a proxy would resolve and connect where the guard cannot see
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{RootCAs: cfg.rootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.Timeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return &Documents{
		cfg: cfg,
		http: &http.Client{
			Transport: transport,
			Timeout:   cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errRedirect
			},
		},
		sem:      make(chan struct{}, cfg.MaxFetches),
		cache:    map[string]*cached{},
		inflight: map[string]*fetchCall{},
	}, nil
}

// Close lets idle connections go.
func (d *Documents) Close() { d.http.CloseIdleConnections() }

var (
	errRedirect   = errors.New("the document answered with a redirect, which is not followed")
	errTooLarge   = errors.New("the document is too large")
	errTooBusy    = errors.New("too many metadata documents are being fetched; try again")
	errNotJSON    = errors.New("the document is not served as application/json")
	errNotADocURL = errors.New("the client id is not a metadata document URL")
)

// IsDocumentID reports whether id is a metadata document URL, by its form
// alone: https (or, with AllowLoopback, http to a loopback host). Client
// checks it in full.
func (d *Documents) IsDocumentID(id string) bool {
	if strings.HasPrefix(id, "https://") {
		return true
	}
	if !d.cfg.AllowLoopback {
		return false
	}
	for _, p := range []string{"http://127.", "http://localhost:", "http://localhost/", "http://[::1]"} {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// Client returns the client the document at id describes: from the cache,
// or fetched and checked. A document that cannot be fetched or is not
// acceptable is an error wrapping fosite.ErrNotFound (the client does not
// exist, as far as an authorization server can tell), with the reason.
//
// During an authorization request (fosite puts it in ctx before it looks
// the client up), the redirect_uri must be one of the document's, exactly
// (protocol.RedirectURIAllowed: any port only where the document lists a
// loopback URI without one, RFC 8252 §7.3). fosite alone would take a
// loopback redirect URI on any port, and a document promises only the ones
// it lists; otherwise the client is returned with no redirect URIs, and
// fosite refuses the request without redirecting anywhere.
func (d *Documents) Client(ctx context.Context, id string) (*DocumentClient, error) {
	c, err := d.client(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: client metadata document %q: %w", fosite.ErrNotFound, truncate(id), err)
	}
	if ar, ok := ctx.Value(fosite.AuthorizeRequestContextKey).(fosite.AuthorizeRequester); ok {
		if raw := ar.GetRequestForm().Get("redirect_uri"); !protocol.RedirectURIAllowed(c.redirectURIs, true, raw) {
			exact := *c
			exact.redirectURIs = nil
			return &exact, nil
		}
	}
	return c, nil
}

func (d *Documents) client(ctx context.Context, id string) (*DocumentClient, error) {
	if err := protocol.CheckClientIDURL(id, d.cfg.AllowLoopback); err != nil {
		return nil, fmt.Errorf("%w: %s", errNotADocURL, err)
	}
	now := d.cfg.clock()
	d.mu.Lock()
	if e, ok := d.cache[id]; ok && now.Before(e.expires) {
		d.mu.Unlock()
		return e.client, e.err
	}
	if call, ok := d.inflight[id]; ok {
		d.mu.Unlock()
		select {
		case <-call.done:
			return call.client, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &fetchCall{done: make(chan struct{})}
	d.inflight[id] = call
	d.mu.Unlock()

	// The fetch outlives a caller that gives up: others may wait on it.
	client, ttl, err := d.fetch(context.WithoutCancel(ctx), id)
	if err != nil {
		ttl = d.cfg.FailCache
		d.cfg.Logger.DebugContext(ctx, "deputy: client metadata document refused", "client_id", truncate(id), "err", err)
	}
	call.client, call.err = client, err
	d.mu.Lock()
	delete(d.inflight, id)
	if !errors.Is(err, errTooBusy) {
		d.store(id, &cached{client: client, err: err, expires: d.cfg.clock().Add(ttl)})
	}
	d.mu.Unlock()
	close(call.done)
	return client, err
}

// store caches e under id, making room first: expired entries go, then
// those closest to expiry. Caller holds d.mu.
func (d *Documents) store(id string, e *cached) {
	if _, ok := d.cache[id]; !ok && len(d.cache) >= d.cfg.MaxEntries {
		now := d.cfg.clock()
		for k, v := range d.cache {
			if !now.Before(v.expires) {
				delete(d.cache, k)
			}
		}
		for len(d.cache) >= d.cfg.MaxEntries {
			var oldest string
			for k, v := range d.cache {
				if oldest == "" || v.expires.Before(d.cache[oldest].expires) {
					oldest = k
				}
			}
			delete(d.cache, oldest)
		}
	}
	d.cache[id] = e
}

// fetch gets and checks the document at id, and says how long to keep it.
func (d *Documents) fetch(ctx context.Context, id string) (*DocumentClient, time.Duration, error) {
	select {
	case d.sem <- struct{}{}:
		defer func() { <-d.sem }()
	default:
		return nil, 0, errTooBusy
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "deputy (client ID metadata document fetcher)")
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("the document answered %s", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, 0, errNotJSON
	}
	if resp.ContentLength > d.cfg.MaxBytes {
		return nil, 0, fmt.Errorf("%w: %d bytes, at most %d", errTooLarge, resp.ContentLength, d.cfg.MaxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, d.cfg.MaxBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("reading the document: %w", err)
	}
	if int64(len(body)) > d.cfg.MaxBytes {
		return nil, 0, fmt.Errorf("%w: more than %d bytes", errTooLarge, d.cfg.MaxBytes)
	}
	c, bad := d.check(id, body)
	if bad != nil {
		return nil, 0, bad
	}
	return c, d.cacheFor(resp.Header), nil
}

// check reads a fetched document as the client with id.
func (d *Documents) check(id string, body []byte) (*DocumentClient, *Error) {
	md, bad := parseMetadata(body)
	if bad != nil {
		return nil, bad
	}
	if md.clientID != id {
		return nil, badMetadata("client_id: the document's (%q) is not the URL it was fetched from", truncate(md.clientID))
	}
	c, bad := d.cfg.Policy.client(md, metadataDocument)
	if bad != nil {
		return nil, bad
	}
	return &DocumentClient{
		id:            id,
		name:          c.Name,
		logoURI:       c.IconURL,
		redirectURIs:  c.RedirectURIs,
		grantTypes:    c.GrantTypes,
		responseTypes: c.ResponseTypes,
		scopes:        c.Scopes,
	}, nil
}

// cacheFor is how long a document answered with h is kept: its max-age
// (RFC 9111), or DefaultCache, clamped to [MinCache, MaxCache].
func (d *Documents) cacheFor(h http.Header) time.Duration {
	ttl := d.cfg.DefaultCache
	for _, directive := range strings.Split(strings.Join(h.Values("Cache-Control"), ","), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return d.cfg.MinCache
		case "max-age":
			if secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64); err == nil && secs >= 0 {
				ttl = time.Duration(min(secs, int64(d.cfg.MaxCache/time.Second)+1)) * time.Second
			}
		}
	}
	return min(max(ttl, d.cfg.MinCache), d.cfg.MaxCache)
}

// DocumentClient is a client known by its metadata document, as fosite and
// deputy's pages see it: public (PKCE, no secret), unverified, an agent.
// It is deliberately not a storage.Client: nothing about it is deputy's to
// keep, and deputy's re-check of its own apps' tokens leaves it alone.
type DocumentClient struct {
	id, name, logoURI                       string
	redirectURIs, grantTypes, responseTypes []string
	scopes                                  []string
}

var _ fosite.Client = (*DocumentClient)(nil)

func (c *DocumentClient) GetID() string                      { return c.id }
func (c *DocumentClient) GetHashedSecret() []byte            { return nil }
func (c *DocumentClient) GetRedirectURIs() []string          { return c.redirectURIs }
func (c *DocumentClient) GetGrantTypes() fosite.Arguments    { return c.grantTypes }
func (c *DocumentClient) GetResponseTypes() fosite.Arguments { return c.responseTypes }
func (c *DocumentClient) GetScopes() fosite.Arguments        { return c.scopes }
func (c *DocumentClient) IsPublic() bool                     { return true }
func (c *DocumentClient) GetAudience() fosite.Arguments      { return nil }

// GetName is the document's client_name ("" for none): unverified.
func (c *DocumentClient) GetName() string { return c.name }

// Unverified: nobody at the IdP vouched for it.
func (c *DocumentClient) Unverified() bool { return true }

// IsAgent: it acts for whoever authorizes it.
func (c *DocumentClient) IsAgent() bool { return true }

// LogoURI is the document's logo_uri ("" for none).
func (c *DocumentClient) LogoURI() string { return c.logoURI }

// StorageClient is the copy of the client kept in deputy's clients table
// (kit mode), so that its tokens' lookups find it.
func (c *DocumentClient) StorageClient() *storage.Client {
	return &storage.Client{
		ID:                      c.id,
		Name:                    c.name,
		IconURL:                 c.logoURI,
		RedirectURIs:            slices.Clone(c.redirectURIs),
		GrantTypes:              slices.Clone(c.grantTypes),
		ResponseTypes:           slices.Clone(c.responseTypes),
		Scopes:                  slices.Clone(c.scopes),
		TokenEndpointAuthMethod: protocol.TokenAuthNone,
		Public:                  true,
		Agent:                   true,
		Registration:            storage.RegistrationMetadataDocument,
	}
}
