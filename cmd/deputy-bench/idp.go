package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
)

// The deputy-idp cells measure the binary users run: `deputy-idp serve`
// built from this module, started as a user starts it (its own process,
// configured through its documented environment, --no-demo as in any real
// deployment, logs at the default level to a pipe the bench drains), on a
// fresh database, seeded through its admin CLI and its pages, and driven
// over loopback HTTP. Its Directory is its SQL one, and its requests pass
// its whole middleware stack.
//
// The only thing the bench adds is DEPUTY_DEBUG_LISTEN: a loopback
// listener (cmd/deputy-idp/debug.go) whose /debug/querycount gives the SQL
// the server made, so that round trips per token are counted on the
// server's own driver, as for the plugin cells.

// idpProcess is one running deputy-idp serve.
type idpProcess struct {
	*process
	bin   string
	env   []string
	base  string // http://127.0.0.1:PORT, the public listener
	debug string // http://127.0.0.1:PORT, the debug listener
}

// idpBinary returns the deputy-idp to measure: -idp-binary, or one built
// now into a temporary directory, removed by cleanup.
func (b *bench) idpBinary(ctx context.Context) (string, func(), error) {
	if b.o.idpBinary != "" {
		return b.o.idpBinary, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "deputy-bench-idp-")
	if err != nil {
		return "", nil, err
	}
	b.logf("building deputy-idp…")
	bin, err := buildIdp(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// buildIdp builds cmd/deputy-idp into dir with the go command on PATH; the
// working directory must be inside this module (make bench and go test
// run there).
func buildIdp(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "deputy-idp")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/deputyauth/deputy/cmd/deputy-idp")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, nil
}

// idpEnv is this process's environment without anything that configures
// deputy-idp (so that a developer's DATABASE_URL or OTLP endpoint does not
// leak into the measurement), plus env.
func idpEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DEPUTY_") || strings.HasPrefix(k, "OTEL_") || k == "DATABASE_URL" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, env...)
}

var (
	bannerPattern   = regexp.MustCompile(`deputy-idp is running at (http://\S+)`)
	debugLogPattern = regexp.MustCompile(`msg="debug listening" addr=(\S+)`)
)

// logTail drains a stream of log lines, keeping the last few for error
// reports, counting them, and remembering the first match of each pattern.
type logTail struct {
	mu      sync.Mutex
	last    []string
	lines   atomic.Int64
	matches map[*regexp.Regexp]string
	changed chan struct{}
}

func newLogTail(patterns ...*regexp.Regexp) *logTail {
	t := &logTail{matches: map[*regexp.Regexp]string{}, changed: make(chan struct{}, 1)}
	for _, p := range patterns {
		t.matches[p] = ""
	}
	return t
}

func (t *logTail) drain(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t.lines.Add(1)
		t.mu.Lock()
		t.last = append(t.last, line)
		if len(t.last) > 20 {
			t.last = t.last[1:]
		}
		for p, v := range t.matches {
			if v == "" {
				if m := p.FindStringSubmatch(line); m != nil {
					t.matches[p] = m[1]
				}
			}
		}
		t.mu.Unlock()
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

func (t *logTail) match(p *regexp.Regexp) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.matches[p]
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.last, "\n")
}

