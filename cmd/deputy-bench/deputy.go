package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// The seeded world of a deputy cell: one organization, one owner holding a
// read and a write scope there, the owner's app, and an agent platform.
const (
	benchOrg       = "acme"
	benchOwner     = "bench-owner"
	benchAppID     = "bench-app"
	benchPlatform  = "bench-agent-platform"
	benchSession   = "bench-session-1"
	benchReadScope = "projects:read"
	benchWrite     = "projects:write"
)

// staticDirectory is the host's Directory of a bench: a fixed map, so that
// what is measured is deputy and not the host.
type staticDirectory map[string][]string

func (d staticDirectory) UserScopes(_ context.Context, userID, org string) ([]string, error) {
	if org != benchOrg {
		return nil, nil
	}
	s, ok := d[userID]
	if !ok {
		return nil, scope.ErrUserNotFound
	}
	return s, nil
}

// noSessions: nobody is logged in; the bench calls no page.
type noSessions struct{}

func (noSessions) Authenticate(*http.Request) (string, error) { return "", plugin.ErrNoSession }

// deputyServer is deputy mounted by plugin.New + Register on a loopback
// listener over one database, with the bench's seed.
type deputyServer struct {
	endpoint  string
	appSecret string
	platSec   string
	cc        tokenSpec
	// agent is nil when the agent-token grant is not available, and
	// agentErr then says why.
	agent    *tokenSpec
	agentErr error
	// For the verify group: the plugin (its access-token verifier), the
	// agent-token verifier and the mint request's form.
	plugin        *plugin.Plugin
	agentVerifier *agenttoken.AgentVerifier
	agentForm     url.Values
	stop          func()
}

// startDeputy starts deputy on d and seeds it. The caller stops it.
func startDeputy(ctx context.Context, listen string, d *database) (*deputyServer, error) {
	ln, base, err := listenLoopback(listen)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		ln.Close()
		return nil, err
	}
	p, err := plugin.New(ctx, plugin.Config{
		Store:        d.Store,
		Directory:    staticDirectory{benchOwner: {benchReadScope, benchWrite}},
		Sessions:     noSessions{},
		SystemSecret: secret,
		Issuer:       base,
		Scopes: []plugin.ScopeEntry{
			{Name: benchReadScope, Description: "Read projects"},
			{Name: benchWrite, Description: "Change projects", Write: true},
		},
		Agents: true,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	agentVerifier := &agenttoken.AgentVerifier{Keys: p.Keys(), Issuer: base}
	var agentErr error
	stopHTTP := serveOn(ln, p.OAuth2Handler())
	s := &deputyServer{
		endpoint:      base + plugin.TokenPath,
		plugin:        p,
		agentVerifier: agentVerifier,
		stop: func() {
			stopHTTP()
			p.Close()
		},
	}
	if err := s.seed(ctx, d.Store); err != nil {
		s.stop()
		return nil, fmt.Errorf("seed: %w", err)
	}
	s.cc = tokenSpec{Endpoint: s.endpoint, ClientID: benchAppID, Secret: s.appSecret, Form: url.Values{
		"grant_type":   {plugin.GrantTypeClientCredentials},
		"scope":        {benchReadScope},
		"organization": {benchOrg},
	}}
	if agentErr == nil {
		agentErr = s.prepareAgent(ctx, d.Store)
	}
	s.agentErr = agentErr
	return s, nil
}

// seed creates the owner's app and the agent platform, each with a secret.
func (s *deputyServer) seed(ctx context.Context, st *storage.Store) error {
	app := &storage.Client{
		ID:                      benchAppID,
		Name:                    "bench app",
		GrantTypes:              []string{plugin.GrantTypeClientCredentials},
		Scopes:                  []string{benchReadScope, benchWrite},
		TokenEndpointAuthMethod: "client_secret_basic",
	}
	app.SetOwner(benchOwner)
	platform := &storage.Client{
		ID:                      benchPlatform,
		Name:                    "bench agent platform",
		GrantTypes:              []string{plugin.GrantTypeAgentToken},
		Scopes:                  []string{benchReadScope, benchWrite},
		TokenEndpointAuthMethod: "client_secret_basic",
	}
	for _, c := range []struct {
		client *storage.Client
		secret *string
	}{{app, &s.appSecret}, {platform, &s.platSec}} {
		if err := st.CreateClient(ctx, c.client); err != nil {
			return err
		}
		sec, hash, prefix, err := clientsecret.NewClientSecret()
		if err != nil {
			return err
		}
		if _, err := st.CreateClientSecret(ctx, c.client.ID, hash, prefix); err != nil {
			return err
		}
		*c.secret = sec
	}
	return nil
}

// prepareAgent obtains the user token an agent platform exchanges (the
// owner's own client_credentials token: a token issued by this IdP whose
// subject is the user), records the user's approval of the write scope for
// the bench session, and builds the mint request.
func (s *deputyServer) prepareAgent(ctx context.Context, st *storage.Store) error {
	userToken, err := fetchToken(ctx, s.endpoint, benchAppID, s.appSecret, url.Values{
		"grant_type":   {plugin.GrantTypeClientCredentials},
		"scope":        {benchReadScope + " " + benchWrite},
		"organization": {benchOrg},
	})
	if err != nil {
		return fmt.Errorf("user token: %w", err)
	}
	if _, err := st.ApproveAgentGrant(ctx, benchOrg, benchOwner, benchPlatform, benchSession, []string{benchWrite}, time.Now().Add(time.Hour)); err != nil {
		return fmt.Errorf("approve grant: %w", err)
	}
	form := url.Values{
		"grant_type":         {plugin.GrantTypeAgentToken},
		"subject_token":      {userToken},
		"subject_token_type": {protocol.TokenTypeAccessToken},
		"agent_session_id":   {benchSession},
		"organization":       {benchOrg},
		"scope":              {benchReadScope + " " + benchWrite},
	}
	spec := tokenSpec{Endpoint: s.endpoint, ClientID: benchPlatform, Secret: s.platSec, Form: form}
	// One mint now, so that a grant that refuses the seed is reported as
	// such rather than as thousands of errors.
	w := &worker{}
	defer w.close()
	if err := spec.op()(ctx, w); err != nil {
		return fmt.Errorf("first mint: %w", err)
	}
	s.agent = &spec
	s.agentForm = form
	return nil
}

// fetchToken asks endpoint for a token and returns its access_token.
func fetchToken(ctx context.Context, endpoint, clientID, secret string, form url.Values) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	resp, err := newHTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, body)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("no access_token in %.200s", body)
	}
	return tok.AccessToken, nil
}

