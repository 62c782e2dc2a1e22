package agenttoken

import "github.com/deputyauth/deputy/internal/testkit"

var testSecret = []byte("0123456789abcdef0123456789abcdef-system-secret")

const (
	testIssuer    = "https://idp.example.test"
	testOrg       = "acme"
	testSession   = "sess-1"
	agentClientID = "agent-platform"
	testUser      = "alice"
	readScope     = "projects:read"
	writeScope    = "projects:write"
)

// newDirectory is the host's Directory for these tests: testUser holds read
// and write in testOrg, and nothing anywhere else.
func newDirectory() *testkit.Directory {
	return testkit.NewDirectory().Set(testUser, testOrg, readScope, writeScope)
}
