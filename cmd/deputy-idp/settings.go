package main

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// The settings pages are the browser face of the plugin's apps API: they
// apply its rules (an owned app uses client_credentials only, scopes from
// the catalog, only the owner or an admin sees an app, everyone else gets
// 404) through the same storage calls, as forms that work without
// JavaScript. Every destructive action has a confirmation page.

func (s *server) settingsRoutes(r *mux.Router, guard func(http.HandlerFunc) http.Handler) {
	page := func(h func(http.ResponseWriter, *http.Request, *user)) http.HandlerFunc { return s.signedIn(h) }
	post := func(h func(http.ResponseWriter, *http.Request, *user)) http.Handler { return guard(s.signedIn(h)) }

	r.Handle("/settings", http.RedirectHandler("/settings/apps", http.StatusSeeOther)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/settings/grants", http.RedirectHandler("/agent/grants", http.StatusSeeOther)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/settings/apps", page(s.appsPage)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/settings/apps", post(s.createApp)).Methods(http.MethodPost)
	r.HandleFunc("/settings/apps/new", page(s.newAppPage)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/settings/apps/{id}", page(s.appPage)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/settings/apps/{id}/delete", page(s.confirmDeleteApp)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/settings/apps/{id}/delete", post(s.deleteApp)).Methods(http.MethodPost)
	r.Handle("/settings/apps/{id}/secrets", post(s.createSecret)).Methods(http.MethodPost)
	r.HandleFunc("/settings/apps/{id}/secrets/{secretID}/delete", page(s.confirmDeleteSecret)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/settings/apps/{id}/secrets/{secretID}/delete", post(s.deleteSecret)).Methods(http.MethodPost)
	r.HandleFunc("/settings/authorized-apps/{id}/revoke", page(s.confirmRevokeApp)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/settings/authorized-apps/{id}/revoke", post(s.revokeApp)).Methods(http.MethodPost)
}

type appsData struct {
	Owned      []*storage.Client
	Authorized []*storage.AuthorizedApp
}

// Flash messages travel as a fixed key in the query, never as free text, so
// a crafted link cannot put words on the page.
var flashes = map[string]string{
	"app-deleted":    "The app was deleted, and every token it held stopped working.",
	"secret-deleted": "The secret was deleted; it no longer authenticates.",
	"revoked":        "Access revoked: that app's tokens for you stopped working.",
}

func flashOf(r *http.Request) string { return flashes[r.URL.Query().Get("done")] }

func (s *server) appsPage(w http.ResponseWriter, r *http.Request, u *user) {
	ctx := r.Context()
	owned, err := s.st.ListClients(ctx, u.ID)
	if err != nil {
		s.internalError(w, r, "list apps", err)
		return
	}
	authorized, err := s.st.ListAuthorizedApps(ctx, u.ID)
	if err != nil {
		s.internalError(w, r, "list authorized apps", err)
		return
	}
	// An owned app's client-credentials tokens act as its owner too; they
	// are listed once, under the apps the user owns.
	d := appsData{Owned: owned}
	for _, a := range authorized {
		if a.Client.Owner() != u.ID {
			d.Authorized = append(d.Authorized, a)
		}
	}
	s.render(w, r, http.StatusOK, "apps", view{Title: "Apps", Nav: "apps", User: u, Flash: flashOf(r), Data: d})
}

type scopeChoice struct {
	Name        string
	Description string
	Write       bool
	Checked     bool
}

type newAppData struct {
	Name    string
	Choices []scopeChoice
	Error   string
	Field   string
	MaxName int
}

// scopeChoices offers the catalog scopes the user holds somewhere (an app
// may never have more than its owner), checked as asked.
func (s *server) scopeChoices(r *http.Request, u *user, checked []string) ([]scopeChoice, error) {
	held, err := s.dir.UserScopes(r.Context(), u.ID, "")
	if err != nil {
		return nil, err
	}
	var out []scopeChoice
	for _, e := range s.deputy.p.Catalog().Entries() {
		if scope.Contains(held, e.Name) {
			out = append(out, scopeChoice{Name: e.Name, Description: e.Description, Write: e.Write, Checked: scope.Contains(checked, e.Name)})
		}
	}
	return out, nil
}

func (s *server) newAppPage(w http.ResponseWriter, r *http.Request, u *user) {
	held, err := s.dir.UserScopes(r.Context(), u.ID, "")
	if err != nil {
		s.internalError(w, r, "user scopes", err)
		return
	}
	// Read scopes are checked by default: the least surprising start.
	choices, err := s.scopeChoices(r, u, s.deputy.p.Catalog().ReadOnly(held))
	if err != nil {
		s.internalError(w, r, "user scopes", err)
		return
	}
	s.render(w, r, http.StatusOK, "app_new", view{Title: "New app", Nav: "apps", User: u,
		Data: newAppData{Choices: choices, MaxName: plugin.MaxAppNameLength}})
}

// appNameProblem applies the plugin's rule for app names, returning what
// to tell the user, or "" for a good name.
func appNameProblem(name string) string {
	switch {
	case name == "":
		return "Give the app a name."
	case utf8.RuneCountInString(name) > plugin.MaxAppNameLength:
		return fmt.Sprintf("The name may have at most %d characters.", plugin.MaxAppNameLength)
	case !utf8.ValidString(name) || strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0:
		return "The name must not contain control characters."
	}
	return ""
}

func (s *server) createApp(w http.ResponseWriter, r *http.Request, u *user) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	requested := scope.Normalize(r.PostForm["scope"])
	fail := func(field, msg string) {
		choices, err := s.scopeChoices(r, u, requested)
		if err != nil {
			s.internalError(w, r, "user scopes", err)
			return
		}
		s.render(w, r, http.StatusBadRequest, "app_new", view{Title: "New app", Nav: "apps", User: u,
			Data: newAppData{Name: name, Choices: choices, Error: msg, Field: field, MaxName: plugin.MaxAppNameLength}})
	}
	if msg := appNameProblem(name); msg != "" {
		fail("name", msg)
		return
	}
	if len(requested) == 0 {
		fail("scope", "Choose at least one scope.")
		return
	}
	for _, sc := range requested {
		if !s.deputy.p.Catalog().Known(sc) {
			fail("scope", fmt.Sprintf("Unknown scope %q.", sc))
			return
		}
	}
	c := &storage.Client{
		ID:                      storage.NewID(16),
		Name:                    name,
		GrantTypes:              []string{plugin.GrantTypeClientCredentials},
		Scopes:                  requested,
		TokenEndpointAuthMethod: plugin.TokenAuthBasic,
	}
	c.SetOwner(u.ID)
	secret, err := createClientWithSecret(r.Context(), s.st, c)
	if err != nil {
		s.internalError(w, r, "create app", err)
		return
	}
	s.log.InfoContext(r.Context(), "app created", "user_id", u.ID, "client_id", c.ID)
	path := "/settings/apps/" + c.ID
	s.setSecretFlash(w, u.ID, c.ID, path, secret)
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// ownedApp loads the {id} app if u may manage it; anyone else gets the same
// 404 as for an app that does not exist, so ids cannot be probed.
func (s *server) ownedApp(w http.ResponseWriter, r *http.Request, u *user) (*storage.Client, bool) {
	c, err := s.st.Client(r.Context(), mux.Vars(r)["id"])
	// An id the database cannot even hold (a NUL byte or invalid UTF-8 on
	// PostgreSQL) names no app either.
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) || err == nil && c.Owner() != u.ID && !s.users.isAdmin(r.Context(), u.ID) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such app, or it is not yours.")
		return nil, false
	}
	if err != nil {
		s.internalError(w, r, "load app", err)
		return nil, false
	}
	c.SecretHashes = nil
	return c, true
}

type secretRow struct {
	ID            string
	DisplayPrefix string
	CreatedAt     time.Time
	LastUsedAt    time.Time
}

type appData struct {
	App        *storage.Client
	Owner      string
	Secrets    []secretRow
	NewSecret  string
	TokenURL   string
	APIURL     string
	ScopeParam string
	MaxSecrets int
	CanAdd     bool
}

func (s *server) appPage(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	path := "/settings/apps/" + c.ID
	fresh := s.takeSecretFlash(w, r, u.ID, c.ID, path)
	ss, err := s.st.ListClientSecrets(r.Context(), c.ID)
	if err != nil {
		s.internalError(w, r, "list secrets", err)
		return
	}
	d := appData{
		App:        c,
		Owner:      c.Owner(),
		NewSecret:  fresh,
		TokenURL:   s.issuer + plugin.TokenPath,
		APIURL:     s.issuer + "/api/orgs/" + demoOrg + "/projects",
		ScopeParam: scope.Join(c.Scopes),
		MaxSecrets: plugin.MaxSecretsPerApp,
		CanAdd:     len(ss) < plugin.MaxSecretsPerApp,
	}
	if owner, err := s.users.byID(r.Context(), c.Owner()); err == nil {
		d.Owner = owner.Username
	}
	for _, sec := range ss {
		row := secretRow{ID: sec.ID, DisplayPrefix: sec.DisplayPrefix, CreatedAt: sec.CreatedAt}
		if sec.LastUsedAt.Valid {
			row.LastUsedAt = sec.LastUsedAt.Time
		}
		d.Secrets = append(d.Secrets, row)
	}
	sort.SliceStable(d.Secrets, func(i, j int) bool { return d.Secrets[i].CreatedAt.After(d.Secrets[j].CreatedAt) })
	s.render(w, r, http.StatusOK, "app", view{Title: c.Name, Nav: "apps", User: u, Flash: flashOf(r), Data: d})
}

func (s *server) createSecret(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	n, err := s.st.CountClientSecrets(r.Context(), c.ID)
	if err != nil {
		s.internalError(w, r, "count secrets", err)
		return
	}
	if n >= plugin.MaxSecretsPerApp {
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("An app has at most %d secrets; delete one first.", plugin.MaxSecretsPerApp))
		return
	}
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		s.internalError(w, r, "generate secret", err)
		return
	}
	if _, err := s.st.CreateClientSecret(r.Context(), c.ID, hash, prefix); err != nil {
		s.internalError(w, r, "create secret", err)
		return
	}
	s.log.InfoContext(r.Context(), "app secret created", "user_id", u.ID, "client_id", c.ID)
	path := "/settings/apps/" + c.ID
	s.setSecretFlash(w, u.ID, c.ID, path, secret)
	http.Redirect(w, r, path, http.StatusSeeOther)
}

