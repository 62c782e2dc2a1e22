package consent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/deputyauth/deputy/storage/storagetest"
)

// FuzzApproveJSON posts arbitrary bodies to POST /agent/approve as a
// logged-in user. Whatever the body, the answer is never a 5xx and always
// JSON; and no answer but 200 may leave a trace in the database.
//
//	go test -run '^$' -fuzz FuzzApproveJSON ./consent/
func FuzzApproveJSON(f *testing.F) {
	for _, seed := range []string{
		approveJSON("s", "approve", "docs:read"),
		approveJSON("s", "deny", "docs:write", "admin:write"),
		`{"organization":"acme","clientId":"agent-plat","sessionId":"s","scopes":[1,{},null],"decision":"approve"}`,
		`{"organization":"acme","clientId":"agent-plat","sessionId":"` + strings.Repeat("a", 129) + `","scopes":["docs:read"],"decision":"approve"}`,
		`{"organization":"\u0000","clientId":"agent-plat","sessionId":"s","scopes":["docs:read"],"decision":"approve"}`,
		`[]`, `null`, `{`, `{"scopes":"docs:read"}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	s := storagetest.SQLite.Open(f)
	e := newEnv(f, s, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		before := snapshot(t, s)
		w := e.do(t, req{user: "alice", body: string(body)})
		if w.Code >= 500 {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body.String())
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("non-JSON answer %q for %q", w.Body.String(), body)
		}
		if w.Code != http.StatusOK {
			if after := snapshot(t, s); after != before {
				t.Fatalf("status %d for %q changed rows:\n%s\n→\n%s", w.Code, body, before, after)
			}
		}
	})
}
