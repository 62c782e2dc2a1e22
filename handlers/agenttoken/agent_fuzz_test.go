package agenttoken

import (
	"bytes"
	"context"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// FuzzVerifyAgentToken: whatever the token text, the verifier returns an
// identity or an ErrInvalidToken, never panics, and the middleware never
// answers 500. The committed corpus under testdata/fuzz/FuzzVerifyAgentToken
// holds malformed shapes; a token minted by this run's keyring is added so the
// fuzzer also mutates a valid one.
func FuzzVerifyAgentToken(f *testing.F) {
	s := storagetest.SQLite.Open(f)
	ctx := context.Background()
	k, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret, MinRefreshInterval: 1e9})
	if err != nil {
		f.Fatal(err)
	}
	m := &Minter{Keys: k, Store: s, Directory: newDirectory(), Issuer: testIssuer}
	tok, err := m.Mint(ctx, MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: agentClientID})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok.Token)
	f.Add(forge(f, k, validHeader(f, k), with(validClaims(), "sub", 7)))
	f.Add(forge(f, k, with(validHeader(f, k), "alg", "none"), validClaims()))

	v := &AgentVerifier{Keys: k, Issuer: testIssuer}
	mw := &resource.Middleware{Agent: v, Org: func(*http.Request) string { return testOrg }}
	h := mw.RequireScopes(readScope)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := resource.IdentityFrom(r.Context()); !ok {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(ctx, token, testOrg)
		switch {
		case err != nil && !errors.Is(err, resource.ErrInvalidToken):
			t.Fatalf("error %v does not wrap ErrInvalidToken", err)
		case err == nil && (id == nil || id.Subject == "" || id.Organization != testOrg || len(id.Scopes) == 0):
			t.Fatalf("accepted with identity %+v", id)
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header["Authorization"] = []string{"Bearer " + token}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusUnauthorized, http.StatusForbidden, http.StatusBadRequest:
		default:
			t.Fatalf("middleware answered %d", rec.Code)
		}
	})
}

// TestECDSADER: the hand-written r‖s → DER conversion agrees with
// encoding/asn1 on the edge cases: leading zeros and a set top bit.
func TestECDSADER(t *testing.T) {
	t.Parallel()
	vals := [][]byte{
		bytes.Repeat([]byte{0xff}, 32),
		append(make([]byte, 31), 1),
		append([]byte{0, 0x80}, bytes.Repeat([]byte{7}, 30)...),
		append([]byte{0x7f}, bytes.Repeat([]byte{0}, 31)...),
		make([]byte, 32),
	}
	for _, r := range vals {
		for _, s := range vals {
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(r), new(big.Int).SetBytes(s)})
			if err != nil {
				t.Fatal(err)
			}
			if got := ecdsaDER(nil, r, s); !bytes.Equal(got, want) {
				t.Errorf("r=%x s=%x: got %x want %x", r, s, got, want)
			}
		}
	}
}
