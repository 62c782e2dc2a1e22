package agenttoken

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// BenchmarkVerifyAgentToken measures one verification. The target is under
// 100 µs and at most 20 allocations; `make bench` reports it, no test asserts it.
func BenchmarkVerifyAgentToken(b *testing.B) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			ctx := context.Background()
			m, k := benchMinter(b, alg)
			tok, err := m.Mint(ctx, MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: agentClientID})
			if err != nil {
				b.Fatal(err)
			}
			v := &AgentVerifier{Keys: k, Issuer: testIssuer}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok.Token, testOrg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMiddlewareAgentToken is the whole middleware path of a request
// carrying an agent token.
func BenchmarkMiddlewareAgentToken(b *testing.B) {
	ctx := context.Background()
	m, k := benchMinter(b, AlgEdDSA)
	tok, err := m.Mint(ctx, MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: agentClientID})
	if err != nil {
		b.Fatal(err)
	}
	mw := &resource.Middleware{Agent: &AgentVerifier{Keys: k, Issuer: testIssuer}, Org: func(*http.Request) string { return testOrg }}
	h := mw.RequireScopes(readScope)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkMintAgentToken measures one mint against an in-memory Directory
// and SQLite: the grant read, the claims and the signature.
func BenchmarkMintAgentToken(b *testing.B) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		b.Run(alg, func(b *testing.B) {
			ctx := context.Background()
			m, _ := benchMinter(b, alg)
			req := MintRequest{UserID: testUser, Organization: testOrg, AgentSessionID: testSession, ClientID: agentClientID}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Mint(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchMinter is a Minter signing with alg over a fresh SQLite store and an
// in-memory Directory, and its keyring.
func benchMinter(b *testing.B, alg string) (*Minter, *Keyring) {
	b.Helper()
	s := storagetest.SQLite.Open(b)
	k, err := NewKeyring(context.Background(), KeyringConfig{Store: s, SystemSecret: testSecret, Algorithm: alg})
	if err != nil {
		b.Fatal(err)
	}
	return &Minter{Keys: k, Store: s, Directory: newDirectory(), Issuer: testIssuer}, k
}