type confirmData struct {
	Heading string
	Body    string
	Action  string
	Button  string
	Cancel  string
}

func (s *server) confirm(w http.ResponseWriter, r *http.Request, u *user, d confirmData) {
	s.render(w, r, http.StatusOK, "confirm", view{Title: d.Heading, Nav: "apps", User: u, Data: d})
}

func (s *server) confirmDeleteApp(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	s.confirm(w, r, u, confirmData{
		Heading: "Delete " + c.Name + "?",
		Body:    "Its secrets stop authenticating and every token it holds stops working, at once. This cannot be undone.",
		Action:  "/settings/apps/" + c.ID + "/delete",
		Button:  "Delete app",
		Cancel:  "/settings/apps/" + c.ID,
	})
}

func (s *server) deleteApp(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	if err := s.st.DeleteClient(r.Context(), c.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
		s.internalError(w, r, "delete app", err)
		return
	}
	s.log.InfoContext(r.Context(), "app deleted", "user_id", u.ID, "client_id", c.ID)
	http.Redirect(w, r, "/settings/apps?done=app-deleted", http.StatusSeeOther)
}

func (s *server) confirmDeleteSecret(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	sid := mux.Vars(r)["secretID"]
	ss, err := s.st.ListClientSecrets(r.Context(), c.ID)
	if err != nil {
		s.internalError(w, r, "list secrets", err)
		return
	}
	for _, sec := range ss {
		if sec.ID == sid {
			s.confirm(w, r, u, confirmData{
				Heading: "Delete secret " + sec.DisplayPrefix + "…?",
				Body:    "Anything still using this secret fails to authenticate from the next request on. Tokens already issued keep working until they expire or the app is deleted.",
				Action:  "/settings/apps/" + c.ID + "/secrets/" + sec.ID + "/delete",
				Button:  "Delete secret",
				Cancel:  "/settings/apps/" + c.ID,
			})
			return
		}
	}
	s.errorPage(w, r, http.StatusNotFound, "There is no such secret.")
}

