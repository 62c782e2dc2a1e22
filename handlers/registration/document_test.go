package registration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/testkit"
)

// Every server in these tests listens on 127.0.0.1, and no test connects
// anywhere else: names are resolved by a seam that answers loopback (or an
// address the guard refuses before any packet is sent), and the addresses
// of the SSRF table are put to the socket's control hook only.

// docServer serves a metadata document over https (the test's own CA) or
// http, counting the requests it gets.
type docServer struct {
	srv  *httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	h    http.HandlerFunc
}

func newDocServer(t *testing.T, tls bool, h http.HandlerFunc) *docServer {
	t.Helper()
	d := &docServer{h: h}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		d.mu.Lock()
		h := d.h
		d.mu.Unlock()
		h(w, r)
	})
	if tls {
		d.srv = httptest.NewTLSServer(handler)
	} else {
		d.srv = httptest.NewServer(handler)
	}
	t.Cleanup(d.srv.Close)
	return d
}

func (d *docServer) set(h http.HandlerFunc) {
	d.mu.Lock()
	d.h = h
	d.mu.Unlock()
}

func (d *docServer) port() string {
	_, port, _ := net.SplitHostPort(d.srv.Listener.Addr().String())
	return port
}

// url is the document's URL under host ("example.com", which the test
// server's certificate names and the test resolver maps to loopback, or
// "127.0.0.1").
func (d *docServer) url(host, path string) string {
	scheme := "http"
	if d.srv.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, d.port()) + path
}

