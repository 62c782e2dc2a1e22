package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// This file is what the IdP offers operators: leveled logs, one line per
// request, Prometheus metrics on a listener of their own, liveness and
// readiness, and OpenTelemetry traces exported over OTLP when configured.
// README.md ("Operating deputy") and docs/idp.md describe the knobs.

// parseLogLevel reads --log-level: debug, info, warn or error (any case),
// or slog's offsets such as "info+2".
func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger writes text (or JSON) lines at level and above to w.
func newLogger(w io.Writer, level slog.Leveler, json bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// requestLevel is the level of a request's log line: a success is routine
// (DEBUG: metrics count the traffic, and a line per token request is most
// of what a busy IdP would write), a refusal is worth a look (INFO), a
// failure of ours is a warning (the error itself is logged at ERROR where
// it happened).
func requestLevel(status int) slog.Level {
	switch {
	case status >= 500:
		return slog.LevelWarn
	case status >= 400:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// idpTracer starts the server span of each request when tracing is on.
var idpTracer = otel.Tracer("github.com/deputyauth/deputy/cmd/deputy-idp")

// observeRequests logs one line per request at requestLevel, and, with
// traced, runs each request inside a server span that continues the
// caller's W3C trace context. It never logs or records query strings or
// headers: they carry codes, tokens and secrets.
func observeRequests(log *slog.Logger, traced bool, next http.Handler) http.Handler {
	prop := otel.GetTextMapPropagator()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var span trace.Span
		if traced {
			ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span = idpTracer.Start(ctx, "HTTP "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
			defer span.End()
			r = r.WithContext(ctx)
		}
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		if span != nil {
			span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
			if rec.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(rec.status))
			}
		}
		level := requestLevel(rec.status)
		if !log.Enabled(r.Context(), level) {
			return
		}
		log.LogAttrs(r.Context(), level, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)))
	})
}

// metricsRegistry is what /metrics serves: deputy's collectors, the
// database pool's statistics, and the Go runtime's and the process's.
func (s *server) metricsRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(s.st.DB().DB, "deputy"),
	)
	if err := s.deputy.p.RegisterMetrics(reg); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return reg, nil
}

// metricsRoutes is the handler of the metrics listener (--metrics-listen):
// /metrics, and nothing of the IdP.
func (s *server) metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	}))
	return mux
}

// handleHealthz is liveness: the process serves HTTP. It does not touch the
// database, so that an orchestrator does not restart every replica while
// the database is away; readiness (/readyz) says that.
func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds the database check of /readyz.
const readyTimeout = 2 * time.Second

// handleReadyz is readiness: 200 while the database answers, 503 while it
// does not (a load balancer should send requests elsewhere until then).
func (s *server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.deputy.p.Ready(ctx); err != nil {
		s.log.WarnContext(r.Context(), "readyz: database", "err", err)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "database": "unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "database": string(s.st.Dialect())})
}

// tracingConfigured reports whether the environment asks for OTLP traces.
func tracingConfigured() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// startTracing installs a global tracer provider that exports spans over
// OTLP/HTTP (the standard OTEL_EXPORTER_OTLP_* variables configure it,
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES describe the process,
// OTEL_TRACES_SAMPLER samples), and the W3C trace-context propagator. It
// returns the shutdown that flushes what is buffered.
func startTracing(ctx context.Context) (shutdown func(context.Context) error, err error) {
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "deputy-idp")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

// otlpEndpoint names where traces go, for the start-up log line (without
// any credentials a URL might carry).
func otlpEndpoint() string {
	e := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if e == "" {
		e = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if i := strings.Index(e, "@"); i >= 0 {
		if j := strings.Index(e, "://"); j >= 0 && j < i {
			e = e[:j+3] + "…" + e[i:]
		}
	}
	return e
}
