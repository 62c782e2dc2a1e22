package flows

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestJWKSVerifiesWithGoJoseAlone: a resource server in any language needs
// nothing but /.well-known/jwks.json: fetched over HTTP, it verifies a minted
// token with a standard JWT library, here go-jose with none of deputy's code.
func TestJWKSVerifiesWithGoJoseAlone(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s)
		// Rotate once so the set holds a retired key too.
		if err := e.keys.RotateKeys(context.Background()); err != nil {
			t.Fatal(err)
		}
		subject := e.userToken(testUser, []string{readScope, writeScope}, time.Now().Add(time.Hour))
		token := e.mint(subject, testSession, testOrg).AccessToken

		resp, err := http.Get(strings.TrimSuffix(e.tokenURL, "/oauth2/token") + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=300" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("%d %q %q", resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Type"))
		}
		var set jose.JSONWebKeySet
		if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
			t.Fatal(err)
		}
		if len(set.Keys) != 2 {
			t.Errorf("%d keys published, want the active and the retired one", len(set.Keys))
		}
		for _, k := range set.Keys {
			if !k.IsPublic() || !k.Valid() || k.Use != "sig" || k.KeyID == "" {
				t.Errorf("published key %s: public=%v valid=%v use=%q", k.KeyID, k.IsPublic(), k.Valid(), k.Use)
			}
		}

		parsed, err := jwt.ParseSigned(strings.TrimPrefix(token, protocol.AgentTokenPrefix), []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		if typ := parsed.Headers[0].ExtraHeaders[jose.HeaderType]; typ != "at+jwt" {
			t.Errorf("typ = %v", typ)
		}
		keys := set.Key(parsed.Headers[0].KeyID)
		if len(keys) != 1 {
			t.Fatalf("kid %q not in the JWKS", parsed.Headers[0].KeyID)
		}
		var std jwt.Claims
		var ours struct {
			Scope        string `json:"scope"`
			ClientID     string `json:"client_id"`
			Organization string `json:"org"`
			AgentSession string `json:"agent_session"`
			Act          struct {
				Sub string `json:"sub"`
			} `json:"act"`
		}
		if err := parsed.Claims(keys[0], &std, &ours); err != nil {
			t.Fatalf("go-jose could not verify: %v", err)
		}
		if err := std.Validate(jwt.Expected{Issuer: testIssuer, Subject: testUser, AnyAudience: jwt.Audience{testIssuer}, Time: time.Now()}); err != nil {
			t.Errorf("claims: %v", err)
		}
		if ours.Scope != readScope || ours.ClientID != agentClientID || ours.Organization != testOrg ||
			ours.AgentSession != testSession || ours.Act.Sub != agentClientID || std.ID == "" {
			t.Errorf("claims = %+v %+v", std, ours)
		}
	})
}