// document is a valid metadata document for id, with changes.
func document(id string, changes ...any) []byte {
	m := map[string]any{
		"client_id":                  id,
		"client_name":                "Test MCP client",
		"redirect_uris":              []string{"http://127.0.0.1:8765/callback", "http://[::1]/callback"},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
		"scope":                      "projects:read somewhere:else",
	}
	for i := 0; i+1 < len(changes); i += 2 {
		if changes[i+1] == nil {
			delete(m, changes[i].(string))
			continue
		}
		m[changes[i].(string)] = changes[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

func serveJSON(body []byte, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		_, _ = w.Write(body)
	}
}

// loopbackResolver answers every name with 127.0.0.1.
func loopbackResolver(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func newDocuments(t *testing.T, srv *docServer, mod func(*DocumentsConfig)) (*Documents, *testkit.Clock) {
	t.Helper()
	clock := testkit.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := DocumentsConfig{
		Policy:        testPolicy,
		AllowLoopback: true,
		Timeout:       2 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		lookup:        loopbackResolver,
		clock:         clock.Now,
	}
	if srv != nil && srv.srv.TLS != nil {
		cfg.rootCAs = srv.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := NewDocuments(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, clock
}

// A valid document becomes a public agent client limited by the policy.
func TestDocumentClient(t *testing.T) {
	t.Parallel()
	srv := newDocServer(t, true, nil)
	id := srv.url("example.com", "/oauth/client.json")
	srv.set(serveJSON(document(id, "logo_uri", "https://example.com/logo.png")))
	d, _ := newDocuments(t, srv, nil)
	c, err := d.Client(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetID() != id || !c.IsPublic() || c.GetHashedSecret() != nil || !c.Unverified() || !c.IsAgent() ||
		c.GetName() != "Test MCP client" || c.LogoURI() != "https://example.com/logo.png" ||
		fmt.Sprint(c.GetGrantTypes()) != "[authorization_code refresh_token]" || fmt.Sprint(c.GetResponseTypes()) != "[code]" ||
		fmt.Sprint(c.GetScopes()) != "[offline_access projects:read projects:write]" || len(c.GetAudience()) != 0 {
		t.Fatalf("client: %+v", c)
	}
	sc := c.StorageClient()
	if sc.ID != id || !sc.Public || !sc.Agent || sc.Registration != "metadata_document" || sc.TokenEndpointAuthMethod != "none" {
		t.Fatalf("stored copy: %+v", sc)
	}
	// Without a scope in the document: the same, every scope of the policy.
	srv.set(serveJSON(document(srv.url("example.com", "/other.json"), "scope", nil)))
	if c, err := d.Client(context.Background(), srv.url("example.com", "/other.json")); err != nil || fmt.Sprint(c.GetScopes()) != "[offline_access projects:read projects:write]" {
		t.Fatalf("default scopes: %v %v", c, err)
	}
}

// Documents that are refused: the client does not exist, as far as fosite
// can tell (fosite.ErrNotFound), with the reason.
func TestDocumentRefused(t *testing.T) {
	t.Parallel()
	const path = "/client.json"
	for _, tc := range []struct {
		name string
		// serve answers for the document at id.
		serve func(id string) http.HandlerFunc
		want  string
	}{
		{"not found", func(string) http.HandlerFunc { return http.NotFound }, "404"},
		{"server error", func(string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) { http.Error(w, "x", 500) }
		}, "500"},
		{"HTML", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = w.Write(document(id))
			}
		}, "application/json"},
		{"not JSON", func(string) http.HandlerFunc { return serveJSON([]byte("{client_id:")) }, ErrInvalidClientMetadata},
		{"a JSON array", func(id string) http.HandlerFunc { return serveJSON([]byte("[" + string(document(id)) + "]")) }, ErrInvalidClientMetadata},
		{"another client_id", func(id string) http.HandlerFunc {
			return serveJSON(document(strings.Replace(id, "client.json", "other.json", 1)))
		}, "client_id"},
		{"client_id with a trailing slash", func(id string) http.HandlerFunc { return serveJSON(document(id + "/")) }, "client_id"},
		{"client_id in upper case", func(id string) http.HandlerFunc { return serveJSON(document(strings.ToUpper(id))) }, "client_id"},
		{"no client_id", func(id string) http.HandlerFunc { return serveJSON(document(id, "client_id", nil)) }, "client_id"},
		{"client_id a number", func(id string) http.HandlerFunc { return serveJSON(document(id, "client_id", 1)) }, ErrInvalidClientMetadata},
		{"no redirect_uris", func(id string) http.HandlerFunc { return serveJSON(document(id, "redirect_uris", nil)) }, ErrInvalidRedirectURI},
		{"http redirect to a host", func(id string) http.HandlerFunc {
			return serveJSON(document(id, "redirect_uris", []string{"http://evil.example/cb"}))
		}, ErrInvalidRedirectURI},
		{"a shared secret", func(id string) http.HandlerFunc {
			return serveJSON(document(id, "token_endpoint_auth_method", "client_secret_basic"))
		}, "token_endpoint_auth_method"},
		{"private_key_jwt", func(id string) http.HandlerFunc {
			return serveJSON(document(id, "token_endpoint_auth_method", "private_key_jwt"))
		}, "token_endpoint_auth_method"},
		{"a client_secret", func(id string) http.HandlerFunc { return serveJSON(document(id, "client_secret", "s3cret")) }, "client_secret"},
		{"client_credentials", func(id string) http.HandlerFunc {
			return serveJSON(document(id, "grant_types", []string{"client_credentials"}))
		}, "grant_types"},
		{"oversize, announced", func(id string) http.HandlerFunc {
			return serveJSON(document(id, "client_name", strings.Repeat("n", 40), "padding", strings.Repeat("p", DefaultDocumentMaxBytes)))
		}, "too large"},
		{"oversize, chunked", func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.(http.Flusher).Flush() // no Content-Length: chunked
				for range 64 {
					_, _ = w.Write([]byte(strings.Repeat(" ", 1024)))
				}
			}
		}, "too large"},
		{"redirect to the metadata service", func(string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			}
		}, "redirect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newDocServer(t, true, nil)
			id := srv.url("example.com", path)
			srv.set(tc.serve(id))
			d, _ := newDocuments(t, srv, nil)
			c, err := d.Client(context.Background(), id)
			if err == nil || !errors.Is(err, fosite.ErrNotFound) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Client = %v, %v; want an error wrapping fosite.ErrNotFound that says %q", c, err, tc.want)
			}
		})
	}
}

// A redirect is never followed, wherever it points: the second server,
// on loopback like the first, gets no request.
func TestDocumentRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	target := newDocServer(t, true, nil)
	srv := newDocServer(t, true, nil)
	id := srv.url("example.com", "/client.json")
	target.set(serveJSON(document(id)))
	srv.set(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.url("127.0.0.1", "/client.json"), http.StatusTemporaryRedirect)
	})
	d, _ := newDocuments(t, srv, nil)
	if _, err := d.Client(context.Background(), id); !errors.Is(err, errRedirect) {
		t.Fatalf("Client = %v, want the redirect refused", err)
	}
	if n := target.hits.Load(); n != 0 {
		t.Fatalf("the redirect was followed: %d requests", n)
	}
}

