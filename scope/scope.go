// Package scope holds what every part of deputy agrees on about OAuth2 scopes:
// the host's Directory of user authority, the configured scope catalog, and
// the set arithmetic that keeps delegation from ever escalating.
package scope

import (
	"context"
	"errors"
	"sort"
	"strings"
)

// Errors a Directory returns when a user can no longer act.
var (
	ErrUserNotFound = errors.New("deputy: user not found")
	ErrUserDisabled = errors.New("deputy: user disabled")
)

// Directory is the host's source of truth about user authority.
type Directory interface {
	// UserScopes: the scopes userID holds in org today ("" org where the IdP
	// has none). ErrUserNotFound / ErrUserDisabled when the user can no
	// longer act.
	UserScopes(ctx context.Context, userID, org string) ([]string, error)
}

// Entry describes one scope in the catalog.
type Entry struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Write marks a scope that changes things; agents get it only once a
	// user approved it.
	Write bool `json:"write"`
}

// Catalog is the configured list of scopes. The zero Catalog is usable: it
// knows no scope, and treats a name as read-only iff it ends in ":read".
type Catalog struct {
	entries map[string]Entry
	order   []string
}

// NewCatalog builds a catalog from entries; later entries replace earlier
// ones with the same name.
func NewCatalog(entries ...Entry) *Catalog {
	c := &Catalog{entries: make(map[string]Entry, len(entries))}
	for _, e := range entries {
		if _, dup := c.entries[e.Name]; !dup {
			c.order = append(c.order, e.Name)
		}
		c.entries[e.Name] = e
	}
	return c
}

// Lookup returns the entry for name, and whether the catalog has it. A name
// not in the catalog gets a synthesized entry following the default rule.
func (c *Catalog) Lookup(name string) (Entry, bool) {
	if c != nil {
		if e, ok := c.entries[name]; ok {
			return e, true
		}
	}
	return Entry{Name: name, Write: !strings.HasSuffix(name, ":read")}, false
}

// Known reports whether name is in the catalog.
func (c *Catalog) Known(name string) bool {
	_, ok := c.Lookup(name)
	return ok
}

// IsWrite reports whether name writes: the catalog says so, or, for a scope
// not in it, the name does not end in ":read".
func (c *Catalog) IsWrite(name string) bool {
	e, _ := c.Lookup(name)
	return e.Write
}

// Entries lists the catalog in configuration order.
func (c *Catalog) Entries() []Entry {
	if c == nil {
		return nil
	}
	out := make([]Entry, 0, len(c.order))
	for _, n := range c.order {
		out = append(out, c.entries[n])
	}
	return out
}

// ReadOnly returns the scopes of s that do not write.
func (c *Catalog) ReadOnly(s []string) []string {
	var out []string
	for _, n := range s {
		if !c.IsWrite(n) {
			out = append(out, n)
		}
	}
	return out
}

// Parse splits a space-delimited scope parameter (RFC 6749 §3.3), dropping
// empties and duplicates.
func Parse(s string) []string {
	return Normalize(strings.Fields(s))
}

// Join renders scopes as a space-delimited parameter.
func Join(s []string) string { return strings.Join(s, " ") }

// Normalize returns s sorted and without duplicates or empty names, so that
// equal sets compare equal.
func Normalize(s []string) []string {
	out := make([]string, 0, len(s))
	seen := make(map[string]struct{}, len(s))
	for _, n := range s {
		if n == "" {
			continue
		}
		if _, dup := seen[n]; dup {
			continue
		}
		seen[n] = struct{}{}
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Intersect returns the scopes present in every set, normalized. It never
// returns a scope absent from any argument, which is the whole point.
func Intersect(first []string, rest ...[]string) []string {
	out := Normalize(first)
	for _, r := range rest {
		in := make(map[string]struct{}, len(r))
		for _, n := range r {
			in[n] = struct{}{}
		}
		kept := out[:0]
		for _, n := range out {
			if _, ok := in[n]; ok {
				kept = append(kept, n)
			}
		}
		out = kept
	}
	return out
}

// Union returns every scope in any set, normalized.
func Union(sets ...[]string) []string {
	var all []string
	for _, s := range sets {
		all = append(all, s...)
	}
	return Normalize(all)
}

// Missing returns the scopes of want not in have, normalized.
func Missing(want, have []string) []string {
	in := make(map[string]struct{}, len(have))
	for _, n := range have {
		in[n] = struct{}{}
	}
	var out []string
	for _, n := range Normalize(want) {
		if _, ok := in[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// Contains reports whether s holds name.
func Contains(s []string, name string) bool {
	for _, n := range s {
		if n == name {
			return true
		}
	}
	return false
}
