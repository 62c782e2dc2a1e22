// Command deputy-bench measures deputy's token endpoint over real HTTP on
// loopback against two references measured in the same run: the baseline
// (fosite composed as its README shows, in-memory storage, BCrypt secrets)
// and the floor (one INSERT of a token-sized row per request into
// PostgreSQL, the most any stored-token design can reach). It prints one
// table and writes the same as JSON.
//
// Every server it drives is started in-process on a loopback address; it
// refuses any other target. Each cell runs for -warmup, then is measured for
// -duration, at each of -clients closed-loop clients.
//
//	go run ./cmd/deputy-bench -json-out bench-results.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/querycount"
)

const defaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Cell groups, in the order they run and print.
const (
	groupBaseline    = "baseline"
	groupFloor       = "floor"
	groupCCPostgres  = "cc-postgres"
	groupCCSQLite    = "cc-sqlite"
	groupAgtPostgres = "agent-postgres"
	groupAgtSQLite   = "agent-sqlite"
	groupVerify      = "verify"
)

var allGroups = []string{groupBaseline, groupFloor, groupCCPostgres, groupCCSQLite, groupAgtPostgres, groupAgtSQLite, groupVerify}

type options struct {
	duration   time.Duration
	warmup     time.Duration
	clients    []int
	postgres   string
	listen     string
	jsonOut    string
	cpuProfile string
	groups     []string
	sqlSamples int
	timeout    time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "deputy-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("deputy-bench", flag.ContinueOnError)
	o := &options{}
	var clients, groups string
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measured time per cell")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured time before each cell")
	fs.StringVar(&clients, "clients", "1,8,32", "comma-separated concurrent client counts")
	fs.StringVar(&o.postgres, "postgres", defaultPostgres, "PostgreSQL server URL (loopback only); each run makes and drops a fresh schema")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "loopback address the in-process servers listen on")
	fs.StringVar(&o.jsonOut, "json-out", "", "also write the results as JSON to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (narrow it with -cells)")
	fs.StringVar(&groups, "cells", strings.Join(allGroups, ","), "comma-separated cell groups to run: "+strings.Join(allGroups, ","))
	fs.IntVar(&o.sqlSamples, "sql-samples", 20, "sequential requests used to count SQL round trips per request")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "hard limit on the whole run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.duration <= 0 || o.duration > 10*time.Minute {
		return nil, errors.New("-duration must be in (0, 10m]")
	}
	if o.warmup < 0 || o.warmup > time.Minute {
		return nil, errors.New("-warmup must be in [0, 1m]")
	}
	for _, f := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return nil, fmt.Errorf("-clients: %q is not a count in [1, 1024]", f)
		}
		o.clients = append(o.clients, n)
	}
	for _, g := range strings.Split(groups, ",") {
		g = strings.TrimSpace(g)
		if !slices.Contains(allGroups, g) {
			return nil, fmt.Errorf("-cells: unknown group %q (want some of %s)", g, strings.Join(allGroups, ","))
		}
		o.groups = append(o.groups, g)
	}
	if o.sqlSamples < 1 {
		return nil, errors.New("-sql-samples must be at least 1")
	}
	ctx := context.Background()
	if err := checkLoopback(ctx, o.listen); err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	if err := checkURLLoopback(ctx, o.postgres); err != nil {
		return nil, fmt.Errorf("-postgres: %w", err)
	}
	return o, nil
}

