package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage/querycount"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// idpBuild builds deputy-idp once for the package's tests; TestMain
// removes it.
var idpBuild builtIdp

type builtIdp struct {
	once     sync.Once
	dir, bin string
	err      error
}

func (b *builtIdp) cleanup() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// directoryQueries is the SQL round trips deputy-idp's Directory makes per
// token once warm: none, its answer kept in memory and checked in deputy's
// own statement (plugin Config.UserScopesCacheTTL; two round trips before
// the Directory became one joined query, one before it was kept).
const directoryQueries = 0

func testIdpBinary(t *testing.T) string {
	t.Helper()
	idpBuild.once.Do(func() {
		idpBuild.dir, idpBuild.err = os.MkdirTemp("", "deputy-bench-test-idp-")
		if idpBuild.err == nil {
			idpBuild.bin, idpBuild.err = buildIdp(context.Background(), idpBuild.dir)
		}
	})
	if idpBuild.err != nil {
		t.Fatalf("build deputy-idp: %v", idpBuild.err)
	}
	return idpBuild.bin
}

// TestIdpRoundTrips starts the shipped binary as the deputy-idp cells do
// (its own process, its SQL Directory, seeded through its CLI and consent
// endpoint) next to the plugin cell on the same dialect, reads the
// server's query counts from its debug listener, and checks issue 14's
// bound: a token of the shipped binary costs at most one SQL round trip
// more than the plugin's (its Directory's query), and since the Directory's
// answers are kept, none more. It then drives the
// shipped binary briefly from the load-generator process, as make bench
// does, and checks that every request got its token and that the counts
// moved. Counts only: no timing is asserted.
func TestIdpRoundTrips(t *testing.T) {
	t.Parallel()
	bin := testIdpBinary(t)
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		ctx := context.Background()

		// The plugin cell.
		srv, qc := startCounted(t, b)
		if srv.agent == nil {
			t.Fatalf("plugin: agent-token grant unavailable: %v", srv.agentErr)
		}

		// The shipped binary.
		proc, err := startIdp(ctx, bin, b.NewDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(proc.stop)
		seed, err := proc.seedIdp(ctx)
		if err != nil {
			t.Fatalf("seed: %v; log:\n%s", err, proc.logs)
		}

		tests := []struct {
			name         string
			plugin, idp  tokenSpec
			pluginWanted float64
		}{
			{"client_credentials", srv.cc, seed.cc, 1},
			{"agent-token", *srv.agent, seed.agent, 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				pc, err := sqlPerRequest(ctx, localCounter{qc}, tt.plugin.op(), 9)
				if err != nil {
					t.Fatal(err)
				}
				ic, err := sqlPerRequest(ctx, proc, tt.idp.op(), 9)
				if err != nil {
					t.Fatalf("deputy-idp: %v; log:\n%s", err, proc.logs)
				}
				if pc.PerRequest != tt.pluginWanted {
					t.Errorf("plugin: %.0f SQL round trips per token, want %.0f; over 9: %s", pc.PerRequest, tt.pluginWanted, pc.Total)
				}
				// Issue 14's target is at most one more: deputy-idp's SQL
				// Directory's one query (the account and its memberships,
				// cmd/deputy-idp/users.go), answered from memory once warm.
				// Asserted exactly, so that a change either way is seen.
				if ic.PerRequest != pc.PerRequest+directoryQueries {
					t.Errorf("deputy-idp: %.0f SQL round trips per token, plugin %.0f: want %d more (its Directory); over 9: %s",
						ic.PerRequest, pc.PerRequest, directoryQueries, ic.Total)
				}
				if ic.Total.Begin != 0 {
					t.Errorf("deputy-idp: %d transactions over 9 tokens, want none: %s", ic.Total.Begin, ic.Total)
				}

				// A short run from the load-generator process.
				var before, after querycount.Counts
				cpu := cpuMeter{ServerPID: proc.pid()}
				run, err := runLoadProcess(ctx, loadgenSpec{Request: tt.idp, Clients: 2, Duration: 300 * time.Millisecond}, func() func() {
					before, err = proc.Counts(ctx)
					cpu.start(ctx)
					return func() {
						cpu.stop(ctx)
						after, err = proc.Counts(ctx)
					}
				})
				if err != nil {
					t.Fatalf("load generator: %v", err)
				}
				if run.Requests == 0 || run.Errors != 0 || run.Sent < run.Requests {
					t.Fatalf("load generator: %d requests, %d errors (first: %s), %d sent", run.Requests, run.Errors, run.FirstError, run.Sent)
				}
				// One a token, fewer where concurrent tokens were written
				// (or read) together; the window's edges may count a
				// request or two in flight, so the bound has room (the
				// exact count is the sequential one above).
				if got := after.Sub(before).RoundTrips(); got == 0 || got > run.Requests+run.Requests/2 {
					t.Errorf("deputy-idp: %d SQL round trips for %d tokens under load", got, run.Requests)
				}
				if !cpu.ServerMeasured {
					t.Errorf("deputy-idp's CPU time was not readable (pid %d)", proc.pid())
				}
			})
		}
	})
}

