package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/secheaders"
	"github.com/deputyauth/deputy/storage"
)

// Values of APIError.Error.
const (
	apiErrInvalid        = "invalid_request"
	apiErrNotFound       = "not_found"
	apiErrUnauthorized   = "unauthenticated"
	apiErrForbidden      = "forbidden"
	apiErrInternal       = "internal_error"
	apiErrUnavailable    = "temporarily_unavailable"
	apiErrTooManySecrets = "too_many_secrets"
)

// App is an app as the apps API shows it.
type App struct {
	ID                      string    `json:"id"`
	Name                    string    `json:"name"`
	IconURL                 string    `json:"iconUrl"`
	RedirectURIs            []string  `json:"redirectUris"`
	GrantTypes              []string  `json:"grantTypes"`
	Scopes                  []string  `json:"scopes"`
	Audience                []string  `json:"audience"`
	TokenEndpointAuthMethod string    `json:"tokenEndpointAuthMethod"`
	OwnerUserID             string    `json:"ownerUserId,omitempty"`
	CreatedAt               time.Time `json:"createdAt"`
	UpdatedAt               time.Time `json:"updatedAt"`
}

// AppInput is the body of POST /api/apps and PUT /api/apps/{id}: an
// apps.Input with its JSON names.
type AppInput struct {
	Name                    string   `json:"name"`
	IconURL                 string   `json:"iconUrl"`
	RedirectURIs            []string `json:"redirectUris"`
	GrantTypes              []string `json:"grantTypes"`
	Scopes                  []string `json:"scopes"`
	Audience                []string `json:"audience"`
	TokenEndpointAuthMethod string   `json:"tokenEndpointAuthMethod"`
}

// Secret is an app secret as the apps API shows it. Secret itself is set
// only in the response that created it.
type Secret struct {
	ID            string     `json:"id"`
	DisplayPrefix string     `json:"displayPrefix"`
	CreatedAt     time.Time  `json:"createdAt"`
	LastUsedAt    *time.Time `json:"lastUsedAt"`
	Secret        string     `json:"secret,omitempty"`
}

// AuthorizedApp is an app holding live tokens for the caller.
type AuthorizedApp struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	IconURL          string    `json:"iconUrl"`
	OwnerUserID      string    `json:"ownerUserId,omitempty"`
	Scopes           []string  `json:"scopes"`
	LastAuthorizedAt time.Time `json:"lastAuthorizedAt"`
}