// A slow server cannot hold a fetch past the timeout: neither by holding
// back its headers nor by dribbling its body.
func TestDocumentSlow(t *testing.T) {
	t.Parallel()
	for name, h := range map[string]func(id string) http.HandlerFunc{
		"slow headers": func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			}
		},
		"slow body": func(id string) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "4096")
				for i := 0; ; i++ {
					if _, err := w.Write([]byte(" ")); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := newDocServer(t, true, nil)
			id := srv.url("example.com", "/client.json")
			srv.set(h(id))
			d, _ := newDocuments(t, srv, func(c *DocumentsConfig) { c.Timeout = 300 * time.Millisecond })
			_, err := d.Client(context.Background(), id)
			if msg := strings.ToLower(fmt.Sprint(err)); !errors.Is(err, fosite.ErrNotFound) || !strings.Contains(msg, "timeout") && !strings.Contains(msg, "deadline") {
				t.Fatalf("Client = %v, want a timeout", err)
			}
		})
	}
}

// The SSRF guard on the fetch path: loopback is refused unless allowed,
// however it is named; allowing it allows nothing else; each resolved
// address is checked.
func TestDocumentSSRF(t *testing.T) {
	t.Parallel()
	answer := func(addrs ...string) func(context.Context, string) ([]netip.Addr, error) {
		return func(context.Context, string) ([]netip.Addr, error) {
			var out []netip.Addr
			for _, a := range addrs {
				out = append(out, netip.MustParseAddr(a))
			}
			return out, nil
		}
	}
	for _, tc := range []struct {
		name     string
		host     string // of the client id: "example.com" goes through lookup
		loopback bool
		lookup   func(context.Context, string) ([]netip.Addr, error)
		ok       bool
	}{
		{"loopback by name, not allowed", "example.com", false, loopbackResolver, false},
		{"loopback literal, not allowed", "127.0.0.1", false, nil, false},
		{"IPv4-mapped loopback, not allowed", "example.com", false, answer("::ffff:127.0.0.1"), false},
		{"loopback by name, allowed", "example.com", true, loopbackResolver, true},
		{"IPv4-mapped loopback, allowed", "example.com", true, answer("::ffff:127.0.0.1"), true},
		// The loopback switch is about loopback only. (Private, link-local,
		// metadata and the other ranges are refused by the same hook: see
		// TestPublicAddress, which calls it without connecting anywhere.
		// Here only addresses that stay on this machine are used, so that
		// even a broken guard sends nothing out.)
		{"unspecified IPv4, loopback allowed", "example.com", true, answer("0.0.0.0"), false},
		{"unspecified IPv6, loopback allowed", "example.com", true, answer("::"), false},
		// Every address of an answer is checked; the good one is used.
		{"a bad address first", "example.com", true, answer("0.0.0.0", "127.0.0.1"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newDocServer(t, true, nil)
			id := srv.url(tc.host, "/client.json")
			srv.set(serveJSON(document(id)))
			d, _ := newDocuments(t, srv, func(c *DocumentsConfig) {
				c.AllowLoopback = tc.loopback
				c.lookup = tc.lookup
			})
			_, err := d.Client(context.Background(), id)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("Client = %v, want the document", err)
			case !tc.ok && !errors.Is(err, errBlockedAddress):
				t.Fatalf("Client = %v, want the address blocked", err)
			case !tc.ok && srv.hits.Load() != 0:
				t.Fatalf("the server was reached %d times", srv.hits.Load())
			}
		})
	}
}

