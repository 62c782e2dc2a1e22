package protocol

import (
	"strings"
	"testing"
)

func TestValidOrganization(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		org  string
		want bool
	}{
		{"acme", true},
		{"org_42.eu-west", true},
		{"Ünïcødé", true},
		{strings.Repeat("o", 128), true},
		{"", false},
		{strings.Repeat("o", 129), false},
		{strings.Repeat("é", 65), false}, // 130 bytes: the limit is in bytes
		// consent used to accept these, and store grants nothing could mint.
		{"acme corp", false},
		{"acme\tcorp", false},
		{"acme\u00a0corp", false}, // no-break space
		{"acme\u200b", false},     // zero-width space: not printable
		{"ac\x00me", false},
		{"acme\n", false},
		{"\xff\xfe", false},   // invalid UTF-8
		{"acme\ufffd", false}, // what invalid UTF-8 decodes to
		{"acme\u202e", false}, // right-to-left override
		{"<img/src=x>", true}, // printable: escaping is the pages' job
	} {
		if got := ValidOrganization(tc.org); got != tc.want {
			t.Errorf("ValidOrganization(%q) = %v, want %v", tc.org, got, tc.want)
		}
	}
}

func TestValidAgentSessionID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"a": true, "A-z_0.9:x": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a b": false, "a/b": false, "é": false, "a\n": false, "<x>": false,
		"a\x00": false, "%41": false,
	} {
		if got := ValidAgentSessionID(id); got != want {
			t.Errorf("ValidAgentSessionID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestValidClientID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"6d09c78cf14378d4d4cdd8915f71d476":    true,
		"https://app.example/client.json":     true,
		"my app":                              true,
		"Ünïcødé":                             true,
		strings.Repeat("c", MaxClientIDLen):   true,
		"":                                    false,
		strings.Repeat("c", MaxClientIDLen+1): false,
		"a\x00b":                              false,
		"a\nb":                                false,
		"\xff":                                false,
		"a\u0085b":                            false,
	} {
		if got := ValidClientID(id); got != want {
			t.Errorf("ValidClientID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestValidScopeToken(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"docs:read": true, "openid": true, "a": true, "!#[]~": true, strings.Repeat("s", 128): true,
		"": false, strings.Repeat("s", 129): false, "a b": false, `a"b`: false, `a\b`: false,
		"a\tb": false, "é": false, "a\x7f": false, "a\x00": false,
	} {
		if got := ValidScopeToken(s); got != want {
			t.Errorf("ValidScopeToken(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestCheckRedirectURI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"https://app.example/cb", true},
		{"https://app.example:8443/cb?x=1", true},
		{"http://127.0.0.1:9000/cb", true},
		{"http://[::1]/cb", true},
		{"http://localhost/cb", true},
		{"com.example.app:/callback", true},
		{"cursor://anysphere.cursor-retrieval/oauth/callback", true},
		{"http://127.0.0.1:51234/callback", true},
		{"http://[::1]:8080/cb", true},
		{"data:text/html,hi", false},
		{"file:///etc/passwd", false},
		{"VBScript:msgbox", false},
		{"https://app.example/c b", false},
		{"https://app.example/cb\n", false},
		{"http://127.0.0.2.example/cb", false},
		{"http://app.example/cb", false},
		{"https:///cb", false},
		{"https://app.example/cb#frag", false},
		{"https://app.example/cb#", false},
		{"https://user:pw@app.example/cb", false},
		{"/relative", false},
		{"javascript:alert(1)", false},
		{"ftp://localhost/cb", false},
		{"https://app.example/" + strings.Repeat("a", MaxURILength), false},
		{"%zz", false},
	} {
		if err := CheckRedirectURI(tc.uri); (err == nil) != tc.ok {
			t.Errorf("CheckRedirectURI(%q) = %v, want ok=%v", tc.uri, err, tc.ok)
		}
	}
}

func TestCheckClientIDURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id       string
		loopback bool
		ok       bool
	}{
		{"https://app.example/client.json", false, true},
		{"https://app.example:8443/oauth/client?v=2", false, true},
		{"http://127.0.0.1:9000/client.json", true, true},
		{"http://localhost/client.json", true, true},
		{"http://[::1]:1/c", true, true},
		{"http://127.0.0.1:9000/client.json", false, false},
		{"http://app.example/client.json", true, false},
		{"https://app.example", false, false},
		{"https://app.example/", false, false},
		{"https://app.example/a/../client.json", false, false},
		{"https://app.example/./client.json", false, false},
		{"https://app.example/a/%2e%2e/client.json", false, false},
		{"https://app.example/client.json#x", false, false},
		{"https://user:pw@app.example/client.json", false, false},
		{"https://app.example/client json", false, false},
		{"https:///client.json", false, false},
		{"https:app.example/client.json", false, false},
		{"ftp://app.example/client.json", false, false},
		{"client-123", false, false},
		{"https://app.example/" + strings.Repeat("a", MaxClientIDLen), false, false},
	} {
		if err := CheckClientIDURL(tc.id, tc.loopback); (err == nil) != tc.ok {
			t.Errorf("CheckClientIDURL(%q, %v) = %v, want ok=%v", tc.id, tc.loopback, err, tc.ok)
		}
	}
}

func TestValidIssuer(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"https://idp.example": true, "http://127.0.0.1:8080": true, "https://idp.example/tenant": true,
		"": false, "idp.example": false, "ftp://idp.example": false, "https://": false,
		"https://idp.example?x=1": false, "https://idp.example#f": false,
	} {
		if got := ValidIssuer(s); got != want {
			t.Errorf("ValidIssuer(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestCheckClientName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"robot", "robot", true},
		{"  CI deploys  ", "CI deploys", true},
		{"", "", true}, // required or not is the caller's rule
		{strings.Repeat("é", MaxClientNameLength), strings.Repeat("é", MaxClientNameLength), true},
		{"<b>x</b>", "<b>x</b>", true}, // escaping is the pages' job
		{strings.Repeat("n", MaxClientNameLength+1), "", false},
		{"a\x00b", "", false},
		{"a\tb", "", false},
		{"a\u202eb", "", false}, // right-to-left override
		{"a\xffb", "", false},
	} {
		got, err := CheckClientName(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("CheckClientName(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
