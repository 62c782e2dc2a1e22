package storage_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// fositeServer is a plain fosite provider composed over the store, with an
// authorize endpoint that consents as "alice" at once: enough to prove the
// store behaves as fosite expects, without any of deputy's handlers.
func fositeServer(t *testing.T, s *storage.Store) *httptest.Server {
	t.Helper()
	cfg := &fosite.Config{
		GlobalSecret:          []byte("0123456789abcdef0123456789abcdef"),
		AccessTokenLifespan:   time.Hour,
		RefreshTokenLifespan:  24 * time.Hour,
		AuthorizeCodeLifespan: 10 * time.Minute,
		EnforcePKCE:           true,
		HashCost:              bcrypt.MinCost,
	}
	provider := compose.Compose(cfg, s, compose.NewOAuth2HMACStrategy(cfg),
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2PKCEFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
	)
	mux := http.NewServeMux()
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := provider.NewAuthorizeRequest(ctx, r)
		if err != nil {
			provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		for _, sc := range ar.GetRequestedScopes() {
			ar.GrantScope(sc)
		}
		resp, err := provider.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: "alice"})
		if err != nil {
			provider.WriteAuthorizeError(ctx, w, ar, err)
			return
		}
		provider.WriteAuthorizeResponse(ctx, w, ar, resp)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
		if err != nil {
			provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		if ar.GetGrantTypes().ExactOne("client_credentials") {
			for _, sc := range ar.GetRequestedScopes() {
				ar.GrantScope(sc)
			}
		}
		resp, err := provider.NewAccessResponse(ctx, ar)
		if err != nil {
			provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		provider.WriteAccessResponse(ctx, w, ar, resp)
	})
	mux.HandleFunc("/introspect", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ir, err := provider.NewIntrospectionRequest(ctx, r, &fosite.DefaultSession{})
		if err != nil {
			provider.WriteIntrospectionError(ctx, w, err)
			return
		}
		provider.WriteIntrospectionResponse(ctx, w, ir)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// seedClient stores a confidential client with a bcrypt-hashed secret (the
// hasher fosite uses by default; deputy's own handlers plug in SHA-256).
func seedClient(t *testing.T, s *storage.Store, id, secret string, grants []string, redirect string) {
	t.Helper()
	c := &storage.Client{ID: id, Name: id, GrantTypes: grants, ResponseTypes: []string{"code"},
		Scopes: []string{"projects:read", "projects:write", "offline"}, RedirectURIs: []string{redirect}}
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateClientSecret(context.Background(), id, hash, "bcrypt"); err != nil {
		t.Fatal(err)
	}
}

// authorize drives the browser leg of the code flow and returns the code.
func authorize(t *testing.T, conf *oauth2.Config, verifier string) string {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(conf.AuthCodeURL("state-123456789", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if loc.Query().Get("state") != "state-123456789" {
		t.Fatalf("state not echoed: %v", loc)
	}
	return loc.Query().Get("code")
}

func introspectActive(t *testing.T, srv *httptest.Server, clientID, secret, token string) bool {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	body := string(raw)
	if resp.StatusCode != 200 {
		t.Fatalf("introspect: %s %s", resp.Status, body)
	}
	return strings.Contains(body, `"active":true`)
}

func TestFositeRoundTrips(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		s := b.Open(t)
		srv := fositeServer(t, s)
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())
		var secrets []string // every credential that must never reach a row

		// Authorization code + PKCE + refresh rotation.
		const webSecret = "web-secret-0123456789"
		seedClient(t, s, "web", webSecret, []string{"authorization_code", "refresh_token"}, srv.URL+"/cb")
		conf := &oauth2.Config{ClientID: "web", ClientSecret: webSecret, RedirectURL: srv.URL + "/cb",
			Scopes:   []string{"projects:read", "offline"},
			Endpoint: oauth2.Endpoint{AuthURL: srv.URL + "/auth", TokenURL: srv.URL + "/token", AuthStyle: oauth2.AuthStyleInHeader}}
		verifier := oauth2.GenerateVerifier()
		code := authorize(t, conf, verifier)
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption("wrong-"+verifier)); err == nil {
			t.Fatal("exchange with a wrong PKCE verifier succeeded")
		}
		code = authorize(t, conf, verifier)
		tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if tok.RefreshToken == "" || !introspectActive(t, srv, "web", webSecret, tok.AccessToken) {
			t.Fatalf("first token pair unusable: %+v", tok)
		}
		// A code used twice fails, and the tokens it produced are revoked (RFC 6749 §4.1.2).
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
			t.Fatal("authorization code accepted twice")
		}
		if introspectActive(t, srv, "web", webSecret, tok.AccessToken) {
			t.Fatal("access token still active after its code was replayed")
		}

		code = authorize(t, conf, verifier)
		tok, err = conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		expired := *tok
		expired.Expiry = time.Now().Add(-time.Minute)
		rotated, err := conf.TokenSource(ctx, &expired).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if rotated.RefreshToken == tok.RefreshToken || rotated.AccessToken == tok.AccessToken {
			t.Fatal("refresh did not rotate")
		}
		if introspectActive(t, srv, "web", webSecret, tok.AccessToken) {
			t.Fatal("old access token active after rotation")
		}
		if !introspectActive(t, srv, "web", webSecret, rotated.AccessToken) {
			t.Fatal("new access token inactive")
		}
		// Replaying the rotated-out refresh token is reuse: refused, and the
		// whole family (the new pair too) is revoked.
		if _, err := conf.TokenSource(ctx, &expired).Token(); err == nil {
			t.Fatal("rotated-out refresh token accepted")
		}
		if introspectActive(t, srv, "web", webSecret, rotated.AccessToken) {
			t.Fatal("family not revoked after refresh-token reuse")
		}
		stale := *rotated
		stale.Expiry = time.Now().Add(-time.Minute)
		if _, err := conf.TokenSource(ctx, &stale).Token(); err == nil {
			t.Fatal("refresh token of a revoked family accepted")
		}
		secrets = append(secrets, webSecret, verifier, code, tok.AccessToken, tok.RefreshToken, rotated.AccessToken, rotated.RefreshToken)

		// Client credentials.
		const ccSecret = "cc-secret-0123456789"
		seedClient(t, s, "machine", ccSecret, []string{"client_credentials"}, srv.URL+"/cb")
		cc := &clientcredentials.Config{ClientID: "machine", ClientSecret: ccSecret, TokenURL: srv.URL + "/token",
			Scopes: []string{"projects:read"}}
		ccTok, err := cc.Token(ctx)
		if err != nil {
			t.Fatalf("client credentials: %v", err)
		}
		if !introspectActive(t, srv, "machine", ccSecret, ccTok.AccessToken) {
			t.Fatal("client-credentials token inactive")
		}
		bad := *cc
		bad.ClientSecret = ccSecret[:len(ccSecret)-1] + "X"
		var re *oauth2.RetrieveError
		if _, err := bad.Token(ctx); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
			t.Fatalf("wrong secret: %v", err)
		}
		secrets = append(secrets, ccSecret, ccTok.AccessToken)

		assertNoSecretsStored(t, s, secrets)
	})
}

// assertNoSecretsStored fails if any credential appears in any row.
func assertNoSecretsStored(t *testing.T, s *storage.Store, secrets []string) {
	t.Helper()
	for table, text := range storagetest.Dump(t, s) {
		for _, sec := range secrets {
			if strings.Contains(text, sec) {
				t.Errorf("table %s holds a credential (%.12s…)", table, sec)
			}
		}
	}
}
