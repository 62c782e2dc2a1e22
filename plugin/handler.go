package plugin

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/deputyauth/deputy/handlers/agenttoken"
)

// Handler serves deputy's own HTTP surface below Config.MountPath: the apps
// API (/api/apps…, /api/authorized-apps…) and, with Config.Agents, the
// approval pages and API (ApprovePath, /agent/grants…) and the agent-token
// keys (JWKSPath, to any web origin: CORS), and with
// Config.ClientRegistration.Dynamic the RFC 7591/7592 registration
// endpoint (RegistrationPath…, CORS too). Mount it on any router at
// MountPath without stripping the prefix, e.g. mux.Handle("/deputy/",
// p.Handler()) for MountPath "/deputy": the paths it serves and the links
// it writes include it.
func (p *Plugin) Handler() http.Handler {
	root := mux.NewRouter()
	r := root
	if p.cfg.MountPath != "" {
		r = root.PathPrefix(p.cfg.MountPath).Subrouter()
	}
	p.registerApps(r)
	if p.registration != nil {
		r.PathPrefix(RegistrationPath).Handler(CORS(p.registration,
			http.MethodPost, http.MethodGet, http.MethodPut, http.MethodDelete))
	}
	if p.keys != nil {
		r.Handle(JWKSPath, CORS(agenttoken.NewJWKSHandler(p.keys), http.MethodGet, http.MethodHead)).
			Methods(http.MethodGet, http.MethodHead, http.MethodOptions)
		r.PathPrefix("/agent/").Handler(p.consent)
	}
	return root
}