// startIdp starts bin serve on dsn and waits until both its listeners are
// up. The caller stops it.
func startIdp(ctx context.Context, bin, dsn string) (*idpProcess, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, err
	}
	p := &idpProcess{
		bin: bin,
		// What an operator sets (docs/idp.md), and the debug listener.
		env: idpEnv(
			"DATABASE_URL="+dsn,
			"DEPUTY_SYSTEM_SECRET="+hex.EncodeToString(secret[:]),
		),
	}
	banner := newLogTail(bannerPattern)
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--no-demo")
	cmd.Env = append(p.env, debugListenEnv+"=127.0.0.1:0")
	proc, err := startProcess(cmd, banner, newLogTail(debugLogPattern))
	if err != nil {
		return nil, err
	}
	p.process = proc

	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for {
		p.base, p.debug = banner.match(bannerPattern), p.logs.match(debugLogPattern)
		if p.base != "" && p.debug != "" {
			break
		}
		select {
		case <-banner.changed:
		case <-p.logs.changed:
		case <-p.exited:
			return nil, fmt.Errorf("deputy-idp exited: %v; its log:\n%s", p.waitErr, p.logs)
		case <-deadline.C:
			p.stop()
			return nil, fmt.Errorf("deputy-idp did not start within 2 minutes; its log:\n%s", p.logs)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		}
	}
	p.debug = "http://" + p.debug
	for _, u := range []string{p.base, p.debug} {
		if err := checkURLLoopback(ctx, u); err != nil {
			p.stop()
			return nil, err
		}
	}
	return p, nil
}

// debugListenEnv is deputy-idp's (cmd/deputy-idp/debug.go).
const debugListenEnv = "DEPUTY_DEBUG_LISTEN"

// Counts reads the server's query counts from its debug listener.
func (p *idpProcess) Counts(ctx context.Context) (querycount.Counts, error) {
	var c querycount.Counts
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.debug+"/debug/querycount", nil)
	if err != nil {
		return c, err
	}
	resp, err := debugClient.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return c, err
	}
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("%s/debug/querycount: HTTP %d", p.debug, resp.StatusCode)
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("%s/debug/querycount: %w", p.debug, err)
	}
	return c, nil
}

var debugClient = newHTTPClient()

// profile asks the server's debug listener for a CPU profile of d, in the
// background, and returns the function that waits for it and writes it to
// file.
func (p *idpProcess) profile(ctx context.Context, d time.Duration, file string, logf func(string, ...any)) func() {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.debug, secs), nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := (&http.Client{Timeout: d + time.Minute}).Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("HTTP %d", resp.StatusCode)
			return
		}
		f, err := os.Create(file)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done <- err
	}()
	return func() {
		if err := <-done; err != nil {
			logf("deputy-idp profile %s: %v", file, err)
			return
		}
		logf("deputy-idp profile: %s", file)
	}
}

// cli runs one admin command of the binary against the server's database,
// with --json, and decodes what it prints.
func (p *idpProcess) cli(ctx context.Context, args ...string) (map[string]any, error) {
	cmd := exec.CommandContext(ctx, p.bin, append(args, "--json")...)
	cmd.Env = p.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("deputy-idp %s: %w: %s", strings.Join(args[:2], " "), err, stderr.String())
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("deputy-idp %s: %w: %.200s", strings.Join(args[:2], " "), err, out)
	}
	return v, nil
}

// idpSeed is what the load needs, made through the binary's own interfaces.
type idpSeed struct {
	cc    tokenSpec
	agent tokenSpec
}

