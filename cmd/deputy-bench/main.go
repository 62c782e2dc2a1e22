// Command deputy-bench measures deputy's token endpoint over real HTTP on
// loopback: mounted in-process with plugin.New over a fixed Directory (the
// plugin cells), and as users run it, the deputy-idp binary started with
// `serve` in its own process over its SQL Directory (the deputy-idp cells),
// against two references measured in the same run: the baseline (fosite
// composed as its README shows, in-memory storage, BCrypt secrets) and the
// floor (one INSERT of a token-sized row per request into PostgreSQL, the
// most any stored-token design can reach). It prints one table and writes
// the same as JSON.
//
// Every server it drives listens on a loopback address; it refuses any
// other target. The load generator runs in a process of its own
// (loadgen.go). Each cell runs for -warmup, then is measured for -duration,
// at each of -clients closed-loop clients.
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
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
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
	groupBaseline       = "baseline"
	groupHydra          = "hydra"
	groupFloor          = "floor"
	groupHTTPFloor      = "http-floor"
	groupCCPostgres     = "cc-postgres"
	groupCCSQLite       = "cc-sqlite"
	groupAgtPostgres    = "agent-postgres"
	groupAgtSQLite      = "agent-sqlite"
	groupIdpCCPostgres  = "idp-cc-postgres"
	groupIdpCCSQLite    = "idp-cc-sqlite"
	groupIdpAgtPostgres = "idp-agent-postgres"
	groupIdpAgtSQLite   = "idp-agent-sqlite"
	groupVerify         = "verify"
)

var allGroups = []string{
	groupBaseline, groupHydra, groupFloor, groupHTTPFloor, groupCCPostgres, groupCCSQLite, groupAgtPostgres, groupAgtSQLite,
	groupIdpCCPostgres, groupIdpCCSQLite, groupIdpAgtPostgres, groupIdpAgtSQLite, groupVerify,
}

// Cells: what serves the requests of a row.
const (
	cellBaseline  = "baseline"
	cellHydra     = "hydra" // Ory Hydra, default configuration, its own process
	cellFloor     = "floor"
	cellHTTPFloor = "http-floor" // a handler that does no work, in this process
	cellPlugin    = "plugin"     // plugin.New in this process, fixed Directory
	cellIdp       = "deputy-idp" // the shipped binary, its own process
	cellVerify    = "verify"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	clients     []int
	postgres    string
	listen      string
	jsonOut     string
	cpuProfile  string
	groups      []string
	sqlSamples  int
	timeout     time.Duration
	idpBinary   string
	hydraBinary string
	idpProfile  string
	gogc        int
}

