package storage

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// This file is what the store tells operators: how many statements failed
// and why (Health, which deputy's metrics export), and a span per statement
// for OpenTelemetry.

// TracerName is the instrumentation scope of the store's spans.
const TracerName = "github.com/deputyauth/deputy/storage"

// tracer comes from the global provider: a host that installs its own
// (otel.SetTracerProvider), before or after Open, gets the store's spans.
var tracer = otel.Tracer(TracerName)

// Health is what a Store has seen of its database since Open.
type Health struct {
	// Unavailable counts statements (and pings, transaction begins,
	// commits and rollbacks) that failed with ErrUnavailable: the database
	// could not be reached or could not serve.
	Unavailable uint64
	// Conflict counts those that failed with ErrConflict.
	Conflict uint64
	// InvalidInput counts those that failed with ErrInvalidInput.
	InvalidInput uint64
	// Other counts every other failure. A missing row is no failure, and
	// neither is a stale client pin (ErrStaleClient) or a caller that went
	// away (context.Canceled).
	Other uint64
	// Available reports whether the last statement or ping reached the
	// database (its outcome was not ErrUnavailable). True until the first
	// one that did not.
	Available bool
}

// health is a Store's running Health. The counters are bumped only on
// failures; a success costs one atomic load.
type health struct {
	unavailable, conflict, invalidInput, other atomic.Uint64
	down                                       atomic.Bool
}

// Health returns what the store has seen of its database since Open.
func (s *Store) Health() Health {
	h := &s.health
	return Health{
		Unavailable:  h.unavailable.Load(),
		Conflict:     h.conflict.Load(),
		InvalidInput: h.invalidInput.Load(),
		Other:        h.other.Load(),
		Available:    !h.down.Load(),
	}
}

// observe records the outcome of one call to the database, err already
// classified, and ends span (nil when the call was not traced).
func (s *Store) observe(span trace.Span, err error) {
	h := &s.health
	kind := ""
	switch {
	case err == nil || errors.Is(err, sql.ErrNoRows) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrStaleClient):
	case errors.Is(err, ErrUnavailable):
		kind = "unavailable"
		h.unavailable.Add(1)
	case errors.Is(err, context.Canceled):
	case errors.Is(err, ErrConflict):
		kind = "conflict"
		h.conflict.Add(1)
	case errors.Is(err, ErrInvalidInput):
		kind = "invalid_input"
		h.invalidInput.Add(1)
	default:
		kind = "other"
		h.other.Add(1)
	}
	if down := kind == "unavailable"; h.down.Load() != down {
		h.down.Store(down)
	}
	if span == nil {
		return
	}
	if kind != "" {
		// The class only: a driver's message may quote the values of the
		// statement, which may be secret (token signatures, hashes).
		span.SetStatus(codes.Error, kind)
		span.SetAttributes(attribute.String("error.type", kind))
	}
	span.End()
}

// startSpan starts the span of one statement, a child of the span ctx
// carries. A call made outside any recording span (a background sweep, a
// request nobody traces) starts none and costs a context lookup: the store's
// spans say where time went inside an operation someone traces.
func (s *Store) startSpan(ctx context.Context, query string) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	op := operationOf(query)
	return tracer.Start(ctx, op.name,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system.name", s.flavor.otelSystem()),
			attribute.String("db.operation.name", op.verb),
			attribute.String("db.collection.name", op.table),
			// The text as written, with placeholders: never a value.
			attribute.String("db.query.text", query),
		))
}

func (f *flavor) otelSystem() string {
	if f.dialect == Postgres {
		return "postgresql"
	}
	return string(f.dialect)
}

// operation names a statement for its span, "SELECT clients", as
// OpenTelemetry's database conventions do ({operation} {table}). Computed
// once per query text.
type operation struct{ name, verb, table string }

var operations sync.Map // query text → operation

func operationOf(query string) operation {
	if op, ok := operations.Load(query); ok {
		return op.(operation)
	}
	op := describe(query)
	operations.Store(query, op)
	return op
}

// describe finds a statement's verb and the first table it names.
func describe(query string) operation {
	words := strings.Fields(query)
	if len(words) == 0 {
		return operation{name: "SQL"}
	}
	verb := strings.ToUpper(words[0])
	after := ""
	switch verb {
	case "SELECT", "DELETE":
		after = "FROM"
	case "INSERT":
		after = "INTO"
	case "UPDATE":
		if len(words) > 1 {
			return operation{name: verb + " " + tableName(words[1]), verb: verb, table: tableName(words[1])}
		}
	}
	for i, w := range words {
		if after != "" && strings.EqualFold(w, after) && i+1 < len(words) {
			t := tableName(words[i+1])
			return operation{name: verb + " " + t, verb: verb, table: t}
		}
	}
	return operation{name: verb, verb: verb}
}

// tableName trims what follows a table name in a statement: "t(a, b)",
// "t;".
func tableName(w string) string {
	if i := strings.IndexAny(w, "(,;"); i >= 0 {
		w = w[:i]
	}
	return w
}
