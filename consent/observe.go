package consent

import (
	"net/http"

	"go.opentelemetry.io/otel"
)

// tracer comes from the global provider, so that a host's OpenTelemetry
// setup records approvals and revocations, with the storage calls they make
// as children.
var tracer = otel.Tracer("github.com/deputyauth/deputy/consent")

// traced runs h inside a span named name.
func traced(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), name)
		defer span.End()
		if !span.IsRecording() {
			h(w, r) // nothing to parent: no copy of the request
			return
		}
		h(w, r.WithContext(ctx))
	}
}

// event reports a stored approval, denial or revocation to Config.OnEvent.
func (h *Handler) event(name string) {
	if h.onEvent != nil {
		h.onEvent(name)
	}
}
