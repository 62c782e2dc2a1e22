package protocol_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// FuzzApprovalIsMintable states the invariant between the consent handler
// and the agent-token grant, which share internal/protocol's rules: for an
// organization, an agent session id and 1 to consent.MaxScopes scopes (split
// on spaces, as fosite splits the token request's scope parameter),
//
//   - an approval consent accepts is one the grant accepts, and the agent
//     token minted for that session then carries every approved scope;
//   - an input consent refuses (400) the grant refuses, and the other way
//     round.
//
// Before the rules had one owner, consent accepted organization "acme corp"
// (and any non-control text up to 256 bytes) and scopes of up to 256
// characters, and stored grants the agent grant could never mint.
//
//	go test -run '^$' -fuzz FuzzApprovalIsMintable ./internal/protocol/
func FuzzApprovalIsMintable(f *testing.F) {
	for _, seed := range [][3]string{
		{"acme", "sess-1", "docs:read docs:write"},
		{"acme corp", "sess-1", "docs:write"},
		{"acme\u00a0corp", "sess-1", "docs:write"},
		{"acme\u200b", "sess-1", "docs:write"},
		{"ac\x00me", "sess-1", "docs:write"},
		{strings.Repeat("o", 128), "sess-1", "docs:write"},
		{strings.Repeat("o", 129), "sess-1", "docs:write"},
		{strings.Repeat("é", 100), "sess-1", "docs:write"},
		{"Ünïcødé", "s", "issues:write"},
		{"acme", "a b", "docs:write"},
		{"acme", "sess/1", "docs:write"},
		{"acme", strings.Repeat("s", 128), "docs:write"},
		{"acme", strings.Repeat("s", 129), "docs:write"},
		{"acme", "sess-1", strings.Repeat("w", 128)},
		{"acme", "sess-1", strings.Repeat("w", 129)},
		{"acme", "sess-1", `docs:"write"`},
		{"acme", "sess-1", "docs:write\tadmin:write"},
		{"acme", "sess-1", "docs:writé"},
		{"acme", "sess-1", "openid offline_access docs:read"},
		{"acme", "sess-1", "docs:write  docs:write"},
		{"", "sess-1", "docs:write"},
		{"acme", "", "docs:write"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}

	s := storagetest.SQLite.Open(f)
	ctx := context.Background()
	// alice holds exactly the scopes of the current input, in every
	// organization, so that only the input rules decide.
	dir := testkit.NewDirectory()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch, err := consent.New(consent.Config{Store: s, Directory: dir, Sessions: testkit.Sessions{Cookie: "sid"}, Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	keys, err := agenttoken.NewKeyring(ctx, agenttoken.KeyringConfig{Store: s, SystemSecret: []byte("0123456789abcdef0123456789abcdef-system-secret"), Logger: quiet})
	if err != nil {
		f.Fatal(err)
	}
	minter := &agenttoken.Minter{Keys: keys, Store: s, Directory: dir, Catalog: scope.NewCatalog(), Issuer: "https://idp.example", Logger: quiet}
	grant := &flows.AgentTokenGrantHandler{Minter: minter, Config: &fosite.Config{}, Logger: quiet}
	platform := &fosite.DefaultClient{ID: "agent-platform", GrantTypes: []string{protocol.GrantTypeAgentToken}}
	// The approval names the platform, which consent looks up in the store.
	if err := s.CreateClient(ctx, &storage.Client{ID: platform.ID, Name: "Agent Platform", GrantTypes: platform.GrantTypes}); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, org, session, scopeParam string) {
		// JSON carries only valid UTF-8 to consent (a decoder replaces the
		// rest); the rules on invalid UTF-8 are rules_test's.
		if !utf8.ValidString(org) || !utf8.ValidString(session) || !utf8.ValidString(scopeParam) {
			return
		}
		scopes := fosite.RemoveEmpty(strings.Split(scopeParam, " "))
		if len(scopes) == 0 || len(scopes) > consent.MaxScopes {
			return // consent's own bounds on how many, not a shared rule
		}
		dir.Set("alice", testkit.AnyOrg, scopes...)

		body, _ := json.Marshal(map[string]any{"organization": org, "clientId": platform.ID, "sessionId": session, "scopes": scopes, "decision": "approve"})
		r := httptest.NewRequest(http.MethodPost, "https://idp.example/agent/approve", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		r.AddCookie(&http.Cookie{Name: "sid", Value: "alice"})
		w := httptest.NewRecorder()
		ch.ServeHTTP(w, r)
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("consent answered %d: %s", w.Code, w.Body.String())
		}
		consentAccepts := w.Code == http.StatusOK

		req := fosite.NewAccessRequest(flows.NewSession("", ""))
		req.GrantTypes = fosite.Arguments{protocol.GrantTypeAgentToken}
		req.Client = platform
		req.RequestedScope = scopes
		req.Form = url.Values{
			protocol.ParamSubjectToken:     {protocol.AccessTokenPrefix + "x.y"},
			protocol.ParamSubjectTokenType: {protocol.TokenTypeAccessToken},
			protocol.ParamAgentSessionID:   {session},
			protocol.ParamOrganization:     {org},
		}
		grantErr := grant.HandleTokenEndpointRequest(ctx, req)
		if consentAccepts != (grantErr == nil) {
			t.Fatalf("consent %d (%s) but the agent grant says %v, for org %q session %q scopes %q",
				w.Code, strings.TrimSpace(w.Body.String()), grantErr, org, session, scopes)
		}
		if !consentAccepts {
			return
		}
		tok, err := minter.Mint(ctx, agenttoken.MintRequest{
			UserID: "alice", Organization: org, AgentSessionID: session, ClientID: platform.ID,
			SubjectScopes: scopes, Requested: scopes,
		})
		if err != nil {
			t.Fatalf("approved org %q session %q scopes %q, but minting: %v", org, session, scopes, err)
		}
		if want := scope.Normalize(scopes); !slices.Equal(tok.Scopes, want) {
			t.Fatalf("approved %q for org %q session %q, but the agent token carries %q", want, org, session, tok.Scopes)
		}
	})
}
