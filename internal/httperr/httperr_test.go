package httperr

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
)

func TestAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		err        error
		want       Class
		retryAfter string
		logLevel   string
	}{
		{"outage", fmt.Errorf("load: %w", storage.ErrUnavailable), Unavailable, protocol.RetryAfterUnavailable, "level=ERROR"},
		{"hostile input", fmt.Errorf("load: %w", storage.ErrInvalidInput), BadInput, "", "level=WARN"},
		{"our fault", errors.New("template exploded"), Internal, "", "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/x?secret=no", nil)
			var got Class
			Answer(w, r, log, "loading", tc.err, func(c Class) { got = c; w.WriteHeader(c.Status) })
			if got != tc.want || w.Code != tc.want.Status {
				t.Errorf("class %+v status %d, want %+v", got, w.Code, tc.want)
			}
			if ra := w.Header().Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tc.retryAfter)
			}
			line := logs.String()
			if !strings.Contains(line, tc.logLevel) || !strings.Contains(line, tc.err.Error()) || strings.Contains(line, "secret=no") {
				t.Errorf("log line %q: want %s, the error's detail, and no query string", line, tc.logLevel)
			}
		})
	}
}
