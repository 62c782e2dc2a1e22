package agenttoken

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// agentTokenType is the JWS "typ" of an agent token (RFC 9068 §2.1). Checking
// it keeps an ID token or any other JWT signed by the same keys from being
// accepted as an access token.
const agentTokenType = "at+jwt"

// maxAgentTokenLen bounds the work an attacker can make the verifier do; a
// real agent token is well under 1 KiB.
const maxAgentTokenLen = 4096

// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
const DefaultLeeway = 30 * time.Second

// Errors of Mint. The token endpoint maps them to OAuth2 errors.
var (
	ErrInvalidAgentSession = errors.New("deputy: agent_session_id must be " + protocol.AgentSessionIDRule)
	ErrInvalidOrganization = errors.New("deputy: organization must be " + protocol.OrganizationRule)
	ErrNoScopes            = errors.New("deputy: no scope left to grant")
)

var b64 = base64.RawURLEncoding.Strict()

// tracer comes from the global provider, so that a host's OpenTelemetry
// setup records the mint spans.
var tracer = otel.Tracer("github.com/deputyauth/deputy/handlers/agenttoken")

// AgentScopes is the scope formula of agent tokens:
//
//	( readonly(U) ∪ G ) ∩ U ∩ R ∩ C
//
// where U is what the user presents (the subject token's scopes ∩ the user's
// current scopes), G what the user approved for this session of this client,
// R the request (nil or empty: everything) and C the client's scopes (nil: no
// cap). It
// never returns a scope outside U, R or C: a grant can only unlock what the
// user already holds.
func AgentScopes(cat *scope.Catalog, u, granted, requested, client []string) []string {
	out := scope.Intersect(scope.Union(cat.ReadOnly(u), granted), u)
	if len(requested) > 0 {
		out = scope.Intersect(out, requested)
	}
	if client != nil {
		out = scope.Intersect(out, client)
	}
	return out
}

// Minter mints agent capability tokens. The token endpoint's agent-token
// grant uses it; a host can call it directly for first-party agents.
type Minter struct {
	Keys *Keyring
	// Store holds the approvals (agent grants) that unlock write scopes.
	Store     GrantStorage
	Directory scope.Directory
	Catalog   *scope.Catalog
	// Issuer goes into iss; resource servers check it.
	Issuer string
	// Audience goes into aud when the request names none. Default: Issuer.
	Audience string
	// Lifespan of tokens. Default protocol.DefaultAgentTokenLifespan (5 minutes),
	// at most protocol.MaxAgentTokenLifespan (1 hour).
	Lifespan time.Duration
	Logger   *slog.Logger
	// OnMint, when set, is called after each token minted: deputy's
	// metrics count them.
	OnMint func()
}

// MintRequest asks for an agent token.
type MintRequest struct {
	UserID         string
	Organization   string
	AgentSessionID string
	// ClientID is the agent platform acting for the user: client_id and act.sub.
	ClientID string
	// SubjectScopes is the authority the caller presents for the user (the
	// subject token's scopes). nil means the user's own current scopes: a
	// first-party agent acting on the user's live session. The token endpoint
	// never passes nil.
	SubjectScopes []string
	// ClientScopes caps the result at the client's scopes; nil means no cap.
	ClientScopes []string
	// Requested narrows the scopes; nil or empty asks for all.
	Requested []string
	// Audience of the token; nil means the Minter's Audience.
	Audience []string
	// Lifespan overrides the Minter's, still at most protocol.MaxAgentTokenLifespan.
	Lifespan time.Duration
}

