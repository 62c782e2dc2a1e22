package consent_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// A client that registered itself is called unverified wherever the pages
// name it: the approval page (with a warning), the grants page and the
// grants API. One made by an administrator is not.
func TestUnverifiedClientMarked(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		e := newEnv(t, s, nil)
		const self = "self-registered"
		if err := s.CreateClient(context.Background(), &storage.Client{ID: self, Name: "Totally Official",
			GrantTypes: []string{"authorization_code"}, Scopes: []string{"docs:read", "docs:write"},
			Public: true, Agent: true, Registration: storage.RegistrationDynamic}); err != nil {
			t.Fatal(err)
		}
		html := map[string]string{"Accept": "text/html"}
		w := e.do(t, req{method: http.MethodGet, user: "alice", path: approvePathFor(self, "s1", "docs:read"), header: html})
		wantStatus(t, w, http.StatusOK)
		for _, want := range []string{"Totally Official", `class="badge unverified"`, "registered itself"} {
			if !strings.Contains(w.Body.String(), want) {
				t.Errorf("approval page for a self-registered client lacks %q", want)
			}
		}
		w = e.do(t, req{method: http.MethodGet, user: "alice", path: approvePathFor(platform, "s1", "docs:read"), header: html})
		if strings.Contains(w.Body.String(), "unverified") {
			t.Error("the approval page calls an administrator's platform unverified")
		}

		wantStatus(t, e.do(t, req{user: "alice", body: approveJSONFor(self, "s1", "approve", "docs:read")}), http.StatusOK)
		wantStatus(t, e.do(t, req{user: "alice", body: approveJSONFor(platform, "s2", "approve", "docs:read")}), http.StatusOK)
		list := decode[struct {
			Grants []struct {
				ClientID         string `json:"clientId"`
				ClientUnverified bool   `json:"clientUnverified"`
			}
		}](t, e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice"}))
		if len(list.Grants) != 2 {
			t.Fatalf("grants: %+v", list.Grants)
		}
		for _, g := range list.Grants {
			if g.ClientUnverified != (g.ClientID == self) {
				t.Errorf("grant of %s: clientUnverified %v", g.ClientID, g.ClientUnverified)
			}
		}
		w = e.do(t, req{method: http.MethodGet, path: "/agent/grants", user: "alice", header: html})
		wantStatus(t, w, http.StatusOK)
		if n := strings.Count(w.Body.String(), `class="badge unverified"`); n != 1 {
			t.Errorf("grants page marks %d grants unverified, want 1", n)
		}
	})
}
