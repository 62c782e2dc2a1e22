package main

import (
	"context"
	"testing"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestVerifyCases runs each verify row once on each dialect: every token
// passes, the agent token needs no SQL, and the opaque token exactly one
// round trip (the indexed lookup by signature).
func TestVerifyCases(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		ctx := context.Background()
		srv, qc := startCounted(t, b)
		cases, err := verifyCases(ctx, srv, true)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{grantAgentVerifier: 0, grantAgentMW: 0, grantOpaqueVerifier: 1, grantOpaqueMW: 1}
		if len(cases) != len(want) {
			t.Fatalf("%d cases, want %d", len(cases), len(want))
		}
		for _, c := range cases {
			o := func(context.Context, *worker) error { return c.fn() }
			sc, err := sqlPerRequest(ctx, localCounter{qc}, o, 5)
			if err != nil {
				t.Fatalf("%s: %v", c.grant, err)
			}
			if sc.PerRequest != want[c.grant] {
				t.Errorf("%s: %.0f SQL round trips per verification, want %.0f; over 5: %s", c.grant, sc.PerRequest, want[c.grant], sc.Total)
			}
		}
	})
}

func TestTargetsVerify(t *testing.T) {
	t.Parallel()
	ns := func(v float64) *float64 { return &v }
	n := func(v int64) *int64 { return &v }
	rs := []*result{
		{Group: groupVerify, Cell: "verify", Grant: grantAgentVerifier, Backend: "postgres", Available: true, NsPerOp: ns(40e3), AllocsPerOp: n(18)},
		{Group: groupVerify, Cell: "verify", Grant: grantAgentMW, Backend: "postgres", Available: true, NsPerOp: ns(120e3), AllocsPerOp: n(24)},
		{Group: groupVerify, Cell: "verify", Grant: grantOpaqueMW, Backend: "postgres", Available: true, NsPerOp: ns(90e3), AllocsPerOp: n(180), SQLPerRequest: ns(1)},
		{Group: groupVerify, Cell: "verify", Grant: grantOpaqueMW, Backend: "sqlite", Available: true, NsPerOp: ns(50e3), AllocsPerOp: n(250), SQLPerRequest: ns(2)},
	}
	byName := map[string]target{}
	for _, tg := range targets(rs) {
		byName[tg.Name] = tg
	}
	yes, no := true, false
	for _, w := range []struct {
		name     string
		met      *bool
		measured string
	}{
		{"agent-token verification (verifier, EdDSA)", &yes, "40.0 µs/op"},
		{"agent-token verification (through the Middleware)", &no, "120.0 µs/op"},
		{"agent-token verifier allocations", &yes, "18 allocs/op"},
		{"agent-token allocations through the Middleware (verifier's + middleware's)", nil, "24 allocs/op"},
		{"opaque token check through the Middleware, PostgreSQL: SQL round trips per verification", &yes, "1"},
		{"opaque token check through the Middleware, SQLite: SQL round trips per verification", &no, "2"},
		{"opaque token check through the Middleware, SQLite", nil, "50.0 µs/op"},
	} {
		tg, ok := byName[w.name]
		if !ok {
			t.Errorf("no target %q", w.name)
			continue
		}
		if (tg.Met == nil) != (w.met == nil) || (w.met != nil && *tg.Met != *w.met) || tg.Measured != w.measured {
			t.Errorf("%s: met=%v measured=%q, want met=%v measured=%q", w.name, ptrStr(tg.Met), tg.Measured, ptrStr(w.met), w.measured)
		}
	}
	for _, r := range rs {
		if r.VsBaseline != nil || r.VsFloor != nil {
			t.Errorf("%s on %s: a verify row has a throughput ratio", r.Grant, r.Backend)
		}
	}
}