func (s *server) deleteSecret(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	err := s.st.DeleteClientSecret(r.Context(), c.ID, mux.Vars(r)["secretID"])
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such secret.")
		return
	}
	if err != nil {
		s.internalError(w, r, "delete secret", err)
		return
	}
	s.log.InfoContext(r.Context(), "app secret deleted", "user_id", u.ID, "client_id", c.ID)
	http.Redirect(w, r, "/settings/apps/"+c.ID+"?done=secret-deleted", http.StatusSeeOther)
}

// authorizedApp finds the {id} app among those holding live tokens for u.
// Any other id, whether no app's, an app of someone else's or one that
// holds nothing of u's, gets the same 404: the page would otherwise name
// any app to anyone signed in.
func (s *server) authorizedApp(w http.ResponseWriter, r *http.Request, u *user) (*storage.Client, bool) {
	id := mux.Vars(r)["id"]
	as, err := s.st.ListAuthorizedApps(r.Context(), u.ID)
	if err != nil {
		s.internalError(w, r, "list authorized apps", err)
		return nil, false
	}
	for _, a := range as {
		if a.Client.ID == id {
			return a.Client, true
		}
	}
	s.errorPage(w, r, http.StatusNotFound, "There is no such app, or it holds no access of yours.")
	return nil, false
}

func (s *server) confirmRevokeApp(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.authorizedApp(w, r, u)
	if !ok {
		return
	}
	s.confirm(w, r, u, confirmData{
		Heading: "Revoke " + c.Name + "'s access?",
		Body:    "Every token this app holds for you stops working now. It can ask you again later.",
		Action:  "/settings/authorized-apps/" + c.ID + "/revoke",
		Button:  "Revoke access",
		Cancel:  "/settings/apps",
	})
}

func (s *server) revokeApp(w http.ResponseWriter, r *http.Request, u *user) {
	id := mux.Vars(r)["id"]
	err := s.st.RevokeClientTokensForSubject(r.Context(), id, u.ID)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidInput) {
		// Nothing of u's to revoke: already revoked (a second submit), or
		// not an app holding anything of u's; the apps API's DELETE
		// answers the same 404.
		s.errorPage(w, r, http.StatusNotFound, "There is no such app, or it holds no access of yours.")
		return
	}
	if err != nil {
		s.internalError(w, r, "revoke app", err)
		return
	}
	s.log.InfoContext(r.Context(), "authorized app revoked", "user_id", u.ID, "client_id", id)
	http.Redirect(w, r, "/settings/apps?done=revoked", http.StatusSeeOther)
}
