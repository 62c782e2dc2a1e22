package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The demo users every server seeds (cmd/deputy-idp/seed.go). A deployment
// that changed them (DEPUTY_URL) can say so through the environment.
var (
	alicePassword = envOr("DEPUTY_ALICE_PASSWORD", "alice-demo-password")
	bobPassword   = envOr("DEPUTY_BOB_PASSWORD", "bob-demo-password")
)

const demoOrg = "acme"

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Building the server once per test binary keeps every test on the same
// executable, and the build's cost out of each test.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// deputyBinary returns the path of a freshly built cmd/deputy-idp.
func deputyBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "deputy-integration-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "deputy-idp")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/deputyauth/deputy/cmd/deputy-idp")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/deputy-idp: %w\n%s", err, out.String())
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// target is one deputy-idp the tests talk to: a process of ours, or the
// server at DEPUTY_URL.
type target struct {
	// URL is the issuer and base URL, without a trailing slash.
	URL string
	// databaseURL and secret are what the admin CLI needs to reach the
	// same state the server serves.
	databaseURL string
	secret      string
	// cliPrefix, when set, runs the CLI through another command (for
	// example `docker compose exec -T idp deputy-idp`).
	cliPrefix []string
	// output is what the server process writes (its log), when the test
	// started it.
	output *testkit.Buffer
}

// remoteTarget returns the server at DEPUTY_URL, or nil when it is unset.
// Its admin CLI runs through DEPUTY_CLI when set (a command prefix such as
// "docker compose exec -T idp deputy-idp"), otherwise the locally built
// binary against DEPUTY_DATABASE_URL with DEPUTY_SYSTEM_SECRET.
func remoteTarget(t testing.TB) *target {
	u := strings.TrimSuffix(os.Getenv("DEPUTY_URL"), "/")
	if u == "" {
		return nil
	}
	tg := &target{URL: u, databaseURL: os.Getenv("DEPUTY_DATABASE_URL"), secret: os.Getenv("DEPUTY_SYSTEM_SECRET")}
	if p := strings.Fields(os.Getenv("DEPUTY_CLI")); len(p) > 0 {
		tg.cliPrefix = p
	} else if tg.databaseURL == "" {
		t.Fatal("DEPUTY_URL is set but neither DEPUTY_CLI nor DEPUTY_DATABASE_URL: the tests need the admin CLI to create clients")
	}
	waitHealthy(t, u, nil)
	return tg
}

// eachTarget runs fn against a fresh server per dialect, or only against
// DEPUTY_URL when it is set.
func eachTarget(t *testing.T, fn func(t *testing.T, tg *target)) {
	t.Helper()
	if os.Getenv("DEPUTY_URL") != "" {
		t.Run("remote", func(t *testing.T) { fn(t, remoteTarget(t)) })
		return
	}
	for _, b := range storagetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, startServer(t, b.NewDSN(t), newSecret(t)))
		})
	}
}

// newSecret is a system secret for one test's servers.
func newSecret(t testing.TB) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// randomName returns prefix plus a short random suffix, so that runs against
// a long-lived server (DEPUTY_URL) never collide.
func randomName(prefix string) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b[:])
}

// freeAddr finds a free loopback port. Another process may take it before
// the server binds it; startServer retries when that happens.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs `deputy-idp serve` on dsn, waits until /healthz answers,
// and stops it when t ends, failing t unless it shuts down gracefully.
func startServer(t testing.TB, dsn, secret string) *target {
	t.Helper()
	return startReplica(t, dsn, secret, "")
}

// startReplica is startServer with the issuer given: replicas behind one
// load balancer share one, and tokens name it. Empty means the server's
// own URL. extra are more `serve` flags.
func startReplica(t testing.TB, dsn, secret, issuer string, extra ...string) *target {
	t.Helper()
	return startReplicaEnv(t, dsn, secret, issuer, nil, extra...)
}

