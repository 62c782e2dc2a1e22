package protocol

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// ParamResource is RFC 8707's resource indicator: the protected resource a
// client wants a token for, on the authorization request and at the token
// endpoint. It may be repeated (several resources).
const ParamResource = "resource"

// ErrorInvalidTarget is RFC 8707 §2's error code for a resource the
// authorization server does not know, or that is malformed.
const ErrorInvalidTarget = "invalid_target"

// ResourceRule says in words what CanonicalResource accepts.
const ResourceRule = "an absolute http(s) URI with a host, without credentials or fragment"

// CanonicalResource returns the canonical form of raw, a resource
// indicator (RFC 8707 §2) or a configured resource URI, so that two
// spellings of one resource compare equal as strings:
//
//   - an absolute http or https URI with a host, no credentials, no fragment
//     (RFC 8707: "MUST NOT include a fragment component");
//   - the scheme and the host lower-case (RFC 3986 §6.2.2.1), the default
//     port (443 for https, 80 for http) dropped;
//   - one trailing slash dropped, so https://mcp.example.com/ is
//     https://mcp.example.com and https://x.example/mcp/ is
//     https://x.example/mcp (the MCP specification's canonical form has no
//     trailing slash; clients built on the WHATWG URL parser add one);
//   - the path and the query otherwise kept byte for byte: their case and
//     their percent-encoding are the resource's own.
//
// The error says what is wrong with raw.
func CanonicalResource(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("empty")
	}
	if len(raw) > MaxURILength {
		return "", fmt.Errorf("longer than %d characters", MaxURILength)
	}
	if strings.Contains(raw, "#") {
		return "", errors.New("must not have a fragment")
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] <= ' ' || raw[i] == 0x7f {
			return "", errors.New("must not contain spaces or control characters")
		}
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" {
		return "", errors.New("must be an absolute URI")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", fmt.Errorf("scheme %q is not http or https", u.Scheme)
	}
	if u.User != nil {
		return "", errors.New("must not carry credentials")
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", errors.New("needs a host")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 literal
	}
	switch port := u.Port(); {
	case port == "", scheme == "https" && port == "443", scheme == "http" && port == "80":
	default:
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || port[0] == '0' {
			return "", fmt.Errorf("port %q is not a port number", port)
		}
		host += ":" + port
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	out := scheme + "://" + host + path
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out, nil
}
