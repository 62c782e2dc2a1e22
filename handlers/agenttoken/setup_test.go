package agenttoken

import (
	"context"

	"github.com/deputyauth/deputy/scope"
)

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

// directory is the host's Directory for these tests: testUser holds read and
// write in testOrg, and nothing anywhere else.
type directory struct{}

func newDirectory() directory { return directory{} }

func (directory) UserScopes(_ context.Context, user, org string) ([]string, error) {
	if user != testUser {
		return nil, scope.ErrUserNotFound
	}
	if org != testOrg {
		return []string{}, nil
	}
	return []string{readScope, writeScope}, nil
}
