package apps_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

const admin = "carol"

func newService(s *storage.Store) *apps.Service {
	return apps.New(apps.Config{
		Store:   s,
		Catalog: scope.NewCatalog(scope.Entry{Name: "docs:read"}, scope.Entry{Name: "docs:write", Write: true}),
		IsAdmin: func(_ context.Context, u string) bool { return u == admin },
	})
}

// cc is a valid client_credentials input; code a valid authorization_code
// one.
func cc() apps.Input { return apps.Input{Name: "robot", Scopes: []string{"docs:read"}} }

func code() apps.Input {
	return apps.Input{Name: "web", GrantTypes: []string{"authorization_code", "refresh_token"},
		RedirectURIs: []string{"https://app.example/cb"}, Scopes: []string{"docs:read", "openid"}}
}

// with returns in changed by mod.
func with(in apps.Input, mod func(*apps.Input)) apps.Input { mod(&in); return in }

// wantRefusal fails t unless err is a *FieldError of kind naming field.
func wantRefusal(t *testing.T, err error, kind error, field string) {
	t.Helper()
	var fe *apps.FieldError
	if !errors.As(err, &fe) || !errors.Is(err, kind) || fe.Field != field || !strings.HasPrefix(fe.Error(), field+": ") {
		t.Fatalf("err = %v, want %v naming %q", err, kind, field)
	}
}

