package protocol

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the input rules.
const (
	MaxOrganizationLen   = 128
	MaxAgentSessionIDLen = 128
	MaxScopeTokenLen     = 128
	// MaxURILength bounds a redirect URI (and any other URL deputy stores).
	MaxURILength = 2048
	// MaxClientIDLen bounds a client id deputy reads from a request of its
	// own (the consent page and API): a client id may be a URL (a client
	// ID metadata document).
	MaxClientIDLen = MaxURILength
	// MaxClientNameLength bounds a client's display name (an app's name, a
	// registered client's client_name), in characters.
	MaxClientNameLength = 64
)

// What each rule accepts, in words, for error messages; every refusal of
// the same input says the same thing wherever it happens.
const (
	OrganizationRule   = "1 to 128 printable characters without spaces"
	AgentSessionIDRule = "1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
	ScopeTokenRule     = `1 to 128 printable ASCII characters without spaces, '"' or '\'`
	ClientIDRule       = "1 to 2048 bytes of UTF-8 without control characters"
)

// ValidOrganization reports whether org is a well-formed organization id:
// 1–128 bytes of printable characters, no white space, valid UTF-8.
func ValidOrganization(org string) bool {
	if org == "" || len(org) > MaxOrganizationLen {
		return false
	}
	for _, r := range org {
		// Invalid UTF-8 decodes to the replacement character.
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// ValidClientID reports whether id can be a client id in a request deputy
// reads itself (the consent page and API name the agent platform an
// approval is for): 1–2048 bytes of valid UTF-8 without control
// characters. It is loose on purpose: client ids are the host's to choose
// and may be URLs; whether one exists is the client store's answer.
func ValidClientID(id string) bool {
	if id == "" || len(id) > MaxClientIDLen {
		return false
	}
	for _, r := range id {
		// Invalid UTF-8 decodes to the replacement character.
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// CheckClientName returns a client's display name with the white space
// around it trimmed, if it is at most MaxClientNameLength characters of
// valid UTF-8 without control characters. Whether a name is required is the
// caller's rule: "" passes. The error says what is wrong.
func CheckClientName(raw string) (string, error) {
	name := strings.TrimSpace(raw)
	switch {
	case utf8.RuneCountInString(name) > MaxClientNameLength:
		return "", fmt.Errorf("at most %d characters", MaxClientNameLength)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }):
		return "", errors.New("must not contain control characters")
	}
	return name, nil
}

// ValidAgentSessionID reports whether id is a well-formed agent session id:
// 1–128 characters of [A-Za-z0-9._:-].
func ValidAgentSessionID(id string) bool {
	if id == "" || len(id) > MaxAgentSessionIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidScopeToken reports whether s is a scope-token of RFC 6749 §3.3
// (%x21 / %x23-5B / %x5D-7E: printable ASCII but space, '"' and '\') of at
// most 128 characters.
func ValidScopeToken(s string) bool {
	if s == "" || len(s) > MaxScopeTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// CheckRedirectURI follows the OAuth 2.0 Security BCP and RFC 8252: https
// with a host; http only to a loopback address (any port: RFC 8252 §7.3);
// or a private-use scheme for native apps. Never a fragment, never
// credentials. The error says what is wrong.
//
// A private-use scheme should be a reverse domain name
// (com.example.app:/callback, RFC 8252 §7.1), but clients in use register
// single-label ones (cursor://…), so any scheme is accepted except those a
// browser or an operating system gives a meaning of its own
// (reservedSchemes): a redirect to javascript: or file: is no app's.
func CheckRedirectURI(raw string) error {
	if len(raw) > MaxURILength {
		return fmt.Errorf("longer than %d characters", MaxURILength)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() {
		return errors.New("must be an absolute URI")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return errors.New("must not have a fragment")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("must not contain spaces or control characters")
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme == "https":
		if u.Hostname() == "" {
			return errors.New("needs a host")
		}
	case scheme == "http":
		if !IsLoopback(u.Hostname()) {
			return errors.New("http is allowed only for loopback addresses; use https")
		}
	case reservedSchemes[scheme]:
		return fmt.Errorf("scheme %q is not allowed", u.Scheme)
	default:
		// A private-use scheme, e.g. com.example.app:/callback.
	}
	return nil
}

// reservedSchemes are URI schemes that browsers or operating systems handle
// themselves: never an app's private-use redirect scheme.
var reservedSchemes = map[string]bool{
	"javascript": true, "vbscript": true, "data": true, "file": true, "about": true,
	"blob": true, "filesystem": true, "view-source": true, "chrome": true,
	"ftp": true, "ws": true, "wss": true, "mailto": true, "tel": true, "sms": true,
	"urn": true, "intent": true, "content": true, "resource": true,
}

// CheckClientIDURL checks that raw can be the client id of a client ID
// metadata document (draft-ietf-oauth-client-id-metadata-document §3): an
// https URL with a host and a path, without dot segments, fragment,
// credentials, spaces or control characters. With loopbackHTTP, http to a
// loopback host is accepted too (development and tests only). The error
// says what is wrong.
func CheckClientIDURL(raw string, loopbackHTTP bool) error {
	if len(raw) > MaxClientIDLen {
		return fmt.Errorf("longer than %d characters", MaxClientIDLen)
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' || r == '\\' }) {
		return errors.New("must not contain spaces, control characters, '#' or '\\'")
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Opaque != "" {
		return errors.New("must be an absolute https URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopbackHTTP && IsLoopback(u.Hostname()):
	default:
		return errors.New("must be an https URL")
	}
	if u.Hostname() == "" {
		return errors.New("needs a host")
	}
	if u.User != nil {
		return errors.New("must not carry credentials")
	}
	if u.Path == "" || u.Path == "/" {
		return errors.New("needs a path (e.g. /client.json)")
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return errors.New("must not contain . or .. path segments")
		}
	}
	return nil
}

// IsLoopback reports whether host (without port) names the loopback
// interface: "localhost" or a loopback IP address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ValidIssuer reports whether issuer is an absolute http(s) URL with a host
// and without query or fragment, as OAuth 2.0 metadata (RFC 8414) requires.
func ValidIssuer(issuer string) bool {
	u, err := url.Parse(issuer)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}
