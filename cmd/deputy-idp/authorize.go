package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/flows"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
)

// The authorization endpoint is the host's: only the host knows who is
// logged in and how to ask them. fosite validates the request (client,
// redirect URI, PKCE S256, scopes the client may ask for) before anyone sees
// a page, so an invalid request never shows a consent screen that a
// phishing link could borrow; the plugin then grants what the user holds.

func (s *server) oauthRoutes(r *mux.Router, guard func(http.HandlerFunc) http.Handler) {
	r.HandleFunc(plugin.AuthorizePath, s.handleAuthorize).Methods(http.MethodGet, http.MethodHead)
	// The consent form posts back here. Cross-origin posts are refused: a
	// forged "Allow" from another site would be consent nobody gave.
	r.Handle(plugin.AuthorizePath, guard(s.handleAuthorize)).Methods(http.MethodPost)
}

// consentScope is one line of the consent page.
type consentScope struct {
	Name        string
	Description string
	Write       bool
	// Held: the user holds it, so it will be granted.
	Held bool
}

type consentData struct {
	ClientName string
	ClientID   string
	RedirectTo string
	Scopes     []consentScope
	// Action is the form's target: this same request, so fosite sees the
	// same parameters when the user answers.
	Action    string
	NoneHeld  bool
	AnyWrites bool
	// Agent: the client is an agent (an MCP client), so the writes it is
	// granted are an approval lasting ApprovalFor (plugin.Config.GrantLifespan).
	Agent       bool
	ApprovalFor string
	// Unverified: the client registered itself (dynamic registration or a
	// metadata document), so its name is its own claim; the page says so
	// and names where the answer goes (RedirectHost).
	Unverified       bool
	MetadataDocument bool
	RedirectHost     string
}

func (s *server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	provider := s.deputy.p.Provider()
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	noStore(w)
	// The plugin's NewAuthorizeRequest, not the provider's: it refuses
	// repeated parameters and holds redirect URIs to exact matching.
	ar, err := s.deputy.p.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.logOAuth(r, err)
		provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	// fosite enforces PKCE only when it issues the code; refusing here too
	// means a request that can never succeed does not get a consent page.
	if form := ar.GetRequestForm(); form.Get("code_challenge") == "" || form.Get("code_challenge_method") != "S256" {
		provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrInvalidRequest.WithHint("PKCE is required: send code_challenge with code_challenge_method=S256."))
		return
	}
	u := s.currentUser(r)
	if u == nil {
		// After login the browser comes back with GET and the same query.
		http.Redirect(w, r, loginURL(r), http.StatusSeeOther)
		return
	}
	client := plugin.DescribeClient(ar)
	switch {
	case client.FirstParty:
		s.deputy.p.Authorize(w, r, ar, u.ID, "", nil)
		return
	case r.Method == http.MethodPost:
		switch r.PostFormValue("decision") {
		case "allow":
			s.log.InfoContext(ctx, "authorization consented", "user_id", u.ID, "client_id", ar.GetClient().GetID())
			s.deputy.p.Authorize(w, r, ar, u.ID, "", nil)
		case "deny":
			s.log.InfoContext(ctx, "authorization denied", "user_id", u.ID, "client_id", ar.GetClient().GetID())
			provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrAccessDenied.WithHint("The user denied the request."))
		default:
			s.errorPage(w, r, http.StatusBadRequest, "Choose Allow or Deny.")
		}
		return
	}

	held, err := s.dir.UserScopes(ctx, u.ID, "")
	if err != nil {
		s.internalError(w, r, "authorize: user scopes", err)
		return
	}
	d := consentData{
		ClientID:    ar.GetClient().GetID(),
		ClientName:  ar.GetClient().GetID(),
		RedirectTo:  ar.GetRedirectURI().String(),
		Action:      plugin.AuthorizePath + "?" + r.URL.RawQuery,
		NoneHeld:    true,
		Agent:       flows.IsAgentClient(ar.GetClient()),
		ApprovalFor: humanDuration(s.deputy.p.Config().GrantLifespan),

		Unverified:       client.Unverified,
		MetadataDocument: client.MetadataDocument,
		RedirectHost:     client.RedirectHost,
	}
	if client.Name != "" {
		d.ClientName = client.Name
	}
	for _, name := range scope.Normalize(ar.GetRequestedScopes()) {
		e, _ := s.deputy.p.Catalog().Lookup(name)
		cs := consentScope{Name: name, Description: e.Description, Write: e.Write}
		switch {
		case scope.Contains(protocol.ProtocolScopes, name):
			cs.Held, cs.Write = true, false
			cs.Description = protocolScopeDescription(name)
		default:
			cs.Held = scope.Contains(held, name)
		}
		if cs.Held {
			d.NoneHeld = false
			d.AnyWrites = d.AnyWrites || cs.Write
		}
		d.Scopes = append(d.Scopes, cs)
	}
	s.render(w, r, http.StatusOK, "authorize", view{Title: "Authorize " + d.ClientName, User: u, Data: d})
}

// humanDuration renders d for the consent page: "1 hour", "30 minutes".
func humanDuration(d time.Duration) string {
	unit := func(n int64, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return unit(int64(d/time.Minute), "minute")
	case d >= time.Second && d%time.Second == 0:
		return unit(int64(d/time.Second), "second")
	}
	return d.String()
}

func protocolScopeDescription(name string) string {
	switch name {
	case "offline", "offline_access":
		return "Stay connected: keep access after this session ends (a refresh token)"
	case "openid":
		return "Know who you are"
	}
	return ""
}

// logOAuth logs the detail of authorization errors that are ours; the
// client's own mistakes are only debug noise.
func (s *server) logOAuth(r *http.Request, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	if rfc.CodeField >= 500 {
		s.log.ErrorContext(r.Context(), "authorize endpoint", "err", rfc.GetDescription(), "debug", rfc.Debug(), "cause", rfc.Cause())
		return
	}
	s.log.DebugContext(r.Context(), "authorize request refused", "error", rfc.ErrorField, "hint", rfc.HintField)
}
