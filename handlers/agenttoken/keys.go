package agenttoken

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
)

// Signing algorithms an agent token may use. Nothing else is ever accepted.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

// Keyring defaults.
const (
	DefaultKeyRefreshInterval    = time.Minute
	DefaultMinKeyRefreshInterval = time.Second
)

// keyEncryptionLabel is the HKDF purpose label: a key derived for sealing
// signing keys is useless for anything else the system secret keys.
const keyEncryptionLabel = "deputy agent-token signing keys v1"

// ErrUnknownKey is returned for a token whose kid is not in the keyring.
var ErrUnknownKey = errors.New("deputy: unknown signing key")

// KeyringConfig configures a Keyring.
type KeyringConfig struct {
	// Store holds the keys; every replica on the same database shares them.
	Store KeyStorage
	// SystemSecret seals private keys at rest; at least 32 bytes, shared by
	// every replica.
	SystemSecret []byte
	// Algorithm of keys this keyring creates: AlgEdDSA (default) or AlgES256.
	// Keys of either algorithm already in the store keep verifying.
	Algorithm string
	// RefreshInterval is how stale the in-memory key set may get before it is
	// reloaded in the background, so replicas converge after a rotation.
	// Default DefaultKeyRefreshInterval.
	RefreshInterval time.Duration
	// MinRefreshInterval rate-limits reloads triggered by tokens with an
	// unknown kid, so garbage kids cannot hammer the database. Default
	// DefaultMinKeyRefreshInterval; negative means no limit (tests).
	MinRefreshInterval time.Duration
	// Logger receives refresh failures. Default slog.Default().
	Logger *slog.Logger
}

// Keyring holds the decrypted signing keys in memory: signing and verifying
// never touch the database or decrypt anything. It reloads from the store
// when its copy is older than RefreshInterval and when a token names a kid it
// does not know (at most once per MinRefreshInterval).
type Keyring struct {
	store      KeyStorage
	aead       cipher.AEAD
	alg        string
	refresh    time.Duration
	minRefresh time.Duration
	log        *slog.Logger

	set         atomic.Pointer[keySet]
	mu          sync.Mutex   // serialises reloads
	lastAttempt atomic.Int64 // any reload
	lastUnknown atomic.Int64 // reloads for an unknown kid
	background  atomic.Bool
	loads       atomic.Int64 // reloads that reached the database, for tests
}

// keySet is one immutable snapshot of the store's keys.
type keySet struct {
	byKid    map[string]*publicKey
	byHeader map[string]*publicKey
	active   *privateKey
	jwks     []byte
	loadedAt time.Time
}

type publicKey struct {
	kid string
	alg string
	ed  ed25519.PublicKey
	ec  *ecdsa.PublicKey
	// header is the base64url JWS header this key's tokens carry, so the
	// verifier can recognise its own tokens' header without decoding JSON.
	header string
}

type privateKey struct {
	kid string
	alg string
	// header is the base64url JWS header of the tokens it signs, the one
	// go-jose wrote (expectedHeader), so that signing writes no JSON.
	header  string
	ed      ed25519.PrivateKey
	ec      *ecdsa.PrivateKey
	created time.Time
}

