package agenttoken

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/deputyauth/deputy/internal/protocol"
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
	return protocol.AgentTokenPrefix + input + "." + base64.RawURLEncoding.EncodeToString(signWith(t, alg, priv, input))
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