// result is one row of the table.
type result struct {
	Group     string `json:"group"`
	Cell      string `json:"cell"`    // baseline, floor, deputy, verify
	Grant     string `json:"grant"`   // client_credentials, agent-token, insert; what is verified for verify
	Backend   string `json:"backend"` // memory, postgres, sqlite
	Clients   int    `json:"clients"`
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`

	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	MeanMs       float64 `json:"mean_ms"`
	FirstError   string  `json:"first_error,omitempty"`

	// The verify rows (testing.Benchmark, one goroutine, in-process):
	// time, allocations and bytes per verification. Their SQL counts are
	// per verification.
	NsPerOp     *float64 `json:"ns_per_op,omitempty"`
	AllocsPerOp *int64   `json:"allocs_per_op,omitempty"`
	BytesPerOp  *int64   `json:"bytes_per_op,omitempty"`

	// SQLPerRequest is counted on sequential requests before the load, so
	// it is exact; SQLPerRequestUnderLoad divides everything the driver saw
	// during the cell (background work included) by the requests sent.
	SQLPerRequest          *float64           `json:"sql_round_trips_per_request,omitempty"`
	WirePerRequest         *float64           `json:"postgres_wire_round_trips_per_request,omitempty"`
	SQLSampled             *querycount.Counts `json:"sql_calls_over_samples,omitempty"`
	SQLSamples             int                `json:"sql_samples,omitempty"`
	SQLPerRequestUnderLoad *float64           `json:"sql_round_trips_per_request_under_load,omitempty"`

	// CPU time per request during the measured phase: of this process
	// (server and load generator together) and of the PostgreSQL backends
	// of its pool. Unlike rates, these hardly move when other processes
	// compete for the machine.
	CPUPerRequestUs   *float64 `json:"cpu_us_per_request,omitempty"`
	PGCPUPerRequestUs *float64 `json:"postgres_cpu_us_per_request,omitempty"`

	// Ratios of tokens/s to the baseline's and the floor's at the same
	// client count.
	VsBaseline *float64 `json:"vs_baseline,omitempty"`
	VsFloor    *float64 `json:"vs_floor,omitempty"`
}

type machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	OS         string `json:"os"`
	Go         string `json:"go"`
	Postgres   string `json:"postgres,omitempty"`
	SQLite     string `json:"sqlite,omitempty"`
	// Load averages (1, 5, 15 min) when the run started and ended: the
	// bench shares the machine with whatever else runs, and says so.
	LoadStart string `json:"loadavg_start,omitempty"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
}

type target struct {
	Name     string  `json:"name"`
	Want     string  `json:"want"`
	Measured string  `json:"measured"`
	Value    float64 `json:"value"`
	Met      *bool   `json:"met,omitempty"` // nil when not measured
}

type report struct {
	When     time.Time `json:"when"`
	Machine  machine   `json:"machine"`
	Duration string    `json:"duration_per_cell"`
	Warmup   string    `json:"warmup_per_cell"`
	Results  []*result `json:"results"`
	Targets  []target  `json:"targets"`
}

func run(args []string, stdout io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, o.timeout)
	defer cancelTimeout()

	// deputy logs internal errors; a bench that drowns in them is broken,
	// and the first error of every cell is in the table anyway.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	rep := &report{
		When:     time.Now().UTC().Truncate(time.Second),
		Machine:  describeMachine(),
		Duration: o.duration.String(),
		Warmup:   o.warmup.String(),
	}
	b := &bench{o: o, rep: rep, progress: os.Stderr}
	err = b.runAll(ctx)
	rep.Machine.LoadEnd = loadAvg()
	rep.Targets = targets(rep.Results)
	printTable(stdout, rep)
	if o.jsonOut != "" {
		buf, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr != nil {
			return jerr
		}
		if werr := os.WriteFile(o.jsonOut, append(buf, '\n'), 0o644); werr != nil {
			return werr
		}
	}
	return err
}

type bench struct {
	o        *options
	rep      *report
	progress io.Writer
	// agentVerified: the agent rows of the verify group ran (on the first
	// backend; they do not touch the database).
	agentVerified bool
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "deputy-bench: "+format+"\n", args...)
}

func (b *bench) want(g string) bool { return slices.Contains(b.o.groups, g) }

// unavailable records every row of a group that could not run, with why.
func (b *bench) unavailable(group, cell, grant, backend string, why error) {
	b.logf("%s: not available: %v", group, why)
	for _, n := range b.o.clients {
		b.rep.Results = append(b.rep.Results, &result{
			Group: group, Cell: cell, Grant: grant, Backend: backend, Clients: n,
			Note: "not available: " + why.Error(),
		})
	}
}