// runDeputy measures the client_credentials, agent-token and verify cells
// on d.
func (b *bench) runDeputy(ctx context.Context, d *database, cc, agent, verify bool) {
	ccGroup, agentGroup := groupCCPostgres, groupAgtPostgres
	if d.Backend == "sqlite" {
		ccGroup, agentGroup = groupCCSQLite, groupAgtSQLite
	}
	if !cc && !agent && !verify {
		return
	}
	srv, err := startDeputy(ctx, b.o.listen, d)
	if err != nil {
		err = fmt.Errorf("start deputy: %w", err)
		if cc {
			b.unavailable(ccGroup, cellPlugin, "client_credentials", d.Backend, err)
		}
		if agent {
			b.unavailable(agentGroup, cellPlugin, "agent-token", d.Backend, err)
		}
		if verify {
			b.verifyUnavailable(grantOpaqueMW, d.Backend, err)
		}
		return
	}
	defer srv.stop()
	if cc {
		b.runHTTPGroup(ctx, d, ccGroup, "client_credentials", srv.cc)
	}
	if agent {
		if srv.agent == nil {
			b.unavailable(agentGroup, cellPlugin, "agent-token", d.Backend, srv.agentErr)
		} else {
			b.runHTTPGroup(ctx, d, agentGroup, "agent-token", *srv.agent)
		}
	}
	if verify {
		b.runVerify(ctx, d, srv)
	}
}

func (b *bench) runHTTPGroup(ctx context.Context, d *database, group, grant string, spec tokenSpec) {
	counter := localCounter{d.Counter}
	sc, err := sqlPerRequest(ctx, counter, spec.op(), b.o.sqlSamples)
	if err != nil {
		b.unavailable(group, cellPlugin, grant, d.Backend, err)
		return
	}
	b.measure(ctx, cellSpec{
		group: group, cell: cellPlugin, grant: grant, backend: d.Backend,
		request: &spec, counter: counter, sql: sc,
		cpu: cpuMeter{PGStore: d.Store, PGApp: appName},
	})
}

// listenLoopback listens on listen, which must be a loopback address.
func listenLoopback(listen string) (net.Listener, string, error) {
	if err := checkLoopback(context.Background(), listen); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", fmt.Errorf("deputy-bench: listen %s: %w", listen, err)
	}
	return ln, "http://" + ln.Addr().String(), nil
}

// serveOn serves h on ln until the returned function is called.
func serveOn(ln net.Listener, h http.Handler) func() {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("deputy-bench: serve:", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck // best effort at the end of a run
	}
}