// refusedAsExpected reports whether kind expects a refusal, failing t
// unless err is that refusal and the client rows are still before.
func refusedAsExpected(t *testing.T, s *storage.Store, before string, err, kind error, field string) bool {
	t.Helper()
	if kind == nil {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	wantRefusal(t, err, kind, field)
	if after := rows(t, s); after != before {
		t.Errorf("a refusal wrote: %s", after)
	}
	return true
}

// rows is every client row, to check that a refusal wrote nothing.
func rows(t *testing.T, s *storage.Store) string {
	t.Helper()
	cs, err := s.ListClients(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(cs)
	return string(js)
}

// TestCreateRules: what a user may create (the apps API's and the settings
// pages' path), and that every refusal names its field and writes nothing.
func TestCreateRules(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		for _, tc := range []struct {
			name   string
			caller string
			in     apps.Input
			kind   error // nil: created
			field  string
		}{
			{"client_credentials", "alice", cc(), nil, ""},
			{"authorization_code by an admin", admin, code(), nil, ""},
			{"loopback and native redirects", admin, with(code(), func(in *apps.Input) {
				in.RedirectURIs = []string{"http://127.0.0.1:8080/cb", "http://[::1]/cb", "com.example.app:/cb"}
			}), nil, ""},
			{"post auth", "alice", with(cc(), func(in *apps.Input) { in.TokenEndpointAuthMethod = apps.TokenAuthPost }), nil, ""},
			{"name of 64 characters", "alice", with(cc(), func(in *apps.Input) { in.Name = strings.Repeat("é", apps.MaxNameLength) }), nil, ""},

			{"authorization_code by a user", "alice", code(), apps.ErrForbidden, apps.FieldGrantTypes},
			{"agent-token grant by a user", "alice", with(cc(), func(in *apps.Input) { in.GrantTypes = []string{protocol.GrantTypeAgentToken} }), apps.ErrInvalid, apps.FieldGrantTypes},
			{"agent-token grant by an admin", admin, with(code(), func(in *apps.Input) {
				in.GrantTypes = []string{"authorization_code", protocol.GrantTypeAgentToken}
			}), apps.ErrInvalid, apps.FieldGrantTypes},
			{"mixed grants", "alice", with(cc(), func(in *apps.Input) { in.GrantTypes = []string{"client_credentials", "authorization_code"} }), apps.ErrInvalid, apps.FieldGrantTypes},
			{"unknown grant", "alice", with(cc(), func(in *apps.Input) { in.GrantTypes = []string{"password"} }), apps.ErrInvalid, apps.FieldGrantTypes},
			{"refresh alone", admin, with(code(), func(in *apps.Input) { in.GrantTypes = []string{"refresh_token"} }), apps.ErrInvalid, apps.FieldGrantTypes},
			{"no name", "alice", with(cc(), func(in *apps.Input) { in.Name = "  " }), apps.ErrInvalid, apps.FieldName},
			{"long name", "alice", with(cc(), func(in *apps.Input) { in.Name = strings.Repeat("n", apps.MaxNameLength+1) }), apps.ErrInvalid, apps.FieldName},
			{"control character", "alice", with(cc(), func(in *apps.Input) { in.Name = "a\x00b" }), apps.ErrInvalid, apps.FieldName},
			{"invalid UTF-8", "alice", with(cc(), func(in *apps.Input) { in.Name = "a\xffb" }), apps.ErrInvalid, apps.FieldName},
			{"bad icon", "alice", with(cc(), func(in *apps.Input) { in.IconURL = "javascript:alert(1)" }), apps.ErrInvalid, apps.FieldIconURL},
			{"redirect on client_credentials", "alice", with(cc(), func(in *apps.Input) { in.RedirectURIs = []string{"https://a.example/cb"} }), apps.ErrInvalid, apps.FieldRedirectURIs},
			{"no redirect for code", admin, with(code(), func(in *apps.Input) { in.RedirectURIs = nil }), apps.ErrInvalid, apps.FieldRedirectURIs},
			{"http redirect", admin, with(code(), func(in *apps.Input) { in.RedirectURIs = []string{"http://app.example/cb"} }), apps.ErrInvalid, apps.FieldRedirectURIs},
			{"fragment", admin, with(code(), func(in *apps.Input) { in.RedirectURIs = []string{"https://app.example/cb#x"} }), apps.ErrInvalid, apps.FieldRedirectURIs},
			{"too many redirects", admin, with(code(), func(in *apps.Input) {
				in.RedirectURIs = slices.Repeat([]string{"https://app.example/cb"}, apps.MaxRedirectURIs+1)
			}), apps.ErrInvalid, apps.FieldRedirectURIs},
			{"no scope", "alice", with(cc(), func(in *apps.Input) { in.Scopes = nil }), apps.ErrInvalid, apps.FieldScopes},
			{"unknown scope", "alice", with(cc(), func(in *apps.Input) { in.Scopes = []string{"billing:write"} }), apps.ErrInvalid, apps.FieldScopes},
			{"malformed scope", "alice", with(cc(), func(in *apps.Input) { in.Scopes = []string{`docs"read`} }), apps.ErrInvalid, apps.FieldScopes},
			{"openid on client_credentials", "alice", with(cc(), func(in *apps.Input) { in.Scopes = []string{"openid"} }), apps.ErrInvalid, apps.FieldScopes},
			{"blank audience", "alice", with(cc(), func(in *apps.Input) { in.Audience = []string{""} }), apps.ErrInvalid, apps.FieldAudience},
			{"audience with a space", "alice", with(cc(), func(in *apps.Input) { in.Audience = []string{"a b"} }), apps.ErrInvalid, apps.FieldAudience},
			{"auth method none", "alice", with(cc(), func(in *apps.Input) { in.TokenEndpointAuthMethod = apps.TokenAuthNone }), apps.ErrInvalid, apps.FieldTokenEndpointAuthMethod},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := rows(t, s)
				c, err := svc.Create(ctx, tc.caller, tc.in)
				if refusedAsExpected(t, s, before, err, tc.kind, tc.field) {
					return
				}
				stored, err := s.Client(ctx, c.ID)
				if err != nil {
					t.Fatal(err)
				}
				isCC := stored.GetGrantTypes().Has(protocol.GrantTypeClientCredentials)
				switch {
				case isCC && stored.Owner() != tc.caller, !isCC && stored.Owner() != "":
					t.Errorf("owner %q for %s's app %v", stored.Owner(), tc.caller, stored.GrantTypes)
				case isCC && len(stored.ResponseTypes) != 0, !isCC && !slices.Equal(stored.ResponseTypes, []string{"code"}):
					t.Errorf("response types %v for %v", stored.ResponseTypes, stored.GrantTypes)
				case stored.Public || stored.FirstParty || len(stored.SecretHashes) != 0:
					t.Errorf("stored %+v", stored)
				case stored.TokenEndpointAuthMethod != apps.TokenAuthBasic && stored.TokenEndpointAuthMethod != apps.TokenAuthPost:
					t.Errorf("auth method %q", stored.TokenEndpointAuthMethod)
				}
			})
		}
	})
}

