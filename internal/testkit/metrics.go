package testkit

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"testing"
)

// ParseMetrics reads a /metrics answer in Prometheus' text format into
// series → value, a series being a line's name and labels as written
// (`deputy_token_requests_total{grant_type="client_credentials",outcome="success"}`).
// It fails t on a line it cannot read.
func ParseMetrics(t testing.TB, r io.Reader) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	return out
}

// MetricSteps follows deputy's counters through a test. It scrapes once and
// returns that first scrape, and step: each call scrapes again, checks that
// every counter in want moved by exactly its value and that no other
// deputy_…_total series moved (gauges and histograms are not checked), and
// returns what moved since the previous scrape.
func MetricSteps(t testing.TB, scrape func() map[string]float64) (first map[string]float64, step func(what string, want map[string]float64) map[string]float64) {
	t.Helper()
	last := scrape()
	return last, func(what string, want map[string]float64) map[string]float64 {
		t.Helper()
		now := scrape()
		moved := map[string]float64{}
		for k, v := range now {
			if v != last[k] {
				moved[k] = v - last[k]
			}
		}
		last = now
		for k, v := range want {
			if moved[k] != v {
				t.Errorf("%s: %s moved by %v, want %v", what, k, moved[k], v)
			}
		}
		for k, v := range moved {
			name, _, _ := strings.Cut(k, "{")
			if _, ok := want[k]; ok || !strings.HasPrefix(name, "deputy_") || !strings.HasSuffix(name, "_total") {
				continue
			}
			t.Errorf("%s: %s moved by %v unexpectedly", what, k, v)
		}
		return moved
	}
}
