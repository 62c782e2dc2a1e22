package consent

import (
	"time"
)

// The data each template receives. A host overriding Templates renders
// these; every field is plain text and html/template escapes it.

// ScopeView is one requested scope on the approval page.
type ScopeView struct {
	Name        string
	Description string // from the catalog; "" when the scope is not in it
	Write       bool   // the scope changes things
	Holdable    bool   // the user holds it, so approving grants it
}

// ApprovePage is the data of approve.html.
type ApprovePage struct {
	UserID       string
	UserName     string // Config.UserName of UserID
	Organization string
	// ClientID and ClientName are the agent platform the approval is for
	// (ClientName "" when the client has none).
	ClientID   string
	ClientName string
	// ClientUnverified: the agent platform registered itself; its name
	// is only its own claim.
	ClientUnverified bool
	SessionID        string
	Scopes           []ScopeView
	// Grantable lists the scopes an approval would grant; empty when the
	// user holds none of them, and then the page offers only Deny.
	Grantable []string
	// Current is the scopes already granted to this session, if any.
	Current   []string
	Lifespan  time.Duration
	Action    string // where the form posts
	GrantsURL string
	CSS       string
}

// DonePage is the data of done.html, shown after a form post.
type DonePage struct {
	Decision     string // "approve" or "deny"
	Organization string
	ClientID     string
	ClientName   string
	SessionID    string
	// Scopes and ExpiresAt describe the grant as it now stands; empty when
	// denied or when the grant is already gone.
	Scopes    []string
	ExpiresAt time.Time
	GrantsURL string
	CSS       string
}

// GrantView is one row of the grants page.
type GrantView struct {
	ID           string
	Organization string
	// ClientID is the agent platform; "" for a grant from before grants
	// named one, which unlocks nothing. ClientName is "" when unknown.
	ClientID   string
	ClientName string
	// ClientUnverified: the client registered itself (an MCP client).
	ClientUnverified bool
	SessionID        string
	Scopes           []string
	ExpiresAt        time.Time
	RevokeAction     string // where the row's Revoke form posts
}

// GrantsPage is the data of grants.html.
type GrantsPage struct {
	UserID   string
	UserName string // Config.UserName of UserID
	Grants   []GrantView
	CSS      string
}

// ErrorPage is the data of error.html.
type ErrorPage struct {
	Status  int
	Title   string
	Message string
	CSS     string
}