// TestAdminCreate: the administrator's path makes what the user's never
// does (agent platforms, public and first-party clients, an app for any
// owner), with the same rules otherwise, and Validate agrees with it.
func TestAdminCreate(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		agent := apps.Input{Name: "Agent platform", GrantTypes: []string{protocol.GrantTypeAgentToken}, Scopes: []string{"docs:read", "docs:write"}}
		for _, tc := range []struct {
			name  string
			in    apps.AdminInput
			kind  error
			field string
			check func(t *testing.T, c *storage.Client, secret string)
		}{
			{"agent platform", apps.AdminInput{Input: agent}, nil, "", func(t *testing.T, c *storage.Client, secret string) {
				if c.Owner() != "" || len(c.ResponseTypes) != 0 || len(c.RedirectURIs) != 0 || c.TokenEndpointAuthMethod != apps.TokenAuthBasic || secret == "" {
					t.Errorf("agent platform %+v, secret %q", c, secret)
				}
			}},
			{"agent platform with a code flow", apps.AdminInput{Input: with(code(), func(in *apps.Input) {
				in.GrantTypes = append(in.GrantTypes, protocol.GrantTypeAgentToken)
				in.Scopes = []string{"docs:read", "offline_access"}
			}), FirstParty: true}, nil, "", func(t *testing.T, c *storage.Client, _ string) {
				if !c.FirstParty || len(c.GrantTypes) != 3 || !slices.Equal(c.ResponseTypes, []string{"code"}) {
					t.Errorf("client %+v", c)
				}
			}},
			{"public native client", apps.AdminInput{Input: with(code(), func(in *apps.Input) { in.RedirectURIs = []string{"com.example.app:/cb"} }), Public: true}, nil, "",
				func(t *testing.T, c *storage.Client, secret string) {
					if !c.Public || c.TokenEndpointAuthMethod != apps.TokenAuthNone || secret != "" || len(c.SecretHashes) != 0 {
						t.Errorf("public client %+v, secret %q", c, secret)
					}
				}},
			{"owned app for bob", apps.AdminInput{Input: cc(), Owner: "bob"}, nil, "", func(t *testing.T, c *storage.Client, _ string) {
				if c.Owner() != "bob" {
					t.Errorf("owner %q", c.Owner())
				}
			}},

			{"agent client (MCP)", apps.AdminInput{Input: code(), Agent: true}, nil, "", func(t *testing.T, c *storage.Client, _ string) {
				if !c.Agent || c.FirstParty {
					t.Errorf("agent client %+v", c)
				}
			}},

			{"agent without a code flow", apps.AdminInput{Input: agent, Agent: true}, apps.ErrInvalid, apps.FieldAgent, nil},
			{"first-party agent", apps.AdminInput{Input: code(), Agent: true, FirstParty: true}, apps.ErrInvalid, apps.FieldAgent, nil},
			{"client_credentials without an owner", apps.AdminInput{Input: cc()}, apps.ErrInvalid, apps.FieldOwner, nil},
			{"owner of an authorization_code client", apps.AdminInput{Input: code(), Owner: "bob"}, apps.ErrInvalid, apps.FieldOwner, nil},
			{"public agent platform", apps.AdminInput{Input: with(code(), func(in *apps.Input) {
				in.GrantTypes = append(in.GrantTypes, protocol.GrantTypeAgentToken)
			}), Public: true}, apps.ErrInvalid, apps.FieldPublic, nil},
			{"public client_credentials", apps.AdminInput{Input: cc(), Owner: "bob", Public: true}, apps.ErrInvalid, apps.FieldPublic, nil},
			{"public with a secret method", apps.AdminInput{Input: with(code(), func(in *apps.Input) { in.TokenEndpointAuthMethod = apps.TokenAuthBasic }), Public: true},
				apps.ErrInvalid, apps.FieldTokenEndpointAuthMethod, nil},
			{"agent platform with redirects", apps.AdminInput{Input: with(agent, func(in *apps.Input) { in.RedirectURIs = []string{"https://a.example/cb"} })},
				apps.ErrInvalid, apps.FieldRedirectURIs, nil},
			{"agent platform mixed with client_credentials", apps.AdminInput{Input: with(agent, func(in *apps.Input) {
				in.GrantTypes = append(in.GrantTypes, "client_credentials")
			}), Owner: "bob"}, apps.ErrInvalid, apps.FieldGrantTypes, nil},
			{"the name rule holds here too", apps.AdminInput{Input: with(agent, func(in *apps.Input) { in.Name = strings.Repeat("n", apps.MaxNameLength+1) })},
				apps.ErrInvalid, apps.FieldName, nil},
			{"the catalog holds here too", apps.AdminInput{Input: with(agent, func(in *apps.Input) { in.Scopes = []string{"billing:write"} })},
				apps.ErrInvalid, apps.FieldScopes, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := rows(t, s)
				verdict := apps.Validate(tc.in, scope.NewCatalog(scope.Entry{Name: "docs:read"}, scope.Entry{Name: "docs:write"}))
				c, secret, err := svc.AdminCreate(ctx, tc.in)
				if (verdict == nil) != (err == nil) {
					t.Errorf("Validate says %v, AdminCreate %v", verdict, err)
				}
				if refusedAsExpected(t, s, before, err, tc.kind, tc.field) {
					return
				}
				stored, err := s.Client(ctx, c.ID)
				if err != nil {
					t.Fatal(err)
				}
				if secret != "" {
					// The secret returned is the one whose hash was stored.
					var h clientsecret.SHA256Hasher
					if len(stored.SecretHashes) != 1 || h.Compare(ctx, stored.SecretHashes[0], []byte(secret)) != nil {
						t.Errorf("secret %q does not match the stored hash", secret)
					}
				}
				tc.check(t, stored, secret)
			})
		}
	})
}

