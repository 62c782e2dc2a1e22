package apps

import (
	"errors"
	"fmt"
)

// The kinds of error the Service returns. Each transport maps them to its
// own answer (the apps API: 400, 403, 404; the settings pages: an error
// page; the CLI: an exit code). Any other error is the store's, classified
// there (storage.ErrUnavailable, storage.ErrInvalidInput, …) and wrapped
// with what the Service was doing.
var (
	// ErrInvalid: the input breaks a rule; a *FieldError names the field.
	ErrInvalid = errors.New("apps: invalid input")
	// ErrForbidden: the caller may not do this (an authorization_code app
	// by a non-administrator, another user's apps listed).
	ErrForbidden = errors.New("apps: forbidden")
	// ErrTooManySecrets: the app has MaxSecretsPerApp secrets already.
	ErrTooManySecrets = errors.New("apps: too many secrets")
	// ErrNotFound: no such app, or not one the caller may manage (the two
	// look the same, so that app ids cannot be probed).
	ErrNotFound = errors.New("apps: no such app")
	// ErrSecretNotFound: the app has no such secret.
	ErrSecretNotFound = errors.New("apps: no such secret")
	// ErrNotAuthorized: the app holds no live token of the caller's, so
	// there is nothing to revoke.
	ErrNotAuthorized = errors.New("apps: the app holds no tokens of the user")
)

// FieldError is a refusal about one field of the input. Field is one of the
// Field constants; Err is ErrInvalid, ErrForbidden or ErrTooManySecrets.
type FieldError struct {
	Field   string
	Message string
	Err     error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func (e *FieldError) Unwrap() error { return e.Err }

// invalid is an ErrInvalid about field.
func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...), Err: ErrInvalid}
}

// forbidden is an ErrForbidden about field.
func forbidden(field, message string) error {
	return &FieldError{Field: field, Message: message, Err: ErrForbidden}
}