// seedIdp makes the bench's world as an operator and a user would: the
// owner (users create), the owner's app (apps create) and the agent
// platform (clients create) through the admin CLI; the owner's token from
// the app (client_credentials); the owner's approval of the agent's write
// scope for the bench session by signing in and approving on the consent
// endpoint, as in a browser. Names and scopes are the plugin cells'.
func (p *idpProcess) seedIdp(ctx context.Context) (*idpSeed, error) {
	var pw [18]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, err
	}
	password := hex.EncodeToString(pw[:])
	scopes := benchReadScope + " " + benchWrite
	if _, err := p.cli(ctx, "users", "create", "--username", benchOwner, "--password", password, "--org", benchOrg, "--scope", scopes); err != nil {
		return nil, err
	}
	app, err := p.cli(ctx, "apps", "create", "--owner", benchOwner, "--name", "bench app", "--scope", scopes)
	if err != nil {
		return nil, err
	}
	platform, err := p.cli(ctx, "clients", "create", "--name", "bench agent platform", "--grant", protocol.GrantTypeAgentToken, "--scope", scopes)
	if err != nil {
		return nil, err
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	appID, appSecret := str(app, "client_id"), str(app, "client_secret")
	platID, platSecret := str(platform, "client_id"), str(platform, "client_secret")
	if appID == "" || appSecret == "" || platID == "" || platSecret == "" {
		return nil, errors.New("the admin CLI printed no client id or secret")
	}
	endpoint := p.base + "/oauth2/token"
	s := &idpSeed{cc: tokenSpec{Endpoint: endpoint, ClientID: appID, Secret: appSecret, Form: url.Values{
		"grant_type":   {protocol.GrantTypeClientCredentials},
		"scope":        {benchReadScope},
		"organization": {benchOrg},
	}}}
	userToken, err := fetchToken(ctx, endpoint, appID, appSecret, url.Values{
		"grant_type":   {protocol.GrantTypeClientCredentials},
		"scope":        {scopes},
		"organization": {benchOrg},
	})
	if err != nil {
		return nil, fmt.Errorf("user token: %w", err)
	}
	if err := p.approve(ctx, benchOwner, password, platID); err != nil {
		return nil, err
	}
	s.agent = tokenSpec{Endpoint: endpoint, ClientID: platID, Secret: platSecret, Form: url.Values{
		"grant_type":         {protocol.GrantTypeAgentToken},
		"subject_token":      {userToken},
		"subject_token_type": {protocol.TokenTypeAccessToken},
		"agent_session_id":   {benchSession},
		"organization":       {benchOrg},
		"scope":              {scopes},
	}}
	// One mint now: the grant must carry the approved write scope, or the
	// cell would measure a mint that skips the approval.
	tok, err := fetchTokenScope(ctx, s.agent)
	if err != nil {
		return nil, fmt.Errorf("first mint: %w", err)
	}
	if !strings.Contains(" "+tok+" ", " "+benchWrite+" ") {
		return nil, fmt.Errorf("first mint: scope %q lacks the approved %s", tok, benchWrite)
	}
	return s, nil
}

// approve signs username in and approves platform's write scope for the
// bench session on the consent endpoint.
func (p *idpProcess) approve(ctx context.Context, username, password, platform string) error {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	browser := newHTTPClient()
	browser.Jar = jar
	post := func(path string, form url.Values) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, strings.NewReader(form.Encode()))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := browser.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<12))
		if resp.StatusCode >= 400 {
			return fmt.Errorf("POST %s: HTTP %d: %.200s", path, resp.StatusCode, body)
		}
		return nil
	}
	if err := post("/login", url.Values{"username": {username}, "password": {password}}); err != nil {
		return fmt.Errorf("sign in: %w", err)
	}
	if err := post("/agent/approve", url.Values{
		"organization": {benchOrg}, "clientId": {platform}, "sessionId": {benchSession},
		"scopes": {benchWrite}, "decision": {"approve"},
	}); err != nil {
		return fmt.Errorf("approve: %w", err)
	}
	return nil
}

// fetchTokenScope asks for spec's token and returns the scope granted.
func fetchTokenScope(ctx context.Context, spec tokenSpec) (string, error) {
	w := &worker{}
	defer w.close()
	if err := spec.op()(ctx, w); err != nil {
		return "", err
	}
	var tok struct {
		Scope string `json:"scope"`
	}
	if err := json.Unmarshal(w.buf.Bytes(), &tok); err != nil {
		return "", err
	}
	return tok.Scope, nil
}

// idpCell is one started, seeded deputy-idp on one backend.
type idpCell struct {
	backend string
	proc    *idpProcess
	seed    *idpSeed
	// pg is the bench's own connection to the server's PostgreSQL, to find
	// deputy-idp's backends for their CPU; nil on SQLite.
	pg   *storage.Store
	stop func()
}