// measure runs o at every client count and appends the rows. counter, when
// set, is the driver counter of the database under the cell; sql holds the
// exact per-request counts measured beforehand.
func (b *bench) measure(ctx context.Context, group, cell, grant, backend string, o op, viaHTTP bool, db *database, sql *sqlCounts) {
	var (
		counter *querycount.Counter
		store   *storage.Store
	)
	if db != nil {
		counter, store = db.Counter, db.Store
	}
	var sent atomic.Int64
	counted := func(ctx context.Context, w *worker) error {
		sent.Add(1)
		return o(ctx, w)
	}
	for _, n := range b.o.clients {
		if ctx.Err() != nil {
			return
		}
		var newClient func() *http.Client
		if viaHTTP {
			newClient = newHTTPClient
		}
		var (
			before   querycount.Counts
			cpu      cpuMeter
			measured int64
		)
		b.logf("%s: %d clients…", group, n)
		lr := runLoad(ctx, n, b.o.warmup, b.o.duration, newClient, counted, func() func() {
			sent.Store(0)
			if counter != nil {
				before = counter.Counts()
			}
			cpu.start(ctx, store)
			return func() {
				cpu.stop()
				measured = sent.Load()
			}
		})
		r := &result{
			Group: group, Cell: cell, Grant: grant, Backend: backend, Clients: n, Available: true,
			Requests: lr.Requests, Errors: lr.Errors, Seconds: lr.Elapsed.Seconds(),
			TokensPerSec: lr.TokensPerSec(),
			P50Ms:        ms(lr.P50), P99Ms: ms(lr.P99), MaxMs: ms(lr.Max), MeanMs: ms(lr.Mean),
			FirstError: lr.FirstError,
		}
		if counter != nil && measured > 0 {
			v := float64(counter.Counts().Sub(before).RoundTrips()) / float64(measured)
			r.SQLPerRequestUnderLoad = &v
		}
		if measured > 0 {
			v := float64(cpu.Self.Microseconds()) / float64(measured)
			r.CPUPerRequestUs = &v
			if cpu.PGMeasured {
				v := float64(cpu.PG.Microseconds()) / float64(measured)
				r.PGCPUPerRequestUs = &v
			}
		}
		if sql != nil {
			r.SQLPerRequest, r.SQLSampled, r.SQLSamples = &sql.PerRequest, &sql.Total, sql.Samples
			if backend == "postgres" {
				r.WirePerRequest = &sql.WirePerRequest
			}
		}
		if lr.Errors > 0 {
			b.logf("%s: %d clients: %d errors, first: %s", group, n, lr.Errors, lr.FirstError)
		}
		b.rep.Results = append(b.rep.Results, r)
	}
}

// sqlCounts is what sqlPerRequest counted.
type sqlCounts struct {
	PerRequest     float64 // median driver calls per request
	WirePerRequest float64 // median PostgreSQL wire round trips per request
	Total          querycount.Counts
	Samples        int
}

// sqlPerRequest runs o sequentially samples times on one worker, counting
// the driver calls of each request, and returns the medians and the total.
// The median is what a request costs: a background write that lands during
// one sample (the last-used bookkeeping of secrets, at most once per
// interval) does not belong to the request; the under-load figure, a mean
// over everything, shows it.
func sqlPerRequest(ctx context.Context, counter *querycount.Counter, o op, viaHTTP bool, samples int) (*sqlCounts, error) {
	w := &worker{}
	if viaHTTP {
		w.client = newHTTPClient()
	}
	// One unmeasured request first: the first use of a pool may open a
	// connection or load keys, which no later request repeats.
	if err := o(ctx, w); err != nil {
		return nil, err
	}
	var (
		total     querycount.Counts
		sql, wire = make([]int64, 0, samples), make([]int64, 0, samples)
	)
	for range samples {
		var err error
		c := counter.Measure(func() { err = o(ctx, w) })
		if err != nil {
			return nil, err
		}
		sql = append(sql, c.RoundTrips())
		wire = append(wire, c.Wire)
		total = total.Add(c)
	}
	slices.Sort(sql)
	slices.Sort(wire)
	return &sqlCounts{
		PerRequest:     float64(sql[len(sql)/2]),
		WirePerRequest: float64(wire[len(wire)/2]),
		Total:          total,
		Samples:        samples,
	}, nil
}