// NewKeyring loads the keys, creating the first active key if the store has
// none. Several replicas may call it on one database at once.
func NewKeyring(ctx context.Context, cfg KeyringConfig) (*Keyring, error) {
	if cfg.Store == nil {
		return nil, errors.New("deputy: keyring needs a store")
	}
	if len(cfg.SystemSecret) < 32 {
		return nil, errors.New("deputy: the system secret must be at least 32 bytes")
	}
	alg := cfg.Algorithm
	if alg == "" {
		alg = AlgEdDSA
	}
	if alg != AlgEdDSA && alg != AlgES256 {
		return nil, fmt.Errorf("deputy: agent token algorithm %q: want %s or %s", alg, AlgEdDSA, AlgES256)
	}
	aead, err := sealingAEAD(cfg.SystemSecret)
	if err != nil {
		return nil, err
	}
	k := &Keyring{
		store:      cfg.Store,
		aead:       aead,
		alg:        alg,
		refresh:    cfg.RefreshInterval,
		minRefresh: cfg.MinRefreshInterval,
		log:        cfg.Logger,
	}
	if k.refresh <= 0 {
		k.refresh = DefaultKeyRefreshInterval
	}
	if k.minRefresh == 0 {
		k.minRefresh = DefaultMinKeyRefreshInterval
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	if err := k.Refresh(ctx); err != nil {
		return nil, err
	}
	if k.set.Load().active == nil {
		sk, err := k.newKey()
		if err != nil {
			return nil, err
		}
		if _, err := k.store.CreateFirstSigningKey(ctx, sk); err != nil {
			return nil, err
		}
		// Whether ours or a racing replica's won, read the winner back.
		if err := k.Refresh(ctx); err != nil {
			return nil, err
		}
		if k.set.Load().active == nil {
			return nil, errors.New("deputy: no active signing key after creating one")
		}
	}
	return k, nil
}

func sealingAEAD(secret []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, secret, nil, keyEncryptionLabel, 32)
	if err != nil {
		return nil, fmt.Errorf("deputy: derive key-encryption key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts a private key; kid and algorithm are bound as additional
// data, so a sealed key copied onto another row does not open.
func (k *Keyring) seal(kid, alg string, plain []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("deputy: crypto/rand failed: " + err.Error())
	}
	return k.aead.Seal(nonce, nonce, plain, []byte(kid+"\x00"+alg))
}

func (k *Keyring) open(kid, alg string, sealed []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed key too short")
	}
	return k.aead.Open(nil, sealed[:n], sealed[n:], []byte(kid+"\x00"+alg))
}

// newKey generates a key of the keyring's algorithm, sealed for storage.
func (k *Keyring) newKey() (*storage.SigningKey, error) {
	var (
		priv crypto.Signer
		err  error
	)
	switch k.alg {
	case AlgES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("deputy: generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("deputy: encode signing key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("deputy: encode public key: %w", err)
	}
	kid := storage.NewID(12)
	return &storage.SigningKey{ID: kid, Algorithm: k.alg, PublicKey: pub, PrivateKey: k.seal(kid, k.alg, der)}, nil
}

// RotateKeys makes a new active key. The previous key stays published, and
// keeps verifying, until every token it may have signed has expired: the
// longest lifetime plus the time other replicas may take to notice the
// rotation, plus clock leeway.
func (k *Keyring) RotateKeys(ctx context.Context) error {
	retain := protocol.MaxAgentTokenLifespan + k.refresh + k.minRefresh + time.Minute
	var err error
	for range 3 {
		var sk *storage.SigningKey
		if sk, err = k.newKey(); err != nil {
			return err
		}
		if err = k.store.RotateSigningKeys(ctx, sk, retain); !errors.Is(err, storage.ErrConflict) {
			break
		}
	}
	if err != nil {
		return err
	}
	return k.Refresh(ctx)
}

// Refresh reloads the keys from the store now.
func (k *Keyring) Refresh(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reloadLocked(ctx)
}

func (k *Keyring) reloadLocked(ctx context.Context) error {
	k.loads.Add(1)
	k.lastAttempt.Store(time.Now().UnixNano())
	rows, err := k.store.SigningKeys(ctx, time.Now())
	if err != nil {
		return err
	}
	prev := k.set.Load()
	next := &keySet{
		byKid:    make(map[string]*publicKey, len(rows)),
		byHeader: make(map[string]*publicKey, len(rows)),
		loadedAt: time.Now(),
	}
	jwks := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(rows))}
	for _, row := range rows {
		var pk *publicKey
		if prev != nil {
			pk = prev.byKid[row.ID]
		}
		if pk == nil || pk.alg != row.Algorithm {
			if pk, err = parsePublicKey(row); err != nil {
				// One unreadable row must not take every other key down.
				k.log.Error("deputy: skipping unreadable signing key", "kid", row.ID, "err", err)
				continue
			}
		}
		next.byKid[row.ID] = pk
		next.byHeader[pk.header] = pk
		jwk := jose.JSONWebKey{KeyID: pk.kid, Algorithm: pk.alg, Use: "sig"}
		if pk.ed != nil {
			jwk.Key = pk.ed
		} else {
			jwk.Key = pk.ec
		}
		jwks.Keys = append(jwks.Keys, jwk)
		if !row.Active {
			continue
		}
		// Only the active key is ever decrypted, and only once per kid.
		if prev != nil && prev.active != nil && prev.active.kid == row.ID {
			next.active = prev.active
			continue
		}
		priv, err := k.openPrivate(row)
		if err != nil {
			k.log.Error("deputy: cannot open the active signing key; is the system secret the one it was sealed with?", "kid", row.ID, "err", err)
			continue
		}
		next.active = priv
	}
	if next.jwks, err = json.Marshal(jwks); err != nil {
		return fmt.Errorf("deputy: encode JWKS: %w", err)
	}
	k.set.Store(next)
	return nil
}

func parsePublicKey(row *storage.SigningKey) (*publicKey, error) {
	key, err := x509.ParsePKIXPublicKey(row.PublicKey)
	if err != nil {
		return nil, err
	}
	pk := &publicKey{kid: row.ID, alg: row.Algorithm}
	switch row.Algorithm {
	case AlgEdDSA:
		ed, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("algorithm %s with a %T key", row.Algorithm, key)
		}
		pk.ed = ed
	case AlgES256:
		ec, ok := key.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("algorithm %s with a %T key", row.Algorithm, key)
		}
		pk.ec = ec
	default:
		return nil, fmt.Errorf("algorithm %q not allowed", row.Algorithm)
	}
	pk.header = expectedHeader(pk.alg, pk.kid)
	return pk, nil
}

// expectedHeader is the header go-jose writes for our tokens: its keys are
// sorted because go-jose marshals a map.
func expectedHeader(alg, kid string) string {
	b, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, agentTokenType})
	return b64.EncodeToString(b)
}

