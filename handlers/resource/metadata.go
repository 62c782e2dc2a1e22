package resource

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/deputyauth/deputy/internal/cors"
)

// WellKnownPath is RFC 9728's well-known URI suffix for protected resource
// metadata.
const WellKnownPath = "/.well-known/oauth-protected-resource"

// ProtectedResourceMetadata is the RFC 9728 document a resource server
// publishes so that clients (MCP clients first of all) learn, from a 401
// alone, which authorization server to ask and for what.
type ProtectedResourceMetadata struct {
	// Resource is the resource identifier: Middleware.Resource, canonical.
	Resource string `json:"resource"`
	// AuthorizationServers are the issuers whose tokens the resource
	// accepts.
	AuthorizationServers []string `json:"authorization_servers,omitempty"`
	// ScopesSupported are the scopes a client may ask for to use the
	// resource; MCP clients ask for all of them when a challenge names
	// none.
	ScopesSupported []string `json:"scopes_supported,omitempty"`
	// BearerMethodsSupported: how a token is sent; deputy's middleware
	// reads the Authorization header only. Default ["header"].
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	// ResourceName is a human-readable name, shown by some clients.
	ResourceName string `json:"resource_name,omitempty"`
	// ResourceDocumentation is a URL of documentation for developers.
	ResourceDocumentation string `json:"resource_documentation,omitempty"`
}

// MetadataURL is where the resource's RFC 9728 metadata lives, derived
// from Resource as RFC 9728 §3.1 says: the well-known suffix inserted
// between the host and the path, e.g. https://mcp.example.com/mcp →
// https://mcp.example.com/.well-known/oauth-protected-resource/mcp. ""
// without a usable Resource.
func (m *Middleware) MetadataURL() string {
	r := m.canonicalResource()
	if r == "" {
		return ""
	}
	u, err := url.Parse(r)
	if err != nil {
		return ""
	}
	u.Path, u.RawPath = WellKnownPath+u.Path, ""
	if u.RawQuery == "" {
		u.ForceQuery = false
	}
	return u.String()
}

// MetadataPath is the path of MetadataURL, where the host mounts
// MetadataHandler: "/.well-known/oauth-protected-resource/mcp" for
// https://mcp.example.com/mcp, the bare well-known path for a resource
// without a path. A host with one protected resource may also mount it at
// the bare well-known path, the last place MCP clients look.
func (m *Middleware) MetadataPath() string {
	u, err := url.Parse(m.MetadataURL())
	if err != nil || u.Path == "" {
		return ""
	}
	return u.Path
}

// ProtectedResourceMetadata returns the document MetadataHandler serves:
// Metadata with its resource set to Resource (canonical) and its bearer
// methods defaulted.
func (m *Middleware) ProtectedResourceMetadata() ProtectedResourceMetadata {
	doc := m.Metadata
	doc.Resource = m.canonicalResource()
	if len(doc.BearerMethodsSupported) == 0 {
		doc.BearerMethodsSupported = []string{"header"}
	}
	return doc
}

// MetadataHandler serves ProtectedResourceMetadata as JSON (GET, HEAD), to
// any web origin (CORS: browser-based MCP clients read it), wherever it is
// mounted: at MetadataPath.
func (m *Middleware) MetadataHandler() http.Handler {
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		doc := m.ProtectedResourceMetadata()
		if doc.Resource == "" {
			http.NotFound(w, r)
			return
		}
		body, err := json.Marshal(doc)
		if err != nil {
			m.logger().ErrorContext(r.Context(), "deputy: protected resource metadata", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(append(body, '\n'))
	})
	return cors.Public(serve, http.MethodGet, http.MethodHead)
}
