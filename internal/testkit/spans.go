package testkit

import (
	"slices"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

var (
	spansOnce sync.Once
	spans     *tracetest.InMemoryExporter
)

// RecordSpans sets, once per test binary, a global tracer provider that
// records every span into the returned exporter, as a host's OpenTelemetry
// setup would. Once, because OpenTelemetry binds the tracers that packages
// took from the global provider before it was set to the first provider
// set, and to no later one. Tests find their own spans by the trace of a
// root span they start (SpanTree), so tests running in parallel do not
// see each other's.
func RecordSpans() *tracetest.InMemoryExporter {
	spansOnce.Do(func() {
		spans = tracetest.NewInMemoryExporter()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	})
	return spans
}

// SpanTree renders the spans of trace id among all as an indented tree of
// names, children in start order: "root\n  child\n    grandchild\n". Tests
// compare it with the tree they expect, so that a span lost, renamed or
// re-parented shows as a diff.
func SpanTree(all tracetest.SpanStubs, id trace.TraceID) string {
	var mine tracetest.SpanStubs
	for _, s := range all {
		if s.SpanContext.TraceID() == id {
			mine = append(mine, s)
		}
	}
	slices.SortFunc(mine, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	var b strings.Builder
	var walk func(parent trace.SpanID, depth int)
	walk = func(parent trace.SpanID, depth int) {
		for _, s := range mine {
			if s.Parent.SpanID() == parent {
				b.WriteString(strings.Repeat("  ", depth) + s.Name + "\n")
				walk(s.SpanContext.SpanID(), depth+1)
			}
		}
	}
	walk(trace.SpanID{}, 0)
	return b.String()
}
