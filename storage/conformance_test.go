package storage_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/conformance"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// TestConformance runs the exported conformance suite on both dialects, a
// fresh database per subtest.
func TestConformance(t *testing.T) {
	t.Parallel()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		t.Parallel()
		conformance.RunTests(t, func(t *testing.T) conformance.Store { return b.Open(t) })
	})
}

// What follows needs more than one store on one database, which only a
// dialect (a DSN) can give: replicas.

func TestOpenRejectsUnknownDSN(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"", "mysql://x", "sqlite:", "postgres://user:hunter2@127.0.0.1:1/x?connect_timeout=1"} {
		_, err := storage.Open(context.Background(), dsn)
		if err == nil {
			t.Errorf("Open(%q) succeeded", dsn)
			continue
		}
		if dsn != "" && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

// Replicas approving the same binding at once, each on its own pool: the
// row lock (PostgreSQL) or the immediate transaction (SQLite) must keep
// every scope.
func TestAgentGrantConcurrentReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	storagetest.EachBackend(t, func(t *testing.T, b storagetest.Backend) {
		dsn := b.NewDSN(t)
		replicas := []*storage.Store{storagetest.OpenDSN(t, dsn), storagetest.OpenDSN(t, dsn)}
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		want := make([]string, n)
		for i := range n {
			want[i] = fmt.Sprintf("s%02d:write", i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = replicas[i%2].ApproveAgentGrant(ctx, "acme", "alice", "plat", "run", []string{want[i]}, time.Now().Add(time.Hour))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("approval %d: %v", i, err)
			}
		}
		got, err := replicas[0].AgentGrantScopes(ctx, "acme", "alice", "plat", "run", time.Now())
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("scopes = %v (%v), want all %d", got, err, n)
		}
		if list, _ := replicas[1].ListAgentGrants(ctx, "alice", time.Now()); len(list) != 1 {
			t.Fatalf("%d rows, want 1", len(list))
		}
	})
}