// startIdpCell makes a fresh database for backend (a schema on
// -postgres, or a file in a temporary directory), starts bin on it and
// seeds it. stop ends the server and drops the database.
func startIdpCell(ctx context.Context, bin, backend, postgres string) (*idpCell, error) {
	c := &idpCell{backend: backend}
	var (
		dsn     string
		cleanup []func()
	)
	c.stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	switch backend {
	case "postgres":
		u, drop, err := createSchema(ctx, postgres, idpAppName)
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, drop)
		dsn = u
		// The bench's own connection, for pg_stat_activity only.
		pg, err := storage.Open(ctx, postgres)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.pg = pg
		cleanup = append(cleanup, func() { pg.Close() })
	case "sqlite":
		dir, err := os.MkdirTemp("", "deputy-bench-idp-db-")
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		dsn = "sqlite:" + filepath.Join(dir, "deputy.db")
	default:
		return nil, fmt.Errorf("unknown backend %q", backend)
	}
	proc, err := startIdp(ctx, bin, dsn)
	if err != nil {
		c.stop()
		return nil, err
	}
	c.proc = proc
	cleanup = append(cleanup, proc.stop)
	if c.seed, err = proc.seedIdp(ctx); err != nil {
		c.stop()
		return nil, fmt.Errorf("seed deputy-idp: %w; its log:\n%s", err, proc.logs)
	}
	return c, nil
}

func (b *bench) wantIdp(backend string) bool {
	if backend == "postgres" {
		return b.want(groupIdpCCPostgres) || b.want(groupIdpAgtPostgres)
	}
	return b.want(groupIdpCCSQLite) || b.want(groupIdpAgtSQLite)
}

func idpGroups(backend string) (cc, agent string) {
	if backend == "postgres" {
		return groupIdpCCPostgres, groupIdpAgtPostgres
	}
	return groupIdpCCSQLite, groupIdpAgtSQLite
}

func (b *bench) idpUnavailable(backend string, err error) {
	cc, agent := idpGroups(backend)
	if b.want(cc) {
		b.unavailable(cc, cellIdp, "client_credentials", backend, err)
	}
	if b.want(agent) {
		b.unavailable(agent, cellIdp, "agent-token", backend, err)
	}
}

// runIdp measures the deputy-idp cells of backend.
func (b *bench) runIdp(ctx context.Context, bin, backend string) {
	b.logf("deputy-idp on %s: starting and seeding…", backend)
	c, err := startIdpCell(ctx, bin, backend, b.o.postgres)
	if err != nil {
		b.idpUnavailable(backend, fmt.Errorf("deputy-idp: %w", err))
		return
	}
	defer c.stop()
	ccGroup, agentGroup := idpGroups(backend)
	for _, g := range []struct {
		group, grant string
		spec         tokenSpec
	}{{ccGroup, "client_credentials", c.seed.cc}, {agentGroup, "agent-token", c.seed.agent}} {
		if !b.want(g.group) || ctx.Err() != nil {
			continue
		}
		sc, err := sqlPerRequest(ctx, c.proc, g.spec.op(), b.o.sqlSamples)
		if err != nil {
			b.unavailable(g.group, cellIdp, g.grant, backend, err)
			continue
		}
		spec := g.spec
		cs := cellSpec{
			group: g.group, cell: cellIdp, grant: g.grant, backend: backend,
			request: &spec, counter: c.proc, sql: sc,
			cpu:      cpuMeter{ServerPID: c.proc.pid(), PGStore: c.pg, PGApp: idpAppName},
			logLines: c.proc.logs.lines.Load,
		}
		if b.o.idpProfile != "" {
			group := g.group
			cs.profile = func(ctx context.Context, n int) func() {
				return c.proc.profile(ctx, b.o.duration, fmt.Sprintf("%s-%s-%d.prof", b.o.idpProfile, group, n), b.logf)
			}
		}
		b.measure(ctx, cs)
	}
}
