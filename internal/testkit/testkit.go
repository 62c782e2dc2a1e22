// Package testkit holds the fakes deputy's tests share, so that each is
// written once: a Directory of who holds which scopes, a cookie
// SessionAuthenticator, a clock the test moves, and a buffer safe to read
// while something writes it. Only tests import it.
package testkit

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/scope"
)

// AnyOrg, as Directory.Set's org, gives a user scopes in every organization
// that has no entry of its own.
const AnyOrg = "*"

// Directory is a host's Directory for tests: per user, per organization,
// scopes; users disabled, removed or whose lookup fails. It is safe for
// concurrent use. UserScopes answers, in this order: the error set by Fail;
// ErrUserDisabled; ErrUserNotFound for a user never Set (or Removed); the
// scopes Set for that organization; those Set for AnyOrg; for org "" the
// union of every organization's (as the demo IdP answers "no organization");
// none.
type Directory struct {
	mu       sync.Mutex
	scopes   map[string]map[string][]string // user → org → scopes
	disabled map[string]bool
	fail     map[string]error
}

// NewDirectory returns a Directory that knows nobody.
func NewDirectory() *Directory {
	return &Directory{scopes: map[string]map[string][]string{}, disabled: map[string]bool{}, fail: map[string]error{}}
}

// Set gives user exactly scopes in org (AnyOrg: in every organization
// without an entry of its own), and returns d.
func (d *Directory) Set(user, org string, scopes ...string) *Directory {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.scopes[user] == nil {
		d.scopes[user] = map[string][]string{}
	}
	d.scopes[user][org] = scopes
	return d
}

// Disable makes user disabled (ErrUserDisabled), and returns d.
func (d *Directory) Disable(user string) *Directory {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.disabled[user] = true
	return d
}

// Remove forgets user: ErrUserNotFound from now on.
func (d *Directory) Remove(user string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.scopes, user)
}

// Fail makes every lookup of user fail with err (a Directory outage), and
// returns d.
func (d *Directory) Fail(user string, err error) *Directory {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[user] = err
	return d
}

// UserScopes implements scope.Directory.
func (d *Directory) UserScopes(_ context.Context, user, org string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.fail[user]; err != nil {
		return nil, err
	}
	if d.disabled[user] {
		return nil, scope.ErrUserDisabled
	}
	orgs, ok := d.scopes[user]
	if !ok {
		return nil, scope.ErrUserNotFound
	}
	if s, ok := orgs[org]; ok {
		return slices.Clone(s), nil
	}
	if s, ok := orgs[AnyOrg]; ok {
		return slices.Clone(s), nil
	}
	if org == "" {
		var all []string
		for _, s := range orgs {
			all = append(all, s...)
		}
		return scope.Normalize(all), nil
	}
	return nil, nil
}

// Sessions is a first-party session for tests: the cookie named Cookie
// holds the user id; without one, consent.ErrNoSession.
type Sessions struct {
	Cookie string
	// AlsoBearer makes it (wrongly) accept "Authorization: Bearer <user>"
	// too, as a careless host might: what the handler under test must not
	// let through.
	AlsoBearer bool
}

// Authenticate implements consent.SessionAuthenticator.
func (s Sessions) Authenticate(r *http.Request) (string, error) {
	if c, err := r.Cookie(s.Cookie); err == nil && c.Value != "" {
		return c.Value, nil
	}
	if s.AlsoBearer {
		if u, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && u != "" {
			return u, nil
		}
	}
	return "", consent.ErrNoSession
}

// Clock is a time source the test sets and moves; safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Buffer collects output (a logger's, a process's) while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
