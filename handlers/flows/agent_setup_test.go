package flows

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"
	"golang.org/x/crypto/bcrypt"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-system-secret")

const (
	testIssuer      = "https://idp.example.test"
	testOrg         = "acme"
	testSession     = "sess-1"
	agentClientID   = "agent-platform"
	agentSecret     = "agent-platform-secret"
	otherAgentID    = "other-agent-platform"
	otherAgentPass  = "other-agent-platform-secret"
	webClientID     = "webapp"
	plainClientID   = "plain-cc"
	plainSecret     = "plain-cc-secret"
	testUser        = "alice"
	otherUser       = "bob"
	readScope       = "projects:read"
	writeScope      = "projects:write"
	issuesReadScope = "issues:read"
)

// newDirectory is the host's Directory for these tests: who holds what,
// per org.
func newDirectory() *testkit.Directory {
	return testkit.NewDirectory().
		Set(testUser, testOrg, readScope, writeScope, issuesReadScope, "admin:write").
		Set(otherUser, testOrg, readScope, writeScope).
		Set(testUser, "globex", readScope, writeScope)
}

// prefixedStrategy is fosite's HMAC strategy with deputy's dpy_ prefixes,
// enough to issue real subject tokens in these tests.
type prefixedStrategy struct {
	*oauth2.HMACSHAStrategyUnPrefixed
}

func (p *prefixedStrategy) GenerateAccessToken(ctx context.Context, r fosite.Requester) (string, string, error) {
	t, s, err := p.HMACSHAStrategyUnPrefixed.GenerateAccessToken(ctx, r)
	return "dpy_at_" + t, s, err
}

func (p *prefixedStrategy) ValidateAccessToken(ctx context.Context, r fosite.Requester, t string) error {
	return p.HMACSHAStrategyUnPrefixed.ValidateAccessToken(ctx, r, strings.TrimPrefix(t, "dpy_at_"))
}

// orgSession is a host session that binds its tokens to an organization.
type orgSession struct {
	fosite.DefaultSession
	Organization string `json:"organization"`
}

func (s *orgSession) GetOrganization() string { return s.Organization }

func (s *orgSession) Clone() fosite.Session {
	c := *s
	return &c
}

// env is one IdP: a store, a keyring, a minter and a fosite provider whose
// token endpoint knows the agent-token grant.
type env struct {
	t         *testing.T
	store     *storage.Store
	dir       *testkit.Directory
	keys      *agenttoken.Keyring
	minter    *agenttoken.Minter
	verifier  *agenttoken.AgentVerifier
	strategy  *prefixedStrategy
	provider  fosite.OAuth2Provider
	tokenURL  string
	catalog   *scope.Catalog
	fositeCfg *fosite.Config
}

func newEnv(t *testing.T, s *storage.Store) *env {
	t.Helper()
	ctx := context.Background()
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{Store: s, SystemSecret: testSecret, MinRefreshInterval: -1})
	if err != nil {
		t.Fatalf("keyring: %v", err)
	}
	e := &env{t: t, store: s, dir: newDirectory(), keys: keys,
		catalog: scope.NewCatalog(scope.Entry{Name: readScope}, scope.Entry{Name: writeScope, Write: true})}
	e.minter = &agenttoken.Minter{Keys: keys, Store: s, Directory: e.dir, Catalog: e.catalog, Issuer: testIssuer}
	e.verifier = &agenttoken.AgentVerifier{Keys: keys, Issuer: testIssuer}

	e.fositeCfg = &fosite.Config{
		GlobalSecret:        []byte("fosite-hmac-secret-0123456789abcdef"),
		AccessTokenLifespan: time.Hour,
		HashCost:            bcrypt.MinCost,
	}
	e.strategy = &prefixedStrategy{oauth2.NewHMACSHAStrategyUnPrefixed(&hmac.HMACStrategy{Config: e.fositeCfg}, e.fositeCfg)}
	e.provider = compose.Compose(e.fositeCfg, s, e.strategy,
		compose.OAuth2ClientCredentialsGrantFactory,
		AgentTokenGrantFactory(e.minter, SessionCodec{New: func() fosite.Session { return &orgSession{} }}, AppTokens{}, nil),
	)
	e.client(agentClientID, agentSecret, []string{protocol.GrantTypeAgentToken}, []string{readScope, writeScope, issuesReadScope})
	e.client(otherAgentID, otherAgentPass, []string{protocol.GrantTypeAgentToken}, []string{readScope, writeScope, issuesReadScope})
	e.client(plainClientID, plainSecret, []string{"client_credentials"}, []string{readScope, writeScope})
	e.client(webClientID, "", []string{"authorization_code"}, []string{readScope, writeScope, issuesReadScope, "admin:write"})

	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/token", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := e.provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
		if err != nil {
			e.provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		resp, err := e.provider.NewAccessResponse(ctx, ar)
		if err != nil {
			e.provider.WriteAccessError(ctx, w, ar, err)
			return
		}
		e.provider.WriteAccessResponse(ctx, w, ar, resp)
	})
	mux.Handle("/.well-known/jwks.json", agenttoken.NewJWKSHandler(keys))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.tokenURL = srv.URL + "/oauth2/token"
	return e
}

