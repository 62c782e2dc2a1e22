package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
)

func signingKey(id string) *storage.SigningKey {
	return &storage.SigningKey{ID: id, Algorithm: "EdDSA", PublicKey: []byte("public " + id), PrivateKey: []byte("sealed private " + id)}
}

// testSigningKeys: exactly one key is active; the first is created once;
// rotation retires the active key for the retention given, and retired keys
// are published until their retention ends and deleted after.
func testSigningKeys(t *testing.T, s Store) {
	ctx := context.Background()
	ids := func(at time.Time) []string {
		t.Helper()
		ks, err := s.SigningKeys(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range ks {
			out = append(out, k.ID)
		}
		return out
	}
	if got := ids(time.Now()); len(got) != 0 {
		t.Fatalf("keys of an empty store: %v", got)
	}
	if ok, err := s.CreateFirstSigningKey(ctx, signingKey("k1")); err != nil || !ok {
		t.Fatalf("first key: %v, %v", ok, err)
	}
	if ok, err := s.CreateFirstSigningKey(ctx, signingKey("k2")); err != nil || ok {
		t.Fatalf("second first key: stored %v, %v", ok, err)
	}
	ks, err := s.SigningKeys(ctx, time.Now())
	if err != nil || len(ks) != 1 {
		t.Fatalf("keys: %+v, %v", ks, err)
	}
	if k := ks[0]; k.ID != "k1" || !k.Active || k.Algorithm != "EdDSA" || string(k.PublicKey) != "public k1" ||
		string(k.PrivateKey) != "sealed private k1" || k.CreatedAt.IsZero() || k.RetiredAt.Valid || k.DropAfter.Valid {
		t.Fatalf("first key = %+v", k)
	}

	const retain = time.Hour
	k3 := signingKey("k3")
	if err := s.RotateSigningKeys(ctx, k3, retain); err != nil {
		t.Fatal(err)
	}
	ks, err = s.SigningKeys(ctx, time.Now())
	if err != nil || len(ks) != 2 {
		t.Fatalf("after rotation: %+v, %v", ks, err)
	}
	if ks[0].ID != "k3" || !ks[0].Active || ks[1].ID != "k1" || ks[1].Active {
		t.Fatalf("after rotation, active first: %+v", ks)
	}
	retired := ks[1]
	if !retired.RetiredAt.Valid || !retired.DropAfter.Valid || !retired.DropAfter.Time.Equal(retired.RetiredAt.Time.Add(retain)) {
		t.Fatalf("retired key = %+v", retired)
	}

	// Past the retention the retired key is no longer published, then deleted.
	later := time.Now().Add(2 * retain)
	if got := ids(later); len(got) != 1 || got[0] != "k3" {
		t.Fatalf("published after retention: %v", got)
	}
	if n, err := s.DeleteDroppedSigningKeys(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("dropped within retention: %d, %v", n, err)
	}
	if n, err := s.DeleteDroppedSigningKeys(ctx, later); err != nil || n != 1 {
		t.Fatalf("dropped after retention: %d, %v", n, err)
	}
	if got := ids(time.Now()); len(got) != 1 || got[0] != "k3" {
		t.Fatalf("after dropping: %v", got)
	}

	// With no retention the key rotated out goes at once.
	if err := s.RotateSigningKeys(ctx, signingKey("k4"), 0); err != nil {
		t.Fatal(err)
	}
	if got := ids(time.Now()); len(got) != 1 || got[0] != "k4" {
		t.Fatalf("after rotating with no retention: %v", got)
	}
	if ok, err := s.CreateFirstSigningKey(ctx, signingKey("k5")); err != nil || ok {
		t.Fatalf("first key after rotations: stored %v, %v", ok, err)
	}
}
