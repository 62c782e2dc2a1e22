package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"debug/buildinfo"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// The hydra cells measure Ory Hydra, the fosite-based IdP a team would
// otherwise deploy, in its default configuration: the design asks that
// deputy's client_credentials endpoint on PostgreSQL serve at least eight
// times as many tokens as Hydra on the same machine, for the binary users
// run as well as the plugin.
//
// Hydra is the version pinned in cmd/deputy-bench/hydra/go.mod, built with
// the go command (or -hydra-binary), started in production mode (`hydra
// migrate sql up`, then `hydra serve all`, no --dev) on a fresh PostgreSQL
// database, with what it refuses to start without (a DSN, a system secret,
// an issuer URL) and loopback addresses for its two listeners. The issuer
// is https, as Hydra requires outside --dev; TLS is terminated in front of
// Hydra in such a deployment, so Hydra itself serves plain HTTP on
// loopback, like deputy-idp. Everything else is
// Hydra's default, its PBKDF2 secret hasher and its request logs at info
// among them. --sqa-opt-out stops its usage reports, which this machine
// could not send anyway. Its one client is created through its admin API
// with the same grant and scope as deputy's.

// hydraApp names the PostgreSQL connections of Hydra, whose backends'
// CPU the bench reads as it does deputy-idp's.
const hydraApp = "deputy-bench-hydra"

// hydraModule is the module that pins Hydra, relative to deputy's root.
const hydraModule = "cmd/deputy-bench/hydra"

// hydraBinary returns the Hydra to measure: -hydra-binary, or one built
// now into a temporary directory, removed by cleanup.
func (b *bench) hydraBinary(ctx context.Context) (string, func(), error) {
	if b.o.hydraBinary != "" {
		return b.o.hydraBinary, func() {}, nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp("", "deputy-bench-hydra-")
	if err != nil {
		return "", nil, err
	}
	b.logf("building Ory Hydra (%s; the first build downloads its modules)…", hydraModule)
	bin := filepath.Join(dir, "hydra")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ory/hydra/v2")
	cmd.Dir = filepath.Join(root, hydraModule)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build github.com/ory/hydra/v2 in %s: %w: %s", hydraModule, err, lastLines(string(out), 10))
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// moduleRoot is the directory of deputy's go.mod, found by the go command
// from the working directory (make bench runs in it).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside deputy's module: run the bench from its checkout, or give -hydra-binary")
	}
	return filepath.Dir(gomod), nil
}

// hydraVersion is the version of Hydra's module that bin was built from,
// or "" when its build information does not say.
func hydraVersion(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return ""
	}
	if info.Main.Path == "github.com/ory/hydra/v2" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	for _, d := range info.Deps {
		if d.Path == "github.com/ory/hydra/v2" {
			return d.Version
		}
	}
	return ""
}

// hydraProcess is one running `hydra serve all`.
type hydraProcess struct {
	*process
	public, admin string // http://127.0.0.1:PORT
}

// hydraConfigKeys are the top-level keys of Hydra's configuration
// (spec/config.json of the pinned version): each can come from the
// environment, as KEY or KEY_SUB_…
var hydraConfigKeys = []string{"CGROUPS", "CLIENTS", "DB", "DEV", "DSN", "FEATURE_FLAGS", "HSM", "LOG",
	"OAUTH2", "OIDC", "PROFILING", "SECRETS", "SERVE", "SQA", "STRATEGIES", "TRACING", "TTL", "URLS",
	"VERSION", "WEBFINGER"}

