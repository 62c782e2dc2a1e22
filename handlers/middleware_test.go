package handlers

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// activeKey returns the keyring's active private key in the clear, so tests
// can forge tokens that differ from a real one in exactly one respect.
func activeKey(t testing.TB, k *Keyring) (kid, alg string, priv crypto.Signer, pubDER []byte) {
	t.Helper()
	rows, err := k.store.SigningKeys(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if !row.Active {
			continue
		}
		der, err := k.open(row.ID, row.Algorithm, row.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatal(err)
		}
		return row.ID, row.Algorithm, key.(crypto.Signer), row.PublicKey
	}
	t.Fatal("no active key")
	return
}

// forge signs header and claims as given, with the active key.
func forge(t testing.TB, k *Keyring, header, claims map[string]any) string {
	t.Helper()
	_, alg, priv, _ := activeKey(t, k)
	input := segment(t, header) + "." + segment(t, claims)
	return AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(signWith(t, alg, priv, input))
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func signWith(t testing.TB, alg string, priv crypto.Signer, input string) []byte {
	t.Helper()
	switch alg {
	case AlgEdDSA:
		return ed25519.Sign(priv.(ed25519.PrivateKey), []byte(input))
	case AlgES256:
		h := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, priv.(*ecdsa.PrivateKey), h[:])
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
	t.Fatalf("alg %s", alg)
	return nil
}

func validHeader(t testing.TB, k *Keyring) map[string]any {
	kid, alg, _, _ := activeKey(t, k)
	return map[string]any{"alg": alg, "kid": kid, "typ": "at+jwt"}
}

func validClaims() map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"iss": testIssuer, "sub": testUser, "aud": testIssuer,
		"exp": now + 300, "iat": now, "nbf": now, "jti": "j1",
		"scope": readScope + " " + writeScope, "client_id": agentClientID,
		"org": testOrg, "agent_session": testSession, "act": map[string]any{"sub": agentClientID},
	}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// TestMiddlewareRefusals: every way a token can be wrong is a 401 with the
// invalid_token challenge, never a 500 and never the handler.
func TestMiddlewareRefusals(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		api := e.resourceServer()
		k := e.keys
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
			return AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
		}
		parts := strings.Split(strings.TrimPrefix(valid, AgentTokenPrefix), ".")
		flipped := []byte(parts[2])
		flipped[10] ^= 0x01
		garbage := make([]byte, 6*1024)
		rand.Read(garbage)
		otherKey := func() string {
			_, p, _ := ed25519.GenerateKey(rand.Reader)
			input := segment(t, h) + "." + segment(t, c)
			return AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(p, []byte(input)))
		}

		cases := []struct {
			name, org, token string
		}{
			{"bad signature", testOrg, AgentTokenPrefix + parts[0] + "." + parts[1] + "." + string(flipped)},
			{"signed by another key", testOrg, otherKey()},
			{"alg none", testOrg, AgentTokenPrefix + segment(t, with(h, "alg", "none")) + "." + parts[1] + "."},
			{"alg none with signature", testOrg, AgentTokenPrefix + segment(t, with(h, "alg", "none")) + "." + parts[1] + "." + parts[2]},
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
			{"payload not JSON", testOrg, AgentTokenPrefix + parts[0] + ".bm90IGpzb24." + parts[2]},
			{"8 KiB of garbage", testOrg, AgentTokenPrefix + base64.RawURLEncoding.EncodeToString(garbage)},
			{"8 KiB of garbage, no prefix", testOrg, base64.RawURLEncoding.EncodeToString(garbage)},
			{"unknown prefix", testOrg, "dpy_xx_" + parts[0]},
			{"opaque token without an opaque verifier", testOrg, "dpy_at_abc.def"},
			{"a bare JWT", testOrg, strings.TrimPrefix(valid, AgentTokenPrefix)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := call(t, api, http.MethodGet, tc.org, tc.token)
				if r.status != http.StatusUnauthorized || r.challenge != `Bearer error="invalid_token"` {
					t.Errorf("status %d challenge %q, want 401 invalid_token", r.status, r.challenge)
				}
				if _, err := e.verifier.Verify(context.Background(), tc.token, tc.org); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("Verify = %v, want ErrInvalidToken", err)
				}
			})
		}
	})
}

// opaqueStub stands in for the owned-apps engineer's verifier: the routing,
// not opaque-token checking, is under test here.
type opaqueStub struct {
	calls int
	err   error
	panic bool
}

func (o *opaqueStub) VerifyAccessToken(_ context.Context, token, org string) (*Identity, error) {
	o.calls++
	if o.panic {
		panic("boom")
	}
	if o.err != nil {
		return nil, o.err
	}
	if token != "dpy_at_good" {
		return nil, ErrInvalidToken
	}
	return &Identity{Subject: testUser, Organization: org, ClientID: "app", Scopes: []string{readScope}, Kind: KindAccess}, nil
}

// TestMiddlewareChallengesAndRouting: the shapes of the answers without a
// token, and that the prefix alone picks the verifier.
func TestMiddlewareChallengesAndRouting(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		w.Write([]byte(id.Kind + ":" + id.Subject))
	})
	run := func(m *Middleware, scopes []string, headers ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, h := range headers {
			req.Header.Add("Authorization", h)
		}
		rec := httptest.NewRecorder()
		m.RequireScopes(scopes...)(ok).ServeHTTP(rec, req)
		return rec
	}
	org := func(*http.Request) string { return testOrg }

	t.Run("no token", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope})
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("other scheme", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("empty bearer", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Bearer ")
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("two authorization headers", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Bearer dpy_at_good", "Bearer dpy_at_good")
		if rec.Code != 400 {
			t.Errorf("%d", rec.Code)
		}
	})
	t.Run("oversized header", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "Bearer dpy_at_"+strings.Repeat("a", 64*1024))
		if rec.Code != 401 || stub.calls != 0 {
			t.Errorf("%d, verifier called %d times", rec.Code, stub.calls)
		}
	})
	t.Run("opaque token routed to the opaque verifier", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "bearer dpy_at_good")
		if rec.Code != 200 || rec.Body.String() != "access:"+testUser || stub.calls != 1 {
			t.Errorf("%d %q calls=%d", rec.Code, rec.Body.String(), stub.calls)
		}
	})
	t.Run("opaque token without the scope", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{}, ApprovalURL: func(string, string, []string) string { return "/x" }}, []string{writeScope}, "Bearer dpy_at_good")
		var body map[string]any
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != 403 || rec.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="projects:write"` || body["approval_url"] != nil {
			t.Errorf("%d %q %v", rec.Code, rec.Header().Get("WWW-Authenticate"), body)
		}
	})
	t.Run("agent prefix never reaches the opaque verifier", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "Bearer dpy_agt_x.y.z")
		if rec.Code != 401 || stub.calls != 0 {
			t.Errorf("%d calls=%d", rec.Code, stub.calls)
		}
	})
	t.Run("verifier internal error is a 401, not a 500", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{err: errors.New("database down")}}, []string{readScope}, "Bearer dpy_at_good")
		if rec.Code != 401 {
			t.Errorf("%d", rec.Code)
		}
	})
	t.Run("verifier panic is a 401, not a 500", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{panic: true}}, []string{readScope}, "Bearer dpy_at_good")
		if rec.Code != 401 {
			t.Errorf("%d", rec.Code)
		}
	})
}
