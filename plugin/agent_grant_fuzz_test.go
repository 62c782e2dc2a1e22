package plugin_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ory/fosite"

	"github.com/deputyauth/deputy/handlers/agenttoken"
	"github.com/deputyauth/deputy/internal/clientsecret"
	"github.com/deputyauth/deputy/internal/protocol"
	"github.com/deputyauth/deputy/plugin"
	"github.com/deputyauth/deputy/scope"
	"github.com/deputyauth/deputy/storage"
	"github.com/deputyauth/deputy/storage/storagetest"
)

// The agent platform of the agent-token fuzz targets.
const (
	fuzzAgentClient = "agent-platform"
	fuzzWebClient   = "web"
)

// agentIdP is a plugin with the agent-token grant composed the way a host
// composes it (cmd/deputy-idp), an agent platform with a secret, and user
// access tokens to present as subject_token. In the fuzz inputs, these
// placeholders stand for the tokens of this run:
//
//	__SUBJECT__  alice's token, bound to no organization (docs:read docs:write admin:read)
//	__ACME__     alice's token bound to acme
//	__EXPIRED__  alice's expired token
//	__SECRET__   the agent platform's secret
type agentIdP struct {
	*fuzzIdP
	verifier     *agenttoken.AgentVerifier
	secret       string
	placeholders *strings.Replacer
}

func newAgentIdP(tb testing.TB, s *storage.Store) *agentIdP {
	tb.Helper()
	return newAgentIdPConfig(tb, s, nil)
}

// newAgentIdPConfig is newAgentIdP with mod, when not nil, changing the
// plugin's config last.
func newAgentIdPConfig(tb testing.TB, s *storage.Store, mod func(*plugin.Config)) *agentIdP {
	tb.Helper()
	ctx := context.Background()
	a := &agentIdP{}
	a.fuzzIdP = newFuzzIdPConfig(tb, s, true, mod)
	a.verifier = &agenttoken.AgentVerifier{Keys: a.p.Keys(), Issuer: a.p.Config().Issuer}

	for _, c := range []*storage.Client{
		{ID: fuzzAgentClient, Name: "agent platform", GrantTypes: []string{plugin.GrantTypeAgentToken},
			Scopes: []string{"docs:read", "docs:write", "admin:read"}},
		{ID: fuzzWebClient, Name: "web", GrantTypes: []string{plugin.GrantTypeAuthorizationCode},
			ResponseTypes: []string{"code"}, RedirectURIs: []string{"https://app.example/cb"},
			Scopes: []string{"docs:read", "docs:write", "admin:read"}},
	} {
		if err := s.CreateClient(ctx, c); err != nil {
			tb.Fatal(err)
		}
	}
	secret, hash, prefix, err := clientsecret.NewClientSecret()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.CreateClientSecret(ctx, fuzzAgentClient, hash, prefix); err != nil {
		tb.Fatal(err)
	}
	a.secret = secret
	hour := time.Now().Add(time.Hour)
	a.placeholders = strings.NewReplacer(
		"__SUBJECT__", a.userToken(tb, "", hour),
		"__ACME__", a.userToken(tb, "acme", hour),
		"__EXPIRED__", a.userToken(tb, "", time.Now().Add(-time.Minute)),
		"__SECRET__", secret,
	)
	// The harness itself works: a well-formed request gets its token, so
	// the fuzzer's mutations start from a request that reaches the minting.
	valid := url.Values{"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {"__SUBJECT__"},
		"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {"s1"}, "organization": {"acme"}}
	if w := a.post(a.placeholders.Replace(valid.Encode()), true); w.Code != http.StatusOK {
		tb.Fatalf("a well-formed agent-token request: %d %s", w.Code, w.Body.String())
	}
	return a
}

// userToken stores an access token of alice's through the web app, as the
// authorization-code flow would, and returns it.
func (a *agentIdP) userToken(tb testing.TB, org string, expires time.Time) string {
	tb.Helper()
	ctx := context.Background()
	c, err := a.store.GetClient(ctx, fuzzWebClient)
	if err != nil {
		tb.Fatal(err)
	}
	req := fosite.NewRequest()
	req.ID = storage.NewID(16)
	req.Client = c
	req.RequestedAt = time.Now().UTC()
	req.RequestedScope = []string{"docs:read", "docs:write", "admin:read"}
	req.GrantedScope = req.RequestedScope
	sess := a.p.NewSession("alice", org)
	sess.SetExpiresAt(fosite.AccessToken, expires)
	req.Session = sess
	tok, sig, err := a.p.HMACStrategy().GenerateAccessToken(ctx, req)
	if err != nil {
		tb.Fatal(err)
	}
	if err := a.store.CreateAccessTokenSession(ctx, sig, req); err != nil {
		tb.Fatal(err)
	}
	return tok
}

// post sends body to the token endpoint, authenticated as the agent platform
// with HTTP Basic unless basic is false.
func (a *agentIdP) post(body string, basic bool) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, plugin.TokenPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(fuzzAgentClient), url.QueryEscape(a.secret))
	}
	w := httptest.NewRecorder()
	a.h.ServeHTTP(w, req)
	return w
}