func (k *Keyring) openPrivate(row *storage.SigningKey) (*privateKey, error) {
	der, err := k.open(row.ID, row.Algorithm, row.PrivateKey)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	pk := &privateKey{kid: row.ID, alg: row.Algorithm, header: expectedHeader(row.Algorithm, row.ID), created: row.CreatedAt}
	switch key := key.(type) {
	case ed25519.PrivateKey:
		pk.ed = key
		if row.Algorithm != AlgEdDSA {
			return nil, fmt.Errorf("algorithm %s with a %T key", row.Algorithm, key)
		}
	case *ecdsa.PrivateKey:
		pk.ec = key
		if row.Algorithm != AlgES256 {
			return nil, fmt.Errorf("algorithm %s with a %T key", row.Algorithm, key)
		}
	default:
		return nil, fmt.Errorf("unexpected private key %T", key)
	}
	return pk, nil
}

// sign appends to dst the compact JWS of payload: the key's header, the
// payload and the signature, each base64url. It is what go-jose wrote for
// deputy's tokens (TestMintReadsAsJOSE parses and verifies them with it);
// the header is known in advance, so signing encodes no JSON and makes
// none of go-jose's intermediate copies.
func (k *privateKey) sign(dst, payload []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, k.header...)
	dst = append(dst, '.')
	dst = b64.AppendEncode(dst, payload)
	input := dst[start:]
	switch k.alg {
	case AlgEdDSA:
		if k.ed == nil {
			break
		}
		sig := ed25519.Sign(k.ed, input)
		return b64.AppendEncode(append(dst, '.'), sig), nil
	case AlgES256:
		if k.ec == nil || k.ec.Curve != elliptic.P256() {
			break
		}
		h := sha256.Sum256(input)
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, h[:])
		if err != nil {
			return nil, err
		}
		// JWS (RFC 7518 §3.4) carries r‖s, each 32 bytes big-endian.
		var sig [64]byte
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return b64.AppendEncode(append(dst, '.'), sig[:]), nil
	}
	return nil, fmt.Errorf("deputy: key %s cannot sign %s", k.kid, k.alg)
}

// current returns the key set, starting a background reload when it is stale.
func (k *Keyring) current() *keySet {
	set := k.set.Load()
	if time.Since(set.loadedAt) > k.refresh {
		k.reloadInBackground()
	}
	return set
}

func (k *Keyring) reloadInBackground() {
	// A store that keeps failing is retried at most once per MinRefreshInterval.
	if !k.since(&k.lastAttempt) || !k.background.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer k.background.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := k.Refresh(ctx); err != nil {
			k.log.Error("deputy: reloading signing keys", "err", err)
		}
	}()
}

// since reports whether MinRefreshInterval has passed since *last.
func (k *Keyring) since(last *atomic.Int64) bool {
	if k.minRefresh < 0 {
		return true
	}
	return time.Since(time.Unix(0, last.Load())) >= k.minRefresh
}

// verificationKey returns the key for kid, reloading once (rate-limited) when
// kid is unknown: another replica may have rotated.
func (k *Keyring) verificationKey(ctx context.Context, kid string) (*publicKey, error) {
	if pk := k.current().byKid[kid]; pk != nil {
		return pk, nil
	}
	// Only well-formed kids of the kind we generate can be worth a query.
	if len(kid) != 24 || strings.Trim(kid, "0123456789abcdef") != "" {
		return nil, ErrUnknownKey
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	// Someone may have reloaded while we waited for the lock.
	if pk := k.set.Load().byKid[kid]; pk != nil {
		return pk, nil
	}
	// Only reloads for unknown kids count against this limit: a replica that
	// has just started, or just reloaded on schedule, still learns a key
	// another replica rotated in a moment ago.
	if !k.since(&k.lastUnknown) {
		return nil, ErrUnknownKey
	}
	k.lastUnknown.Store(time.Now().UnixNano())
	if err := k.reloadLocked(ctx); err != nil {
		k.log.Error("deputy: reloading signing keys for an unknown kid", "err", err)
		return nil, ErrUnknownKey
	}
	if pk := k.set.Load().byKid[kid]; pk != nil {
		return pk, nil
	}
	return nil, ErrUnknownKey
}

// signer returns the active key.
func (k *Keyring) signer() (*privateKey, error) {
	if a := k.current().active; a != nil {
		return a, nil
	}
	return nil, errors.New("deputy: no usable active signing key")
}

// ActiveKeyCreatedAt is when the key that signs new tokens was created
// (zero if there is none): its age says when it was last rotated. Like
// signing, it reads the in-memory key set, reloaded when stale.
func (k *Keyring) ActiveKeyCreatedAt() time.Time {
	if a := k.current().active; a != nil {
		return a.created
	}
	return time.Time{}
}

// JWKS returns the published key set document (public keys only).
func (k *Keyring) JWKS() []byte { return k.current().jwks }
