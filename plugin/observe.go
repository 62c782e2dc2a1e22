package plugin

import (
	"net/http"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/internal/secheaders"
)

// tracer comes from the global provider: a host's OpenTelemetry setup
// (otel.SetTracerProvider) records deputy's spans, and fosite's, which it
// starts from the provider of the span in the request's context. deputy
// starts no exporter.
var tracer = otel.Tracer("github.com/deputyauth/deputy/plugin")

// The endpoints the guard wraps, as far as it knows them: kit mode names
// each; a host's (plugin mode) is told apart by its form, which the guard
// parses before the endpoint: a token request is the one with a grant_type.
const (
	endpointUnknown       = ""
	endpointToken         = "token"
	endpointIntrospection = "introspection"
	endpointRevocation    = "revocation"
)

// guard is TokenEndpointGuard for one endpoint: the client-authentication
// limiter, a body cap, no-store answers, the record of deputy's secret that
// authenticated the request; and around the endpoint a span, the token
// request metrics, and the client-authentication failures.
func (p *Plugin) guard(endpoint string, next http.Handler) http.Handler {
	spanName := "deputy.oauth2.endpoint"
	if endpoint != endpointUnknown {
		spanName = "deputy.oauth2." + endpoint
	}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, span := tracer.Start(r.Context(), spanName)
		defer span.End()
		if !span.IsRecording() {
			// Nobody records this request (no provider installed, or not
			// sampled): keep the span out of the context, so that fosite,
			// which starts its spans from the provider of the span it
			// finds there, does not go through the global provider's lock
			// twice per request for nothing.
			ctx = r.Context()
		}
		ow := &oauthWriter{ResponseWriter: w}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		err := parseForm(r)
		if err == nil {
			err = errRepeated(protocol.RepeatedParameter(r.Form))
		}
		if err != nil {
			// Refused before any client was judged: nothing for the
			// client-authentication limiter to charge.
			ratelimit.Report(ctx, false)
			writeOAuthError(ow, err)
		} else {
			ctx := clientsecret.WithMatch(ctx)
			next.ServeHTTP(ow, r.WithContext(ctx))
			// deputy's own endpoints have reported fosite's error to the
			// limiter by now (the first report counts); a host's endpoint
			// does not, so what deputy's hasher and client lookup saw
			// decides.
			ratelimit.Report(ctx, clientsecret.Refused(ctx))
		}

		status := ow.status
		if status == 0 {
			status = http.StatusOK
		}
		var code []byte
		if status >= 300 {
			code = errorCodeOf(ow.head[:ow.n])
		}
		if status == http.StatusUnauthorized || string(code) == "invalid_client" {
			p.metrics.clientAuthFailures.Inc()
		}
		grant := r.PostForm.Get("grant_type")
		if endpoint == endpointToken || endpoint == endpointUnknown && grant != "" {
			p.metrics.tokenRequest(grant, status, code, time.Since(start))
			if endpoint == endpointUnknown {
				span.SetName("deputy.oauth2.token")
			}
			if span.IsRecording() {
				span.SetAttributes(attribute.String("oauth2.grant_type", tokenGrants[grantIndex(grant)]))
			}
		}
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 400 {
				span.SetStatus(codes.Error, tokenOutcomes[outcomeIndex(code)])
			}
		}
	})
	return secheaders.NoStore(p.limiter.Middleware(inner))
}

// oauthWriter remembers the status an endpoint answered and the start of
// an error answer's body, where the OAuth2 error code is. A success costs
// nothing more than the status.
type oauthWriter struct {
	http.ResponseWriter
	status int
	n      int
	head   [128]byte
}

func (w *oauthWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *oauthWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 300 && w.n < len(w.head) {
		w.n += copy(w.head[w.n:], b)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *oauthWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
