package agenttoken

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// resourceServer is a sample API behind the middleware: GET
// /orgs/{org}/projects needs projects:read.
func resourceServer(v *AgentVerifier) http.Handler {
	m := &resource.Middleware{Agent: v, Org: func(r *http.Request) string { return r.PathValue("org") }}
	mux := http.NewServeMux()
	mux.Handle("GET /orgs/{org}/projects", m.RequireScopes(readScope)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	return mux
}

type apiResult struct {
	status    int
	challenge string
}

func call(t *testing.T, h http.Handler, method, org, token string) apiResult {
	t.Helper()
	req := httptest.NewRequest(method, "/orgs/"+org+"/projects", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return apiResult{status: rec.Code, challenge: rec.Header().Get("WWW-Authenticate")}
}

// TestMiddlewareRefusals: every way a token can be wrong is a 401 with the
// invalid_token challenge, never a 500 and never the handler.
func TestMiddlewareRefusals(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		k, err := NewKeyring(context.Background(), KeyringConfig{Store: s, SystemSecret: testSecret, MinRefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		verifier := &AgentVerifier{Keys: k, Issuer: testIssuer}
		api := resourceServer(verifier)
		h, c := validHeader(t, k), validClaims()
		now := time.Now().Unix()

		// The forger itself must produce a token that passes, or every
		// refusal below would prove nothing.
		if r := call(t, api, http.MethodGet, testOrg, forge(t, k, h, c)); r.status != http.StatusOK {
			t.Fatalf("baseline forged token refused: %d", r.status)
		}
		if r := call(t, api, http.MethodGet, testOrg, forge(t, k, h, with(c, "aud", []string{"x", testIssuer}))); r.status != http.StatusOK {
			t.Fatalf("audience array refused: %d", r.status)
		}

		valid := forge(t, k, h, c)
		kid, _, _, pubDER := activeKey(t, k)
		pub, _ := x509.ParsePKIXPublicKey(pubDER)
		rawPub := []byte(pub.(ed25519.PublicKey))
		hs256 := func(secret []byte) string {
			input := segment(t, map[string]any{"alg": "HS256", "kid": kid, "typ": "at+jwt"}) + "." + segment(t, c)
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(input))
			return protocol.AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
		}
		parts := strings.Split(strings.TrimPrefix(valid, protocol.AgentTokenPrefix), ".")
		flipped := []byte(parts[2])
		flipped[10] ^= 0x01
		garbage := make([]byte, 6*1024)
		rand.Read(garbage)
		otherKey := func() string {
			_, p, _ := ed25519.GenerateKey(rand.Reader)
			input := segment(t, h) + "." + segment(t, c)
			return protocol.AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(p, []byte(input)))
		}

		cases := []struct {
			name, org, token string
		}{
			{"bad signature", testOrg, protocol.AgentTokenPrefix + parts[0] + "." + parts[1] + "." + string(flipped)},
			{"signed by another key", testOrg, otherKey()},
			{"alg none", testOrg, protocol.AgentTokenPrefix + segment(t, with(h, "alg", "none")) + "." + parts[1] + "."},
			{"alg none with signature", testOrg, protocol.AgentTokenPrefix + segment(t, with(h, "alg", "none")) + "." + parts[1] + "." + parts[2]},
			{"HS256 keyed with the raw public key", testOrg, hs256(rawPub)},
			{"HS256 keyed with the DER public key", testOrg, hs256(pubDER)},
			{"ES256 header on an EdDSA key", testOrg, forge(t, k, with(h, "alg", "ES256"), c)},
			{"RS256", testOrg, forge(t, k, with(h, "alg", "RS256"), c)},
			{"unknown kid", testOrg, forge(t, k, with(h, "kid", "0123456789abcdef01234567"), c)},
			{"garbage kid", testOrg, forge(t, k, with(h, "kid", "../../etc/passwd"), c)},
			{"missing kid", testOrg, forge(t, k, with(h, "kid", nil), c)},
			{"wrong typ", testOrg, forge(t, k, with(h, "typ", "JWT"), c)},
			{"missing typ", testOrg, forge(t, k, with(h, "typ", nil), c)},
			{"crit header", testOrg, forge(t, k, with(h, "crit", []string{"exp"}), c)},
			{"expired", testOrg, forge(t, k, h, with(c, "exp", now-300, "iat", now-600, "nbf", now-600))},
			{"future nbf", testOrg, forge(t, k, h, with(c, "nbf", now+600, "exp", now+900))},
			{"future iat", testOrg, forge(t, k, h, with(c, "iat", now+600, "exp", now+900))},
			{"lifetime over an hour", testOrg, forge(t, k, h, with(c, "exp", now+2*3600))},
			{"missing exp", testOrg, forge(t, k, h, with(c, "exp", nil))},
			{"exp as string", testOrg, forge(t, k, h, with(c, "exp", "9999999999"))},
			{"exp as float", testOrg, forge(t, k, h, with(c, "exp", float64(now)+300.5))},
			{"wrong aud", testOrg, forge(t, k, h, with(c, "aud", "https://other.example"))},
			{"missing aud", testOrg, forge(t, k, h, with(c, "aud", nil))},
			{"aud as number", testOrg, forge(t, k, h, with(c, "aud", 7))},
			{"wrong iss", testOrg, forge(t, k, h, with(c, "iss", "https://evil.example"))},
			{"missing iss", testOrg, forge(t, k, h, with(c, "iss", nil))},
			{"missing sub", testOrg, forge(t, k, h, with(c, "sub", nil))},
			{"sub as number", testOrg, forge(t, k, h, with(c, "sub", 42))},
			{"sub as object", testOrg, forge(t, k, h, with(c, "sub", map[string]any{"id": testUser}))},
			{"missing org", testOrg, forge(t, k, h, with(c, "org", nil))},
			{"org as array", testOrg, forge(t, k, h, with(c, "org", []string{testOrg}))},
			{"missing scope", testOrg, forge(t, k, h, with(c, "scope", nil))},
			{"scope as array", testOrg, forge(t, k, h, with(c, "scope", []string{readScope}))},
			{"missing agent_session", testOrg, forge(t, k, h, with(c, "agent_session", nil))},
			{"missing act", testOrg, forge(t, k, h, with(c, "act", nil))},
			{"act for another client", testOrg, forge(t, k, h, with(c, "act", map[string]any{"sub": "evil"}))},
			{"another organization", "globex", valid},
			{"truncated", testOrg, valid[:len(valid)/2]},
			{"truncated signature", testOrg, valid[:len(valid)-3]},
			{"four segments", testOrg, valid + ".x"},
			{"payload not JSON", testOrg, protocol.AgentTokenPrefix + parts[0] + ".bm90IGpzb24." + parts[2]},
			{"8 KiB of garbage", testOrg, protocol.AgentTokenPrefix + base64.RawURLEncoding.EncodeToString(garbage)},
			{"8 KiB of garbage, no prefix", testOrg, base64.RawURLEncoding.EncodeToString(garbage)},
			{"unknown prefix", testOrg, "dpy_xx_" + parts[0]},
			{"opaque token without an opaque verifier", testOrg, "dpy_at_abc.def"},
			{"a bare JWT", testOrg, strings.TrimPrefix(valid, protocol.AgentTokenPrefix)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := call(t, api, http.MethodGet, tc.org, tc.token)
				if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.challenge, `Bearer error="invalid_token"`) {
					t.Errorf("status %d challenge %q, want 401 invalid_token", r.status, r.challenge)
				}
				if _, err := verifier.Verify(context.Background(), tc.token, tc.org); !errors.Is(err, resource.ErrInvalidToken) {
					t.Errorf("Verify = %v, want ErrInvalidToken", err)
				}
			})
		}
	})
}