// checkTokenAnswer is what every answer of the token endpoint must be: never
// a 5xx; a 200 is an agent token whose scopes never exceed what alice holds
// read-only in its organization (no approval exists in these tests); any
// other status is an RFC 6749 §5.2 error object.
func (a *agentIdP) checkTokenAnswer(t *testing.T, input any, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code >= 500 {
		t.Fatalf("%q: status %d: %s", input, w.Code, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%q: status %d with Content-Type %q: %s", input, w.Code, ct, w.Body.String())
	}
	if w.Code != http.StatusOK {
		var e map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Fatalf("%q: status %d with non-JSON body %q", input, w.Code, w.Body.String())
		}
		code, _ := e["error"].(string)
		if code == "" || strings.IndexFunc(code, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) >= 0 {
			t.Fatalf("%q: status %d with error %#v", input, w.Code, e["error"])
		}
		if d, ok := e["error_description"]; ok {
			if _, isString := d.(string); !isString {
				t.Fatalf("%q: error_description %#v", input, d)
			}
		}
		if w.Code < 400 {
			t.Fatalf("%q: status %d for error %s", input, w.Code, code)
		}
		return
	}
	var tr struct {
		AccessToken     string `json:"access_token"`
		TokenType       string `json:"token_type"`
		IssuedTokenType string `json:"issued_token_type"`
		Scope           string `json:"scope"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &tr); err != nil || tr.AccessToken == "" ||
		!strings.EqualFold(tr.TokenType, "bearer") || tr.IssuedTokenType != protocol.TokenTypeAccessToken {
		t.Fatalf("%q: 200 with body %q (%v)", input, w.Body.String(), err)
	}
	if cc := w.Header().Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Fatalf("%q: token answered with Cache-Control %q", input, cc)
	}
	org, err := tokenOrg(tr.AccessToken)
	if err != nil {
		t.Fatalf("%q: token %q: %v", input, tr.AccessToken, err)
	}
	id, err := a.verifier.Verify(context.Background(), tr.AccessToken, org)
	if err != nil {
		t.Fatalf("%q: minted token does not verify: %v", input, err)
	}
	held, err := a.dir.UserScopes(context.Background(), "alice", id.Organization)
	if err != nil {
		t.Fatal(err)
	}
	readOnly := a.p.Catalog().ReadOnly(held)
	if id.Subject != "alice" || id.ClientID != fuzzAgentClient || len(id.Scopes) == 0 ||
		len(scope.Missing(id.Scopes, readOnly)) > 0 || scope.Join(id.Scopes) != tr.Scope {
		t.Fatalf("%q: minted %+v (scope %q); alice holds %v read-only in %q", input, id, tr.Scope, readOnly, id.Organization)
	}
}

// tokenOrg reads the org claim of an agent token, to verify the token for
// that organization.
func tokenOrg(tok string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(tok, protocol.AgentTokenPrefix), ".")
	if len(parts) != 3 {
		return "", errors.New("not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		Org string `json:"org"`
	}
	err = json.Unmarshal(raw, &c)
	return c.Org, err
}

// FuzzAgentGrantForm posts arbitrary form bodies to the token endpoint as
// the agent platform (HTTP Basic, unless the body has a client_id): the agent-token grant's form parsing, and
// everything fosite does before it. Placeholders (see agentIdP) in the body
// become this run's tokens, so the committed seeds reach the minting.
//
//	go test -run '^$' -fuzz FuzzAgentGrantForm ./plugin/
func FuzzAgentGrantForm(f *testing.F) {
	f.Add("grant_type=" + url.QueryEscape(plugin.GrantTypeAgentToken) + "&subject_token=__SUBJECT__&subject_token_type=" +
		url.QueryEscape(protocol.TokenTypeAccessToken) + "&agent_session_id=s1&organization=acme")
	var idps []*agentIdP
	for _, s := range fuzzStores(f) {
		idps = append(idps, newAgentIdP(f, s))
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, a := range idps {
			// A body naming a client authenticates in the body alone
			// (client_secret_post), so arbitrary client ids are fuzzed too.
			a.checkTokenAnswer(t, body, a.post(a.placeholders.Replace(body), !strings.Contains(body, "client_id=")))
		}
	})
}

// FuzzAgentGrantParams sets each parameter of an agent-token request to an
// arbitrary value (placeholders as in agentIdP). dup repeats parameters:
// bit i sends the i-th parameter twice (the second time as "dup" says in
// its high bits: same value or empty). auth picks client authentication:
// 0 HTTP Basic, 1 client_secret_post, 2 none, 3 a wrong secret.
//
//	go test -run '^$' -fuzz FuzzAgentGrantParams ./plugin/
func FuzzAgentGrantParams(f *testing.F) {
	f.Add(plugin.GrantTypeAgentToken, "__SUBJECT__", protocol.TokenTypeAccessToken, "s1", "acme", "docs:read", "", uint8(0), uint8(0))
	var idps []*agentIdP
	for _, s := range fuzzStores(f) {
		idps = append(idps, newAgentIdP(f, s))
	}
	f.Fuzz(func(t *testing.T, grantType, subjectToken, subjectTokenType, sessionID, org, scopes, audience string, dup, auth uint8) {
		for _, a := range idps {
			names := []string{"grant_type", "subject_token", "subject_token_type", "agent_session_id", "organization", "scope", "audience"}
			values := []string{grantType, subjectToken, subjectTokenType, sessionID, org, scopes, audience}
			form := url.Values{}
			for i, n := range names {
				v := a.placeholders.Replace(values[i])
				if v == "" && n != "grant_type" && n != "subject_token" {
					continue // absent rather than empty, but for those two
				}
				form.Add(n, v)
				if i < 7 && dup&(1<<i) != 0 {
					if dup&0x80 != 0 {
						form.Add(n, "")
					} else {
						form.Add(n, v)
					}
				}
			}
			basic := true
			switch auth % 4 {
			case 1:
				basic = false
				form.Set("client_id", fuzzAgentClient)
				form.Set("client_secret", a.secret)
			case 2:
				basic = false
			case 3:
				basic = false
				form.Set("client_id", fuzzAgentClient)
				form.Set("client_secret", a.secret+"x")
			}
			a.checkTokenAnswer(t, form, a.post(form.Encode(), basic))
		}
	})
}

// TestMalformedAudienceIsClientError: an audience that does not parse as a
// URL is the client's mistake (400 invalid_request) at both of deputy's
// grants, not a database outage. fosite wraps the *url.Error, a net.Error,
// which storage.IsUnavailable took for a network failure when it guessed
// outages from net.Error, and the token endpoint answered 503 (found by
// FuzzAgentGrantParams; then checked by removing audienceError from the
// handlers: both rows got 503). Storage now classifies its own errors, so
// no url.Error reads as ErrUnavailable whatever the handlers do.
func TestMalformedAudienceIsClientError(t *testing.T) {
	t.Parallel()
	storagetest.Each(t, func(t *testing.T, s *storage.Store) {
		a := newAgentIdP(t, s)
		w := a.do(http.MethodPost, "/api/apps", "alice", "application/json", []byte(`{"name":"robot","scopes":["docs:read"]}`))
		var app plugin.App
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &app) != nil {
			t.Fatalf("create app: %d %s", w.Code, w.Body.String())
		}
		w = a.do(http.MethodPost, "/api/apps/"+app.ID+"/secrets", "alice", "", nil)
		var sec plugin.Secret
		if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &sec) != nil {
			t.Fatalf("create secret: %d %s", w.Code, w.Body.String())
		}
		for name, form := range map[string]url.Values{
			"agent-token": {"grant_type": {plugin.GrantTypeAgentToken}, "subject_token": {"__SUBJECT__"},
				"subject_token_type": {protocol.TokenTypeAccessToken}, "agent_session_id": {"s1"}, "organization": {"acme"}},
			"client_credentials": {"grant_type": {plugin.GrantTypeClientCredentials}, "organization": {"acme"},
				"client_id": {app.ID}, "client_secret": {sec.Secret}},
		} {
			for _, aud := range []string{"%", "https://a.example/%zz", "::"} {
				form.Set("audience", aud)
				w := a.post(a.placeholders.Replace(form.Encode()), name == "agent-token")
				var e struct{ Error string }
				if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error != "invalid_request" {
					t.Errorf("%s with audience %q: %d %s, want 400 invalid_request", name, aud, w.Code, w.Body.String())
				}
			}
		}
	})
}