// hydraEnv is this process's environment without anything that would
// configure Hydra away from its defaults (its configuration keys, and the
// Go runtime's settings, which a developer's GOGC=… make bench would
// otherwise pass on), plus env.
func hydraEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		skip := slices.Contains([]string{"GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GODEBUG", "GOTRACEBACK"}, k)
		for _, c := range hydraConfigKeys {
			skip = skip || k == c || strings.HasPrefix(k, c+"_")
		}
		if !skip {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// freeLoopbackPorts returns n distinct ports nothing listens on now (all
// held open until all are chosen). Hydra binds them a moment later: a
// port taken in between makes it exit with its reason, which the bench
// reports.
func freeLoopbackPorts(n int) ([]int, error) {
	var (
		ports []int
		held  []net.Listener
	)
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startHydra migrates a fresh database at dsn with bin and serves it,
// waiting until Hydra says it is ready. The caller stops it.
func startHydra(ctx context.Context, bin, dsn string) (*hydraProcess, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, err
	}
	env := hydraEnv("DSN="+dsn, "SECRETS_SYSTEM="+hex.EncodeToString(secret[:]))
	migrate := exec.CommandContext(ctx, bin, "migrate", "sql", "up", "--read-from-env", "--yes")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("hydra migrate sql up: %w: %s", err, lastLines(string(out), 10))
	}

	// Chosen now, after the migration's seconds, so that they are fresh
	// when Hydra binds them.
	ports, err := freeLoopbackPorts(2)
	if err != nil {
		return nil, err
	}
	publicPort, adminPort := strconv.Itoa(ports[0]), strconv.Itoa(ports[1])
	env = append(env,
		"URLS_SELF_ISSUER=https://127.0.0.1:"+publicPort+"/",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+publicPort,
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+adminPort,
	)
	logs := newLogTail()
	cmd := exec.Command(bin, "serve", "all", "--sqa-opt-out")
	cmd.Env = env
	proc, err := startProcess(cmd, logs, logs)
	if err != nil {
		return nil, err
	}
	h := &hydraProcess{
		process: proc,
		public:  "http://127.0.0.1:" + publicPort,
		admin:   "http://127.0.0.1:" + adminPort,
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if ready(ctx, h.public+"/health/ready") && ready(ctx, h.admin+"/health/ready") {
			return h, nil
		}
		select {
		case <-h.exited:
			return nil, fmt.Errorf("hydra exited: %v; its log:\n%s", h.waitErr, h.logs)
		case <-ctx.Done():
			h.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("hydra was not ready within 2 minutes; its log:\n%s", h.logs)
		}
	}
}

// ready says whether GET u answers 200.
func ready(ctx context.Context, u string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := debugClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) //nolint:errcheck // only the status matters
	return resp.StatusCode == http.StatusOK
}

// createClient registers a client_credentials client with scope through
// Hydra's admin API and returns the token request the load generator
// sends for it.
func (h *hydraProcess) createClient(ctx context.Context, scope string) (tokenSpec, error) {
	body, err := json.Marshal(map[string]any{
		"client_name":                "deputy-bench",
		"grant_types":                []string{"client_credentials"},
		"scope":                      scope,
		"token_endpoint_auth_method": "client_secret_basic",
	})
	if err != nil {
		return tokenSpec{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.admin+"/admin/clients", bytes.NewReader(body))
	if err != nil {
		return tokenSpec{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := debugClient.Do(req)
	if err != nil {
		return tokenSpec{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return tokenSpec{}, err
	}
	if resp.StatusCode != http.StatusCreated {
		return tokenSpec{}, fmt.Errorf("hydra: create client: HTTP %d: %.300s", resp.StatusCode, out)
	}
	var c struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := json.Unmarshal(out, &c); err != nil {
		return tokenSpec{}, fmt.Errorf("hydra: create client: %w", err)
	}
	if c.ID == "" || c.Secret == "" {
		return tokenSpec{}, errors.New("hydra: create client: no client_id or client_secret in its answer")
	}
	return tokenSpec{
		Endpoint: h.public + "/oauth2/token",
		ClientID: c.ID,
		Secret:   c.Secret,
		Form:     url.Values{"grant_type": {"client_credentials"}, "scope": {scope}},
	}, nil
}

// runHydra measures the hydra cells: Hydra's client_credentials on
// PostgreSQL.
func (b *bench) runHydra(ctx context.Context) {
	fail := func(err error) {
		b.unavailable(groupHydra, cellHydra, "client_credentials", "postgres", err)
	}
	bin, cleanup, err := b.hydraBinary(ctx)
	if err != nil {
		fail(fmt.Errorf("build hydra: %w", err))
		return
	}
	defer cleanup()
	b.rep.Machine.Hydra = hydraVersion(bin)
	b.logf("hydra %s on postgres: migrating, starting…", b.rep.Machine.Hydra)
	dsn, drop, err := createScratch(ctx, b.o.postgres, hydraApp, scratchDatabase)
	if err != nil {
		fail(err)
		return
	}
	defer drop()
	// The bench's own connection, for pg_stat_activity only.
	pg, err := storage.Open(ctx, b.o.postgres)
	if err != nil {
		fail(err)
		return
	}
	defer pg.Close()
	h, err := startHydra(ctx, bin, dsn)
	if err != nil {
		fail(err)
		return
	}
	defer h.stop()
	spec, err := h.createClient(ctx, benchReadScope)
	if err != nil {
		fail(err)
		return
	}
	// The first token proves the setup before anything is measured.
	w := &worker{}
	err = spec.op()(ctx, w)
	w.close()
	if err != nil {
		fail(fmt.Errorf("hydra: first token: %w; its log:\n%s", err, h.logs))
		return
	}
	b.measure(ctx, cellSpec{
		group: groupHydra, cell: cellHydra, grant: "client_credentials", backend: "postgres",
		request:  &spec,
		cpu:      cpuMeter{ServerPID: h.pid(), PGStore: pg, PGApp: hydraApp},
		logLines: h.logs.lines.Load,
	})
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
