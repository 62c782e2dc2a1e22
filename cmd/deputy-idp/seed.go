package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// The demo organization and its two users. The passwords are fixed and
// printed so that a newcomer, the README and the integration tests can log
// in; --no-demo (or DEPUTY_NO_DEMO=1) leaves them out of a real deployment.
const (
	demoOrg           = "acme"
	demoAlicePassword = "alice-demo-password"
	demoBobPassword   = "bob-demo-password"
)

type demoUser struct {
	username, password string
	admin              bool
	scopes             []string
}

var demoUsers = []demoUser{
	{"alice", demoAlicePassword, true, []string{"projects:read", "projects:write", "members:read"}},
	{"bob", demoBobPassword, false, []string{"projects:read"}},
}

// seedDemo creates the demo users unless they exist. An existing user is
// left exactly as it is, so a restart neither resets a changed password nor
// gives back a scope an operator took away.
func seedDemo(ctx context.Context, u *users, log *slog.Logger) error {
	for _, d := range demoUsers {
		nu, err := u.create(ctx, d.username, d.password, d.admin)
		if errors.Is(err, errUsernameTaken) {
			continue // seeded on an earlier start, or by another replica just now
		}
		if err != nil {
			return fmt.Errorf("seed %s: %w", d.username, err)
		}
		if err := u.setMembership(ctx, nu.ID, demoOrg, d.scopes); err != nil {
			return fmt.Errorf("seed %s: %w", d.username, err)
		}
		log.Info("seeded demo user", "username", d.username, "org", demoOrg)
	}
	return nil
}