// startReplicaEnv is startReplica with env added to the server's
// environment (SSL_CERT_FILE, say).
func startReplicaEnv(t testing.TB, dsn, secret, issuer string, env []string, extra ...string) *target {
	t.Helper()
	bin := deputyBinary(t)
	var lastErr error
	for range 3 {
		addr := freeAddr(t)
		tg := &target{URL: "http://" + addr, databaseURL: dsn, secret: secret}
		iss := issuer
		if iss == "" {
			iss = tg.URL
		}
		args := append([]string{"serve",
			"--listen", addr,
			"--database-url", dsn,
			"--issuer", iss,
			"--system-secret", secret}, extra...)
		cmd := exec.Command(bin, args...)
		// The server must not pick anything up from the developer's shell.
		cmd.Env = append(cleanEnv(), env...)
		out := &testkit.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start deputy-idp: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		err := waitHealthy(t, tg.URL, exited)
		if err == nil {
			t.Cleanup(func() { stopServer(t, cmd, exited, out) })
			tg.output = out
			return tg
		}
		cmd.Process.Kill()
		<-exited
		lastErr = fmt.Errorf("%w\n--- server output ---\n%s", err, out.String())
		if !strings.Contains(out.String(), "address already in use") {
			break
		}
	}
	t.Fatal(lastErr)
	return nil
}

// cleanEnv is the environment without deputy's own variables, so that
// flags alone configure the processes the tests start.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "DATABASE_URL", "DEPUTY_LISTEN", "DEPUTY_ISSUER", "DEPUTY_SYSTEM_SECRET", "DEPUTY_NO_DEMO", "DEPUTY_GRANT_LIFESPAN",
			"DEPUTY_LOG_LEVEL", "DEPUTY_METRICS_LISTEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
			continue
		}
		env = append(env, kv)
	}
	return env
}

var errExited = errors.New("deputy-idp exited before it was healthy")

// waitHealthy polls /healthz until it answers 200. exited, when not nil,
// reports the process ending first.
func waitHealthy(t testing.TB, base string, exited <-chan error) error {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("%w: %v", errExited, err)
		default:
		}
		resp, err := c.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			err := fmt.Errorf("%s/healthz did not answer 200 within a minute (last: %v)", base, err)
			if exited == nil {
				t.Fatal(err)
			}
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopServer sends SIGTERM and requires a clean exit: graceful shutdown is
// part of what the server promises.
func stopServer(t testing.TB, cmd *exec.Cmd, exited <-chan error, out *testkit.Buffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("deputy-idp did not exit cleanly on SIGTERM: %v\n--- server output ---\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("deputy-idp ignored SIGTERM for 30s\n--- server output ---\n%s", out.String())
	}
	if t.Failed() || testing.Verbose() && os.Getenv("DEPUTY_SERVER_LOGS") == "1" {
		t.Logf("--- deputy-idp %s output ---\n%s", strings.Join(cmd.Args[1:4], " "), out.String())
	}
}

// cli runs a deputy-idp admin command against tg's database with --json and
// decodes what it prints.
func (tg *target) cli(t testing.TB, args ...string) map[string]any {
	t.Helper()
	out := tg.cliRaw(t, append(args, "--json")...)
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("deputy-idp %s printed no JSON object: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// cliRaw runs a deputy-idp admin command and returns its standard output.
func (tg *target) cliRaw(t testing.TB, args ...string) []byte {
	t.Helper()
	var cmd *exec.Cmd
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if len(tg.cliPrefix) > 0 {
		full := append(append([]string{}, tg.cliPrefix[1:]...), args...)
		cmd = exec.CommandContext(ctx, tg.cliPrefix[0], full...)
		cmd.Env = os.Environ()
	} else {
		full := append(append([]string{}, args...), "--database-url", tg.databaseURL)
		cmd = exec.CommandContext(ctx, deputyBinary(t), full...)
		cmd.Env = cleanEnv()
		if tg.secret != "" {
			cmd.Env = append(cmd.Env, "DEPUTY_SYSTEM_SECRET="+tg.secret)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("deputy-idp %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// str reads a string field of a decoded JSON object, failing t if absent.
func str(t testing.TB, v map[string]any, key string) string {
	t.Helper()
	s, ok := v[key].(string)
	if !ok || s == "" {
		t.Fatalf("no string %q in %v", key, v)
	}
	return s
}