// AgentToken is a minted token.
type AgentToken struct {
	Token     string
	Scopes    []string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// ExpiresIn is the lifetime in whole seconds, as token responses report it.
func (t *AgentToken) ExpiresIn() int64 { return int64(t.ExpiresAt.Sub(t.IssuedAt) / time.Second) }

// mintedClaims is the token body; field order is the wire order.
type mintedClaims struct {
	Issuer       string `json:"iss"`
	Subject      string `json:"sub"`
	Audience     any    `json:"aud"`
	Expiry       int64  `json:"exp"`
	IssuedAt     int64  `json:"iat"`
	NotBefore    int64  `json:"nbf"`
	ID           string `json:"jti"`
	Scope        string `json:"scope"`
	ClientID     string `json:"client_id"`
	Organization string `json:"org"`
	AgentSession string `json:"agent_session"`
	Actor        actor  `json:"act"`
}

type actor struct {
	Subject string `json:"sub"`
}

// Mint checks the request, computes the scopes (one indexed grant query and
// one Directory call) and signs the token. Errors: ErrInvalidAgentSession,
// ErrInvalidOrganization, ErrNoScopes, the Directory's scope.ErrUserNotFound
// or scope.ErrUserDisabled, or an internal error.
func (m *Minter) Mint(ctx context.Context, req MintRequest) (_ *AgentToken, err error) {
	ctx, span := tracer.Start(ctx, "deputy.agent_token.mint")
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, mintErrorClass(err))
		} else if m.OnMint != nil {
			m.OnMint()
		}
		span.End()
	}()
	if !protocol.ValidAgentSessionID(req.AgentSessionID) {
		return nil, ErrInvalidAgentSession
	}
	if !protocol.ValidOrganization(req.Organization) {
		return nil, ErrInvalidOrganization
	}
	if req.UserID == "" || req.ClientID == "" {
		return nil, errors.New("deputy: mint: user and client are required")
	}
	user, err := m.Directory.UserScopes(ctx, req.UserID, req.Organization)
	if err != nil {
		return nil, fmt.Errorf("deputy: mint: user scopes: %w", err)
	}
	u := user
	if req.SubjectScopes != nil {
		u = scope.Intersect(req.SubjectScopes, user)
	}
	issued := time.Now()
	// The grant is bound to this client too: another platform that uses
	// the same session id for this user finds nothing.
	granted, err := m.Store.AgentGrantScopes(ctx, req.Organization, req.UserID, req.ClientID, req.AgentSessionID, issued)
	if err != nil {
		return nil, fmt.Errorf("deputy: mint: %w", err)
	}
	scopes := AgentScopes(m.Catalog, u, granted, req.Requested, req.ClientScopes)
	if len(scopes) == 0 {
		return nil, ErrNoScopes
	}

	lifespan := req.Lifespan
	if lifespan <= 0 {
		lifespan = m.Lifespan
	}
	if lifespan <= 0 {
		lifespan = protocol.DefaultAgentTokenLifespan
	}
	lifespan = min(lifespan, protocol.MaxAgentTokenLifespan).Truncate(time.Second)
	issued = issued.Truncate(time.Second)
	expires := issued.Add(lifespan)

	var aud any = m.audience()
	switch len(req.Audience) {
	case 0:
	case 1:
		aud = req.Audience[0]
	default:
		aud = req.Audience
	}
	body, err := json.Marshal(mintedClaims{
		Issuer:       m.Issuer,
		Subject:      req.UserID,
		Audience:     aud,
		Expiry:       expires.Unix(),
		IssuedAt:     issued.Unix(),
		NotBefore:    issued.Unix(),
		ID:           storage.NewID(16),
		Scope:        scope.Join(scopes),
		ClientID:     req.ClientID,
		Organization: req.Organization,
		AgentSession: req.AgentSessionID,
		Actor:        actor{Subject: req.ClientID},
	})
	if err != nil {
		return nil, fmt.Errorf("deputy: mint: encode claims: %w", err)
	}
	key, err := m.Keys.signer()
	if err != nil {
		return nil, err
	}
	token := make([]byte, 0, len(protocol.AgentTokenPrefix)+len(key.header)+1+b64.EncodedLen(len(body))+1+b64.EncodedLen(64))
	token, err = key.sign(append(token, protocol.AgentTokenPrefix...), body)
	if err != nil {
		return nil, fmt.Errorf("deputy: mint: sign: %w", err)
	}
	return &AgentToken{Token: string(token), Scopes: scopes, IssuedAt: issued, ExpiresAt: expires}, nil
}

// mintErrorClass names why a mint failed, for its span: never the
// request's values.
func mintErrorClass(err error) string {
	switch {
	case errors.Is(err, ErrInvalidAgentSession), errors.Is(err, ErrInvalidOrganization):
		return "invalid_request"
	case errors.Is(err, ErrNoScopes):
		return "no_scopes"
	case errors.Is(err, scope.ErrUserNotFound), errors.Is(err, scope.ErrUserDisabled):
		return "user_cannot_act"
	case errors.Is(err, storage.ErrUnavailable):
		return "unavailable"
	}
	return "error"
}

func (m *Minter) audience() string {
	if m.Audience != "" {
		return m.Audience
	}
	return m.Issuer
}

// AgentVerifier verifies agent tokens against the keyring: signature by a
// known key with an allowed algorithm, typ, iss, aud, time claims, the types
// of every claim, and the organization of the request. It does no I/O except
// a rate-limited key reload when a token names a kid it does not know. The
// Identity it returns names the token's resources (Identity.Audience: its
// aud without the issuer), which the resource middleware checks against the
// resource it protects.
type AgentVerifier struct {
	Keys *Keyring
	// Issuer the token must carry in iss.
	Issuer string
	// Audiences are the values of which the token's aud must contain one:
	// the issuer (a token for no particular resource) and the resources
	// the IdP mints for. Default: the Issuer alone.
	Audiences []string
	// Leeway on exp, nbf and iat. Default DefaultLeeway.
	Leeway time.Duration

	now func() time.Time // tests
}

