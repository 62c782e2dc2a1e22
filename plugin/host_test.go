package plugin_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ory/fosite"
	fositestorage "github.com/ory/fosite/storage"
	"golang.org/x/crypto/bcrypt"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestWrapStorage: the host's clients come from the host's storage, deputy's
// apps from deputy's tables with their hashes marked, so that one hasher
// checks both kinds of secret; an optional interface the host lacks is an
// error, not a panic.
func TestWrapStorage(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		p, _ := newPlugin(t, s, nil)
		host := fositestorage.NewMemoryStore()
		hostHash, _ := bcrypt.GenerateFromPassword([]byte("host-secret"), bcrypt.MinCost)
		host.Clients["host-client"] = &fosite.DefaultClient{ID: "host-client", Secret: hostHash}
		appID, appSecret, err := p.CreateAgentPlatform(ctx, plugin.AgentPlatform{Name: "platform"})
		if err != nil {
			t.Fatal(err)
		}
		w := p.WrapStorage(host)
		hasher := p.SecretsHasher(nil)

		c, err := w.GetClient(ctx, "host-client")
		if err != nil || c.GetID() != "host-client" {
			t.Fatalf("host client: %v %v", c, err)
		}
		if err := hasher.Compare(ctx, c.GetHashedSecret(), []byte("host-secret")); err != nil {
			t.Errorf("the host's bcrypt secret: %v", err)
		}
		app, err := w.GetClient(ctx, appID)
		if err != nil || app.GetID() != appID {
			t.Fatalf("deputy's app: %v %v", app, err)
		}
		if err := hasher.Compare(ctx, app.GetHashedSecret(), []byte(appSecret)); err != nil {
			t.Errorf("deputy's secret through the host's hasher: %v", err)
		}
		if err := hasher.Compare(ctx, app.GetHashedSecret(), []byte(appSecret+"x")); err == nil {
			t.Errorf("a wrong secret matched")
		}
		// An unmarked SHA-256 hash goes to the host's hasher, which refuses it.
		raw, _ := (&clientsecret.SHA256Hasher{}).Hash(ctx, []byte(appSecret))
		if err := hasher.Compare(ctx, raw, []byte(appSecret)); err == nil {
			t.Errorf("an unmarked hash was compared as deputy's")
		}
		if _, err := w.GetClient(ctx, "nobody"); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("unknown client: %v, want not found", err)
		}

		// A host storage with only what deputy needs.
		bare := p.WrapStorage(struct{ plugin.HostStorage }{host})
		if err := bare.CreatePKCERequestSession(ctx, "sig", fosite.NewRequest()); err == nil {
			t.Errorf("PKCE on a host without it: no error")
		}
		if _, err := bare.GetOpenIDConnectSession(ctx, "code", fosite.NewRequest()); err == nil {
			t.Errorf("OpenID Connect on a host without it: no error")
		}
		if tx, err := bare.BeginTX(ctx); err != nil || tx != ctx || bare.Commit(ctx) != nil || bare.Rollback(ctx) != nil {
			t.Errorf("transactions on a host without them should do nothing: %v", err)
		}
		if err := w.CreatePKCERequestSession(ctx, "sig", fosite.NewRequest()); err != nil {
			t.Errorf("PKCE on the MemoryStore: %v", err)
		}
	})
}