// APIError is every error body of the apps API.
type APIError struct {
	Error   string `json:"error"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// invalid is a refusal of the request's field, for the apps service's
// transports' shared error mapping.
func invalid(field, format string, args ...any) error {
	return &apps.FieldError{Field: field, Message: fmt.Sprintf(format, args...), Err: apps.ErrInvalid}
}

func (p *Plugin) registerApps(r *mux.Router) {
	api := r.PathPrefix("/api").Subrouter()
	api.Handle("/apps", p.api(p.createApp)).Methods(http.MethodPost)
	api.Handle("/apps", p.api(p.listApps)).Methods(http.MethodGet)
	api.Handle("/apps/{id}", p.api(p.getApp)).Methods(http.MethodGet)
	api.Handle("/apps/{id}", p.api(p.updateApp)).Methods(http.MethodPut)
	api.Handle("/apps/{id}", p.api(p.deleteApp)).Methods(http.MethodDelete)
	api.Handle("/apps/{id}/secrets", p.api(p.createSecret)).Methods(http.MethodPost)
	api.Handle("/apps/{id}/secrets", p.api(p.listSecrets)).Methods(http.MethodGet)
	api.Handle("/apps/{id}/secrets/{secretID}", p.api(p.deleteSecret)).Methods(http.MethodDelete)
	api.Handle("/authorized-apps", p.api(p.listAuthorizedApps)).Methods(http.MethodGet)
	api.Handle("/authorized-apps/{id}", p.api(p.revokeAuthorizedApp)).Methods(http.MethodDelete)
}

// apiHandler serves one apps API route for an authenticated caller.
type apiHandler func(w http.ResponseWriter, r *http.Request, caller string)

// api authenticates the caller by first-party session only, refuses
// cross-origin browser writes, and caps the body.
func (p *Plugin) api(h apiHandler) http.Handler {
	var cop http.CrossOriginProtection
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Apps and their secrets are per-user, and a new secret is shown
		// once: no response of this API may be cached.
		secheaders.SetNoStore(w.Header())
		// A bearer token is software acting for someone; this API manages
		// credentials and takes only the person's own session.
		if auth := r.Header.Get("Authorization"); auth != "" {
			p.writeError(w, http.StatusUnauthorized, APIError{Error: apiErrUnauthorized, Message: "this API takes a first-party session, not an Authorization header"})
			return
		}
		caller, err := p.cfg.Sessions.Authenticate(r)
		if errors.Is(err, storage.ErrUnavailable) {
			p.internal(w, r, "session authentication", err)
			return
		}
		if err != nil || caller == "" {
			if err != nil && !errors.Is(err, ErrNoSession) {
				p.cfg.Logger.ErrorContext(r.Context(), "deputy: session authentication", "err", err)
			}
			p.writeError(w, http.StatusUnauthorized, APIError{Error: apiErrUnauthorized, Message: "sign in first"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r, caller)
	}))
}

func (p *Plugin) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		p.cfg.Logger.Warn("deputy: writing response", "err", err)
	}
}

func (p *Plugin) writeError(w http.ResponseWriter, status int, e APIError) {
	p.writeJSON(w, status, e)
}

// appsError answers an error of the apps service: its refusals with the
// status they mean and the field they name, anything else (the store's) as
// internal does.
func (p *Plugin) appsError(w http.ResponseWriter, r *http.Request, what string, err error) {
	var fe *apps.FieldError
	switch {
	case errors.Is(err, apps.ErrNotFound):
		p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no such app"})
	case errors.Is(err, apps.ErrSecretNotFound):
		p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no such secret"})
	case errors.Is(err, apps.ErrNotAuthorized):
		p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no app holds tokens for you under that id"})
	case errors.As(err, &fe) && errors.Is(err, apps.ErrForbidden):
		p.writeError(w, http.StatusForbidden, APIError{Error: apiErrForbidden, Field: fe.Field, Message: fe.Error()})
	case errors.As(err, &fe) && errors.Is(err, apps.ErrTooManySecrets):
		p.writeError(w, http.StatusBadRequest, APIError{Error: apiErrTooManySecrets, Field: fe.Field, Message: fe.Error()})
	case errors.As(err, &fe):
		p.writeError(w, http.StatusBadRequest, APIError{Error: apiErrInvalid, Field: fe.Field, Message: fe.Error()})
	default:
		p.internal(w, r, what, err)
	}
}

// internal logs err with detail and answers generically (httperr): 503
// with Retry-After when the database could not be reached, 400 for a value
// the database refuses, 500 otherwise.
func (p *Plugin) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	httperr.Answer(w, r, p.cfg.Logger, "deputy: apps API: "+what, err, func(c httperr.Class) {
		p.writeError(w, c.Status, APIError{Error: apiCode(c), Message: c.Message})
	})
}

// apiCode is the apps API's error code for an httperr class.
func apiCode(c httperr.Class) string {
	switch c.Status {
	case http.StatusServiceUnavailable:
		return apiErrUnavailable
	case http.StatusBadRequest:
		return apiErrInvalid
	}
	return apiErrInternal
}

// errEmptyBody is decode's error for a body with no JSON value at all.
var errEmptyBody = invalid("body", "empty; send a JSON object")

// decode reads exactly one JSON object into v, refusing unknown fields,
// other content types and bodies over maxBody. Its errors name the field
// where there is one.
func decode(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return invalid("body", "Content-Type must be application/json")
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			return invalid("body", "must hold one JSON object")
		}
		if _, err := dec.Token(); err != io.EOF {
			return invalid("body", "must hold one JSON object")
		}
		return nil
	}
	var (
		maxErr  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.As(err, &maxErr):
		return invalid("body", "larger than %d KiB", maxBody>>10)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
			return invalid(field, "must be a JSON object")
		}
		return invalid(field, "must be %s", jsonKind(typeErr.Type.String()))
	case errors.As(err, &synErr), errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("body", "not valid JSON")
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid(name, "unknown field")
	default:
		return invalid("body", "not valid JSON")
	}
}

func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "an array of strings"
	default:
		return "of type " + goType
	}
}

// decodeFor is decode for a request about app id: to a caller who may
// not manage the app, the answer is the same 404 whatever the body.
func (p *Plugin) decodeFor(r *http.Request, caller, id string, v any) error {
	err := decode(r, v)
	if err != nil && err != errEmptyBody {
		if _, gerr := p.apps.Get(r.Context(), caller, id); gerr != nil {
			return gerr
		}
	}
	return err
}

func appJSON(c *storage.Client) App {
	return App{
		ID:                      c.ID,
		Name:                    c.Name,
		IconURL:                 c.IconURL,
		RedirectURIs:            nonNil(c.RedirectURIs),
		GrantTypes:              nonNil(c.GrantTypes),
		Scopes:                  nonNil(c.Scopes),
		Audience:                nonNil(c.Audience),
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		OwnerUserID:             c.Owner(),
		CreatedAt:               c.CreatedAt,
		UpdatedAt:               c.UpdatedAt,
	}
}

func nonNil[S ~[]string](s S) []string {
	if s == nil {
		return []string{}
	}
	return []string(s)
}

func (p *Plugin) createApp(w http.ResponseWriter, r *http.Request, caller string) {
	var in AppInput
	if err := decode(r, &in); err != nil {
		p.appsError(w, r, "create app", err)
		return
	}
	c, err := p.apps.Create(r.Context(), caller, apps.Input(in))
	if err != nil {
		p.appsError(w, r, "create app", err)
		return
	}
	w.Header().Set("Location", "/api/apps/"+c.ID)
	p.writeJSON(w, http.StatusCreated, appJSON(c))
}

func (p *Plugin) listApps(w http.ResponseWriter, r *http.Request, caller string) {
	q := r.URL.Query()
	owner, userID := q.Get("owner"), q.Get("user_id")
	switch {
	case owner != "" && userID != "":
		p.appsError(w, r, "list apps", invalid("owner", "use either owner=me or user_id, not both"))
		return
	case owner != "" && owner != "me":
		p.appsError(w, r, "list apps", invalid("owner", "the only supported value is \"me\""))
		return
	case owner == "me":
		userID = caller
	}
	cs, err := p.apps.List(r.Context(), caller, userID)
	if errors.Is(err, apps.ErrForbidden) {
		p.writeError(w, http.StatusForbidden, APIError{Error: apiErrForbidden, Field: "user_id", Message: "user_id: only an administrator may list another user's apps"})
		return
	}
	writeList(p, w, r, "list apps", cs, err, appJSON)
}

// writeList answers a listing of the apps service: each item as view
// shows it, in a JSON array (never null), or the service's error.
func writeList[T, V any](p *Plugin, w http.ResponseWriter, r *http.Request, what string, items []T, err error, view func(T) V) {
	if err != nil {
		p.appsError(w, r, what, err)
		return
	}
	out := make([]V, 0, len(items))
	for _, it := range items {
		out = append(out, view(it))
	}
	p.writeJSON(w, http.StatusOK, out)
}

func (p *Plugin) getApp(w http.ResponseWriter, r *http.Request, caller string) {
	c, err := p.apps.Get(r.Context(), caller, mux.Vars(r)["id"])
	if err != nil {
		p.appsError(w, r, "load app", err)
		return
	}
	p.writeJSON(w, http.StatusOK, appJSON(c))
}

func (p *Plugin) updateApp(w http.ResponseWriter, r *http.Request, caller string) {
	id := mux.Vars(r)["id"]
	var in AppInput
	if err := p.decodeFor(r, caller, id, &in); err != nil {
		p.appsError(w, r, "update app", err)
		return
	}
	c, err := p.apps.Update(r.Context(), caller, id, apps.Input(in))
	if err != nil {
		p.appsError(w, r, "update app", err)
		return
	}
	p.writeJSON(w, http.StatusOK, appJSON(c))
}

func (p *Plugin) deleteApp(w http.ResponseWriter, r *http.Request, caller string) {
	if err := p.apps.Delete(r.Context(), caller, mux.Vars(r)["id"]); err != nil {
		p.appsError(w, r, "delete app", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func secretJSON(s *storage.ClientSecret) Secret {
	out := Secret{ID: s.ID, DisplayPrefix: s.DisplayPrefix, CreatedAt: s.CreatedAt}
	if s.LastUsedAt.Valid {
		t := s.LastUsedAt.Time
		out.LastUsedAt = &t
	}
	return out
}

func (p *Plugin) createSecret(w http.ResponseWriter, r *http.Request, caller string) {
	id := mux.Vars(r)["id"]
	// The body, if any, must be an empty object: nothing about a secret is
	// the caller's to choose.
	var none struct{}
	if err := p.decodeFor(r, caller, id, &none); err != nil && err != errEmptyBody {
		p.appsError(w, r, "create secret", err)
		return
	}
	cs, secret, err := p.apps.CreateSecret(r.Context(), caller, id)
	if err != nil {
		p.appsError(w, r, "create secret", err)
		return
	}
	out := secretJSON(cs)
	out.Secret = secret
	p.writeJSON(w, http.StatusCreated, out)
}

func (p *Plugin) listSecrets(w http.ResponseWriter, r *http.Request, caller string) {
	ss, err := p.apps.ListSecrets(r.Context(), caller, mux.Vars(r)["id"])
	writeList(p, w, r, "list secrets", ss, err, secretJSON)
}

func (p *Plugin) deleteSecret(w http.ResponseWriter, r *http.Request, caller string) {
	v := mux.Vars(r)
	if err := p.apps.DeleteSecret(r.Context(), caller, v["id"], v["secretID"]); err != nil {
		p.appsError(w, r, "delete secret", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (p *Plugin) listAuthorizedApps(w http.ResponseWriter, r *http.Request, caller string) {
	as, err := p.apps.ListAuthorized(r.Context(), caller)
	writeList(p, w, r, "list authorized apps", as, err, authorizedAppJSON)
}

func authorizedAppJSON(a *storage.AuthorizedApp) AuthorizedApp {
	return AuthorizedApp{
		ID:               a.Client.ID,
		Name:             a.Client.Name,
		IconURL:          a.Client.IconURL,
		OwnerUserID:      a.Client.Owner(),
		Scopes:           nonNil(a.Scopes),
		LastAuthorizedAt: a.LastAuthorizedAt,
	}
}

func (p *Plugin) revokeAuthorizedApp(w http.ResponseWriter, r *http.Request, caller string) {
	if err := p.apps.RevokeAuthorized(r.Context(), caller, mux.Vars(r)["id"]); err != nil {
		p.appsError(w, r, "revoke authorized app", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