// verifyBuf holds one verification's scratch space, pooled so that a
// verification allocates only what it returns.
type verifyBuf struct {
	in  [maxAgentTokenLen]byte
	out [maxAgentTokenLen]byte
}

var verifyBufs = sync.Pool{New: func() any { return new(verifyBuf) }}

// verifiedClaims is what the verifier decodes. Every field's Go type is the
// only JSON type accepted for it: encoding/json refuses a number for a
// string, a float or string for an int64, so a mis-typed claim fails.
type verifiedClaims struct {
	Issuer       string   `json:"iss"`
	Subject      string   `json:"sub"`
	Audience     rawClaim `json:"aud"`
	Expiry       int64    `json:"exp"`
	IssuedAt     int64    `json:"iat"`
	NotBefore    int64    `json:"nbf"`
	ID           string   `json:"jti"`
	Scope        string   `json:"scope"`
	ClientID     string   `json:"client_id"`
	Organization string   `json:"org"`
	AgentSession string   `json:"agent_session"`
	Actor        *actor   `json:"act"`
}

// rawClaim keeps a claim's JSON without copying it: it aliases the pooled
// buffer and is only read before the buffer goes back.
type rawClaim []byte

func (r *rawClaim) UnmarshalJSON(b []byte) error { *r = b; return nil }

type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

func invalid(reason string) error { return fmt.Errorf("%w: %s", resource.ErrInvalidToken, reason) }

// Verify checks token (with its dpy_agt_ prefix) for a request in org and
// returns whom it speaks for. Every failure wraps ErrInvalidToken.
func (v *AgentVerifier) Verify(ctx context.Context, token, org string) (*resource.Identity, error) {
	if len(token) > maxAgentTokenLen+len(protocol.AgentTokenPrefix) {
		return nil, invalid("too long")
	}
	jws, ok := strings.CutPrefix(token, protocol.AgentTokenPrefix)
	if !ok {
		return nil, invalid("not an agent token")
	}
	dot1 := strings.IndexByte(jws, '.')
	dot2 := strings.LastIndexByte(jws, '.')
	if dot1 <= 0 || dot2 == dot1 || strings.IndexByte(jws[dot1+1:dot2], '.') >= 0 {
		return nil, invalid("not a compact JWS")
	}
	key, err := v.headerKey(ctx, jws[:dot1])
	if err != nil {
		return nil, err
	}

	buf := verifyBufs.Get().(*verifyBuf)
	defer verifyBufs.Put(buf)
	in := append(buf.in[:0], jws...)

	// The signature first: nothing in an unauthenticated payload is read.
	sig := buf.out[:]
	n, err := b64.Decode(sig, in[dot2+1:])
	if err != nil || n != 64 {
		return nil, invalid("malformed signature")
	}
	if !key.verify(in[:dot2], sig[:n]) {
		return nil, invalid("bad signature")
	}
	n, err = b64.Decode(buf.out[:], in[dot1+1:dot2])
	if err != nil {
		return nil, invalid("malformed payload")
	}
	var c verifiedClaims
	if err := json.Unmarshal(buf.out[:n], &c); err != nil {
		return nil, invalid("malformed claims")
	}
	if err := v.checkClaims(&c, org); err != nil {
		return nil, err
	}
	return &resource.Identity{
		Subject:      c.Subject,
		Organization: c.Organization,
		AgentSession: c.AgentSession,
		ClientID:     c.ClientID,
		Scopes:       strings.Fields(c.Scope),
		Kind:         resource.KindAgent,
		Audience:     resources(c.Audience, v.Issuer),
	}, nil
}

// headerKey returns the key the header names, after checking typ and that
// the algorithm is allowed and is the key's own (no algorithm confusion).
func (v *AgentVerifier) headerKey(ctx context.Context, h string) (*publicKey, error) {
	// Our own tokens carry a header we know byte for byte; recognising it
	// saves decoding JSON on the hot path.
	if pk := v.Keys.current().byHeader[h]; pk != nil {
		return pk, nil
	}
	if len(h) > 1024 {
		return nil, invalid("header too long")
	}
	raw, err := b64.DecodeString(h)
	if err != nil {
		return nil, invalid("malformed header")
	}
	var hdr jwsHeader
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return nil, invalid("malformed header")
	}
	if hdr.Typ != agentTokenType {
		return nil, invalid("wrong typ")
	}
	if hdr.Crit != nil {
		return nil, invalid("critical header extensions are not supported")
	}
	if hdr.Alg != AlgEdDSA && hdr.Alg != AlgES256 {
		return nil, invalid("algorithm not allowed")
	}
	pk, err := v.Keys.verificationKey(ctx, hdr.Kid)
	if err != nil {
		return nil, invalid("unknown kid")
	}
	if pk.alg != hdr.Alg {
		return nil, invalid("algorithm does not match the key")
	}
	return pk, nil
}

