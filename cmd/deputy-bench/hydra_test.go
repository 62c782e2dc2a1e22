package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestHydraEnvDropsHydraConfiguration(t *testing.T) {
	// Not parallel: it sets environment variables.
	dropped := []string{"SERVE_PUBLIC_PORT", "LOG_LEVEL", "OAUTH2_HASHERS_ALGORITHM", "SECRETS_SYSTEM",
		"PROFILING", "VERSION", "GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GODEBUG"}
	for _, k := range dropped {
		t.Setenv(k, "1")
	}
	t.Setenv("DSN", "postgres://elsewhere")
	t.Setenv("DBX_OF_BENCH", "kept")
	env := hydraEnv("DSN=postgres://ours")
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(dropped, k) {
			t.Errorf("hydraEnv kept %s", kv)
		}
		if k == "DSN" && kv != "DSN=postgres://ours" {
			t.Errorf("hydraEnv kept the caller's %s", kv)
		}
	}
	if !slices.Contains(env, "DBX_OF_BENCH=kept") {
		t.Error("hydraEnv dropped a variable Hydra does not read")
	}
}

func TestLastLines(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a", 5, "a"},
		{"", 1, ""},
	} {
		if got := lastLines(tt.in, tt.n); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// TestRunHydraCell runs the hydra cell against a built Hydra, as make
// bench does: a fresh database migrated by Hydra, `hydra serve all`, a
// client made through its admin API, the load generator's requests all
// answered with tokens, Hydra's CPU read, and the
// plugin's row compared with it. Building Hydra takes minutes and its
// modules come from the network, so make test does not: set
// DEPUTY_BENCH_HYDRA_BINARY to one built with
//
//	go build -C cmd/deputy-bench/hydra -o /tmp/hydra github.com/ory/hydra/v2
//
// (make bench builds its own). .ci/run builds one and sets
// DEPUTY_REQUIRE_HYDRA=1, with which a missing Hydra or PostgreSQL fails
// this test instead of skipping it.
func TestRunHydraCell(t *testing.T) {
	t.Parallel()
	bin := os.Getenv("DEPUTY_BENCH_HYDRA_BINARY")
	pg := os.Getenv("DEPUTY_TEST_DATABASE_URL")
	if bin == "" || pg == "" {
		if os.Getenv("DEPUTY_REQUIRE_HYDRA") == "1" {
			t.Fatal("DEPUTY_REQUIRE_HYDRA=1 but DEPUTY_BENCH_HYDRA_BINARY or DEPUTY_TEST_DATABASE_URL is not set")
		}
		t.Skip("opt-in: needs DEPUTY_BENCH_HYDRA_BINARY and DEPUTY_TEST_DATABASE_URL (.ci/run sets both)")
	}
	rep, table := runBench(t, "-clients", "2", "-duration", "500ms", "-warmup", "0s", "-hydra-binary", bin,
		"-postgres", pg, "-cells", groupHydra+","+groupCCPostgres)
	if rep.Machine.Hydra == "" {
		t.Error("the report does not name Hydra's version")
	}
	var hydra, plugin *result
	for _, r := range rep.Results {
		switch r.Group {
		case groupHydra:
			hydra = r
		case groupCCPostgres:
			plugin = r
		}
	}
	if hydra == nil || !hydra.Available || hydra.Requests == 0 || hydra.Errors != 0 {
		t.Fatalf("hydra row: %+v\n%s", hydra, table)
	}
	// Its backends' CPU is read only when its pool kept its connections
	// (Hydra's opens and closes them under load), so it is not required.
	if hydra.CPUPerRequestUs == nil {
		t.Error("hydra row: its process's CPU was not read")
	}
	if plugin == nil || plugin.VsHydra == nil {
		t.Errorf("the plugin's row is not compared with Hydra's: %+v", plugin)
	}
}
