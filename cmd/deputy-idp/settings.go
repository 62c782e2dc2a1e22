package main

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/apps"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
)

// The settings pages are the browser face of the apps service behind the
// plugin's apps API (the plugin's Apps()): the same rules (an owned app uses
// client_credentials only, scopes from the catalog, only the owner or an
// admin sees an app, everyone else gets 404) and the same calls, as forms
// that work without JavaScript. Every destructive action has a
// confirmation page.

// apps is the plugin's apps service.
func (s *server) apps() *apps.Service { return s.deputy.p.Apps() }

// appsError answers an error of the apps service as a page.
func (s *server) appsError(w http.ResponseWriter, r *http.Request, what string, err error) {
	var fe *apps.FieldError
	switch {
	case errors.Is(err, apps.ErrNotFound):
		s.errorPage(w, r, http.StatusNotFound, "There is no such app, or it is not yours.")
	case errors.Is(err, apps.ErrSecretNotFound):
		s.errorPage(w, r, http.StatusNotFound, "There is no such secret.")
	case errors.Is(err, apps.ErrNotAuthorized):
		s.errorPage(w, r, http.StatusNotFound, "There is no such app, or it holds no access of yours.")
	case errors.Is(err, apps.ErrTooManySecrets):
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("An app has at most %d secrets; delete one first.", apps.MaxSecretsPerApp))
	case errors.As(err, &fe):
		s.errorPage(w, r, http.StatusBadRequest, fieldProblem(fe))
	default:
		s.internalError(w, r, what, err)
	}
}

// The new-app form's names and labels for the service's fields.
var (
	formFields = map[string]string{apps.FieldName: "name", apps.FieldScopes: "scope"}
	formLabels = map[string]string{apps.FieldName: "Name", apps.FieldScopes: "Scopes"}
)

// fieldProblem is a refusal of the service as the page says it.
func fieldProblem(fe *apps.FieldError) string {
	label := formLabels[fe.Field]
	if label == "" {
		label = fe.Field
	}
	return label + ": " + fe.Message + "."
}

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
	owned, err := s.apps().List(ctx, u.ID, u.ID)
	if err != nil {
		s.internalError(w, r, "list apps", err)
		return
	}
	authorized, err := s.apps().ListAuthorized(ctx, u.ID)
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
		Data: newAppData{Choices: choices, MaxName: apps.MaxNameLength}})
}

func (s *server) createApp(w http.ResponseWriter, r *http.Request, u *user) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	in := apps.Input{Name: r.PostForm.Get("name"), Scopes: r.PostForm["scope"]}
	c, secret, err := s.apps().CreateWithSecret(r.Context(), u.ID, in)
	var fe *apps.FieldError
	if errors.As(err, &fe) {
		// The form again, with what was wrong and what was asked.
		choices, err := s.scopeChoices(r, u, scope.Normalize(in.Scopes))
		if err != nil {
			s.internalError(w, r, "user scopes", err)
			return
		}
		s.render(w, r, http.StatusBadRequest, "app_new", view{Title: "New app", Nav: "apps", User: u,
			Data: newAppData{Name: strings.TrimSpace(in.Name), Choices: choices, Error: fieldProblem(fe), Field: formFields[fe.Field], MaxName: apps.MaxNameLength}})
		return
	}
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
	c, err := s.apps().Get(r.Context(), u.ID, mux.Vars(r)["id"])
	if err != nil {
		s.appsError(w, r, "load app", err)
		return nil, false
	}
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
	ss, err := s.apps().ListSecrets(r.Context(), u.ID, c.ID)
	if err != nil {
		s.appsError(w, r, "list secrets", err)
		return
	}
	d := appData{
		App:        c,
		Owner:      c.Owner(),
		NewSecret:  fresh,
		TokenURL:   s.issuer + plugin.TokenPath,
		APIURL:     s.issuer + "/api/orgs/" + demoOrg + "/projects",
		ScopeParam: scope.Join(c.Scopes),
		MaxSecrets: apps.MaxSecretsPerApp,
		CanAdd:     len(ss) < apps.MaxSecretsPerApp,
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
	id := mux.Vars(r)["id"]
	_, secret, err := s.apps().CreateSecret(r.Context(), u.ID, id)
	if err != nil {
		s.appsError(w, r, "create secret", err)
		return
	}
	s.log.InfoContext(r.Context(), "app secret created", "user_id", u.ID, "client_id", id)
	path := "/settings/apps/" + id
	s.setSecretFlash(w, u.ID, id, path, secret)
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
	id := mux.Vars(r)["id"]
	if err := s.apps().Delete(r.Context(), u.ID, id); err != nil {
		s.appsError(w, r, "delete app", err)
		return
	}
	s.log.InfoContext(r.Context(), "app deleted", "user_id", u.ID, "client_id", id)
	http.Redirect(w, r, "/settings/apps?done=app-deleted", http.StatusSeeOther)
}

func (s *server) confirmDeleteSecret(w http.ResponseWriter, r *http.Request, u *user) {
	c, ok := s.ownedApp(w, r, u)
	if !ok {
		return
	}
	sid := mux.Vars(r)["secretID"]
	ss, err := s.apps().ListSecrets(r.Context(), u.ID, c.ID)
	if err != nil {
		s.appsError(w, r, "list secrets", err)
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
	v := mux.Vars(r)
	if err := s.apps().DeleteSecret(r.Context(), u.ID, v["id"], v["secretID"]); err != nil {
		s.appsError(w, r, "delete secret", err)
		return
	}
	s.log.InfoContext(r.Context(), "app secret deleted", "user_id", u.ID, "client_id", v["id"])
	http.Redirect(w, r, "/settings/apps/"+v["id"]+"?done=secret-deleted", http.StatusSeeOther)
}

// authorizedApp finds the {id} app among those holding live tokens for u.
// Any other id, whether no app's, an app of someone else's or one that
// holds nothing of u's, gets the same 404: the page would otherwise name
// any app to anyone signed in.
func (s *server) authorizedApp(w http.ResponseWriter, r *http.Request, u *user) (*storage.Client, bool) {
	id := mux.Vars(r)["id"]
	as, err := s.apps().ListAuthorized(r.Context(), u.ID)
	if err != nil {
		s.appsError(w, r, "list authorized apps", err)
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
	// Nothing of u's to revoke (already revoked by a second submit, or not
	// an app holding anything of u's) is the same 404 as the apps API's.
	if err := s.apps().RevokeAuthorized(r.Context(), u.ID, id); err != nil {
		s.appsError(w, r, "revoke app", err)
		return
	}
	s.log.InfoContext(r.Context(), "authorized app revoked", "user_id", u.ID, "client_id", id)
	http.Redirect(w, r, "/settings/apps?done=revoked", http.StatusSeeOther)
}
