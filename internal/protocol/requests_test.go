package protocol

import (
	"net/url"
	"slices"
	"testing"
)

func TestRepeatedParameter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query, want string
	}{
		{"", ""},
		{"grant_type=client_credentials&scope=a+b", ""},
		{"resource=https://a.example&resource=https://b.example", ""},
		{"audience=a&audience=b&scope=x", ""},
		{"grant_type=refresh_token&grant_type=client_credentials", "grant_type"},
		{"scope=a&scope=b", "scope"},
		{"scope=a&scope=a", "scope"},
		{"scope=&scope=a", "scope"},
		{"code=x&client_id=a&client_id=b&code=y", "client_id"},
		{"refresh_token=a&refresh_token=b", "refresh_token"},
		{"code_verifier=a&code_verifier=b", "code_verifier"},
		{"token=a&token=b", "token"},
		{"redirect_uri=a&redirect_uri=b&resource=r&resource=s", "redirect_uri"},
	} {
		form, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		if got := RepeatedParameter(form); got != tc.want {
			t.Errorf("RepeatedParameter(%q) = %q, want %q", tc.query, got, tc.want)
		}
	}
}

func TestRepeatedAuthorizeParameter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query, want string
	}{
		{"response_type=code&client_id=c&redirect_uri=r&scope=a+b&state=s", ""},
		// A host's consent form posting its own list to the same URL.
		{"client_id=c&grant_scope=a&grant_scope=b&decision=allow", ""},
		{"resource=https://a.example&resource=https://b.example", ""},
		{"client_id=a&client_id=b", "client_id"},
		{"redirect_uri=a&redirect_uri=b", "redirect_uri"},
		{"scope=a&scope=b", "scope"},
		{"state=a&state=b", "state"},
		{"response_type=code&response_type=token", "response_type"},
		{"code_challenge=a&code_challenge=b", "code_challenge"},
		{"code_challenge_method=S256&code_challenge_method=plain", "code_challenge_method"},
		{"nonce=a&nonce=b&state=x&state=y", "nonce"},
	} {
		form, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		if got := RepeatedAuthorizeParameter(form); got != tc.want {
			t.Errorf("RepeatedAuthorizeParameter(%q) = %q, want %q", tc.query, got, tc.want)
		}
	}
	if !slices.IsSorted(AuthorizeParams) {
		t.Error("AuthorizeParams is not sorted: the first repeated name would depend on the list's order")
	}
}

func TestRedirectURIAllowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		registered []string
		public     bool
		raw        string
		want       bool
	}{
		{"omitted", []string{"https://app.example/cb"}, false, "", true},
		{"exact https", []string{"https://app.example/cb"}, false, "https://app.example/cb", true},
		{"exact loopback with port", []string{"http://127.0.0.1:9/cb"}, false, "http://127.0.0.1:9/cb", true},
		{"exact loopback without port", []string{"http://127.0.0.1/cb"}, false, "http://127.0.0.1/cb", true},
		// The finding: fosite's any-port rule for a confidential client.
		{"confidential, registered port, other port", []string{"http://127.0.0.1:9/cb"}, false, "http://127.0.0.1:8765/cb", false},
		{"confidential, no registered port, any port", []string{"http://127.0.0.1/cb"}, false, "http://127.0.0.1:8765/cb", false},
		{"public, registered port, other port", []string{"http://127.0.0.1:9/cb"}, true, "http://127.0.0.1:8765/cb", false},
		{"public, registered port, same port", []string{"http://127.0.0.1:9/cb"}, true, "http://127.0.0.1:9/cb", true},
		// RFC 8252 §7.3: a native app registered without a port.
		{"public, no registered port, any port", []string{"http://127.0.0.1/cb"}, true, "http://127.0.0.1:8765/cb", true},
		{"public, IPv6 loopback, any port", []string{"http://[::1]/cb"}, true, "http://[::1]:51004/cb", true},
		{"public, other loopback address", []string{"http://127.0.0.1/cb"}, true, "http://127.0.0.2:8765/cb", false},
		{"public, other family", []string{"http://127.0.0.1/cb"}, true, "http://[::1]:8765/cb", false},
		{"public, other path", []string{"http://127.0.0.1/cb"}, true, "http://127.0.0.1:8765/cb/x", false},
		{"public, other query", []string{"http://127.0.0.1/cb?a=1"}, true, "http://127.0.0.1:8765/cb?a=2", false},
		{"public, same query", []string{"http://127.0.0.1/cb?a=1"}, true, "http://127.0.0.1:8765/cb?a=1", true},
		{"public, https registered", []string{"https://127.0.0.1/cb"}, true, "http://127.0.0.1:8765/cb", false},
		{"public, https requested", []string{"http://127.0.0.1/cb"}, true, "https://127.0.0.1:8765/cb", false},
		{"public, localhost is a name", []string{"http://localhost/cb"}, true, "http://localhost:8765/cb", false},
		{"public, credentials", []string{"http://127.0.0.1/cb"}, true, "http://u:p@127.0.0.1:8765/cb", false},
		{"public, not a loopback", []string{"http://127.0.0.1/cb"}, true, "http://127.0.0.1.evil.example:8765/cb", false},
		{"public, case differs", []string{"http://127.0.0.1/cb"}, true, "http://127.0.0.1:8765/CB", false},
		{"unregistered https", []string{"https://app.example/cb"}, true, "https://app.example/cb/", false},
	} {
		if got := RedirectURIAllowed(tc.registered, tc.public, tc.raw); got != tc.want {
			t.Errorf("%s: RedirectURIAllowed(%q, public %v, %q) = %v, want %v", tc.name, tc.registered, tc.public, tc.raw, got, tc.want)
		}
	}
}
