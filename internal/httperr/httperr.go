// Package httperr answers the errors a handler did not expect, the same way
// in every part of deputy: classified where the error came from (storage's
// sentinels), logged with detail at the level the class deserves, answered
// generically in the transport's own format.
package httperr

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
)

// Class is what an unexpected error means for the answer.
type Class struct {
	// Status is the HTTP status: 503, 400 or 500.
	Status int
	// Code is the error code the JSON answers use (RFC 6749's names).
	Code string
	// Message is the generic text a client may see.
	Message string
	// Level is the log level: an outage and our own faults are errors; a
	// value the database refuses (a NUL byte in PostgreSQL text) is the
	// request's fault, a warning, so hostile input cannot fill the error log.
	Level slog.Level
	// Cause names the class in the log line ("" for our own faults).
	Cause string
}

// The classes.
var (
	Unavailable = Class{http.StatusServiceUnavailable, "temporarily_unavailable", "the service is temporarily unavailable; try again shortly", slog.LevelError, "database unavailable"}
	BadInput    = Class{http.StatusBadRequest, "invalid_request", "the request contains characters that are not allowed", slog.LevelWarn, "input the database refuses"}
	Internal    = Class{http.StatusInternalServerError, "server_error", "internal error", slog.LevelError, ""}
)

// Classify returns the class of err.
func Classify(err error) Class {
	switch {
	case errors.Is(err, storage.ErrUnavailable):
		return Unavailable
	case errors.Is(err, storage.ErrInvalidInput):
		return BadInput
	default:
		return Internal
	}
}

// Answer classifies err, logs it with the request's method and path under
// what, sets Retry-After for an outage (the same request works once the
// database is back), and lets write render the answer in its transport's
// format with the class's status, code and message.
func Answer(w http.ResponseWriter, r *http.Request, log *slog.Logger, what string, err error, write func(Class)) {
	c := Classify(err)
	msg := what
	if c.Cause != "" {
		msg += ": " + c.Cause
	}
	log.Log(r.Context(), c.Level, msg, "err", err, "method", r.Method, "path", r.URL.Path)
	if c.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", protocol.RetryAfterUnavailable)
	}
	write(c)
}
