package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	testOrg    = "acme"
	testUser   = "alice"
	readScope  = "projects:read"
	writeScope = "projects:write"
)

// opaqueStub stands in for the owned-apps engineer's verifier: the routing,
// not opaque-token checking, is under test here.
type opaqueStub struct {
	calls int
	err   error
	panic bool
}

func (o *opaqueStub) VerifyAccessToken(_ context.Context, token, org string) (*Identity, error) {
	o.calls++
	if o.panic {
		panic("boom")
	}
	if o.err != nil {
		return nil, o.err
	}
	if token != "dpy_at_good" {
		return nil, ErrInvalidToken
	}
	return &Identity{Subject: testUser, Organization: org, ClientID: "app", Scopes: []string{readScope}, Kind: KindAccess}, nil
}

// TestMiddlewareChallengesAndRouting: the shapes of the answers without a
// token, and that the prefix alone picks the verifier.
func TestMiddlewareChallengesAndRouting(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := IdentityFrom(r.Context())
		w.Write([]byte(id.Kind + ":" + id.Subject))
	})
	run := func(m *Middleware, scopes []string, headers ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for _, h := range headers {
			req.Header.Add("Authorization", h)
		}
		rec := httptest.NewRecorder()
		m.RequireScopes(scopes...)(ok).ServeHTTP(rec, req)
		return rec
	}
	org := func(*http.Request) string { return testOrg }

	// Without a Resource, challenges name the route's scopes and no
	// metadata (TestChallenges has them with one).
	t.Run("no token", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope})
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer scope="projects:read"` {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("other scheme", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer scope="projects:read"` {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("empty bearer", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Bearer ")
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token", scope="projects:read"` {
			t.Errorf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
	t.Run("two authorization headers", func(t *testing.T) {
		rec := run(&Middleware{Org: org}, []string{readScope}, "Bearer dpy_at_good", "Bearer dpy_at_good")
		if rec.Code != 400 {
			t.Errorf("%d", rec.Code)
		}
	})
	t.Run("oversized header", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "Bearer dpy_at_"+strings.Repeat("a", 64*1024))
		if rec.Code != 401 || stub.calls != 0 {
			t.Errorf("%d, verifier called %d times", rec.Code, stub.calls)
		}
	})
	t.Run("opaque token routed to the opaque verifier", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "bearer dpy_at_good")
		if rec.Code != 200 || rec.Body.String() != "access:"+testUser || stub.calls != 1 {
			t.Errorf("%d %q calls=%d", rec.Code, rec.Body.String(), stub.calls)
		}
	})
	t.Run("opaque token without the scope", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{}, ApprovalURL: func(string, string, string, []string) string { return "/x" }}, []string{writeScope}, "Bearer dpy_at_good")
		var body map[string]any
		json.Unmarshal(rec.Body.Bytes(), &body)
		// The challenge asks for what the token holds and what is missing.
		if rec.Code != 403 || rec.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="projects:read projects:write"` ||
			fmt.Sprint(body["missing_scopes"]) != "[projects:write]" || body["approval_url"] != nil {
			t.Errorf("%d %q %v", rec.Code, rec.Header().Get("WWW-Authenticate"), body)
		}
	})
	t.Run("the challenge names every scope the route needs", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{}}, []string{readScope, writeScope}, "Bearer dpy_at_good")
		var body insufficientScope
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != 403 || rec.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="projects:read projects:write"` ||
			strings.Join(body.MissingScopes, " ") != writeScope {
			t.Errorf("%d %q %+v", rec.Code, rec.Header().Get("WWW-Authenticate"), body)
		}
	})
	t.Run("agent prefix never reaches the opaque verifier", func(t *testing.T) {
		stub := &opaqueStub{}
		rec := run(&Middleware{Org: org, Opaque: stub}, []string{readScope}, "Bearer dpy_agt_x.y.z")
		if rec.Code != 401 || stub.calls != 0 {
			t.Errorf("%d calls=%d", rec.Code, stub.calls)
		}
	})
	t.Run("verifier internal error is a 401, not a 500", func(t *testing.T) {
		var reasons []string
		m := &Middleware{Org: org, Opaque: &opaqueStub{err: errors.New("a bug")}, OnRefuse: func(_, reason string) { reasons = append(reasons, reason) }}
		rec := run(m, []string{readScope}, "Bearer dpy_at_good")
		if rec.Code != 401 || strings.Join(reasons, ",") != RefusedVerifierError {
			t.Errorf("%d, refusals %v", rec.Code, reasons)
		}
	})
	t.Run("verifier that cannot decide now is a 503 with Retry-After, not a 401", func(t *testing.T) {
		var reasons []string
		m := &Middleware{Org: org, Opaque: &opaqueStub{err: fmt.Errorf("lookup: %w: connection refused", ErrUnavailable)}, OnRefuse: func(_, reason string) { reasons = append(reasons, reason) }}
		rec := run(m, []string{readScope}, "Bearer dpy_at_good")
		var body struct{ Error string }
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || body.Error != "temporarily_unavailable" {
			t.Errorf("%d Retry-After %q body %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
		// Not a challenge: the client is not told to get another token.
		if h := rec.Header().Get("WWW-Authenticate"); h != "" {
			t.Errorf("WWW-Authenticate %q on a 503", h)
		}
		if strings.Join(reasons, ",") != RefusedUnavailable {
			t.Errorf("refusals %v, want %s", reasons, RefusedUnavailable)
		}
	})
	t.Run("verifier panic is a 401, not a 500", func(t *testing.T) {
		rec := run(&Middleware{Org: org, Opaque: &opaqueStub{panic: true}}, []string{readScope}, "Bearer dpy_at_good")
		if rec.Code != 401 {
			t.Errorf("%d", rec.Code)
		}
	})
}
