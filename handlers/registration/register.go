package registration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/httperr"
	"github.com/deputyauth/deputy/internal/ratelimit"
	"github.com/deputyauth/deputy/internal/secheaders"
	"github.com/deputyauth/deputy/storage"
)

// MaxBodyBytes caps a registration or update request body.
const MaxBodyBytes = 64 << 10

// clientIDBytes is the randomness of a registered client's id (hex: 32
// characters), as for apps.
const clientIDBytes = 16

// Store is what the registration endpoint needs of deputy's store.
type Store interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	CreateClient(ctx context.Context, c *storage.Client) error
	CreateClientSecret(ctx context.Context, clientID string, hash []byte, displayPrefix string) (*storage.ClientSecret, error)
	Client(ctx context.Context, id string) (*storage.Client, error)
	UpdateClient(ctx context.Context, c *storage.Client) error
	DeleteClient(ctx context.Context, id string) error
}

var _ Store = (*storage.Store)(nil)

// Config configures the registration endpoint.
type Config struct {
	Store  Store
	Policy Policy
	// Path is where the endpoint is mounted, e.g. "/oauth2/register"; each
	// client's RFC 7592 registration_client_uri is Path/<client_id>.
	Path string
	// BaseURL is the public URL of Path, e.g.
	// "https://idp.example/oauth2/register".
	BaseURL string
	// Limit bounds registrations per source. The zero value means the
	// defaults (ratelimit.SourceLimit).
	Limit ratelimit.SourceLimit
	// Source names the source of a request for Limit. Default:
	// ratelimit.Source (the peer address, an IPv6 /64).
	Source func(*http.Request) string
	// Clock stamps client_id_issued_at and unused expiries. Default
	// time.Now.
	Clock  func() time.Time
	Logger *slog.Logger
}

// Handler serves RFC 7591 dynamic client registration (POST Path) and RFC
// 7592 management of a registration (GET, PUT and DELETE Path/<client_id>,
// authenticated by its registration access token). Every client it
// creates follows the Policy, and is stored, with its secret and
// registration token as SHA-256 hashes, only when all of its metadata is
// acceptable.
type Handler struct {
	cfg     Config
	limiter *ratelimit.SourceLimiter
	mux     *http.ServeMux
}

// New checks cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	var err error
	if cfg.Store == nil {
		return nil, errors.New("registration: Config needs a Store")
	}
	if cfg.Policy, err = cfg.Policy.WithDefaults(); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.Path, "/") || strings.HasSuffix(cfg.Path, "/") {
		return nil, fmt.Errorf("registration: Path %q must start with '/' and not end with one", cfg.Path)
	}
	if u, err := url.Parse(cfg.BaseURL); err != nil || !u.IsAbs() {
		return nil, fmt.Errorf("registration: BaseURL %q must be an absolute URL", cfg.BaseURL)
	}
	if cfg.Source == nil {
		cfg.Source = ratelimit.Source
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, limiter: ratelimit.NewSourceLimiter(cfg.Limit), mux: http.NewServeMux()}
	h.mux.HandleFunc("POST "+cfg.Path, h.register)
	h.mux.HandleFunc("GET "+cfg.Path+"/{id}", h.manage(h.read))
	h.mux.HandleFunc("PUT "+cfg.Path+"/{id}", h.manage(h.update))
	h.mux.HandleFunc("DELETE "+cfg.Path+"/{id}", h.manage(h.delete))
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Registrations and their credentials are never cached.
	secheaders.SetNoStore(w.Header())
	h.mux.ServeHTTP(w, r)
}

// Response is the RFC 7591 §3.2.1 client information response (also RFC
// 7592's): the client's metadata as registered, which may differ from what
// was asked (defaults filled in, duplicates dropped), with its credentials.
type Response struct {
	ClientID         string `json:"client_id"`
	ClientIDIssuedAt int64  `json:"client_id_issued_at"`
	// ClientSecret is only in the answer to the registration: deputy keeps
	// its hash.
	ClientSecret          string `json:"client_secret,omitempty"`
	ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`
	// RegistrationAccessToken authenticates RFC 7592 management at
	// RegistrationClientURI. After the registration, answers echo the one
	// presented: deputy keeps its hash.
	RegistrationAccessToken string   `json:"registration_access_token"`
	RegistrationClientURI   string   `json:"registration_client_uri"`
	ClientName              string   `json:"client_name,omitempty"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	Scope                   string   `json:"scope,omitempty"`
}

func (h *Handler) response(c *storage.Client, secret, token string) Response {
	out := Response{
		ClientID:                c.ID,
		ClientIDIssuedAt:        c.CreatedAt.Unix(),
		ClientSecret:            secret,
		RegistrationAccessToken: token,
		RegistrationClientURI:   h.cfg.BaseURL + "/" + url.PathEscape(c.ID),
		ClientName:              c.Name,
		LogoURI:                 c.IconURL,
		RedirectURIs:            c.RedirectURIs,
		GrantTypes:              c.GrantTypes,
		ResponseTypes:           c.ResponseTypes,
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		Scope:                   strings.Join(c.Scopes, " "),
	}
	if !c.Public {
		never := int64(0)
		out.ClientSecretExpiresAt = &never
	}
	return out
}