func (b *bench) runAll(ctx context.Context) error {
	if b.want(groupBaseline) {
		endpoint, stop, err := startBaseline(b.o.listen)
		if err != nil {
			b.unavailable(groupBaseline, "baseline", "client_credentials", "memory", err)
		} else {
			b.measure(ctx, groupBaseline, "baseline", "client_credentials", "memory", baselineOp(endpoint), true, nil, nil)
			stop()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	needPG := b.want(groupFloor) || b.want(groupCCPostgres) || b.want(groupAgtPostgres) || b.want(groupVerify)
	if needPG {
		b.logf("postgres: fresh schema on %s", redact(b.o.postgres))
		pg, err := newPostgres(ctx, b.o.postgres)
		if err != nil {
			err = fmt.Errorf("postgres: %w", err)
			for _, g := range []struct{ group, cell, grant string }{
				{groupFloor, "floor", "insert"},
				{groupCCPostgres, "deputy", "client_credentials"},
				{groupAgtPostgres, "deputy", "agent-token"},
			} {
				if b.want(g.group) {
					b.unavailable(g.group, g.cell, g.grant, "postgres", err)
				}
			}
			if b.want(groupVerify) {
				b.verifyUnavailable(grantOpaqueMW, "postgres", err)
			}
		} else {
			b.rep.Machine.Postgres = serverVersion(ctx, pg.Store)
			if b.want(groupFloor) {
				b.runFloor(ctx, pg)
			}
			b.runDeputy(ctx, pg, b.want(groupCCPostgres), b.want(groupAgtPostgres), b.want(groupVerify))
			pg.Close()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if b.want(groupCCSQLite) || b.want(groupAgtSQLite) || b.want(groupVerify) {
		lite, err := newSQLite(ctx)
		if err != nil {
			err = fmt.Errorf("sqlite: %w", err)
			if b.want(groupCCSQLite) {
				b.unavailable(groupCCSQLite, "deputy", "client_credentials", "sqlite", err)
			}
			if b.want(groupAgtSQLite) {
				b.unavailable(groupAgtSQLite, "deputy", "agent-token", "sqlite", err)
			}
			if b.want(groupVerify) {
				b.verifyUnavailable(grantOpaqueMW, "sqlite", err)
			}
		} else {
			b.rep.Machine.SQLite = sqliteVersion(ctx, lite.Store)
			b.runDeputy(ctx, lite, b.want(groupCCSQLite), b.want(groupAgtSQLite), b.want(groupVerify))
			lite.Close()
		}
	}
	return ctx.Err()
}

func (b *bench) runFloor(ctx context.Context, pg *database) {
	if err := setupFloor(ctx, pg); err != nil {
		b.unavailable(groupFloor, "floor", "insert", "postgres", err)
		return
	}
	o := floorOp(pg)
	sc, err := sqlPerRequest(ctx, pg.Counter, o, false, b.o.sqlSamples)
	if err != nil {
		b.unavailable(groupFloor, "floor", "insert", "postgres", err)
		return
	}
	b.measure(ctx, groupFloor, "floor", "insert", "postgres", o, false, pg, sc)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratios fills VsBaseline and VsFloor of every available row.
func ratios(rs []*result) {
	ref := func(cell string, n int) *result {
		for _, r := range rs {
			if r.Cell == cell && r.Clients == n && r.Available && r.TokensPerSec > 0 {
				return r
			}
		}
		return nil
	}
	for _, r := range rs {
		if !r.Available || r.Cell == "baseline" || r.Cell == "verify" {
			continue
		}
		if base := ref("baseline", r.Clients); base != nil {
			v := r.TokensPerSec / base.TokensPerSec
			r.VsBaseline = &v
		}
		if r.Cell == "floor" {
			continue
		}
		if fl := ref("floor", r.Clients); fl != nil {
			v := r.TokensPerSec / fl.TokensPerSec
			r.VsFloor = &v
		}
	}
}

func find(rs []*result, group string, clients int) *result {
	for _, r := range rs {
		if r.Group == group && r.Clients == clients {
			return r
		}
	}
	return nil
}

// targets checks issue 5's numbers against the rows.
func targets(rs []*result) []target {
	ratios(rs)
	var ts []target
	add := func(name, want string, r *result, value func(*result) *float64, show func(float64) string, met func(float64) bool) {
		t := target{Name: name, Want: want, Measured: "not measured"}
		if r != nil && r.Available {
			if v := value(r); v != nil {
				t.Value = *v
				t.Measured = show(*v)
				m := met(*v) && r.Errors == 0
				if r.Errors > 0 {
					t.Measured += fmt.Sprintf(" (%d errors)", r.Errors)
				}
				t.Met = &m
			}
		}
		ts = append(ts, t)
	}
	times := func(v float64) string { return fmt.Sprintf("%.1f×", v) }
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }
	millis := func(v float64) string { return fmt.Sprintf("%.2f ms", v) }
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	p99 := func(r *result) *float64 { return &r.P99Ms }

	cc := find(rs, groupCCPostgres, 8)
	add("client_credentials on PostgreSQL vs baseline, 8 clients", "≥ 20×", cc,
		func(r *result) *float64 { return r.VsBaseline }, times, func(v float64) bool { return v >= 20 })
	add("client_credentials on PostgreSQL vs floor, 8 clients", "≥ 40%", cc,
		func(r *result) *float64 { return r.VsFloor }, pct, func(v float64) bool { return v >= 0.40 })
	add("client_credentials on PostgreSQL p99, 8 clients", "< 5 ms", cc, p99, millis, func(v float64) bool { return v < 5 })
	add("agent-token mint on PostgreSQL p99, 8 clients", "< 5 ms", find(rs, groupAgtPostgres, 8), p99, millis, func(v float64) bool { return v < 5 })
	add("agent-token mint on SQLite p99, 8 clients", "< 5 ms", find(rs, groupAgtSQLite, 8), p99, millis, func(v float64) bool { return v < 5 })
	for _, g := range []struct {
		group, name string
		limit       float64
	}{
		{groupCCPostgres, "client_credentials SQL round trips per token, PostgreSQL", 2},
		{groupCCSQLite, "client_credentials SQL round trips per token, SQLite", 2},
		{groupAgtPostgres, "agent-token SQL round trips per token, PostgreSQL", 3},
		{groupAgtSQLite, "agent-token SQL round trips per token, SQLite", 3},
	} {
		limit := g.limit
		add(g.name, fmt.Sprintf("≤ %g", limit), firstOf(rs, g.group),
			func(r *result) *float64 { return r.SQLPerRequest }, count, func(v float64) bool { return v <= limit })
	}

	// Verification (the verify group).
	micros := func(v float64) string { return fmt.Sprintf("%.1f µs/op", v) }
	nsAsMicros := func(r *result) *float64 {
		if r.NsPerOp == nil {
			return nil
		}
		v := *r.NsPerOp / 1e3
		return &v
	}
	allocs := func(r *result) *float64 {
		if r.AllocsPerOp == nil {
			return nil
		}
		v := float64(*r.AllocsPerOp)
		return &v
	}
	perOp := func(v float64) string { return fmt.Sprintf("%.0f allocs/op", v) }
	agentV, agentMW := findVerify(rs, grantAgentVerifier, ""), findVerify(rs, grantAgentMW, "")
	add("agent-token verification (verifier, EdDSA)", "< 100 µs/op", agentV, nsAsMicros, micros, func(v float64) bool { return v < 100 })
	add("agent-token verification (through the Middleware)", "< 100 µs/op", agentMW, nsAsMicros, micros, func(v float64) bool { return v < 100 })
	add("agent-token verifier allocations", "≤ 20 allocs/op", agentV, allocs, perOp, func(v float64) bool { return v <= 20 })
	// Shown, not judged: no target is set for them.
	info := func(name string, r *result, value func(*result) *float64, show func(float64) string) {
		t := target{Name: name, Want: "(for reference)", Measured: "not measured"}
		if r != nil && r.Available {
			if v := value(r); v != nil {
				t.Value, t.Measured = *v, show(*v)
			}
		}
		ts = append(ts, t)
	}
	// The Middleware's own allocations (the header parsing, the request
	// with the Identity in its context) come on top of the verifier's.
	info("agent-token allocations through the Middleware (verifier's + middleware's)", agentMW, allocs, perOp)
	for _, backend := range []struct{ name, label string }{{"postgres", "PostgreSQL"}, {"sqlite", "SQLite"}} {
		r := findVerify(rs, grantOpaqueMW, backend.name)
		add("opaque token check through the Middleware, "+backend.label+": SQL round trips per verification",
			"= 1 (one indexed lookup)", r, func(r *result) *float64 { return r.SQLPerRequest }, count, func(v float64) bool { return v == 1 })
		info("opaque token check through the Middleware, "+backend.label, r, nsAsMicros, micros)
	}
	return ts
}

// findVerify is the verify row of grant on backend ("" for any).
func findVerify(rs []*result, grant, backend string) *result {
	for _, r := range rs {
		if r.Group == groupVerify && r.Grant == grant && (backend == "" || r.Backend == backend) {
			return r
		}
	}
	return nil
}

// firstOf is the group's first row: SQL counts do not depend on the client
// count.
func firstOf(rs []*result, group string) *result {
	for _, r := range rs {
		if r.Group == group {
			return r
		}
	}
	return nil
}

func printTable(w io.Writer, rep *report) {
	m := rep.Machine
	fmt.Fprintf(w, "\ndeputy-bench %s  —  %d CPUs (%s), GOMAXPROCS %d, %s, %s",
		rep.When.Format(time.RFC3339), m.CPUs, m.CPUModel, m.GOMAXPROCS, m.Go, m.OS)
	if m.Postgres != "" {
		fmt.Fprintf(w, ", PostgreSQL %s", m.Postgres)
	}
	if m.SQLite != "" {
		fmt.Fprintf(w, ", SQLite %s", m.SQLite)
	}
	fmt.Fprintf(w, "\n%s warm-up + %s measured per cell, closed-loop clients over HTTP/1.1 keep-alive on loopback; load average %s at start, %s at end\n\n",
		rep.Warmup, rep.Duration, m.LoadStart, m.LoadEnd)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cell\tgrant\tbackend\tclients\ttokens/s\tp50 ms\tp99 ms\terrors\tSQL/req\twire/req\tCPU µs/req\tPG µs/req\tvs baseline\tvs floor\tns/op\tallocs/op\t")
	for _, r := range rep.Results {
		if !r.Available {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Cell, r.Grant, r.Backend, r.Clients, "n/a")
			continue
		}
		if r.Cell == "verify" {
			// One in-process verification per op: no rate, no latency
			// percentiles; SQL counts are per verification.
			allocs := "-"
			if r.AllocsPerOp != nil {
				allocs = strconv.FormatInt(*r.AllocsPerOp, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t-\t-\t-\t%d\t%s\t%s\t-\t-\t-\t-\t%s\t%s\t\n",
				r.Cell, r.Grant, r.Backend, r.Clients, r.Errors,
				optf(r.SQLPerRequest, "%.0f"), optf(r.WirePerRequest, "%.0f"),
				optf(r.NsPerOp, "%.0f"), allocs)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Cell, r.Grant, r.Backend, r.Clients, r.TokensPerSec, r.P50Ms, r.P99Ms, r.Errors,
			optf(r.SQLPerRequest, "%.0f"), optf(r.WirePerRequest, "%.0f"),
			optf(r.CPUPerRequestUs, "%.0f"), optf(r.PGCPUPerRequestUs, "%.0f"),
			optf(r.VsBaseline, "%.1f×"), optPct(r.VsFloor), "-", "-")
	}
	tw.Flush()
	if slices.ContainsFunc(rep.Results, func(r *result) bool { return r.Group == groupVerify }) {
		fmt.Fprintln(w, "  verify: one verification per op, in-process (testing.Benchmark, one goroutine, no HTTP); SQL/req is per verification; the agent rows touch no database (keys in memory)")
	}

	var notes []string
	for _, r := range rep.Results {
		if !r.Available && r.Note != "" && !slices.Contains(notes, r.Group+": "+r.Note) {
			notes = append(notes, r.Group+": "+r.Note)
		}
	}
	for _, n := range notes {
		fmt.Fprintln(w, "  "+n)
	}

	fmt.Fprintln(w, "\ntargets (issue 5)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range rep.Targets {
		verdict := "-"
		if t.Met != nil {
			verdict = "MISSED"
			if *t.Met {
				verdict = "met"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Want, t.Measured, verdict)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func optf(p *float64, format string) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf(format, *p)
}

func optPct(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", *p*100)
}

func describeMachine() machine {
	m := machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		Go:         runtime.Version(),
		CPUModel:   "unknown",
		LoadStart:  loadAvg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func serverVersion(ctx context.Context, s *storage.Store) string {
	var v string
	if err := s.DB().QueryRowContext(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return "unknown"
	}
	return v
}

func sqliteVersion(ctx context.Context, s *storage.Store) string {
	var v string
	if err := s.DB().QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&v); err != nil {
		return "unknown"
	}
	return v
}