// TestRunIdpCells runs the bench itself, briefly, on the plugin and
// deputy-idp cells of each dialect, as make bench does (fresh databases
// made and dropped, the binary started, seeded and driven from the
// load-generator process), and checks what the table is made of: every row
// measured without errors, the SQL per token counted on each server, the
// servers' CPU read, the deputy-idp rows compared with the plugin's.
// Counts and presence only: no timing is asserted.
func TestRunIdpCells(t *testing.T) {
	t.Parallel()
	bin := testIdpBinary(t)
	cells := []string{groupCCSQLite, groupAgtSQLite, groupIdpCCSQLite, groupIdpAgtSQLite}
	args := []string{"-clients", "2", "-duration", "200ms", "-warmup", "0s", "-sql-samples", "9", "-idp-binary", bin}
	if pg := os.Getenv("DEPUTY_TEST_DATABASE_URL"); pg != "" {
		cells = append(cells, groupCCPostgres, groupAgtPostgres, groupIdpCCPostgres, groupIdpAgtPostgres)
		args = append(args, "-postgres", pg)
	} else if os.Getenv("DEPUTY_REQUIRE_POSTGRES") == "1" {
		t.Fatal("DEPUTY_REQUIRE_POSTGRES=1 but DEPUTY_TEST_DATABASE_URL is not set")
	}
	rep, table := runBench(t, append(args, "-cells", strings.Join(cells, ","))...)
	// The clients come from the token endpoint's cache, and deputy-idp's
	// SQL Directory's answers too (directoryQueries).
	wantSQL := map[string]float64{
		groupCCSQLite: 1, groupAgtSQLite: 1, groupIdpCCSQLite: 1 + directoryQueries, groupIdpAgtSQLite: 1 + directoryQueries,
		groupCCPostgres: 1, groupAgtPostgres: 1, groupIdpCCPostgres: 1 + directoryQueries, groupIdpAgtPostgres: 1 + directoryQueries,
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		seen[r.Group] = true
		name := r.Group + "/" + strconv.Itoa(r.Clients)
		if !r.Available || r.Errors != 0 || r.Requests == 0 {
			t.Errorf("%s: available %v, %d requests, %d errors (%s%s)", name, r.Available, r.Requests, r.Errors, r.Note, r.FirstError)
			continue
		}
		if r.SQLPerRequest == nil || *r.SQLPerRequest != wantSQL[r.Group] {
			t.Errorf("%s: SQL per token %v, want %v", name, optf(r.SQLPerRequest, "%.0f"), wantSQL[r.Group])
		}
		if r.SQLPerRequestUnderLoad == nil {
			t.Errorf("%s: no SQL count under load", name)
		}
		if r.CPUPerRequestUs == nil || r.LoadgenCPUPerReqUs == nil {
			t.Errorf("%s: server CPU %s, load generator CPU %s", name, optf(r.CPUPerRequestUs, "%.0f"), optf(r.LoadgenCPUPerReqUs, "%.0f"))
		}
		if r.Cell == cellIdp {
			if r.VsPlugin == nil {
				t.Errorf("%s: no comparison with the plugin cell", name)
			}
			if r.LogLinesPerRequest == nil || *r.LogLinesPerRequest != 0 {
				t.Errorf("%s: %s log lines per successful request at the default level, want 0", name, optf(r.LogLinesPerRequest, "%.2f"))
			}
		}
		if r.Backend == "postgres" && r.PGCPUPerRequestUs == nil {
			t.Errorf("%s: the PostgreSQL backends' CPU was not read", name)
		}
	}
	for _, g := range cells {
		if !seen[g] {
			t.Errorf("no row for %s", g)
		}
	}
	if !strings.Contains(table, "deputy-idp SQL round trips per token") {
		t.Errorf("the table lacks the deputy-idp targets:\n%s", table)
	}
}

// runBench runs the bench with args, as make bench does, and returns its
// JSON report and its table.
func runBench(t *testing.T, args ...string) (report, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "bench.json")
	var table strings.Builder
	if err := run(append(args, "-json-out", out), &table); err != nil {
		t.Fatalf("run: %v\n%s", err, table.String())
	}
	buf, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(buf, &rep); err != nil {
		t.Fatal(err)
	}
	return rep, table.String()
}
