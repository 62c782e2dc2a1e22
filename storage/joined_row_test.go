package storage_test

import (
	"context"
	"database/sql"
	"reflect"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestJoinedRequestFields: the token lookup's hand-written scan
// (joinedRequestRow.fields) reads every column into the field sqlx's
// reflection would, for rows that exercise each column's kinds of value
// (NULL and set, empty and full lists, each flag), on both dialects.
func TestJoinedRequestFields(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		future := time.Now().Add(time.Hour)
		tests := []struct {
			name   string
			client *storage.Client
			req    func(c fosite.Client) *fosite.Request
		}{
			{"bare", &storage.Client{ID: "bare"}, func(c fosite.Client) *fosite.Request {
				return &fosite.Request{ID: "r1", Client: c, Session: &fosite.DefaultSession{}}
			}},
			{"full", &storage.Client{ID: "full", Name: "Full", IconURL: "https://i.example/x.png",
				RedirectURIs: []string{"https://a.example/cb"}, GrantTypes: []string{"authorization_code", "refresh_token"},
				ResponseTypes: []string{"code"}, Scopes: []string{"docs:read", "docs:write"}, Audience: []string{"https://api.example"},
				TokenEndpointAuthMethod: "client_secret_post", Public: true, FirstParty: true, Agent: true,
				OwnerUserID: sql.NullString{String: "alice", Valid: true}, Registration: storage.RegistrationDynamic},
				func(c fosite.Client) *fosite.Request {
					return &fosite.Request{ID: "r2", Client: c, RequestedAt: time.Now(),
						RequestedScope: fosite.Arguments{"docs:read", "docs:write"}, GrantedScope: fosite.Arguments{"docs:read"},
						RequestedAudience: fosite.Arguments{"https://api.example"}, GrantedAudience: fosite.Arguments{"https://api.example"},
						Form:    map[string][]string{"grant_type": {"authorization_code"}, "scope": {"docs:read docs:write"}},
						Session: &fosite.DefaultSession{Subject: "alice", ExpiresAt: map[fosite.TokenType]time.Time{fosite.AccessToken: future}}}
				}},
		}
		for _, tt := range tests {
			if err := s.CreateClient(ctx, tt.client); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateAccessTokenSession(ctx, "sig-"+tt.name, tt.req(tt.client)); err != nil {
				t.Fatal(err)
			}
			hand, refl, err := s.AccessTokenRowBothWays(ctx, "sig-"+tt.name)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if !reflect.DeepEqual(hand, refl) {
				t.Errorf("%s: by hand\n%+v\nby reflection\n%+v", tt.name, hand, refl)
			}
		}
	})
}
