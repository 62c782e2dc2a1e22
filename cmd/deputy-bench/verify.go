package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/plugin"
)

// The verify group: what a resource server pays to check a token, measured
// in-process with testing.Benchmark (one goroutine, no network): the agent
// token (EdDSA, the keyring's default) through its verifier and through the
// Middleware, and the opaque dpy_at_ access token through the plugin's
// verifier and through the Middleware on each database.
const (
	grantAgentVerifier  = "agent-token verifier"
	grantAgentMW        = "agent-token middleware"
	grantOpaqueVerifier = "dpy_at_ verifier"
	grantOpaqueMW       = "dpy_at_ middleware"
)

var benchInit sync.Once

// benchmark runs fn under testing.Benchmark for about d and returns the
// result, or the first error fn's op reported.
func benchmark(d time.Duration, fn func() error) (testing.BenchmarkResult, error) {
	benchInit.Do(func() {
		testing.Init()
		// Only -test.benchtime is set: the bench's own flags are on their
		// own FlagSet.
		flag.CommandLine.Set("test.benchtime", d.String()) //nolint:errcheck // a valid duration
	})
	var (
		mu    sync.Mutex
		first error
	)
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := fn(); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				b.FailNow()
			}
		}
	})
	if first != nil {
		return r, first
	}
	if r.N == 0 {
		return r, errors.New("benchmark did not run")
	}
	return r, nil
}

// middlewareOp is one request through h with token, which must pass.
func middlewareOp(h http.Handler, token string) func() error {
	req := httptest.NewRequest(http.MethodGet, "/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return func() error {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			return fmt.Errorf("middleware answered %d (%s)", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
		return nil
	}
}

// verifyCase is one row of the verify group.
type verifyCase struct {
	grant string
	fn    func() error
}

// verifyCases builds the rows of srv on d: the opaque ones always, the agent
// ones when withAgent (they do not touch the database, so one backend is
// enough).
func verifyCases(ctx context.Context, srv *deputyServer, withAgent bool) ([]verifyCase, error) {
	opaque, err := fetchToken(ctx, srv.endpoint, benchAppID, srv.appSecret, url.Values{
		"grant_type":   {plugin.GrantTypeClientCredentials},
		"scope":        {benchReadScope},
		"organization": {benchOrg},
	})
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	ov := srv.plugin.AccessTokenVerifier()
	mw := &resource.Middleware{
		Agent:  srv.agentVerifier,
		Opaque: ov,
		Org:    func(*http.Request) string { return benchOrg },
	}
	h := mw.RequireScopes(benchReadScope)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	var cases []verifyCase
	if withAgent {
		if srv.agentVerifier == nil || srv.agentForm == nil {
			return nil, fmt.Errorf("agent-token grant unavailable: %v", srv.agentErr)
		}
		agent, err := fetchToken(ctx, srv.endpoint, benchPlatform, srv.platSec, srv.agentForm)
		if err != nil {
			return nil, fmt.Errorf("agent token: %w", err)
		}
		av := srv.agentVerifier
		cases = append(cases,
			verifyCase{grantAgentVerifier, func() error { _, err := av.Verify(ctx, agent, benchOrg); return err }},
			verifyCase{grantAgentMW, middlewareOp(h, agent)},
		)
	}
	cases = append(cases,
		verifyCase{grantOpaqueVerifier, func() error { _, err := ov.VerifyAccessToken(ctx, opaque, benchOrg); return err }},
		verifyCase{grantOpaqueMW, middlewareOp(h, opaque)},
	)
	return cases, nil
}

// runVerify measures the verify rows on d and appends them.
func (b *bench) runVerify(ctx context.Context, d *database, srv *deputyServer) {
	withAgent := !b.agentVerified
	cases, err := verifyCases(ctx, srv, withAgent)
	if err != nil && withAgent {
		// Without the agent grant, the opaque rows can still run.
		b.verifyUnavailable(grantAgentVerifier, d.Backend, err)
		b.verifyUnavailable(grantAgentMW, d.Backend, err)
		withAgent = false
		cases, err = verifyCases(ctx, srv, false)
	}
	if err != nil {
		b.verifyUnavailable(grantOpaqueVerifier, d.Backend, err)
		b.verifyUnavailable(grantOpaqueMW, d.Backend, err)
		return
	}
	if withAgent {
		b.agentVerified = true
	}
	for _, c := range cases {
		if ctx.Err() != nil {
			return
		}
		o := func(context.Context, *worker) error { return c.fn() }
		sc, err := sqlPerRequest(ctx, localCounter{d.Counter}, o, b.o.sqlSamples)
		if err != nil {
			b.verifyUnavailable(c.grant, d.Backend, err)
			continue
		}
		b.logf("%s: %s on %s…", groupVerify, c.grant, d.Backend)
		br, err := benchmark(b.o.duration, c.fn)
		if err != nil {
			b.verifyUnavailable(c.grant, d.Backend, err)
			continue
		}
		ns, allocs, bytes := float64(br.T.Nanoseconds())/float64(br.N), br.AllocsPerOp(), br.AllocedBytesPerOp()
		r := &result{
			Group: groupVerify, Cell: cellVerify, Grant: c.grant, Backend: d.Backend, Clients: 1, Available: true,
			Requests: int64(br.N), Seconds: br.T.Seconds(),
			NsPerOp: &ns, AllocsPerOp: &allocs, BytesPerOp: &bytes,
			SQLPerRequest: &sc.PerRequest, SQLSampled: &sc.Total, SQLSamples: sc.Samples,
		}
		if d.Backend == "postgres" {
			r.WirePerRequest = &sc.WirePerRequest
		}
		b.rep.Results = append(b.rep.Results, r)
	}
}

func (b *bench) verifyUnavailable(grant, backend string, why error) {
	b.logf("%s: %s on %s: not available: %v", groupVerify, grant, backend, why)
	b.rep.Results = append(b.rep.Results, &result{
		Group: groupVerify, Cell: cellVerify, Grant: grant, Backend: backend, Clients: 1,
		Note: "not available: " + why.Error(),
	})
}
