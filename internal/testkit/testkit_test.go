package testkit_test

import (
	"context"
	"errors"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deputyauth/deputy/consent"
	"github.com/deputyauth/deputy/internal/testkit"
	"github.com/deputyauth/deputy/scope"
)

func TestDirectory(t *testing.T) {
	t.Parallel()
	down := errors.New("directory down")
	d := testkit.NewDirectory().
		Set("alice", "acme", "docs:read", "docs:write").
		Set("alice", "globex", "admin:read").
		Set("bob", testkit.AnyOrg, "docs:read").
		Set("bob", "initech").
		Set("carol", "acme", "docs:read").Disable("carol").
		Fail("dave", down)
	d.Set("erin", "acme", "docs:read")
	d.Remove("erin")
	for _, tc := range []struct {
		user, org string
		want      []string
		err       error
	}{
		{"alice", "acme", []string{"docs:read", "docs:write"}, nil},
		{"alice", "", []string{"admin:read", "docs:read", "docs:write"}, nil}, // the union
		{"alice", "other", nil, nil},
		{"bob", "anywhere", []string{"docs:read"}, nil},
		{"bob", "", []string{"docs:read"}, nil},
		{"bob", "initech", nil, nil}, // its own entry wins over AnyOrg
		{"carol", "acme", nil, scope.ErrUserDisabled},
		{"dave", "acme", nil, down},
		{"erin", "acme", nil, scope.ErrUserNotFound},
		{"nobody", "acme", nil, scope.ErrUserNotFound},
	} {
		got, err := d.UserScopes(context.Background(), tc.user, tc.org)
		if !errors.Is(err, tc.err) || !slices.Equal(got, tc.want) {
			t.Errorf("UserScopes(%s, %q) = %v, %v; want %v, %v", tc.user, tc.org, got, err, tc.want, tc.err)
		}
	}
	// What it returns is the caller's to change.
	got, _ := d.UserScopes(context.Background(), "alice", "acme")
	got[0] = "changed"
	if again, _ := d.UserScopes(context.Background(), "alice", "acme"); again[0] != "docs:read" {
		t.Errorf("a caller changed the directory: %v", again)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		s             testkit.Sessions
		cookie, auth  string
		want          string
		wantNoSession bool
	}{
		{"cookie", testkit.Sessions{Cookie: "sid"}, "alice", "", "alice", false},
		{"no cookie", testkit.Sessions{Cookie: "sid"}, "", "", "", true},
		{"bearer refused", testkit.Sessions{Cookie: "sid"}, "", "Bearer alice", "", true},
		{"bearer, sloppily", testkit.Sessions{Cookie: "sid", AlsoBearer: true}, "", "Bearer alice", "alice", false},
		{"cookie first", testkit.Sessions{Cookie: "sid", AlsoBearer: true}, "bob", "Bearer alice", "bob", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.cookie != "" {
			r.Header.Set("Cookie", "sid="+tc.cookie)
		}
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		got, err := tc.s.Authenticate(r)
		if got != tc.want || errors.Is(err, consent.ErrNoSession) != tc.wantNoSession {
			t.Errorf("%s: %q, %v", tc.name, got, err)
		}
	}
}

func TestClockAndBuffer(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := testkit.NewClock(t0)
	c.Advance(time.Minute)
	if !c.Now().Equal(t0.Add(time.Minute)) {
		t.Errorf("after Advance: %v", c.Now())
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Errorf("after Set: %v", c.Now())
	}
	var b testkit.Buffer
	done := make(chan struct{})
	go func() { defer close(done); b.Write([]byte("a")) }() //nolint:errcheck
	b.Write([]byte("b"))                                    //nolint:errcheck
	<-done
	if s := b.String(); s != "ab" && s != "ba" {
		t.Errorf("buffer %q", s)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	text := "# HELP x\n# TYPE x counter\ndeputy_a_total 1\ndeputy_b_total{k=\"v w\"} 2\n\ngo_goroutines 7\n"
	got := testkit.ParseMetrics(t, strings.NewReader(text))
	want := map[string]float64{"deputy_a_total": 1, `deputy_b_total{k="v w"}`: 2, "go_goroutines": 7}
	if !maps.Equal(got, want) {
		t.Errorf("ParseMetrics = %v, want %v", got, want)
	}
	scrapes := []map[string]float64{
		{"deputy_a_total": 1, "go_goroutines": 7},
		{"deputy_a_total": 2, "go_goroutines": 9, "deputy_g": 1},
	}
	first, step := testkit.MetricSteps(t, func() map[string]float64 { s := scrapes[0]; scrapes = scrapes[1:]; return s })
	if first["deputy_a_total"] != 1 {
		t.Errorf("first scrape %v", first)
	}
	moved := step("one more a", map[string]float64{"deputy_a_total": 1})
	if !maps.Equal(moved, map[string]float64{"deputy_a_total": 1, "go_goroutines": 2, "deputy_g": 1}) {
		t.Errorf("moved %v", moved)
	}
}
