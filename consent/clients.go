package consent

import (
	"context"
	"errors"
	"fmt"

	"github.com/ory/fosite"
)

// ClientFinder finds the agent platform (an OAuth 2.0 client) an approval
// is for. fosite.ClientManager has this method, and so has *storage.Store;
// a host whose agent platforms are its own clients passes its fosite
// storage. It returns an error wrapping fosite.ErrNotFound for an unknown
// id. A client with a GetName() string method is shown by that name.
type ClientFinder interface {
	GetClient(ctx context.Context, id string) (fosite.Client, error)
}

// platform is the agent platform of an approval, as the pages show it.
type platform struct {
	ID   string
	Name string // "" when the client has no name
	// Unverified: the client registered itself (dynamic registration, a
	// client ID metadata document), so its name is only its own claim.
	Unverified bool
}

// errUnknownClient is the answer to an approval for a client that does not
// exist: nothing can mint for it, so nothing is granted to it.
var errUnknownClient = badInput("unknown client: no agent platform has that client id")

// findPlatform looks the client up. An unknown id is the request's fault
// (errUnknownClient, a 400); any other failure is the server's.
func (h *Handler) findPlatform(ctx context.Context, id string) (*platform, error) {
	c, err := h.clients.GetClient(ctx, id)
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, errUnknownClient
	}
	if err != nil {
		return nil, fmt.Errorf("consent: client %q: %w", id, err)
	}
	return &platform{ID: id, Name: clientName(c), Unverified: unverified(c)}, nil
}

// unverified reports a client that says it registered itself
// (storage.Client and metadata document clients have Unverified).
func unverified(c fosite.Client) bool {
	u, ok := c.(interface{ Unverified() bool })
	return ok && u.Unverified()
}

// clientName is the client's display name when its type has one.
func clientName(c fosite.Client) string {
	if n, ok := c.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}