func (pk *publicKey) verify(input, sig []byte) bool {
	switch pk.alg {
	case AlgEdDSA:
		return ed25519.Verify(pk.ed, input, sig)
	case AlgES256:
		// JWS carries r‖s; crypto/ecdsa's fast path takes ASN.1 DER, which
		// is cheaper to write here than to go through big.Int.
		h := sha256.Sum256(input)
		var der [72]byte
		return ecdsa.VerifyASN1(pk.ec, h[:], ecdsaDER(der[:0], sig[:32], sig[32:]))
	}
	return false
}

// ecdsaDER appends SEQUENCE { INTEGER r, INTEGER s } for 32-byte r and s.
func ecdsaDER(dst, r, s []byte) []byte {
	r, s = derInteger(r), derInteger(s)
	dst = append(dst, 0x30, byte(len(r)+len(s)))
	return append(append(dst, r...), s...)
}

// derInteger returns the DER INTEGER of the unsigned big-endian b (at most 32
// bytes): minimal, with a zero byte where the top bit would read as a sign.
func derInteger(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	var out [35]byte
	n := 0
	out[n], out[n+1] = 0x02, byte(len(b))
	n += 2
	if b[0]&0x80 != 0 {
		out[1]++
		out[n] = 0
		n++
	}
	n += copy(out[n:], b)
	return out[:n]
}

func (v *AgentVerifier) checkClaims(c *verifiedClaims, org string) error {
	now := time.Now
	if v.now != nil {
		now = v.now
	}
	t := now().Unix()
	leeway := int64(DefaultLeeway / time.Second)
	if v.Leeway > 0 {
		leeway = int64(v.Leeway / time.Second)
	}
	switch {
	case c.Issuer == "" || c.Issuer != v.Issuer:
		return invalid("wrong iss")
	case !v.audienceAccepted(c.Audience):
		return invalid("wrong aud")
	case c.Expiry <= 0 || c.IssuedAt <= 0 || c.NotBefore <= 0:
		return invalid("missing exp, iat or nbf")
	case t >= c.Expiry+leeway:
		return invalid("expired")
	case t < c.NotBefore-leeway:
		return invalid("not yet valid")
	case t < c.IssuedAt-leeway:
		return invalid("issued in the future")
	case c.Expiry-c.IssuedAt > int64(protocol.MaxAgentTokenLifespan/time.Second):
		// The key rotation schedule relies on this bound.
		return invalid("lifetime too long")
	case c.Subject == "" || c.ID == "" || c.Scope == "" || c.ClientID == "" || c.AgentSession == "":
		return invalid("missing claim")
	case c.Actor == nil || c.Actor.Subject != c.ClientID:
		return invalid("act does not name the client")
	case c.Organization == "" || org == "" || c.Organization != org:
		return invalid("another organization")
	}
	return nil
}

// audienceAccepted reports whether aud holds one of Audiences.
func (v *AgentVerifier) audienceAccepted(aud rawClaim) bool {
	if len(v.Audiences) == 0 {
		return audienceHas(aud, v.Issuer)
	}
	for _, a := range v.Audiences {
		if audienceHas(aud, a) {
			return true
		}
	}
	return false
}

// resources returns the values of aud (checked to be a string or an array
// of strings) other than issuer: the resources a token is for, nil for a
// token minted for no particular resource.
// An aud that does not decode (checkClaims has refused it already) is for
// a resource nobody has: it fails closed.
func resources(aud rawClaim, issuer string) []string {
	undecodable := []string{""}
	if len(aud) == 0 {
		return undecodable
	}
	if aud[0] == '"' && audienceHas(aud, issuer) {
		return nil // the common case, decided without allocating
	}
	var all []string
	if aud[0] == '"' {
		var s string
		if json.Unmarshal(aud, &s) != nil {
			return undecodable
		}
		all = []string{s}
	} else if json.Unmarshal(aud, &all) != nil {
		return undecodable
	}
	out := all[:0]
	for _, a := range all {
		if a != issuer {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// audienceHas reports whether aud, a JSON string or array of strings, holds want.
func audienceHas(aud rawClaim, want string) bool {
	if len(aud) == 0 || want == "" {
		return false
	}
	switch aud[0] {
	case '"':
		// A plain string (no escapes) compares in place, allocating nothing.
		if len(aud) >= 2 && aud[len(aud)-1] == '"' && bytes.IndexByte(aud, '\\') < 0 {
			return string(aud[1:len(aud)-1]) == want
		}
		var s string
		return json.Unmarshal(aud, &s) == nil && s == want
	case '[':
		var ss []string
		if json.Unmarshal(aud, &ss) != nil {
			return false
		}
		for _, s := range ss {
			if s == want {
				return true
			}
		}
	}
	return false
}