func main() {
	if os.Getenv(loadgenEnv) == "1" {
		os.Exit(loadgenMain(os.Stdin, os.Stdout))
	}
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
	fs.StringVar(&o.postgres, "postgres", defaultPostgres, "PostgreSQL server URL (loopback only); each run makes and drops fresh schemas (and, for the hydra cells, a database: CREATEDB needed)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "loopback address the in-process servers listen on")
	fs.StringVar(&o.jsonOut, "json-out", "", "also write the results as JSON to this file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (narrow it with -cells)")
	fs.StringVar(&groups, "cells", strings.Join(allGroups, ","), "comma-separated cell groups to run: "+strings.Join(allGroups, ","))
	fs.IntVar(&o.sqlSamples, "sql-samples", 20, "sequential requests used to count SQL round trips per request")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "hard limit on the whole run")
	fs.StringVar(&o.idpProfile, "idp-cpuprofile", "", "write a CPU profile of deputy-idp during each measured deputy-idp cell to PREFIX-<group>-<clients>.prof (from its debug listener)")
	fs.StringVar(&o.idpBinary, "idp-binary", "", "a built deputy-idp to measure in the deputy-idp cells (default: go build ./cmd/deputy-idp into a temporary directory)")
	fs.StringVar(&o.hydraBinary, "hydra-binary", "", "a built Ory Hydra to measure in the hydra cells (default: go build the version pinned in "+hydraModule+" into a temporary directory)")
	fs.IntVar(&o.gogc, "gogc", 400, "GOGC of this process, which hosts the in-process cells (plugin, baseline, floor): deputy-idp's own default (it sets its own; the load generator keeps Go's); GOGC in the environment wins unless this flag is given; 0 leaves Go's setting")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "gogc" })
	if os.Getenv("GOGC") != "" && !given {
		o.gogc = 0 // the environment's, which Go applied at start
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
	Cell      string `json:"cell"`    // baseline, hydra, floor, http-floor, plugin, deputy-idp, verify
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
	P999Ms       float64 `json:"p99_9_ms"`
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

	// CPU time per request during the measured phase: of the server's
	// process (this one for the in-process cells, whose load generator is
	// a process of its own; for the floor, which has no HTTP, this process
	// is driver and client at once), of the load generator's, and of the
	// PostgreSQL backends of the server's pool. Unlike rates, these hardly
	// move when other processes compete for the machine.
	CPUPerRequestUs    *float64 `json:"server_cpu_us_per_request,omitempty"`
	LoadgenCPUPerReqUs *float64 `json:"loadgen_cpu_us_per_request,omitempty"`
	PGCPUPerRequestUs  *float64 `json:"postgres_cpu_us_per_request,omitempty"`
	LogLinesPerRequest *float64 `json:"log_lines_per_request,omitempty"`

	// Ratios of tokens/s to the baseline's, Hydra's (client_credentials
	// rows), the floor's and (deputy-idp rows) the plugin cell's of the
	// same grant and backend, at the same client count.
	VsBaseline *float64 `json:"vs_baseline,omitempty"`
	VsHydra    *float64 `json:"vs_hydra,omitempty"`
	VsFloor    *float64 `json:"vs_floor,omitempty"`
	VsPlugin   *float64 `json:"vs_plugin,omitempty"`
}

type machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	OS         string `json:"os"`
	Go         string `json:"go"`
	Postgres   string `json:"postgres,omitempty"`
	SQLite     string `json:"sqlite,omitempty"`
	Hydra      string `json:"hydra,omitempty"` // its module version
	// Load averages (1, 5, 15 min) when the run started and ended: the
	// bench shares the machine with whatever else runs, and says so.
	// GOGC is the in-process cells' collector setting (-gogc).
	GOGC      string `json:"gogc"`
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
	if o.gogc != 0 {
		debug.SetGCPercent(o.gogc)
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

// queryCounter reads the SQL a server made so far: a Counter in this
// process, or deputy-idp's debug listener.
type queryCounter interface {
	Counts(ctx context.Context) (querycount.Counts, error)
}

// localCounter is a Counter of this process.
type localCounter struct{ *querycount.Counter }

func (c localCounter) Counts(context.Context) (querycount.Counts, error) {
	return c.Counter.Counts(), nil
}

// cellSpec is what measure needs to run and describe one group of rows.
type cellSpec struct {
	group, cell, grant, backend string
	// request is what the load generator process sends; inproc, for the
	// floor, what this process runs itself.
	request *tokenSpec
	inproc  op
	// counter counts the server's SQL (nil: no database); sql holds the
	// exact per-request counts measured beforehand.
	counter queryCounter
	sql     *sqlCounts
	// cpu says whose CPU is measured (its ServerPID, PGStore and PGApp).
	cpu cpuMeter
	// logLines, when set, counts the server's log lines so far.
	logLines func() int64
	// profile, when set, is started with the measured phase of n clients
	// and returns the function that ends it.
	profile func(ctx context.Context, n int) func()
}

// measure runs c at every client count and appends the rows.
func (b *bench) measure(ctx context.Context, c cellSpec) {
	for _, n := range b.o.clients {
		if ctx.Err() != nil {
			return
		}
		var (
			before, after querycount.Counts
			countErr      error
			cpu           = c.cpu
			logs0, logs1  int64
		)
		measuring := func() func() {
			if c.counter != nil {
				before, countErr = c.counter.Counts(ctx)
			}
			if c.logLines != nil {
				logs0 = c.logLines()
			}
			var endProfile func()
			if c.profile != nil {
				endProfile = c.profile(ctx, n)
			}
			cpu.start(ctx)
			return func() {
				cpu.stop(ctx)
				if endProfile != nil {
					endProfile()
				}
				if c.logLines != nil {
					logs1 = c.logLines()
				}
				if c.counter != nil && countErr == nil {
					after, countErr = c.counter.Counts(ctx)
				}
			}
		}
		b.logf("%s: %d clients…", c.group, n)
		var (
			lr       loadResult
			measured int64
			loadCPU  *time.Duration
		)
		if c.request != nil {
			run, err := runLoadProcess(ctx, loadgenSpec{Request: *c.request, Clients: n, Warmup: b.o.warmup, Duration: b.o.duration}, measuring)
			if err != nil {
				b.logf("%s: %d clients: %v", c.group, n, err)
				b.rep.Results = append(b.rep.Results, &result{
					Group: c.group, Cell: c.cell, Grant: c.grant, Backend: c.backend, Clients: n,
					Note: "not available: " + err.Error(),
				})
				continue
			}
			lr, measured, loadCPU = run.loadResult, run.Sent, &run.ClientCPU
		} else {
			var sent atomic.Int64
			counted := func(ctx context.Context, w *worker) error {
				sent.Add(1)
				return c.inproc(ctx, w)
			}
			lr = runLoad(ctx, n, b.o.warmup, b.o.duration, counted, func() func() {
				done := measuring()
				sent.Store(0)
				return func() {
					measured = sent.Load()
					done()
				}
			})
		}
		r := &result{
			Group: c.group, Cell: c.cell, Grant: c.grant, Backend: c.backend, Clients: n, Available: true,
			Requests: lr.Requests, Errors: lr.Errors, Seconds: lr.Elapsed.Seconds(),
			TokensPerSec: lr.TokensPerSec(),
			P50Ms:        ms(lr.P50), P99Ms: ms(lr.P99), P999Ms: ms(lr.P999), MaxMs: ms(lr.Max), MeanMs: ms(lr.Mean),
			FirstError: lr.FirstError,
		}
		if c.counter != nil && countErr == nil && measured > 0 {
			v := float64(after.Sub(before).RoundTrips()) / float64(measured)
			r.SQLPerRequestUnderLoad = &v
		}
		if countErr != nil {
			b.logf("%s: %d clients: query counts: %v", c.group, n, countErr)
		}
		if measured > 0 {
			per := func(d time.Duration) *float64 {
				v := float64(d.Microseconds()) / float64(measured)
				return &v
			}
			if cpu.ServerMeasured {
				r.CPUPerRequestUs = per(cpu.Server)
			}
			if loadCPU != nil {
				r.LoadgenCPUPerReqUs = per(*loadCPU)
			}
			if cpu.PGMeasured {
				r.PGCPUPerRequestUs = per(cpu.PG)
			}
			if c.logLines != nil {
				v := float64(logs1-logs0) / float64(measured)
				r.LogLinesPerRequest = &v
			}
		}
		if c.sql != nil {
			r.SQLPerRequest, r.SQLSampled, r.SQLSamples = &c.sql.PerRequest, &c.sql.Total, c.sql.Samples
			if c.backend == "postgres" {
				r.WirePerRequest = &c.sql.WirePerRequest
			}
		}
		if lr.Errors > 0 {
			b.logf("%s: %d clients: %d errors, first: %s", c.group, n, lr.Errors, lr.FirstError)
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
func sqlPerRequest(ctx context.Context, counter queryCounter, o op, samples int) (*sqlCounts, error) {
	w := &worker{}
	defer w.close()
	// One unmeasured request first: the first use of a pool may open a
	// connection or load keys, which no later request repeats.
	if err := o(ctx, w); err != nil {
		return nil, err
	}
	var (
		total     querycount.Counts
		sql, wire = make([]int64, 0, samples), make([]int64, 0, samples)
	)
	for tries := 0; len(sql) < samples; tries++ {
		if tries == 2*samples {
			return nil, errors.New("query counts: too many requests sent twice")
		}
		before, err := counter.Counts(ctx)
		if err != nil {
			return nil, fmt.Errorf("query counts: %w", err)
		}
		w.retries = 0
		if err := o(ctx, w); err != nil {
			return nil, err
		}
		after, err := counter.Counts(ctx)
		if err != nil {
			return nil, fmt.Errorf("query counts: %w", err)
		}
		if w.retries > 0 {
			// Sent twice: the counts may hold both attempts.
			continue
		}
		c := after.Sub(before)
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
			b.unavailable(groupBaseline, cellBaseline, "client_credentials", "memory", err)
		} else {
			spec := baselineSpec(endpoint)
			b.measure(ctx, cellSpec{group: groupBaseline, cell: cellBaseline, grant: "client_credentials", backend: "memory", request: &spec})
			stop()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if b.want(groupHydra) {
		b.runHydra(ctx)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if b.want(groupHTTPFloor) {
		b.runHTTPFloor(ctx)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	// The shipped binary: built once, started once per backend.
	var idpBin string
	if b.wantIdp("postgres") || b.wantIdp("sqlite") {
		bin, cleanup, err := b.idpBinary(ctx)
		if err != nil {
			for _, backend := range []string{"postgres", "sqlite"} {
				b.idpUnavailable(backend, fmt.Errorf("build deputy-idp: %w", err))
			}
		} else {
			defer cleanup()
			idpBin = bin
		}
	}

	needPG := b.want(groupFloor) || b.want(groupCCPostgres) || b.want(groupAgtPostgres) || b.want(groupVerify)
	if needPG {
		b.logf("postgres: fresh schema on %s", redact(b.o.postgres))
		pg, err := newPostgres(ctx, b.o.postgres)
		if err != nil {
			err = fmt.Errorf("postgres: %w", err)
			for _, g := range []struct{ group, cell, grant string }{
				{groupFloor, cellFloor, "insert"},
				{groupCCPostgres, cellPlugin, "client_credentials"},
				{groupAgtPostgres, cellPlugin, "agent-token"},
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
	if idpBin != "" && b.wantIdp("postgres") {
		b.runIdp(ctx, idpBin, "postgres")
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if b.want(groupCCSQLite) || b.want(groupAgtSQLite) || b.want(groupVerify) {
		lite, err := newSQLite(ctx)
		if err != nil {
			err = fmt.Errorf("sqlite: %w", err)
			if b.want(groupCCSQLite) {
				b.unavailable(groupCCSQLite, cellPlugin, "client_credentials", "sqlite", err)
			}
			if b.want(groupAgtSQLite) {
				b.unavailable(groupAgtSQLite, cellPlugin, "agent-token", "sqlite", err)
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
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if idpBin != "" && b.wantIdp("sqlite") {
		b.runIdp(ctx, idpBin, "sqlite")
	}
	return ctx.Err()
}

func (b *bench) runFloor(ctx context.Context, pg *database) {
	if err := setupFloor(ctx, pg); err != nil {
		b.unavailable(groupFloor, cellFloor, "insert", "postgres", err)
		return
	}
	o := floorOp(pg)
	counter := localCounter{pg.Counter}
	sc, err := sqlPerRequest(ctx, counter, o, b.o.sqlSamples)
	if err != nil {
		b.unavailable(groupFloor, cellFloor, "insert", "postgres", err)
		return
	}
	b.measure(ctx, cellSpec{
		group: groupFloor, cell: cellFloor, grant: "insert", backend: "postgres",
		inproc: o, counter: counter, sql: sc,
		cpu: cpuMeter{PGStore: pg.Store, PGApp: appName},
	})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratios fills VsBaseline, VsHydra, VsFloor and VsPlugin of every
// available row.
func ratios(rs []*result) {
	ref := func(cell, grant, backend string, n int) *result {
		for _, r := range rs {
			if r.Cell == cell && r.Clients == n && r.Available && r.TokensPerSec > 0 &&
				(grant == "" || r.Grant == grant) && (backend == "" || r.Backend == backend) {
				return r
			}
		}
		return nil
	}
	for _, r := range rs {
		if !r.Available || r.Cell == cellBaseline || r.Cell == cellHydra || r.Cell == cellHTTPFloor || r.Cell == cellVerify {
			continue
		}
		if base := ref(cellBaseline, "", "", r.Clients); base != nil {
			v := r.TokensPerSec / base.TokensPerSec
			r.VsBaseline = &v
		}
		if h := ref(cellHydra, r.Grant, r.Backend, r.Clients); h != nil {
			v := r.TokensPerSec / h.TokensPerSec
			r.VsHydra = &v
		}
		if r.Cell == cellFloor {
			continue
		}
		if fl := ref(cellFloor, "", "", r.Clients); fl != nil {
			v := r.TokensPerSec / fl.TokensPerSec
			r.VsFloor = &v
		}
		if r.Cell == cellIdp {
			if p := ref(cellPlugin, r.Grant, r.Backend, r.Clients); p != nil {
				v := r.TokensPerSec / p.TokensPerSec
				r.VsPlugin = &v
			}
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

// targets checks the numbers of the design and of issues 5 and 14
// against the rows.
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
	times := func(v float64) string { return fmt.Sprintf("%.1f×", v) }
	pct := func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }
	millis := func(v float64) string { return fmt.Sprintf("%.2f ms", v) }
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	micros := func(v float64) string { return fmt.Sprintf("%.0f µs", v) }
	p99 := func(r *result) *float64 { return &r.P99Ms }
	goCPU := func(r *result) *float64 { return r.CPUPerRequestUs }

	cc := find(rs, groupCCPostgres, 8)
	add("client_credentials on PostgreSQL vs baseline, 8 clients", "≥ 20×", cc,
		func(r *result) *float64 { return r.VsBaseline }, times, func(v float64) bool { return v >= 20 })
	// The design's comparison: Ory Hydra's default configuration, for the
	// binary users run and for the plugin.
	idpCC := find(rs, groupIdpCCPostgres, 8)
	vsHydra := func(r *result) *float64 { return r.VsHydra }
	add("client_credentials on PostgreSQL vs Ory Hydra, deputy-idp, 8 clients", "≥ 8×", idpCC, vsHydra, times, func(v float64) bool { return v >= 8 })
	add("client_credentials on PostgreSQL vs Ory Hydra, plugin, 8 clients", "≥ 8×", cc, vsHydra, times, func(v float64) bool { return v >= 8 })
	add("client_credentials on PostgreSQL vs floor, 8 clients", "≥ 60%", cc,
		func(r *result) *float64 { return r.VsFloor }, pct, func(v float64) bool { return v >= 0.60 })
	for _, g := range []struct{ group, name string }{
		{groupCCPostgres, "client_credentials Go CPU per token, plugin, PostgreSQL, 8 clients"},
		{groupAgtPostgres, "agent-token Go CPU per token, plugin, PostgreSQL, 8 clients"},
		{groupIdpCCPostgres, "client_credentials Go CPU per token, deputy-idp, PostgreSQL, 8 clients"},
		{groupIdpAgtPostgres, "agent-token Go CPU per token, deputy-idp, PostgreSQL, 8 clients"},
	} {
		add(g.name, "≤ 200 µs", find(rs, g.group, 8), goCPU, micros, func(v float64) bool { return v <= 200 })
	}
	for _, g := range []struct{ group, name string }{
		{groupCCPostgres, "client_credentials p99, plugin, PostgreSQL, 8 clients"},
		{groupAgtPostgres, "agent-token mint p99, plugin, PostgreSQL, 8 clients"},
		{groupCCSQLite, "client_credentials p99, plugin, SQLite, 8 clients"},
		{groupAgtSQLite, "agent-token mint p99, plugin, SQLite, 8 clients"},
		{groupIdpCCPostgres, "client_credentials p99, deputy-idp, PostgreSQL, 8 clients"},
	} {
		add(g.name, "< 5 ms", find(rs, g.group, 8), p99, millis, func(v float64) bool { return v < 5 })
	}
	// What the p99 and Go CPU targets stand on here: the tail of a request
	// that does no work over HTTP, and of an INSERT alone.
	httpFloor := find(rs, groupHTTPFloor, 8)
	info("p99, HTTP floor (a handler that does no work), 8 clients", httpFloor, p99, millis)
	info("Go CPU per request, HTTP floor, 8 clients", httpFloor, goCPU, micros)
	info("p99, floor (an INSERT alone, no HTTP), PostgreSQL, 8 clients", find(rs, groupFloor, 8), p99, millis)
	for _, g := range []struct {
		group, name string
		limit       float64
	}{
		// The client comes from the token endpoint's cache, the grant with
		// the subject token (issue 14).
		{groupCCPostgres, "client_credentials SQL round trips per token, plugin, PostgreSQL", 1},
		{groupCCSQLite, "client_credentials SQL round trips per token, plugin, SQLite", 1},
		{groupAgtPostgres, "agent-token SQL round trips per token, plugin, PostgreSQL", 1},
		{groupAgtSQLite, "agent-token SQL round trips per token, plugin, SQLite", 1},
	} {
		limit := g.limit
		add(g.name, fmt.Sprintf("≤ %g", limit), firstOf(rs, g.group),
			func(r *result) *float64 { return r.SQLPerRequest }, count, func(v float64) bool { return v <= limit })
	}
	// The shipped binary against the plugin cell of the same grant and
	// backend: at most one SQL round trip more (its Directory), at least
	// 75 % of its tokens/s.
	for _, g := range []struct{ idp, plugin, name string }{
		{groupIdpCCPostgres, groupCCPostgres, "client_credentials, PostgreSQL"},
		{groupIdpCCSQLite, groupCCSQLite, "client_credentials, SQLite"},
		{groupIdpAgtPostgres, groupAgtPostgres, "agent-token, PostgreSQL"},
		{groupIdpAgtSQLite, groupAgtSQLite, "agent-token, SQLite"},
	} {
		idp, plugin := firstOf(rs, g.idp), firstOf(rs, g.plugin)
		var limit *float64
		if plugin != nil && plugin.Available && plugin.SQLPerRequest != nil {
			v := *plugin.SQLPerRequest + 1
			limit = &v
		}
		want := "≤ plugin + 1"
		if limit != nil {
			want = fmt.Sprintf("≤ %g (plugin + 1)", *limit)
		}
		add("deputy-idp SQL round trips per token, "+g.name, want, idp,
			func(r *result) *float64 {
				if limit == nil {
					return nil
				}
				return r.SQLPerRequest
			}, count, func(v float64) bool { return v <= *limit })
		add("deputy-idp tokens/s vs plugin, "+g.name+", 8 clients", "≥ 75%", find(rs, g.idp, 8),
			func(r *result) *float64 { return r.VsPlugin }, pct, func(v float64) bool { return v >= 0.75 })
	}

	// Verification (the verify group).
	microsOp := func(v float64) string { return fmt.Sprintf("%.1f µs/op", v) }
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
	add("agent-token verification (verifier, EdDSA)", "< 100 µs/op", agentV, nsAsMicros, microsOp, func(v float64) bool { return v < 100 })
	add("agent-token verification (through the Middleware)", "< 100 µs/op", agentMW, nsAsMicros, microsOp, func(v float64) bool { return v < 100 })
	add("agent-token verifier allocations", "≤ 20 allocs/op", agentV, allocs, perOp, func(v float64) bool { return v <= 20 })
	// The Middleware's own allocations (the header parsing, the request
	// with the Identity in its context) come on top of the verifier's.
	info("agent-token allocations through the Middleware (verifier's + middleware's)", agentMW, allocs, perOp)
	for _, backend := range []struct{ name, label string }{{"postgres", "PostgreSQL"}, {"sqlite", "SQLite"}} {
		r := findVerify(rs, grantOpaqueMW, backend.name)
		add("opaque token check through the Middleware, "+backend.label+": SQL round trips per verification",
			"= 1 (one indexed lookup)", r, func(r *result) *float64 { return r.SQLPerRequest }, count, func(v float64) bool { return v == 1 })
		info("opaque token check through the Middleware, "+backend.label, r, nsAsMicros, microsOp)
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
	fmt.Fprintf(w, "\ndeputy-bench %s  —  %d CPUs (%s), GOMAXPROCS %d, GOGC %s, %s, %s",
		rep.When.Format(time.RFC3339), m.CPUs, m.CPUModel, m.GOMAXPROCS, m.GOGC, m.Go, m.OS)
	if m.Postgres != "" {
		fmt.Fprintf(w, ", PostgreSQL %s", m.Postgres)
	}
	if m.SQLite != "" {
		fmt.Fprintf(w, ", SQLite %s", m.SQLite)
	}
	if m.Hydra != "" {
		fmt.Fprintf(w, ", Ory Hydra %s", m.Hydra)
	}
	fmt.Fprintf(w, "\n%s warm-up + %s measured per cell, closed-loop clients (a load-generator process) over HTTP/1.1 keep-alive on loopback; load average %s at start, %s at end\n\n",
		rep.Warmup, rep.Duration, m.LoadStart, m.LoadEnd)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cell\tgrant\tbackend\tclients\ttokens/s\tp50 ms\tp99 ms\terrors\tSQL/tok\twire/tok\tGo µs/tok\tPG µs/tok\tloadgen µs\tvs plugin\tvs baseline\tvs hydra\tvs floor\tns/op\tallocs/op\t")
	for _, r := range rep.Results {
		if !r.Available {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\n", r.Cell, r.Grant, r.Backend, r.Clients, "n/a")
			continue
		}
		if r.Cell == cellVerify {
			// One in-process verification per op: no rate, no latency
			// percentiles; SQL counts are per verification.
			allocs := "-"
			if r.AllocsPerOp != nil {
				allocs = strconv.FormatInt(*r.AllocsPerOp, 10)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t-\t-\t-\t%d\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\t%s\t\n",
				r.Cell, r.Grant, r.Backend, r.Clients, r.Errors,
				optf(r.SQLPerRequest, "%.0f"), optf(r.WirePerRequest, "%.0f"),
				optf(r.NsPerOp, "%.0f"), allocs)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%.2f\t%.2f\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.Cell, r.Grant, r.Backend, r.Clients, r.TokensPerSec, r.P50Ms, r.P99Ms, r.Errors,
			optf(r.SQLPerRequest, "%.0f"), optf(r.WirePerRequest, "%.0f"),
			optf(r.CPUPerRequestUs, "%.0f"), optf(r.PGCPUPerRequestUs, "%.0f"), optf(r.LoadgenCPUPerReqUs, "%.0f"),
			optPct(r.VsPlugin), optf(r.VsBaseline, "%.1f×"), optf(r.VsHydra, "%.1f×"), optPct(r.VsFloor), "-", "-")
	}
	tw.Flush()
	fmt.Fprintln(w, "  Go µs/tok: CPU of the server's process per token (plugin, baseline, http-floor: the bench's own process; deputy-idp, hydra: its process; floor: the bench, which is its own client); loadgen µs: the load generator's")
	if slices.ContainsFunc(rep.Results, func(r *result) bool { return r.Group == groupHTTPFloor }) {
		fmt.Fprintln(w, "  http-floor: a handler in the bench's process that reads the form and answers a token-sized response, checking and storing nothing: HTTP alone")
	}
	if slices.ContainsFunc(rep.Results, func(r *result) bool { return r.Group == groupVerify }) {
		fmt.Fprintln(w, "  verify: one verification per op, in-process (testing.Benchmark, one goroutine, no HTTP); SQL/tok is per verification; the agent rows touch no database (keys in memory)")
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

	fmt.Fprintln(w, "\ntargets (the design, issues 5 and 14)")
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

// gcPercent is the process's GOGC as Go spells it.
func gcPercent() string {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	if p < 0 {
		return "off"
	}
	return strconv.Itoa(p)
}

func describeMachine() machine {
	m := machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		Go:         runtime.Version(),
		GOGC:       gcPercent(),
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
