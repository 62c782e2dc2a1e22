package agenttoken

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestVerifierAudiences: the verifier accepts a token whose aud holds one
// of its Audiences (the issuer alone by default), and reports the token's
// resources (aud without the issuer) for the middleware to check.
func TestVerifierAudiences(t *testing.T) {
	t.Parallel()
	const mcp, api = "https://mcp.example.com/mcp", "https://api.example.com"
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		k, err := NewKeyring(context.Background(), KeyringConfig{Store: s, SystemSecret: testSecret, MinRefreshInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		h, c := validHeader(t, k), validClaims()
		legacy := &AgentVerifier{Keys: k, Issuer: testIssuer}
		withResources := &AgentVerifier{Keys: k, Issuer: testIssuer, Audiences: []string{testIssuer, mcp, api}}
		for _, tc := range []struct {
			name   string
			aud    any
			v      *AgentVerifier
			ok     bool
			result []string
		}{
			{"the issuer, by default", testIssuer, legacy, true, nil},
			{"a resource, by default", mcp, legacy, false, nil},
			{"the issuer", testIssuer, withResources, true, nil},
			{"a resource", mcp, withResources, true, []string{mcp}},
			{"two resources", []string{mcp, api}, withResources, true, []string{mcp, api}},
			{"the issuer and a resource", []string{testIssuer, mcp}, withResources, true, []string{mcp}},
			{"an unknown audience", "https://evil.example", withResources, false, nil},
			{"an unknown audience and a known one", []string{"https://evil.example", mcp}, withResources, true, []string{"https://evil.example", mcp}},
			{"not a string", 42, withResources, false, nil},
			{"an array with a number", []any{mcp, 42}, withResources, false, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id, err := tc.v.Verify(context.Background(), forge(t, k, h, with(c, "aud", tc.aud)), testOrg)
				if tc.ok != (err == nil) || err != nil && !errors.Is(err, resource.ErrInvalidToken) {
					t.Fatalf("Verify: %v, want ok %v", err, tc.ok)
				}
				if tc.ok && !slices.Equal(id.Audience, tc.result) {
					t.Errorf("Audience %q, want %q", id.Audience, tc.result)
				}
			})
		}
	})
}
