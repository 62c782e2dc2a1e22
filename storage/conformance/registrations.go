package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/storage"
)

// testClientRegistrations: a dynamically registered client keeps how it
// registered, the hash of its registration token and its unused expiry;
// UpdateClient changes none of them; the first token (MarkClientUsed)
// clears the expiry; the sweep deletes registrations never used once they
// expire, with their secrets, and nothing else.
func testClientRegistrations(t *testing.T, s Store) {
	ctx := context.Background()
	tokenHash := sha256.Sum256([]byte("dpy_rat_example"))
	register := func(id string, unusedUntil time.Time) *storage.Client {
		t.Helper()
		c := &storage.Client{
			ID: id, Name: "MCP client " + id,
			RedirectURIs:            []string{"http://127.0.0.1/callback"},
			GrantTypes:              []string{"authorization_code", "refresh_token"},
			ResponseTypes:           []string{"code"},
			Scopes:                  []string{"projects:read"},
			TokenEndpointAuthMethod: "none",
			Public:                  true,
			Agent:                   true,
			Registration:            storage.RegistrationDynamic,
			RegistrationTokenHash:   tokenHash[:],
			UnusedExpiresAt:         sql.NullTime{Time: unusedUntil, Valid: true},
		}
		if err := s.CreateClient(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	stale := register("stale", past)
	if _, err := s.CreateClientSecret(ctx, stale.ID, []byte("stale-secret-hash"), "dpy_cs_stale"); err != nil {
		t.Fatal(err)
	}
	used := register("used", past)
	fresh := register("fresh", future)
	app := newClient(t, s, "app")

	got, err := s.Client(ctx, fresh.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Registration != storage.RegistrationDynamic || !bytes.Equal(got.RegistrationTokenHash, tokenHash[:]) ||
		!got.UnusedExpiresAt.Valid || !got.UnusedExpiresAt.Time.Equal(future) || !got.Unverified() || !got.RegistrationUnused() || !got.Public || !got.Agent {
		t.Fatalf("registration not kept: %+v", got)
	}
	if a, err := s.Client(ctx, app.ID); err != nil || a.Registration != "" || a.RegistrationTokenHash != nil || a.UnusedExpiresAt.Valid || a.Unverified() {
		t.Fatalf("an app is no registration: %+v %v", a, err)
	}
	if list, err := s.ListClients(ctx, ""); err != nil || len(list) != 4 {
		t.Fatalf("list: %d %v", len(list), err)
	} else {
		for _, c := range list {
			if c.ID == fresh.ID && (c.Registration != storage.RegistrationDynamic || !c.UnusedExpiresAt.Valid) {
				t.Fatalf("list lost the registration: %+v", c)
			}
		}
	}

	// An update (RFC 7592) changes the metadata, not the registration.
	got.Name, got.Registration, got.RegistrationTokenHash, got.UnusedExpiresAt = "renamed", "", nil, sql.NullTime{}
	if err := s.UpdateClient(ctx, got); err != nil {
		t.Fatal(err)
	}
	got, err = s.Client(ctx, fresh.ID)
	if err != nil || got.Name != "renamed" || got.Registration != storage.RegistrationDynamic ||
		!bytes.Equal(got.RegistrationTokenHash, tokenHash[:]) || !got.UnusedExpiresAt.Valid {
		t.Fatalf("update changed the registration: %+v %v", got, err)
	}

	// The first token marks a registration used, once and for all.
	for range 2 {
		if err := s.MarkClientUsed(ctx, used.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkClientUsed(ctx, app.ID); err != nil {
		t.Fatalf("marking an app: %v", err)
	}
	if err := s.MarkClientUsed(ctx, "nobody"); err != nil {
		t.Fatalf("marking a missing client: %v", err)
	}
	if u, err := s.Client(ctx, used.ID); err != nil || u.UnusedExpiresAt.Valid || u.RegistrationUnused() {
		t.Fatalf("used registration still unused: %+v %v", u, err)
	}

	n, err := s.DeleteExpired(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("swept %d rows, want 1 (the stale registration)", n)
	}
	if _, err := s.GetClient(ctx, stale.ID); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatalf("stale registration kept: %v", err)
	}
	if secrets, err := s.ListClientSecrets(ctx, stale.ID); err != nil || len(secrets) != 0 {
		t.Fatalf("the swept registration's secrets: %v %v", secrets, err)
	}
	for _, id := range []string{used.ID, fresh.ID, app.ID} {
		if _, err := s.GetClient(ctx, id); err != nil {
			t.Fatalf("%s swept: %v", id, err)
		}
	}
}

// testMetadataDocumentClients: the copy of a metadata document's client is
// inserted, then refreshed in place; its unused expiry moves while unused
// and stays cleared once used; an id that is another kind of client's is a
// conflict and changes nothing.
func testMetadataDocumentClients(t *testing.T, s Store) {
	ctx := context.Background()
	const id = "https://mcp.example/client.json"
	doc := func(name string, unusedUntil time.Time) *storage.Client {
		return &storage.Client{
			ID: id, Name: name,
			RedirectURIs:            []string{"https://mcp.example/callback"},
			GrantTypes:              []string{"authorization_code"},
			ResponseTypes:           []string{"code"},
			Scopes:                  []string{"projects:read"},
			TokenEndpointAuthMethod: "none",
			Public:                  true,
			Agent:                   true,
			Registration:            storage.RegistrationMetadataDocument,
			UnusedExpiresAt:         sql.NullTime{Time: unusedUntil, Valid: true},
		}
	}
	check := func(name string, unused bool, until time.Time) {
		t.Helper()
		got, err := s.Client(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != name || got.Registration != storage.RegistrationMetadataDocument || !got.Public || !got.Agent ||
			got.UnusedExpiresAt.Valid != unused || (unused && !got.UnusedExpiresAt.Time.Equal(until)) {
			t.Fatalf("stored %+v, want name %q unused %v until %v", got, name, unused, until)
		}
	}
	if err := s.SaveMetadataDocumentClient(ctx, doc("first", past)); err != nil {
		t.Fatal(err)
	}
	check("first", true, past)
	if err := s.SaveMetadataDocumentClient(ctx, doc("second", future)); err != nil {
		t.Fatal(err)
	}
	check("second", true, future)
	// Tokens of the client are found with it.
	c, _ := s.Client(ctx, id)
	if err := s.CreateAccessTokenSession(ctx, "at-doc", newRequest(c, "r-doc", "alice", future)); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetAccessTokenSession(ctx, "at-doc", session()); err != nil || r.GetClient().GetID() != id {
		t.Fatalf("token of a metadata document client: %v", err)
	}
	if err := s.MarkClientUsed(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveMetadataDocumentClient(ctx, doc("third", future)); err != nil {
		t.Fatal(err)
	}
	check("third", false, time.Time{})
	if n, err := s.DeleteExpired(ctx, future.Add(time.Hour)); err != nil {
		t.Fatal(err)
	} else if _, err := s.Client(ctx, id); err != nil {
		t.Fatalf("a used copy was swept (%d rows): %v", n, err)
	}

	// An app's id is not a document's to take.
	app := newClient(t, s, "https://app.example/id")
	taken := doc("taker", future)
	taken.ID = app.ID
	if err := s.SaveMetadataDocumentClient(ctx, taken); !errors.Is(err, storage.ErrConflict) {
		t.Fatalf("taking an app's id: %v, want ErrConflict", err)
	}
	if got, err := s.Client(ctx, app.ID); err != nil || got.Name != app.Name || got.Registration != "" {
		t.Fatalf("the app changed: %+v %v", got, err)
	}
	notDoc := doc("x", future)
	notDoc.ID, notDoc.Registration = "other", storage.RegistrationDynamic
	if err := s.SaveMetadataDocumentClient(ctx, notDoc); !errors.Is(err, storage.ErrInvalidInput) {
		t.Fatalf("saving a dynamic client as a document's: %v", err)
	}
	if _, err := s.Client(ctx, "other"); !errors.Is(err, fosite.ErrNotFound) {
		t.Fatal(fmt.Sprint("stored: ", err))
	}
}