// TestOnlyOwnerOrAdmin: every operation on an app is the owner's or an
// administrator's; anyone else gets ErrNotFound, exactly as for an app
// that does not exist or an id the database cannot hold.
func TestOnlyOwnerOrAdmin(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		app, _, err := svc.CreateWithSecret(ctx, "alice", cc())
		if err != nil {
			t.Fatal(err)
		}
		secrets, err := svc.ListSecrets(ctx, "alice", app.ID)
		if err != nil || len(secrets) != 1 {
			t.Fatalf("alice's secrets: %v, %v", secrets, err)
		}
		sid := secrets[0].ID
		ops := []struct {
			name string
			do   func(caller, id string) error
		}{
			{"Get", func(caller, id string) error { _, err := svc.Get(ctx, caller, id); return err }},
			{"Update", func(caller, id string) error { _, err := svc.Update(ctx, caller, id, cc()); return err }},
			{"CreateSecret", func(caller, id string) error { _, _, err := svc.CreateSecret(ctx, caller, id); return err }},
			{"ListSecrets", func(caller, id string) error { _, err := svc.ListSecrets(ctx, caller, id); return err }},
			{"DeleteSecret", func(caller, id string) error { return svc.DeleteSecret(ctx, caller, id, sid) }},
			{"Delete", func(caller, id string) error { return svc.Delete(ctx, caller, id) }},
		}
		for _, op := range ops {
			for _, c := range []struct{ caller, id string }{
				{"bob", app.ID}, {"alice", "0000"}, {"alice", "a\x00b"}, {"alice", "\xff"}, {"alice", ""},
			} {
				if err := op.do(c.caller, c.id); !errors.Is(err, apps.ErrNotFound) {
					t.Errorf("%s by %s of %q: %v, want ErrNotFound", op.name, c.caller, c.id, err)
				}
			}
		}
		if _, err := svc.Get(ctx, "alice", app.ID); err != nil {
			t.Fatalf("alice's app after the others tried: %v", err)
		}
		if n, _ := s.CountClientSecrets(ctx, app.ID); n != 1 {
			t.Fatalf("alice's app has %d secrets after the others tried", n)
		}
		// An administrator may do each of them (Delete last).
		for _, op := range ops {
			if err := op.do(admin, app.ID); err != nil {
				t.Errorf("%s by an admin: %v", op.name, err)
			}
		}
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		for _, u := range []string{"alice", "bob"} {
			if _, err := svc.Create(ctx, u, cc()); err != nil {
				t.Fatal(err)
			}
		}
		for _, tc := range []struct {
			caller, owner string
			want          int
			err           error
		}{
			{"alice", "", 1, nil},
			{"alice", "alice", 1, nil},
			{"alice", "bob", 0, apps.ErrForbidden},
			{admin, "", 2, nil},
			{admin, "bob", 1, nil},
			{"dave", "", 0, nil},
		} {
			cs, err := svc.List(ctx, tc.caller, tc.owner)
			if !errors.Is(err, tc.err) || len(cs) != tc.want {
				t.Errorf("%s lists %q: %d apps, %v; want %d, %v", tc.caller, tc.owner, len(cs), err, tc.want, tc.err)
			}
			for _, c := range cs {
				if tc.caller != admin && c.Owner() != tc.caller {
					t.Errorf("%s sees %s's app", tc.caller, c.Owner())
				}
			}
		}
	})
}

