package agenttoken

import (
	"context"
	"crypto"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestMintReadsAsJOSE: deputy signs its tokens itself; what it writes is
// what go-jose wrote before (the same bytes for EdDSA, which is
// deterministic) and what a third party's JOSE library parses and verifies
// with the published key, header included.
func TestMintReadsAsJOSE(t *testing.T) {
	for _, alg := range []string{AlgEdDSA, AlgES256} {
		t.Run(alg, func(t *testing.T) {
			s := storagetest.SQLite.Open(t)
			ctx := context.Background()
			k, err := NewKeyring(ctx, KeyringConfig{Store: s, SystemSecret: testSecret, Algorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			tok := mintWith(t, k, s, testOrg)
			compact, ok := strings.CutPrefix(tok.Token, protocol.AgentTokenPrefix)
			if !ok {
				t.Fatalf("token %q lacks its prefix", tok.Token)
			}
			active, err := k.signer()
			if err != nil {
				t.Fatal(err)
			}
			var priv crypto.Signer = active.ed
			if alg == AlgES256 {
				priv = active.ec
			}

			jws, err := jose.ParseSignedCompact(compact, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
			if err != nil {
				t.Fatalf("go-jose cannot parse %q: %v", compact, err)
			}
			payload, err := jws.Verify(priv.Public())
			if err != nil {
				t.Fatalf("go-jose does not verify it: %v", err)
			}
			h := jws.Signatures[0].Protected
			if h.KeyID != active.kid || h.Algorithm != alg || h.ExtraHeaders[jose.HeaderType] != agentTokenType {
				t.Fatalf("header %+v, want kid %s, alg %s, typ %s", h, active.kid, alg, agentTokenType)
			}
			if _, err := (&AgentVerifier{Keys: k, Issuer: testIssuer}).Verify(ctx, tok.Token, testOrg); err != nil {
				t.Fatalf("deputy's verifier refuses it: %v", err)
			}

			// What go-jose itself writes for the same key and claims.
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: jose.JSONWebKey{Key: priv, KeyID: active.kid}},
				(&jose.SignerOptions{}).WithType(agentTokenType))
			if err != nil {
				t.Fatal(err)
			}
			ref, err := signer.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ref.CompactSerialize()
			if err != nil {
				t.Fatal(err)
			}
			if alg == AlgEdDSA && compact != want {
				t.Fatalf("signed\n%s\ngo-jose signs\n%s", compact, want)
			}
			wantHead, _, _ := strings.Cut(want, ".")
			if head, _, _ := strings.Cut(compact, "."); head != wantHead {
				t.Fatalf("header %s, go-jose writes %s", head, wantHead)
			}
		})
	}
}