func (e *env) client(id, secret string, grants, scopes []string) {
	e.t.Helper()
	c := &storage.Client{ID: id, Name: id, GrantTypes: grants, ResponseTypes: []string{"code"}, Scopes: scopes,
		RedirectURIs: []string{"http://127.0.0.1/cb"}, TokenEndpointAuthMethod: "client_secret_basic"}
	if err := e.store.CreateClient(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	if secret == "" {
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.MinCost)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.store.Exec(context.Background(), `INSERT INTO client_secrets (id, client_id, secret_hash, display_prefix, created_at) VALUES (?, ?, ?, ?, ?)`,
		storage.NewID(8), id, hash, "dpy_cs_test", time.Now().UTC())
	if err != nil {
		e.t.Fatal(err)
	}
}

// userToken stores a user access token, as the authorization-code flow of
// webapp would, and returns it.
func (e *env) userToken(user string, scopes []string, expires time.Time) string {
	e.t.Helper()
	return e.userTokenIn("", user, scopes, expires)
}

// userTokenIn is userToken bound to org ("" for none).
func (e *env) userTokenIn(org, user string, scopes []string, expires time.Time) string {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.store.GetClient(ctx, webClientID)
	if err != nil {
		e.t.Fatal(err)
	}
	req := fosite.NewRequest()
	req.ID = storage.NewID(16)
	req.Client = c
	req.RequestedAt = time.Now().UTC()
	req.RequestedScope = scopes
	req.GrantedScope = scopes
	req.Session = &orgSession{Organization: org, DefaultSession: fosite.DefaultSession{Subject: user,
		ExpiresAt: map[fosite.TokenType]time.Time{fosite.AccessToken: expires}}}
	tok, sig, err := e.strategy.GenerateAccessToken(ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.CreateAccessTokenSession(ctx, sig, req); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// tokenResponse is the token endpoint's answer, success or error.
type tokenResponse struct {
	Status          int
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	Error           string `json:"error"`
	Description     string `json:"error_description"`
}

// exchange calls the token endpoint with the agent-token grant.
func (e *env) exchange(clientID, secret string, form url.Values) tokenResponse {
	e.t.Helper()
	if form.Get("grant_type") == "" {
		form.Set("grant_type", protocol.GrantTypeAgentToken)
	}
	req, err := http.NewRequest(http.MethodPost, e.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		e.t.Fatalf("decode token response (%d): %v", resp.StatusCode, err)
	}
	tr.Status = resp.StatusCode
	return tr
}

// agentForm is a well-formed agent-token request for subject.
func agentForm(subject, session, org string) url.Values {
	return url.Values{
		"subject_token":      {subject},
		"subject_token_type": {protocol.TokenTypeAccessToken},
		"agent_session_id":   {session},
		"organization":       {org},
	}
}

// mint asks the token endpoint for an agent token as the agent platform and
// fails the test unless it gets one.
func (e *env) mint(subject, session, org string) tokenResponse {
	e.t.Helper()
	return e.mintAs(agentClientID, agentSecret, subject, session, org)
}

// mintAs is mint as another client.
func (e *env) mintAs(clientID, secret, subject, session, org string) tokenResponse {
	e.t.Helper()
	tr := e.exchange(clientID, secret, agentForm(subject, session, org))
	if tr.Status != http.StatusOK || tr.AccessToken == "" {
		e.t.Fatalf("mint: %d %s: %s", tr.Status, tr.Error, tr.Description)
	}
	return tr
}