// TestUpdate: a user changes what they may set; the kind of an app, and a
// client only an administrator's tools make, stay as they are; a refused
// update changes nothing.
func TestUpdate(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		own, err := svc.Create(ctx, "alice", cc())
		if err != nil {
			t.Fatal(err)
		}
		web, err := svc.Create(ctx, admin, code())
		if err != nil {
			t.Fatal(err)
		}
		plat, _, err := svc.AdminCreate(ctx, apps.AdminInput{Input: apps.Input{Name: "platform", GrantTypes: []string{protocol.GrantTypeAgentToken}}})
		if err != nil {
			t.Fatal(err)
		}
		native, _, err := svc.AdminCreate(ctx, apps.AdminInput{Input: code(), Public: true, FirstParty: true})
		if err != nil {
			t.Fatal(err)
		}
		mcp, _, err := svc.AdminCreate(ctx, apps.AdminInput{Input: code(), Agent: true})
		if err != nil {
			t.Fatal(err)
		}
		// A client that registered itself (RFC 7591), confidential.
		registered := &storage.Client{ID: "registered", Name: "dcr", RedirectURIs: []string{"https://app.example/cb"},
			GrantTypes: []string{"authorization_code"}, Scopes: []string{"docs:read"}, Agent: true, Registration: storage.RegistrationDynamic}
		if err := s.CreateClient(ctx, registered); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			caller string
			id     string
			in     apps.Input
			kind   error
			field  string
		}{
			{"rename, grants kept", "alice", own.ID, apps.Input{Name: "renamed", Scopes: []string{"docs:read", "docs:write"}}, nil, ""},
			{"admin changes the code app", admin, web.ID, with(code(), func(in *apps.Input) { in.GrantTypes = nil; in.Name = "web 2" }), nil, ""},
			{"an agent client stays one", admin, mcp.ID, with(code(), func(in *apps.Input) { in.Name = "mcp 2" }), nil, ""},
			{"to authorization_code", "alice", own.ID, code(), apps.ErrInvalid, apps.FieldGrantTypes},
			{"to client_credentials", admin, web.ID, with(cc(), func(in *apps.Input) { in.GrantTypes = []string{"client_credentials"} }), apps.ErrInvalid, apps.FieldGrantTypes},
			{"a rule still holds", "alice", own.ID, with(cc(), func(in *apps.Input) { in.Scopes = []string{"billing:write"} }), apps.ErrInvalid, apps.FieldScopes},
			{"the agent platform", admin, plat.ID, apps.Input{Name: "renamed"}, apps.ErrInvalid, apps.FieldGrantTypes},
			{"the public client", admin, native.ID, code(), apps.ErrInvalid, apps.FieldPublic},
			{"a client that registered itself", admin, registered.ID, code(), apps.ErrInvalid, apps.FieldName},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := rows(t, s)
				c, err := svc.Update(ctx, tc.caller, tc.id, tc.in)
				if refusedAsExpected(t, s, before, err, tc.kind, tc.field) {
					return
				}
				stored, err := s.Client(ctx, tc.id)
				if err != nil {
					t.Fatal(err)
				}
				if stored.Name != strings.TrimSpace(tc.in.Name) || stored.Name != c.Name || !slices.Equal(stored.Scopes, scope.Normalize(tc.in.Scopes)) {
					t.Errorf("stored %+v after %+v", stored, tc.in)
				}
			})
		}
		if c, _ := s.Client(ctx, own.ID); c.Owner() != "alice" {
			t.Errorf("owner after updates: %q", c.Owner())
		}
		if c, _ := s.Client(ctx, mcp.ID); !c.Agent {
			t.Errorf("agent client after an update: %+v", c)
		}
		if c, _ := s.Client(ctx, native.ID); !c.Public || !c.FirstParty || c.TokenEndpointAuthMethod != apps.TokenAuthNone {
			t.Errorf("public client after a refused update: %+v", c)
		}
	})
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		app, first, err := svc.CreateWithSecret(ctx, "alice", cc())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(first, protocol.ClientSecretPrefix) {
			t.Fatalf("secret %q", first)
		}
		seen := map[string]bool{first: true}
		for i := 1; i < apps.MaxSecretsPerApp; i++ {
			cs, secret, err := svc.CreateSecret(ctx, "alice", app.ID)
			if err != nil {
				t.Fatal(err)
			}
			if seen[secret] || !strings.HasPrefix(secret, cs.DisplayPrefix) {
				t.Fatalf("secret %q (prefix %q) again or not its own", secret, cs.DisplayPrefix)
			}
			seen[secret] = true
		}
		_, _, err = svc.CreateSecret(ctx, "alice", app.ID)
		wantRefusal(t, err, apps.ErrTooManySecrets, apps.FieldSecrets)
		if n, _ := s.CountClientSecrets(ctx, app.ID); n != apps.MaxSecretsPerApp {
			t.Errorf("%d secrets, want %d", n, apps.MaxSecretsPerApp)
		}

		ss, err := svc.ListSecrets(ctx, "alice", app.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"nope", "a\x00b", "\xff", ""} {
			if err := svc.DeleteSecret(ctx, "alice", app.ID, id); !errors.Is(err, apps.ErrSecretNotFound) {
				t.Errorf("delete secret %q: %v, want ErrSecretNotFound", id, err)
			}
		}
		if err := svc.DeleteSecret(ctx, "alice", app.ID, ss[0].ID); err != nil {
			t.Fatal(err)
		}
		if err := svc.DeleteSecret(ctx, "alice", app.ID, ss[0].ID); !errors.Is(err, apps.ErrSecretNotFound) {
			t.Errorf("second delete: %v", err)
		}
		// One fewer: room for one more.
		if _, _, err := svc.CreateSecret(ctx, "alice", app.ID); err != nil {
			t.Errorf("after a delete: %v", err)
		}
	})
}

