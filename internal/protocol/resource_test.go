package protocol

import (
	"strings"
	"testing"
)

// TestCanonicalResource: RFC 8707 §2's resource indicator in the one form
// deputy stores and compares.
func TestCanonicalResource(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw, want string // want "" means refused
	}{
		{"https://mcp.example.com", "https://mcp.example.com"},
		// A trailing slash is tolerated: the WHATWG URL parser adds one.
		{"https://mcp.example.com/", "https://mcp.example.com"},
		{"https://mcp.example.com/mcp", "https://mcp.example.com/mcp"},
		{"https://mcp.example.com/mcp/", "https://mcp.example.com/mcp"},
		// Scheme and host are case-insensitive; the path is not.
		{"HTTPS://MCP.Example.COM/MCP", "https://mcp.example.com/MCP"},
		// Default ports go, others stay.
		{"https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"},
		{"http://127.0.0.1:80/api", "http://127.0.0.1/api"},
		{"http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"},
		{"https://mcp.example.com:8443", "https://mcp.example.com:8443"},
		{"http://[::1]:8080/mcp", "http://[::1]:8080/mcp"},
		{"http://[::1]/", "http://[::1]"},
		// Query and percent-encoding are the resource's own.
		{"https://api.example.com/v1?tenant=A", "https://api.example.com/v1?tenant=A"},
		{"https://api.example.com/a%2Fb", "https://api.example.com/a%2Fb"},
		{"https://api.example.com/mcp?", "https://api.example.com/mcp"},

		{"", ""},
		{"/mcp", ""},                                 // relative
		{"mcp.example.com", ""},                      // no scheme
		{"https://mcp.example.com/#frag", ""},        // fragment (RFC 8707 §2)
		{"https://mcp.example.com#", ""},             // empty fragment
		{"https://user:pw@mcp.example.com", ""},      // credentials
		{"https:///mcp", ""},                         // no host
		{"https:mcp.example.com", ""},                // opaque
		{"urn:example:resource", ""},                 // not http(s)
		{"ftp://mcp.example.com", ""},                // not http(s)
		{"javascript:alert(1)", ""},                  // not http(s)
		{"https://mcp.example.com/a b", ""},          // space
		{"https://mcp.example.com/\x00", ""},         // control character
		{"https://mcp.example.com:99999999999", ""},  // bad port
		{"https://mcp.example.com:0", ""},            // bad port
		{"https://mcp.example.com:0443", ""},         // two spellings of one port
		{"https://mcp.example.com/%zz", ""},          // bad escape
		{"https://" + strings.Repeat("a", 2048), ""}, // too long
	} {
		got, err := CanonicalResource(tc.raw)
		if tc.want == "" {
			if err == nil {
				t.Errorf("CanonicalResource(%q) = %q, want an error", tc.raw, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CanonicalResource(%q) = %q, %v; want %q", tc.raw, got, err, tc.want)
		}
		// Canonical forms are fixed points.
		if again, err := CanonicalResource(got); err != nil || again != got {
			t.Errorf("CanonicalResource(%q) = %q, %v; not a fixed point", got, again, err)
		}
	}
}
