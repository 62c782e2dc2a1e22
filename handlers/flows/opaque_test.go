package flows

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
)

func newOwnedTestStrategy(t *testing.T) *HMACStrategy {
	t.Helper()
	return NewHMACStrategy(&fosite.Config{GlobalSecret: []byte(strings.Repeat("s", 32)), AccessTokenLifespan: time.Hour})
}

func TestHMACStrategyPrefixes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newOwnedTestStrategy(t)
	req := fosite.NewRequest()
	req.Session = NewSession("alice", "")
	req.Session.SetExpiresAt(fosite.AccessToken, time.Now().Add(time.Hour))
	req.Session.SetExpiresAt(fosite.RefreshToken, time.Now().Add(time.Hour))
	req.Session.SetExpiresAt(fosite.AuthorizeCode, time.Now().Add(time.Hour))

	at, atSig, err := h.GenerateAccessToken(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	rt, rtSig, _ := h.GenerateRefreshToken(ctx, req)
	ac, acSig, _ := h.GenerateAuthorizeCode(ctx, req)
	for tok, prefix := range map[string]string{at: protocol.AccessTokenPrefix, rt: protocol.RefreshTokenPrefix, ac: protocol.AuthorizeCodePrefix} {
		if !strings.HasPrefix(tok, prefix) {
			t.Errorf("%q lacks %s", tok, prefix)
		}
	}
	if h.AccessTokenSignature(ctx, at) != atSig || h.RefreshTokenSignature(ctx, rt) != rtSig || h.AuthorizeCodeSignature(ctx, ac) != acSig {
		t.Error("signatures do not match the generated ones")
	}
	if err := h.ValidateAccessToken(ctx, req, at); err != nil {
		t.Errorf("valid access token: %v", err)
	}

	// Each kind is only itself: no signature, no validation elsewhere.
	if h.AccessTokenSignature(ctx, rt) != "" || h.RefreshTokenSignature(ctx, at) != "" || h.AuthorizeCodeSignature(ctx, at) != "" {
		t.Error("a token has a signature under another kind's prefix")
	}
	if h.ValidateAccessToken(ctx, req, rt) == nil || h.ValidateRefreshToken(ctx, req, at) == nil || h.ValidateAuthorizeCode(ctx, req, at) == nil {
		t.Error("a token validates as another kind")
	}
	// A forged key with a real signature has no signature at all, so it
	// cannot even be looked up (or revoked).
	key, sig, _ := strings.Cut(strings.TrimPrefix(at, protocol.AccessTokenPrefix), ".")
	forged := protocol.AccessTokenPrefix + strings.ToLower(key) + "x." + sig
	if h.AccessTokenSignature(ctx, forged) != "" {
		t.Error("forged token has a signature")
	}
	if h.AccessTokenSignature(ctx, key+"."+sig) != "" {
		t.Error("unprefixed token has a signature")
	}
	// Another key's tokens are nobody's.
	other := NewHMACStrategy(&fosite.Config{GlobalSecret: []byte(strings.Repeat("o", 32))})
	if other.AccessTokenSignature(ctx, at) != "" {
		t.Error("a token verifies under another secret")
	}
}

func TestSessionCloneAndJSON(t *testing.T) {
	t.Parallel()
	s := NewSession("alice", "acme")
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	s.SetExpiresAt(fosite.AccessToken, exp)
	c, ok := s.Clone().(*Session)
	if !ok || c.GetSubject() != "alice" || c.GetOrganization() != "acme" || !c.GetExpiresAt(fosite.AccessToken).Equal(exp) {
		t.Fatalf("clone = %#v", s.Clone())
	}
	c.SetExpiresAt(fosite.AccessToken, exp.Add(time.Hour))
	c.IDTokenClaims().Subject = "mallory"
	if !s.GetExpiresAt(fosite.AccessToken).Equal(exp) || s.IDTokenClaims().Subject == "mallory" {
		t.Error("clone shares state with the original")
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Session
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.GetSubject() != "alice" || back.GetOrganization() != "acme" || !back.GetExpiresAt(fosite.AccessToken).Equal(exp) {
		t.Errorf("round trip = %#v", back)
	}
	// fosite's own session reads the subject of a stored deputy session,
	// which is what the agent-token grant relies on by default.
	var plain fosite.DefaultSession
	if err := json.Unmarshal(b, &plain); err != nil || plain.GetSubject() != "alice" {
		t.Errorf("fosite.DefaultSession reads subject %q, %v", plain.GetSubject(), err)
	}
	if got := s.GetExtraClaims()["org"]; got != "acme" {
		t.Errorf("extra claims org = %v", got)
	}
}

func TestEffectiveScopes(t *testing.T) {
	t.Parallel()
	dir := testkit.NewDirectory().
		Set("alice", testkit.AnyOrg, "docs:read", "docs:write").
		Set("bob", testkit.AnyOrg, "docs:read").Disable("bob").
		Fail("broken", errors.New("directory down"))
	client := &fosite.DefaultClient{ID: "c", Scopes: []string{"docs:read", "docs:write", "openid", "admin:read"}}
	for _, tc := range []struct {
		name, user string
		in         []string
		want       string
		err        error
	}{
		{"capped by the user", "alice", []string{"docs:read", "docs:write", "admin:read"}, "docs:read docs:write", nil},
		{"capped by the client", "alice", []string{"docs:read", "billing:read"}, "docs:read", nil},
		{"protocol scopes need only the client", "alice", []string{"openid", "offline_access"}, "openid", nil},
		{"no subject: the client's cap only", "", []string{"admin:read", "x"}, "admin:read", nil},
		{"disabled", "bob", []string{"docs:read"}, "", scope.ErrUserDisabled},
		{"gone", "carol", []string{"docs:read"}, "", scope.ErrUserNotFound},
	} {
		got, err := EffectiveScopes(context.Background(), dir, client, tc.user, "", tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) || !cannotAct(err) {
				t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tc.want {
			t.Errorf("%s: %v, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := EffectiveScopes(context.Background(), dir, client, "broken", "", []string{"docs:read"}); err == nil || cannotAct(err) {
		t.Errorf("directory outage: %v, want an internal error", err)
	}
}