// DNS rebinding: the name resolved to a public address when something
// checked it, and resolves to 127.0.0.1 when the fetch connects. The guard
// judges the address the socket connects to, so the answer given to the
// check does not matter.
func TestDocumentDNSRebinding(t *testing.T) {
	t.Parallel()
	srv := newDocServer(t, true, nil)
	id := srv.url("example.com", "/client.json")
	srv.set(serveJSON(document(id)))
	var calls atomic.Int64
	rebinding := func(context.Context, string) ([]netip.Addr, error) {
		if calls.Add(1) == 1 {
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	// The check: a look at the name, which sees a public address.
	addrs, _ := rebinding(context.Background(), "example.com")
	if !publicAddress(addrs[0], false) {
		t.Fatal("the first answer should pass a check of the name")
	}
	d, _ := newDocuments(t, srv, func(c *DocumentsConfig) {
		c.AllowLoopback = false
		c.lookup = rebinding
	})
	if _, err := d.Client(context.Background(), id); !errors.Is(err, errBlockedAddress) {
		t.Fatalf("Client = %v, want the rebound address blocked", err)
	}
	if n := srv.hits.Load(); n != 0 {
		t.Fatalf("the rebound name reached the loopback server %d times", n)
	}
}

// Client ids that are no metadata document URL never cause a fetch.
func TestDocumentIDs(t *testing.T) {
	t.Parallel()
	srv := newDocServer(t, false, nil)
	srv.set(serveJSON(document(srv.url("127.0.0.1", "/c.json"))))
	d, _ := newDocuments(t, srv, func(c *DocumentsConfig) { c.AllowLoopback = false })
	for _, id := range []string{
		srv.url("127.0.0.1", "/c.json"), // http, loopback not allowed
		"https://example.com",
		"https://example.com/",
		"https://example.com/a/../c.json",
		"https://example.com/c.json#x",
		"https://u:p@example.com/c.json",
		"http://example.com/c.json",
		"client-123",
	} {
		if _, err := d.Client(context.Background(), id); !errors.Is(err, fosite.ErrNotFound) || !errors.Is(err, errNotADocURL) {
			t.Errorf("Client(%q) = %v, want it refused as no document URL", id, err)
		}
	}
	if srv.hits.Load() != 0 {
		t.Fatal("a fetch was made")
	}
	if d.IsDocumentID(srv.url("127.0.0.1", "/c.json")) || !d.IsDocumentID("https://example.com/c.json") || d.IsDocumentID("abc") {
		t.Fatal("IsDocumentID without loopback")
	}
	dl, _ := newDocuments(t, srv, nil)
	if !dl.IsDocumentID(srv.url("127.0.0.1", "/c.json")) || !dl.IsDocumentID("http://localhost:1/c.json") || !dl.IsDocumentID("http://[::1]:1/c") || dl.IsDocumentID("http://example.com/c.json") {
		t.Fatal("IsDocumentID with loopback")
	}
	if c, err := dl.Client(context.Background(), srv.url("127.0.0.1", "/c.json")); err != nil || c.GetID() != srv.url("127.0.0.1", "/c.json") {
		t.Fatalf("http loopback document with loopback allowed: %v", err)
	}
}

// Caching follows Cache-Control's max-age, within bounds; no-store is held
// to the minimum; failures are remembered briefly; concurrent lookups make
// one fetch; the cache holds a bounded number of documents.
func TestDocumentCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		cacheControl string
		fresh, stale time.Duration // still cached at fresh, fetched again at stale
	}{
		{"max-age", "public, max-age=120", 119 * time.Second, 121 * time.Second},
		{"no header: the default", "", DefaultDocumentCache - time.Second, DefaultDocumentCache + time.Second},
		{"max-age over the maximum", "max-age=999999999", time.Hour - time.Second, time.Hour + time.Second},
		{"max-age under the minimum", "max-age=1", DefaultDocumentMinCache - time.Second, DefaultDocumentMinCache + time.Second},
		{"no-store", "no-store", DefaultDocumentMinCache - time.Second, DefaultDocumentMinCache + time.Second},
		{"no-cache", "max-age=600, no-cache", DefaultDocumentMinCache - time.Second, DefaultDocumentMinCache + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newDocServer(t, true, nil)
			id := srv.url("example.com", "/client.json")
			header := []string{}
			if tc.cacheControl != "" {
				header = []string{"Cache-Control", tc.cacheControl}
			}
			srv.set(serveJSON(document(id), header...))
			d, clock := newDocuments(t, srv, func(c *DocumentsConfig) { c.MaxCache = time.Hour })
			start := clock.Now()
			for _, at := range []time.Duration{0, tc.fresh} {
				clock.Set(start.Add(at))
				if _, err := d.Client(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			}
			if n := srv.hits.Load(); n != 1 {
				t.Fatalf("%d fetches within %s, want 1", n, tc.fresh)
			}
			clock.Set(start.Add(tc.stale))
			if _, err := d.Client(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			if n := srv.hits.Load(); n != 2 {
				t.Fatalf("%d fetches after %s, want 2", n, tc.stale)
			}
		})
	}

	t.Run("failures", func(t *testing.T) {
		t.Parallel()
		srv := newDocServer(t, true, http.NotFound)
		id := srv.url("example.com", "/client.json")
		d, clock := newDocuments(t, srv, nil)
		for range 3 {
			if _, err := d.Client(context.Background(), id); err == nil {
				t.Fatal("a missing document was found")
			}
		}
		if n := srv.hits.Load(); n != 1 {
			t.Fatalf("%d fetches of a failing document, want 1", n)
		}
		srv.set(serveJSON(document(id)))
		clock.Advance(DefaultDocumentFailCache + time.Second)
		if _, err := d.Client(context.Background(), id); err != nil {
			t.Fatalf("after the failure expired: %v", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		srv := newDocServer(t, true, nil)
		id := srv.url("example.com", "/client.json")
		srv.set(serveJSON(document(id)))
		d, _ := newDocuments(t, srv, nil)
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = d.Client(context.Background(), id)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := srv.hits.Load(); n != 1 {
			t.Fatalf("%d fetches for 20 concurrent lookups, want 1", n)
		}
	})

	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		srv := newDocServer(t, true, nil)
		srv.set(func(w http.ResponseWriter, r *http.Request) {
			serveJSON(document(srv.url("example.com", r.URL.Path)))(w, r)
		})
		d, clock := newDocuments(t, srv, func(c *DocumentsConfig) { c.MaxEntries = 3 })
		for i := range 10 {
			clock.Advance(time.Second)
			if _, err := d.Client(context.Background(), srv.url("example.com", "/c"+strconv.Itoa(i)+".json")); err != nil {
				t.Fatal(err)
			}
			d.mu.Lock()
			n := len(d.cache)
			d.mu.Unlock()
			if n > 3 {
				t.Fatalf("%d documents cached, bound 3", n)
			}
		}
		// The newest is still cached.
		if _, err := d.Client(context.Background(), srv.url("example.com", "/c9.json")); err != nil || srv.hits.Load() != 10 {
			t.Fatalf("the newest document was fetched again: %d fetches, %v", srv.hits.Load(), err)
		}
	})
}

// At the authorization endpoint, the redirect URI must be one of the
// document's, exactly; any port only where the document lists a loopback
// URI without one (RFC 8252 §7.3). Otherwise fosite gets a client without
// redirect URIs, and refuses.
func TestDocumentRedirectExact(t *testing.T) {
	t.Parallel()
	srv := newDocServer(t, true, nil)
	id := srv.url("example.com", "/client.json")
	srv.set(serveJSON(document(id)))
	d, _ := newDocuments(t, srv, nil)
	for _, tc := range []struct {
		redirect string
		ok       bool
	}{
		{"", true},
		{"http://127.0.0.1:8765/callback", true},
		{"http://127.0.0.1:8766/callback", false},
		{"http://127.0.0.1/callback", false},
		{"http://[::1]/callback", true},
		{"http://[::1]:51000/callback", true},
		{"http://[::1]:51000/callback/x", false},
		{"http://localhost:8765/callback", false},
		{"https://evil.example/callback", false},
	} {
		ar := fosite.NewAuthorizeRequest()
		ar.Form = url.Values{"client_id": {id}}
		if tc.redirect != "" {
			ar.Form.Set("redirect_uri", tc.redirect)
		}
		ctx := context.WithValue(context.Background(), fosite.AuthorizeRequestContextKey, ar)
		c, err := d.Client(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(c.GetRedirectURIs()) > 0; got != tc.ok {
			t.Errorf("redirect_uri %q: redirect URIs %v, want allowed=%v", tc.redirect, c.GetRedirectURIs(), tc.ok)
		}
		_, ferr := fosite.MatchRedirectURIWithClientRedirectURIs(tc.redirect, c)
		if tc.redirect != "" && (ferr == nil) != tc.ok {
			t.Errorf("redirect_uri %q: fosite's match %v, want allowed=%v", tc.redirect, ferr, tc.ok)
		}
	}
	// Outside an authorization request (the token endpoint) the client is
	// the document's, unchanged.
	if c, err := d.Client(context.Background(), id); err != nil || len(c.GetRedirectURIs()) != 2 {
		t.Fatalf("outside an authorization request: %v %v", c, err)
	}
}

// Fetches in flight are bounded: beyond MaxFetches a lookup fails at once
// instead of piling up, and that failure is not remembered.
func TestDocumentFetchBound(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	srv := newDocServer(t, true, nil)
	srv.set(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		serveJSON(document(srv.url("example.com", r.URL.Path)))(w, r)
	})
	d, _ := newDocuments(t, srv, func(c *DocumentsConfig) { c.MaxFetches = 1; c.Timeout = 10 * time.Second })
	done := make(chan error, 1)
	go func() {
		_, err := d.Client(context.Background(), srv.url("example.com", "/a.json"))
		done <- err
	}()
	<-entered
	if _, err := d.Client(context.Background(), srv.url("example.com", "/b.json")); !errors.Is(err, errTooBusy) {
		t.Fatalf("a second fetch while one is in flight: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := d.Client(context.Background(), srv.url("example.com", "/b.json")); err != nil {
		t.Fatalf("after the first fetch ended: %v", err)
	}
}