// register is RFC 7591 §3.1.
func (h *Handler) register(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	source := h.cfg.Source(r)
	if ok, wait := h.limiter.Take(source); !ok {
		secs := max(1, int64(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		h.cfg.Logger.InfoContext(ctx, "deputy: client registration refused: rate limit", "source", source)
		writeJSON(w, http.StatusTooManyRequests, Error{Code: "temporarily_unavailable",
			Description: fmt.Sprintf("Too many registrations from this address; retry after %d seconds.", secs)})
		return
	}
	md, bad := readMetadata(w, r)
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	c, bad := h.cfg.Policy.client(md, dynamic)
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	c.ID = storage.NewID(clientIDBytes)
	c.Registration = storage.RegistrationDynamic
	c.UnusedExpiresAt = sql.NullTime{Time: h.cfg.Clock().Add(h.cfg.Policy.UnusedLifetime), Valid: true}
	token, tokenHash, err := clientsecret.NewRegistrationToken()
	if err != nil {
		h.internal(w, r, "registration token", err)
		return
	}
	c.RegistrationTokenHash = tokenHash
	var secret string
	err = h.cfg.Store.InTx(ctx, func(ctx context.Context) error {
		if err := h.cfg.Store.CreateClient(ctx, c); err != nil {
			return err
		}
		if c.Public {
			return nil
		}
		s, hash, prefix, err := clientsecret.NewClientSecret()
		if err != nil {
			return err
		}
		secret = s
		_, err = h.cfg.Store.CreateClientSecret(ctx, c.ID, hash, prefix)
		return err
	})
	if err != nil {
		h.internal(w, r, "register client", err)
		return
	}
	h.cfg.Logger.InfoContext(ctx, "deputy: client registered", "client_id", c.ID,
		"auth_method", c.TokenEndpointAuthMethod, "source", source)
	w.Header().Set("Location", h.cfg.BaseURL+"/"+url.PathEscape(c.ID))
	writeJSON(w, http.StatusCreated, h.response(c, secret, token))
}

// manage authenticates an RFC 7592 request by its registration access
// token. A missing client, a client that did not register dynamically, and
// a wrong token get the same 401 (RFC 7592 §2), so client ids cannot be
// probed.
func (h *Handler) manage(next func(w http.ResponseWriter, r *http.Request, c *storage.Client, token string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="client registration"`)
			writeJSON(w, http.StatusUnauthorized, Error{Code: "invalid_token", Description: "Send the registration access token as a Bearer token."})
			return
		}
		id := r.PathValue("id")
		c, err := h.cfg.Store.Client(r.Context(), id)
		switch {
		case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrInvalidInput):
			c = nil
		case err != nil:
			h.internal(w, r, "load registration", err)
			return
		}
		if c == nil || c.Registration != storage.RegistrationDynamic || !clientsecret.MatchesHash(token, c.RegistrationTokenHash) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="client registration", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, Error{Code: "invalid_token", Description: "The registration access token is not valid for this client."})
			return
		}
		next(w, r, c, token)
	}
}

// bearer returns the RFC 6750 Bearer credentials of r.
func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// read is RFC 7592 §2.1.
func (h *Handler) read(w http.ResponseWriter, r *http.Request, c *storage.Client, token string) {
	writeJSON(w, http.StatusOK, h.response(c, "", token))
}

// update is RFC 7592 §2.2: the request carries all of the client's
// metadata; omitted fields take their defaults. The client's id, its way
// of authenticating, its secret and its registration token do not change.
func (h *Handler) update(w http.ResponseWriter, r *http.Request, c *storage.Client, token string) {
	md, bad := readMetadata(w, r)
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	if md.clientID != c.ID {
		writeJSON(w, http.StatusBadRequest, badMetadata("client_id: must be the client's own, %q", c.ID))
		return
	}
	if md.present[fieldClientSecret] && slices.IndexFunc(c.SecretHashes, func(h []byte) bool { return clientsecret.MatchesHash(md.clientSecret, h) }) < 0 {
		writeJSON(w, http.StatusBadRequest, badMetadata("client_secret: does not match the client's secret"))
		return
	}
	next, bad := h.cfg.Policy.client(md, dynamic)
	if bad != nil {
		writeJSON(w, http.StatusBadRequest, bad)
		return
	}
	if next.TokenEndpointAuthMethod != c.TokenEndpointAuthMethod {
		writeJSON(w, http.StatusBadRequest, badMetadata("token_endpoint_auth_method: cannot change from %q; register a new client instead", c.TokenEndpointAuthMethod))
		return
	}
	c.Name, c.IconURL = next.Name, next.IconURL
	c.RedirectURIs, c.GrantTypes, c.ResponseTypes, c.Scopes = next.RedirectURIs, next.GrantTypes, next.ResponseTypes, next.Scopes
	if err := h.cfg.Store.UpdateClient(r.Context(), c); err != nil {
		h.internal(w, r, "update registration", err)
		return
	}
	h.cfg.Logger.InfoContext(r.Context(), "deputy: client registration updated", "client_id", c.ID)
	writeJSON(w, http.StatusOK, h.response(c, "", token))
}

// delete is RFC 7592 §2.3: the client, its secrets and every token it
// holds go at once.
func (h *Handler) delete(w http.ResponseWriter, r *http.Request, c *storage.Client, _ string) {
	if err := h.cfg.Store.DeleteClient(r.Context(), c.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		h.internal(w, r, "delete registration", err)
		return
	}
	h.cfg.Logger.InfoContext(r.Context(), "deputy: client registration deleted", "client_id", c.ID)
	w.WriteHeader(http.StatusNoContent)
}

// readMetadata reads a request's JSON body of client metadata.
func readMetadata(w http.ResponseWriter, r *http.Request) (*metadata, *Error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, badMetadata("Content-Type must be application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, badMetadata("the body is larger than %d KiB", MaxBodyBytes>>10)
		}
		return nil, badMetadata("the body could not be read")
	}
	return parseMetadata(body)
}

// internal answers an error the handler did not expect.
func (h *Handler) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	httperr.Answer(w, r, h.cfg.Logger, "deputy: client registration: "+what, err, func(c httperr.Class) {
		writeJSON(w, c.Status, Error{Code: c.Code, Description: c.Message})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
