package testkit

import (
	"slices"
	"strings"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

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
