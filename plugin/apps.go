package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/secheaders"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// Limits of the apps API.
const (
	MaxAppNameLength  = 64
	MaxRedirectURIs   = 10
	MaxURILength      = protocol.MaxURILength
	MaxAppScopes      = 100
	MaxAudiences      = 10
	MaxAudienceLength = 512
	MaxSecretsPerApp  = 10
)

// Token endpoint authentication methods an app may declare. fosite accepts
// both for every app; see docs/apps.md.
const (
	TokenAuthBasic = "client_secret_basic"
	TokenAuthPost  = "client_secret_post"
)

// appIDBytes is the randomness of an app id (hex-encoded: 32 characters).
const appIDBytes = 16

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

// AppInput is the body of POST /api/apps and PUT /api/apps/{id}.
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

// fieldError is a validation failure of one input field.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func invalid(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
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

func (p *Plugin) notFound(w http.ResponseWriter) {
	p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no such app"})
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

// badInput answers a validation error naming its field.
func (p *Plugin) badInput(w http.ResponseWriter, err error) {
	var fe *fieldError
	if errors.As(err, &fe) {
		p.writeError(w, http.StatusBadRequest, APIError{Error: apiErrInvalid, Field: fe.field, Message: fe.Error()})
		return
	}
	p.writeError(w, http.StatusBadRequest, APIError{Error: apiErrInvalid, Message: err.Error()})
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

// isAdmin reports whether caller manages every user's apps.
func (p *Plugin) isAdmin(ctx context.Context, caller string) bool {
	return p.cfg.IsAdmin(ctx, caller)
}

// visibleApp loads app id if caller may manage it. Anyone else is told it
// does not exist, so app ids cannot be probed.
func (p *Plugin) visibleApp(w http.ResponseWriter, r *http.Request, caller string) (*storage.Client, bool) {
	id := mux.Vars(r)["id"]
	c, err := p.cfg.Store.Client(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		p.notFound(w)
		return nil, false
	}
	if err != nil {
		p.internal(w, r, "load app", err)
		return nil, false
	}
	if c.Owner() != caller && !p.isAdmin(r.Context(), caller) {
		p.notFound(w)
		return nil, false
	}
	return c, true
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
		p.badInput(w, err)
		return
	}
	c := &storage.Client{ID: storage.NewID(appIDBytes)}
	if err := p.applyInput(c, &in); err != nil {
		p.badInput(w, err)
		return
	}
	if c.GetGrantTypes().Has(GrantTypeClientCredentials) {
		c.SetOwner(caller)
	} else if !p.isAdmin(r.Context(), caller) {
		// An authorization_code app has no owner (it acts for whoever
		// consents), so nobody but an administrator could manage it.
		p.writeError(w, http.StatusForbidden, APIError{Error: apiErrForbidden, Field: "grantTypes",
			Message: "grantTypes: only an administrator may create an authorization_code app"})
		return
	}
	if err := p.cfg.Store.CreateClient(r.Context(), c); err != nil {
		p.internal(w, r, "create app", err)
		return
	}
	w.Header().Set("Location", "/api/apps/"+c.ID)
	p.writeJSON(w, http.StatusCreated, appJSON(c))
}

func (p *Plugin) listApps(w http.ResponseWriter, r *http.Request, caller string) {
	q := r.URL.Query()
	owner, userID := q.Get("owner"), q.Get("user_id")
	admin := p.isAdmin(r.Context(), caller)
	var filter string
	switch {
	case owner != "" && userID != "":
		p.badInput(w, invalid("owner", "use either owner=me or user_id, not both"))
		return
	case owner != "" && owner != "me":
		p.badInput(w, invalid("owner", "the only supported value is \"me\""))
		return
	case owner == "me":
		filter = caller
	case userID != "":
		if userID != caller && !admin {
			p.writeError(w, http.StatusForbidden, APIError{Error: apiErrForbidden, Field: "user_id", Message: "user_id: only an administrator may list another user's apps"})
			return
		}
		filter = userID
	case !admin:
		filter = caller
	}
	cs, err := p.cfg.Store.ListClients(r.Context(), filter)
	if err != nil {
		p.internal(w, r, "list apps", err)
		return
	}
	out := make([]App, 0, len(cs))
	for _, c := range cs {
		out = append(out, appJSON(c))
	}
	p.writeJSON(w, http.StatusOK, out)
}

func (p *Plugin) getApp(w http.ResponseWriter, r *http.Request, caller string) {
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	p.writeJSON(w, http.StatusOK, appJSON(c))
}

func (p *Plugin) updateApp(w http.ResponseWriter, r *http.Request, caller string) {
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	var in AppInput
	if err := decode(r, &in); err != nil {
		p.badInput(w, err)
		return
	}
	wasCC := c.GetGrantTypes().Has(GrantTypeClientCredentials)
	if len(in.GrantTypes) == 0 {
		in.GrantTypes = c.GrantTypes
	}
	if err := p.applyInput(c, &in); err != nil {
		p.badInput(w, err)
		return
	}
	if c.GetGrantTypes().Has(GrantTypeClientCredentials) != wasCC {
		// Ownership is what a client_credentials token is; turning one
		// kind of app into the other would silently change whom its
		// tokens act for.
		p.badInput(w, invalid("grantTypes", "an app cannot change between client_credentials and authorization_code; create a new app"))
		return
	}
	if err := p.cfg.Store.UpdateClient(r.Context(), c); errors.Is(err, storage.ErrNotFound) {
		p.notFound(w)
		return
	} else if err != nil {
		p.internal(w, r, "update app", err)
		return
	}
	p.writeJSON(w, http.StatusOK, appJSON(c))
}

func (p *Plugin) deleteApp(w http.ResponseWriter, r *http.Request, caller string) {
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	// Secrets and every token of the app go with it (ON DELETE CASCADE).
	if err := p.cfg.Store.DeleteClient(r.Context(), c.ID); errors.Is(err, storage.ErrNotFound) {
		p.notFound(w)
		return
	} else if err != nil {
		p.internal(w, r, "delete app", err)
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
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	// The body, if any, must be an empty object: nothing about a secret is
	// the caller's to choose.
	var none struct{}
	if err := decode(r, &none); err != nil && err != errEmptyBody {
		p.badInput(w, err)
		return
	}
	// Checked before the insert, so two concurrent requests may end one
	// over the limit; the limit is housekeeping, not a security boundary.
	n, err := p.cfg.Store.CountClientSecrets(r.Context(), c.ID)
	if err != nil {
		p.internal(w, r, "count secrets", err)
		return
	}
	if n >= MaxSecretsPerApp {
		p.writeError(w, http.StatusBadRequest, APIError{Error: apiErrTooManySecrets, Field: "secrets",
			Message: fmt.Sprintf("secrets: an app has at most %d secrets; delete one first", MaxSecretsPerApp)})
		return
	}
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		p.internal(w, r, "generate secret", err)
		return
	}
	cs, err := p.cfg.Store.CreateClientSecret(r.Context(), c.ID, hash, prefix)
	if errors.Is(err, storage.ErrNotFound) {
		p.notFound(w)
		return
	}
	if err != nil {
		p.internal(w, r, "create secret", err)
		return
	}
	out := secretJSON(cs)
	out.Secret = secret
	p.writeJSON(w, http.StatusCreated, out)
}

func (p *Plugin) listSecrets(w http.ResponseWriter, r *http.Request, caller string) {
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	ss, err := p.cfg.Store.ListClientSecrets(r.Context(), c.ID)
	if err != nil {
		p.internal(w, r, "list secrets", err)
		return
	}
	out := make([]Secret, 0, len(ss))
	for _, s := range ss {
		out = append(out, secretJSON(s))
	}
	p.writeJSON(w, http.StatusOK, out)
}

func (p *Plugin) deleteSecret(w http.ResponseWriter, r *http.Request, caller string) {
	c, ok := p.visibleApp(w, r, caller)
	if !ok {
		return
	}
	err := p.cfg.Store.DeleteClientSecret(r.Context(), c.ID, mux.Vars(r)["secretID"])
	if errors.Is(err, storage.ErrNotFound) {
		p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no such secret"})
		return
	}
	if err != nil {
		p.internal(w, r, "delete secret", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (p *Plugin) listAuthorizedApps(w http.ResponseWriter, r *http.Request, caller string) {
	as, err := p.cfg.Store.ListAuthorizedApps(r.Context(), caller)
	if err != nil {
		p.internal(w, r, "list authorized apps", err)
		return
	}
	out := make([]AuthorizedApp, 0, len(as))
	for _, a := range as {
		out = append(out, AuthorizedApp{
			ID:               a.Client.ID,
			Name:             a.Client.Name,
			IconURL:          a.Client.IconURL,
			OwnerUserID:      a.Client.Owner(),
			Scopes:           nonNil(a.Scopes),
			LastAuthorizedAt: a.LastAuthorizedAt,
		})
	}
	p.writeJSON(w, http.StatusOK, out)
}

func (p *Plugin) revokeAuthorizedApp(w http.ResponseWriter, r *http.Request, caller string) {
	err := p.cfg.Store.RevokeClientTokensForSubject(r.Context(), mux.Vars(r)["id"], caller)
	if errors.Is(err, storage.ErrNotFound) {
		p.writeError(w, http.StatusNotFound, APIError{Error: apiErrNotFound, Message: "no app holds tokens for you under that id"})
		return
	}
	if err != nil {
		p.internal(w, r, "revoke authorized app", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// applyInput validates in and copies it onto c. Every error names its field.
func (p *Plugin) applyInput(c *storage.Client, in *AppInput) error {
	name := strings.TrimSpace(in.Name)
	switch {
	case name == "":
		return invalid("name", "required")
	case utf8.RuneCountInString(name) > MaxAppNameLength:
		return invalid("name", "at most %d characters", MaxAppNameLength)
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0:
		return invalid("name", "must not contain control characters")
	}
	if in.IconURL != "" {
		if err := validIconURL(in.IconURL); err != nil {
			return invalid("iconUrl", "%s", err)
		}
	}

	grants, err := validGrantTypes(in.GrantTypes)
	if err != nil {
		return err
	}
	cc := scope.Contains(grants, GrantTypeClientCredentials)

	if len(in.RedirectURIs) > MaxRedirectURIs {
		return invalid("redirectUris", "at most %d", MaxRedirectURIs)
	}
	if cc && len(in.RedirectURIs) > 0 {
		return invalid("redirectUris", "a client_credentials app has no redirect URIs")
	}
	if !cc && len(in.RedirectURIs) == 0 {
		return invalid("redirectUris", "an authorization_code app needs at least one")
	}
	for i, u := range in.RedirectURIs {
		if err := protocol.CheckRedirectURI(u); err != nil {
			return invalid("redirectUris", "[%d] %s", i, err)
		}
	}

	scopes := scope.Normalize(in.Scopes)
	if len(scopes) > MaxAppScopes {
		return invalid("scopes", "at most %d", MaxAppScopes)
	}
	if cc && len(scopes) == 0 {
		return invalid("scopes", "a client_credentials app needs at least one scope")
	}
	for _, s := range scopes {
		if !protocol.ValidScopeToken(s) {
			return invalid("scopes", "%q is not a valid scope name", s)
		}
		feature := !cc && scope.Contains(protocol.ProtocolScopes, s)
		if len(p.cfg.Scopes) > 0 && !feature && !p.catalog.Known(s) {
			return invalid("scopes", "unknown scope %q", s)
		}
	}

	if len(in.Audience) > MaxAudiences {
		return invalid("audience", "at most %d", MaxAudiences)
	}
	for i, a := range in.Audience {
		if a == "" || len(a) > MaxAudienceLength || strings.IndexFunc(a, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }) >= 0 {
			return invalid("audience", "[%d] must be 1 to %d printable characters without spaces", i, MaxAudienceLength)
		}
	}

	method := in.TokenEndpointAuthMethod
	switch method {
	case "":
		method = TokenAuthBasic
	case TokenAuthBasic, TokenAuthPost:
	default:
		return invalid("tokenEndpointAuthMethod", "must be %s or %s", TokenAuthBasic, TokenAuthPost)
	}

	c.Name = name
	c.IconURL = in.IconURL
	c.RedirectURIs = in.RedirectURIs
	c.GrantTypes = grants
	c.Scopes = scopes
	c.Audience = in.Audience
	c.TokenEndpointAuthMethod = method
	c.Public = false
	if cc {
		c.ResponseTypes = nil
	} else {
		c.ResponseTypes = []string{"code"}
	}
	return nil
}

// validGrantTypes accepts ["client_credentials"] (the default) or
// authorization_code with an optional refresh_token; nothing mixed.
func validGrantTypes(in []string) ([]string, error) {
	gs := scope.Normalize(in)
	if len(gs) == 0 {
		return []string{GrantTypeClientCredentials}, nil
	}
	for _, g := range gs {
		switch g {
		case GrantTypeClientCredentials, GrantTypeAuthorizationCode, GrantTypeRefreshToken:
		default:
			return nil, invalid("grantTypes", "unsupported grant type %q", g)
		}
	}
	cc := scope.Contains(gs, GrantTypeClientCredentials)
	switch {
	case cc && len(gs) > 1:
		return nil, invalid("grantTypes", "client_credentials cannot be mixed with other grant types: its tokens act as the app's owner, an authorization_code app's act for whoever consents")
	case !cc && !scope.Contains(gs, GrantTypeAuthorizationCode):
		return nil, invalid("grantTypes", "refresh_token needs authorization_code")
	}
	return gs, nil
}

func validIconURL(raw string) error {
	if len(raw) > MaxURILength {
		return fmt.Errorf("longer than %d characters", MaxURILength)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return errors.New("must be an absolute http(s) URL")
	}
	return nil
}