func TestRevokeAuthorized(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		app, err := svc.Create(ctx, "alice", cc())
		if err != nil {
			t.Fatal(err)
		}
		as, err := svc.ListAuthorized(ctx, "alice")
		if err != nil || len(as) != 0 {
			t.Fatalf("authorized apps without tokens: %v, %v", as, err)
		}
		// No token of alice's: nothing to revoke, whatever the id.
		for _, id := range []string{app.ID, "nope", "a\x00b", "\xff"} {
			if err := svc.RevokeAuthorized(ctx, "alice", id); !errors.Is(err, apps.ErrNotAuthorized) {
				t.Errorf("revoke %q: %v, want ErrNotAuthorized", id, err)
			}
		}
	})
}

// TestStoreErrorsPassThrough: what the store classified (here: closed, so
// unavailable) reaches the transport unchanged in kind, never as a refusal.
func TestStoreErrorsPassThrough(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		svc := newService(s)
		ctx := context.Background()
		s.Close()
		_, err := svc.Create(ctx, "alice", cc())
		var fe *apps.FieldError
		if !errors.Is(err, storage.ErrUnavailable) || errors.As(err, &fe) || errors.Is(err, apps.ErrNotFound) {
			t.Errorf("Create on a closed store: %v", err)
		}
		if _, err := svc.Get(ctx, "alice", "x"); !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("Get on a closed store: %v", err)
		}
		if err := svc.RevokeAuthorized(ctx, "alice", "x"); !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("RevokeAuthorized on a closed store: %v", err)
		}
	})
}
