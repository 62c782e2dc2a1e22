// Package conformance is the behaviour every deputy store must have, written
// as tests, one function per entity (Dex's storage/conformance). deputy runs
// it on SQLite and PostgreSQL; a third dialect, or a host's own
// implementation of deputy's storage, proves itself the same way:
//
//	func TestConformance(t *testing.T) {
//		conformance.RunTests(t, func(t *testing.T) conformance.Store {
//			return openMyEmptyMigratedStore(t) // closed by a t.Cleanup
//		})
//	}
package conformance

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
)

// Store is everything the suite exercises: storage.Backend, which
// *storage.Store implements.
type Store = storage.Backend

var _ Store = (*storage.Store)(nil)

// RunTests runs the suite. newStore returns an empty, migrated store of its
// own for each subtest (they run in parallel) and closes it when t ends.
func RunTests(t *testing.T, newStore func(t *testing.T) Store) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s Store)
	}{
		{"Clients", testClients},
		{"ClientSecrets", testClientSecrets},
		{"DeleteClient", testDeleteClient},
		{"ClientRevisions", testClientRevisions},
		{"PinnedClient", testPinnedClient},
		{"PrefetchedGrant", testPrefetchedGrant},
		{"PinnedUser", testPinnedUser},
		{"ClientRegistrations", testClientRegistrations},
		{"MetadataDocumentClients", testMetadataDocumentClients},
		{"InvalidInput", testInvalidInput},
		{"JWTAssertionJTI", testJTI},
		{"AuthorizeCodes", testAuthorizeCodes},
		{"AccessTokens", testAccessTokens},
		{"RefreshTokenRotation", testRefreshTokens},
		{"PKCE", testPKCE},
		{"OpenIDConnectSessions", testOpenIDConnect},
		{"Revocation", testRevocation},
		{"Transactions", testTransactions},
		{"ParallelWriters", testParallelWriters},
		{"RaceRefreshRotation", testRaceRefreshRotation},
		{"RaceFamilyRevocation", testRaceFamilyRevocation},
		{"RaceCodeInvalidation", testRaceCodeInvalidation},
		{"AgentGrants", testAgentGrants},
		{"AgentGrantExpiredScopes", testAgentGrantExpiredScopes},
		{"Audit", testAudit},
		{"SigningKeys", testSigningKeys},
		{"DeleteExpired", testDeleteExpired},
		{"MigrationsIdempotent", testMigrationsIdempotent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

// future is an expiry no test outlives; past one every test is after.
var (
	future = time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	past   = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
)

func newClient(t *testing.T, s Store, id string) *storage.Client {
	t.Helper()
	c := &storage.Client{
		ID: id, Name: "app " + id,
		RedirectURIs:  []string{"http://127.0.0.1/cb"},
		GrantTypes:    []string{"authorization_code", "refresh_token"},
		ResponseTypes: []string{"code"},
		Scopes:        []string{"projects:read", "projects:write"},
		Audience:      []string{"https://api.example"},
	}
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatalf("create client: %v", err)
	}
	return c
}

// newOwnedClient is an app that acts for its owner with client_credentials.
func newOwnedClient(t *testing.T, s Store, id, owner string) *storage.Client {
	t.Helper()
	c := &storage.Client{ID: id, Name: id, GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs:read"}}
	c.SetOwner(owner)
	if err := s.CreateClient(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// newRequest is a fosite request as the handlers build one, carrying the
// secrets a real form would so that the suite can check they are dropped.
func newRequest(c fosite.Client, id, subject string, exp time.Time) *fosite.Request {
	sess := &fosite.DefaultSession{Subject: subject, Username: subject, ExpiresAt: map[fosite.TokenType]time.Time{
		fosite.AccessToken: exp, fosite.RefreshToken: exp, fosite.AuthorizeCode: exp,
	}}
	return &fosite.Request{
		ID: id, RequestedAt: time.Now().UTC().Truncate(time.Second), Client: c,
		RequestedScope:    fosite.Arguments{"projects:read", "projects:write"},
		GrantedScope:      fosite.Arguments{"projects:read"},
		RequestedAudience: fosite.Arguments{"https://api.example"},
		GrantedAudience:   fosite.Arguments{"https://api.example"},
		Form: url.Values{
			"redirect_uri": {"http://127.0.0.1/cb"}, "client_secret": {"s3cret"}, "code_verifier": {"verifier"},
			"code": {"thecode"}, "password": {"pw"}, "refresh_token": {"rt"}, "subject_token": {"st"},
		},
		Session: sess,
	}
}

// newToken stores an access token of c for subject with scopes.
func newToken(t *testing.T, s Store, c fosite.Client, sig, subject string, scopes []string, exp time.Time) {
	t.Helper()
	r := &fosite.Request{
		ID: "req-" + sig, RequestedAt: time.Now().UTC().Truncate(time.Second), Client: c,
		GrantedScope: scopes,
		Session: &fosite.DefaultSession{Subject: subject, ExpiresAt: map[fosite.TokenType]time.Time{
			fosite.AccessToken: exp, fosite.RefreshToken: exp,
		}},
	}
	if err := s.CreateAccessTokenSession(context.Background(), sig, r); err != nil {
		t.Fatal(err)
	}
}

func checkRequest(t *testing.T, got fosite.Requester, want *fosite.Request) {
	t.Helper()
	if got.GetID() != want.ID {
		t.Errorf("id = %q, want %q", got.GetID(), want.ID)
	}
	if got.GetClient().GetID() != want.Client.GetID() {
		t.Errorf("client = %q, want %q", got.GetClient().GetID(), want.Client.GetID())
	}
	if !got.GetRequestedAt().Equal(want.RequestedAt) {
		t.Errorf("requested_at = %v, want %v", got.GetRequestedAt(), want.RequestedAt)
	}
	if fmt.Sprint(got.GetGrantedScopes()) != fmt.Sprint(want.GrantedScope) || fmt.Sprint(got.GetRequestedScopes()) != fmt.Sprint(want.RequestedScope) {
		t.Errorf("scopes = %v/%v, want %v/%v", got.GetRequestedScopes(), got.GetGrantedScopes(), want.RequestedScope, want.GrantedScope)
	}
	if fmt.Sprint(got.GetGrantedAudience()) != fmt.Sprint(want.GrantedAudience) || fmt.Sprint(got.GetRequestedAudience()) != fmt.Sprint(want.RequestedAudience) {
		t.Errorf("audience = %v/%v", got.GetRequestedAudience(), got.GetGrantedAudience())
	}
	if got.GetSession().GetSubject() != want.Session.GetSubject() {
		t.Errorf("subject = %q, want %q", got.GetSession().GetSubject(), want.Session.GetSubject())
	}
	if !got.GetSession().GetExpiresAt(fosite.AccessToken).Equal(want.Session.GetExpiresAt(fosite.AccessToken)) {
		t.Errorf("session expiry not restored")
	}
	form := got.GetRequestForm()
	if form.Get("redirect_uri") != "http://127.0.0.1/cb" {
		t.Errorf("redirect_uri lost from form: %v", form)
	}
	for _, k := range []string{"client_secret", "code_verifier", "code", "password", "refresh_token", "subject_token"} {
		if form.Has(k) {
			t.Errorf("form kept secret field %q", k)
		}
	}
}

// session is a fresh session for a Get…Session call to fill.
func session() fosite.Session { return &fosite.DefaultSession{} }
