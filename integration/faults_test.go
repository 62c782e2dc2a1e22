package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"
)

// The database-fault test (this file) and the load test (load_test.go) run
// only with DEPUTY_LONG_TESTS=1, which .ci/run sets. They need PostgreSQL:
// when the switch is on, a missing or unreachable server fails them instead
// of skipping them. Each test gets a PostgreSQL database of its own (not a
// schema): the fault test must be able to refuse connections to it.

// longTestPostgres skips t unless DEPUTY_LONG_TESTS=1 and returns the
// PostgreSQL server URL, failing t if there is none or it does not answer.
func longTestPostgres(t *testing.T) string {
	t.Helper()
	if os.Getenv("DEPUTY_LONG_TESTS") != "1" {
		t.Skip("DEPUTY_LONG_TESTS is not 1: the database-fault and load tests run in CI (.ci/run sets it)")
	}
	base := os.Getenv("DEPUTY_TEST_DATABASE_URL")
	if base == "" {
		t.Fatal("DEPUTY_LONG_TESTS=1 needs PostgreSQL, but DEPUTY_TEST_DATABASE_URL is not set (for example postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)")
	}
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		t.Fatalf("DEPUTY_TEST_DATABASE_URL %q is not a postgres:// URL", base)
	}
	return base
}

// openAdmin connects to the server at base for administration (creating,
// refusing and dropping databases), closed when t ends.
func openAdmin(t *testing.T, base string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s does not answer (DEPUTY_LONG_TESTS=1 requires it): %v", base, err)
	}
	return db
}

// newDatabase creates an empty database named prefix plus a random suffix
// on admin's server and returns its name and a DSN for it. The database is
// dropped, whoever is still connected, when t ends.
func newDatabase(t *testing.T, admin *sql.DB, base, prefix string) (name, dsn string) {
	t.Helper()
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name = prefix + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pq.QuoteIdentifier(name)+` WITH (FORCE)`); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("DEPUTY_TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	q := u.Query()
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return name, u.String()
}

// openDB opens dsn for the test's own queries, closed when t ends.
func openDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// loadTransport keeps enough idle connections for every worker, so that a
// stream of requests reuses them instead of exhausting loopback ports.
func loadTransport(workers int) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 4 * workers
	tr.MaxIdleConnsPerHost = 2 * workers
	return tr
}

// tokenRequest asks for a client_credentials token with HTTP Basic client
// authentication and returns the status, the answer's Content-Type and its
// body. It never fails the test: workers call it from their goroutines.
func tokenRequest(ctx context.Context, c *http.Client, base, id, secret, scope string) (int, string, []byte, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return send(c, req)
}

// approveRequest posts a JSON approval of a's binding with the session
// cookie in c's jar, as the consent page of base's origin would.
func approveRequest(ctx context.Context, c *http.Client, base string, a *approvalAttempt) (int, string, []byte, error) {
	raw, err := json.Marshal(map[string]any{
		"organization": a.Org, "clientId": a.Client, "sessionId": a.Session, "scopes": a.Requested, "decision": "approve",
	})
	if err != nil {
		return 0, "", nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/agent/approve", bytes.NewReader(raw))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Origin", base)
	return send(c, req)
}

func send(c *http.Client, req *http.Request) (int, string, []byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body, nil
}

// sessionClient is a client that carries b's cookies (its signed-in
// session) over tr, bounded by timeout.
func sessionClient(b *browser, tr http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{
		Jar:       b.c.Jar,
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// cleanUnavailable checks a 503 answer: a JSON object with an error code,
// nothing else. It returns what is wrong, or "".
func cleanUnavailable(contentType string, body []byte) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return fmt.Sprintf("503 with Content-Type %q, want application/json: %s", contentType, truncate(body))
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Sprintf("503 body is not a JSON object: %v: %s", err, truncate(body))
	}
	if s, _ := v["error"].(string); s == "" {
		return fmt.Sprintf("503 body has no error code: %s", truncate(body))
	}
	return ""
}

// approvalAttempt is one POST /agent/approve and what the client was told.
type approvalAttempt struct {
	Org, UserID, Client, Session string
	Requested                    []string
	Status                       int // 0: no answer
	// Granted is what a 200 answer says this approval added
	// (requested minus notGranted), GrantID and GrantScopes the grant as
	// the answer showed it.
	Granted     []string
	GrantID     string
	GrantScopes []string
}

// approvalAnswer is the part of a 200 approval answer the tests read.
type approvalAnswer struct {
	Decision   string   `json:"decision"`
	ID         string   `json:"id"`
	UserID     string   `json:"userId"`
	Org        string   `json:"organization"`
	Client     string   `json:"clientId"`
	Session    string   `json:"sessionId"`
	Scopes     []string `json:"scopes"`
	NotGranted []string `json:"notGranted"`
}

// readApproval fills a's answer fields from a 200 body.
func (a *approvalAttempt) readAnswer(body []byte) error {
	var ans approvalAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return fmt.Errorf("200 approval answer is not the JSON expected: %v: %s", err, truncate(body))
	}
	if ans.Decision != "approve" || ans.ID == "" || ans.Session != a.Session || ans.Org != a.Org || ans.Client != a.Client {
		return fmt.Errorf("200 approval answer does not describe the grant approved (session %s): %s", a.Session, truncate(body))
	}
	if a.UserID != "" && ans.UserID != a.UserID {
		return fmt.Errorf("approval as user %s answered a grant of user %s", a.UserID, ans.UserID)
	}
	a.UserID = ans.UserID
	a.GrantID = ans.ID
	a.GrantScopes = ans.Scopes
	for _, s := range a.Requested {
		if !slices.Contains(ans.NotGranted, s) {
			a.Granted = append(a.Granted, s)
		}
	}
	return nil
}

type bindingKey struct{ Org, UserID, Client, Session string }

type grantRow struct {
	ID string
	bindingKey
	Scopes []string
}

type auditRow struct {
	GrantID string
	bindingKey
	Scopes []string
}

func loadGrants(t *testing.T, db *sql.DB) []grantRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT id, organization, user_id, client_id, agent_session_id, scopes FROM agent_grants`)
	if err != nil {
		t.Fatalf("read agent_grants: %v", err)
	}
	defer rows.Close()
	var out []grantRow
	for rows.Next() {
		var g grantRow
		var scopes string
		if err := rows.Scan(&g.ID, &g.Org, &g.UserID, &g.Client, &g.Session, &scopes); err != nil {
			t.Fatalf("read agent_grants: %v", err)
		}
		if err := json.Unmarshal([]byte(scopes), &g.Scopes); err != nil {
			t.Fatalf("grant %s: scopes %q are not a JSON array: %v", g.ID, scopes, err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read agent_grants: %v", err)
	}
	return out
}

func loadApprovedAudit(t *testing.T, db *sql.DB) []auditRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT grant_id, organization, actor_user_id, client_id, agent_session_id, scopes
		FROM audit_events WHERE event = 'approved'`)
	if err != nil {
		t.Fatalf("read audit_events: %v", err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		var scopes string
		if err := rows.Scan(&a.GrantID, &a.Org, &a.UserID, &a.Client, &a.Session, &scopes); err != nil {
			t.Fatalf("read audit_events: %v", err)
		}
		if err := json.Unmarshal([]byte(scopes), &a.Scopes); err != nil {
			t.Fatalf("audit event of grant %s: scopes %q are not a JSON array: %v", a.GrantID, scopes, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read audit_events: %v", err)
	}
	return out
}

func scopeSet(lists ...[]string) map[string]bool {
	m := map[string]bool{}
	for _, l := range lists {
		for _, s := range l {
			m[s] = true
		}
	}
	return m
}

func setKey(m map[string]bool) string {
	var l []string
	for s := range m {
		l = append(l, s)
	}
	sort.Strings(l)
	return strings.Join(l, " ")
}

func subset(a, b map[string]bool) bool {
	for s := range a {
		if !b[s] {
			return false
		}
	}
	return true
}

// checkGrantIntegrity compares agent_grants and the "approved" audit events
// with what the clients were told. Every approval answered 200 must be in
// its binding's grant row (one row per organization, user, client and session,
// holding the union of the scopes approved for it) and have its audit
// event; no row may be half-written (empty scopes, or scopes its audit
// trail does not account for, or a scope never asked for).
//
// With exact set, every request was answered, so the database must hold
// exactly what the answers said: as many rows as bindings approved, each
// row's scopes the union of what its 200s granted, one audit event per 200.
// Without it (requests cut off by a fault may have committed without the
// client hearing so) the answers bound the database from below and the
// attempts from above.
func checkGrantIntegrity(t *testing.T, db *sql.DB, attempts []*approvalAttempt, exact bool) {
	t.Helper()
	type binding struct {
		attempted map[string]bool // every scope asked for, answered or not
		okScopes  map[string]bool // scopes granted by 200 answers
		ok        int
		tries     int
		grantIDs  map[string]bool // grant ids the 200 answers named
		okAudit   map[string]int  // 200 answers per granted-scope set
	}
	bindings := map[bindingKey]*binding{}
	okTotal := 0
	for _, a := range attempts {
		if a.UserID == "" {
			t.Fatalf("approval attempt for session %s has no user id", a.Session)
		}
		k := bindingKey{a.Org, a.UserID, a.Client, a.Session}
		b := bindings[k]
		if b == nil {
			b = &binding{attempted: map[string]bool{}, okScopes: map[string]bool{}, grantIDs: map[string]bool{}, okAudit: map[string]int{}}
			bindings[k] = b
		}
		b.tries++
		for s := range scopeSet(a.Requested) {
			b.attempted[s] = true
		}
		if a.Status == http.StatusOK {
			okTotal++
			b.ok++
			for s := range scopeSet(a.Granted) {
				b.okScopes[s] = true
			}
			b.grantIDs[a.GrantID] = true
			b.okAudit[setKey(scopeSet(a.Granted))]++
		}
	}

	grants := loadGrants(t, db)
	audits := loadApprovedAudit(t, db)
	byID := map[string]grantRow{}
	byBinding := map[bindingKey]grantRow{}
	for _, g := range grants {
		if _, dup := byBinding[g.bindingKey]; dup {
			t.Errorf("two grant rows for one binding %+v", g.bindingKey)
		}
		byID[g.ID] = g
		byBinding[g.bindingKey] = g
	}
	auditScopes := map[string]map[string]bool{} // grant id → union of its audit events' scopes
	auditCount := map[string]map[string]int{}   // grant id → granted-scope set → events
	for _, a := range audits {
		g, ok := byID[a.GrantID]
		if !ok {
			t.Errorf("audit event for grant %q, which has no row (session %s): an approval committed half", a.GrantID, a.Session)
			continue
		}
		if a.bindingKey != g.bindingKey {
			t.Errorf("audit event for grant %s names %+v, the row %+v", a.GrantID, a.bindingKey, g.bindingKey)
		}
		if auditScopes[a.GrantID] == nil {
			auditScopes[a.GrantID] = map[string]bool{}
			auditCount[a.GrantID] = map[string]int{}
		}
		for s := range scopeSet(a.Scopes) {
			auditScopes[a.GrantID][s] = true
		}
		auditCount[a.GrantID][setKey(scopeSet(a.Scopes))]++
	}

	for _, g := range grants {
		have := scopeSet(g.Scopes)
		if len(have) == 0 {
			t.Errorf("grant %s (session %s) is half-written: no scopes", g.ID, g.Session)
		}
		if got, want := setKey(have), setKey(auditScopes[g.ID]); got != want {
			t.Errorf("grant %s (session %s) holds [%s], its audit events approved [%s]", g.ID, g.Session, got, want)
		}
		b := bindings[g.bindingKey]
		if b == nil {
			t.Errorf("grant %s for a binding nobody approved: %+v", g.ID, g.bindingKey)
			continue
		}
		if !subset(have, b.attempted) {
			t.Errorf("grant %s (session %s) holds [%s], more than was ever asked for [%s]", g.ID, g.Session, setKey(have), setKey(b.attempted))
		}
		if exact && setKey(have) != setKey(b.okScopes) {
			t.Errorf("grant %s (session %s) holds [%s], the 200 answers granted [%s]", g.ID, g.Session, setKey(have), setKey(b.okScopes))
		}
	}

	rowsWanted := 0
	for k, b := range bindings {
		if b.ok == 0 {
			continue
		}
		rowsWanted++
		g, ok := byBinding[k]
		if !ok {
			t.Errorf("approval answered 200 is missing: no grant row for session %s of user %s (%d approvals answered 200)", k.Session, k.UserID, b.ok)
			continue
		}
		for id := range b.grantIDs {
			if id != g.ID {
				t.Errorf("approval of session %s answered grant id %s, the row is %s", k.Session, id, g.ID)
			}
		}
		if !subset(b.okScopes, scopeSet(g.Scopes)) {
			t.Errorf("grant %s (session %s) holds [%s], lacking scopes answered as granted [%s]", g.ID, k.Session, setKey(scopeSet(g.Scopes)), setKey(b.okScopes))
		}
		for set, n := range b.okAudit {
			got := auditCount[g.ID][set]
			switch {
			case got < n:
				t.Errorf("grant %s (session %s): %d approvals of [%s] answered 200, %d audit events", g.ID, k.Session, n, set, got)
			case exact && got != n:
				t.Errorf("grant %s (session %s): %d approvals of [%s] answered 200, but %d audit events", g.ID, k.Session, n, set, got)
			}
		}
		evs := 0
		for _, n := range auditCount[g.ID] {
			evs += n
		}
		if evs > b.tries {
			t.Errorf("grant %s (session %s): %d audit events for %d approval requests", g.ID, k.Session, evs, b.tries)
		}
	}
	if exact {
		if len(grants) != rowsWanted {
			t.Errorf("%d grant rows, want %d (the bindings whose approvals were answered 200)", len(grants), rowsWanted)
		}
		if len(audits) != okTotal {
			t.Errorf("%d approved audit events, want %d (the approvals answered 200)", len(audits), okTotal)
		}
	}
	t.Logf("integrity: %d approvals (%d answered 200), %d grant rows, %d approved audit events", len(attempts), okTotal, len(grants), len(audits))
}

// faultStats counts what one stream of requests was answered.
type faultStats struct {
	mu       sync.Mutex
	status   map[int]int
	problems []string // answers that break the rules, first few kept
	nProblem int
	// ok200After counts 200s answered after the database came back.
	ok200After int
	unavail    int
}

func (s *faultStats) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nProblem++
	if len(s.problems) < 10 {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

// record classifies one answer. Requests from a valid client or a
// signed-in user, for scopes they hold, may be answered 200, or 503 with a
// clean JSON error while the database is away: anything else (a 500, a
// 401 because the client or the session "could not be found", a 429
// because the outage was charged to the client, or no answer within the
// client timeout) is a failure.
func (s *faultStats) record(what string, status int, ct string, body []byte, err error, restored bool) {
	switch {
	case err != nil:
		s.problem("%s: no answer (hung or dropped): %v", what, err)
		return
	case status == http.StatusServiceUnavailable:
		if msg := cleanUnavailable(ct, body); msg != "" {
			s.problem("%s: %s", what, msg)
		}
	case status != http.StatusOK:
		s.problem("%s: status %d, want 200 or 503: %s", what, status, truncate(body))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == nil {
		s.status = map[int]int{}
	}
	s.status[status]++
	if status == http.StatusServiceUnavailable {
		s.unavail++
	}
	if status == http.StatusOK && restored {
		s.ok200After++
	}
}

func (s *faultStats) report(t *testing.T, name string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Logf("%s: answers by status %v", name, s.status)
	for _, p := range s.problems {
		t.Errorf("%s: %s", name, p)
	}
	if s.nProblem > len(s.problems) {
		t.Errorf("%s: … and %d more answers like these", name, s.nProblem-len(s.problems))
	}
}

// TestDatabaseFaults cuts a running deputy-idp off its PostgreSQL database
// in the middle of a steady stream of client_credentials token requests and
// consent approvals, then lets it back. While the database is away every
// request must fail fast with a clean 503 JSON answer (never a 500, never
// a hang past the client timeout); once it is back the same process must
// serve again; and no approval answered 200 may be missing from, or
// half-written into, agent_grants and the audit log.
//
// Two faults, one after the other. A storm: every backend the server holds
// is terminated (pg_terminate_backend) every 20 ms for two seconds while it
// reconnects, cutting statements and transactions midway. Then an outage:
// the database stops accepting connections (ALTER DATABASE …
// ALLOW_CONNECTIONS false) and every backend is terminated, again and again
// for two seconds; then connections are allowed again.
//
// /readyz must answer 503 during the outage and 200 again after it, and
// /healthz 200 throughout (liveness does not depend on the database).
//
// The test checks itself: it fails if the outage produced no 503 on either
// stream (the fault did not bite), so a refactoring that stopped it from
// reaching the database would not pass silently. With the 503 mapping
// removed (plugin.unavailable / consent's storage.ErrUnavailable check) the
// streams see 500, 401 and 429 answers and the test fails.
func TestDatabaseFaults(t *testing.T) {
	base := longTestPostgres(t)
	admin := openAdmin(t, base)
	dbName, dsn := newDatabase(t, admin, base, "deputy_fault_")
	tg := startReplica(t, dsn, newSecret(t), "", "--metrics-listen", "127.0.0.1:0")
	metrics := "http://" + waitForLog(t, tg, metricsListening)
	db := openDB(t, dsn)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	allowConnections := func(allow bool) {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(c, fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, pq.QuoteIdentifier(dbName), allow)); err != nil {
			t.Fatalf("ALTER DATABASE %s ALLOW_CONNECTIONS %t: %v", dbName, allow, err)
		}
	}
	// Whatever happens, the server must be able to reach its database to
	// shut down cleanly and the database to be dropped. (Cleanups run last
	// first: this one before the server stops.)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		admin.ExecContext(c, `ALTER DATABASE `+pq.QuoteIdentifier(dbName)+` ALLOW_CONNECTIONS true`) //nolint:errcheck // best effort
	})
	terminate := func() int {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rows, err := admin.QueryContext(c, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName)
		if err != nil {
			t.Errorf("pg_terminate_backend: %v", err)
			return 0
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			n++
		}
		return n
	}

	// Two users, each signed in, each owning an app.
	alice := newBrowser(t, tg.URL)
	alice.login("alice", alicePassword)
	bob := newBrowser(t, tg.URL)
	bob.login("bob", bobPassword)
	aliceApp := createOwnedApp(t, alice, "projects:read", "projects:write")
	bobApp := createOwnedApp(t, bob, "projects:read")

	// The clients give up long before a request could be called hung; the
	// server must answer well within it.
	const clientTimeout = 10 * time.Second
	tr := loadTransport(8)
	defer tr.CloseIdleConnections()
	plain := &http.Client{Transport: tr, Timeout: clientTimeout}
	type user struct {
		name string
		c    *http.Client
		id   string
		// asks lists what the approvals ask for. Bob holds projects:read
		// only: his approvals of projects:write are granted in part.
		asks [][]string
	}
	users := []*user{
		{name: "alice", c: sessionClient(alice, tr, clientTimeout), asks: [][]string{
			{"projects:read"}, {"projects:write"}, {"members:read"}, {"projects:read", "members:read"}, {"projects:write", "members:read"},
		}},
		{name: "bob", c: sessionClient(bob, tr, clientTimeout), asks: [][]string{
			{"projects:read"}, {"projects:read", "projects:write"},
		}},
	}
	type app struct {
		a     *ownedApp
		scope string
	}
	apps := []app{{aliceApp, "projects:read projects:write"}, {bobApp, "projects:read"}}

	var (
		attemptsMu sync.Mutex
		attempts   []*approvalAttempt
	)
	prefix := randomName("fault-")
	plat := newPlatform(t, tg)
	// Before the fault, both streams work: this is the baseline the
	// recovery is measured against, and it tells us each user's id.
	for _, u := range users {
		a := &approvalAttempt{Org: demoOrg, Client: plat.ID, Session: prefix + "-warmup-" + u.name, Requested: u.asks[len(u.asks)-1]}
		status, _, body, err := approveRequest(ctx, u.c, tg.URL, a)
		if err != nil || status != http.StatusOK {
			t.Fatalf("approval by %s before the fault: status %d, err %v\n%s", u.name, status, err, body)
		}
		a.Status = status
		if err := a.readAnswer(body); err != nil {
			t.Fatal(err)
		}
		u.id = a.UserID
		attempts = append(attempts, a)
	}
	for _, ap := range apps {
		if status, _, body, err := tokenRequest(ctx, plain, tg.URL, ap.a.ID, ap.a.Secret, ap.scope); err != nil || status != http.StatusOK {
			t.Fatalf("token before the fault: status %d, err %v\n%s", status, err, body)
		}
	}

	var (
		restored   atomic.Bool // the database is back
		tokenStats faultStats
		apprStats  faultStats
		wg         sync.WaitGroup
		stop       = make(chan struct{})
		seq        atomic.Int64
	)
	const sessions = 12 // few enough that concurrent approvals merge into one row
	for w := range 3 {
		wg.Add(2)
		go func() { // client_credentials tokens
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ap := apps[(w+i)%len(apps)]
				after := restored.Load()
				status, ct, body, err := tokenRequest(ctx, plain, tg.URL, ap.a.ID, ap.a.Secret, ap.scope)
				tokenStats.record("token", status, ct, body, err, after)
				time.Sleep(5 * time.Millisecond)
			}
		}()
		go func() { // approvals
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := seq.Add(1)
				u := users[int(n)%len(users)]
				a := &approvalAttempt{
					Org: demoOrg, UserID: u.id, Client: plat.ID,
					Session:   fmt.Sprintf("%s-%d", prefix, n%sessions),
					Requested: u.asks[int(n/2)%len(u.asks)],
				}
				after := restored.Load()
				status, ct, body, err := approveRequest(ctx, u.c, tg.URL, a)
				apprStats.record("approval", status, ct, body, err, after)
				a.Status = status
				if err == nil && status == http.StatusOK {
					if perr := a.readAnswer(body); perr != nil {
						apprStats.problem("%v", perr)
						a.Status = -1 // answered, but not as a 200 we can account for
					}
				}
				attemptsMu.Lock()
				attempts = append(attempts, a)
				attemptsMu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	stopWorkers := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopWorkers()

	// Steady state, then two faults. First a storm: connections are
	// allowed, but every backend of the server is terminated every 20 ms,
	// cutting transactions in the middle (the test for half-written
	// grants). Then the outage proper: the database refuses connections
	// and every backend is terminated, for two seconds.
	time.Sleep(time.Second)
	if n := tokenStats.unavailCount() + apprStats.unavailCount(); n != 0 {
		t.Errorf("%d answers were 503 before the database was touched", n)
	}
	stormKilled := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		stormKilled += terminate()
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	tokenBefore, apprBefore := tokenStats.unavailCount(), apprStats.unavailCount()
	if status := readiness(t, plain, tg.URL); status != http.StatusOK {
		t.Errorf("/readyz before the outage: %d, want 200", status)
	}
	if v := databaseAvailable(t, plain, metrics); v != "1" {
		t.Errorf("deputy_database_available before the outage: %q, want 1", v)
	}
	// A valid token, held through the outage by a client of the sample API.
	status, _, body, err := tokenRequest(ctx, plain, tg.URL, aliceApp.ID, aliceApp.Secret, "projects:read")
	var held struct {
		AccessToken string `json:"access_token"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &held) != nil {
		t.Fatalf("token before the outage: %d %v %s", status, err, body)
	}
	if status, _, body := apiAnswer(t, plain, tg.URL, held.AccessToken); status != http.StatusOK {
		t.Fatalf("API with a fresh token before the outage: %d %s", status, body)
	}
	allowConnections(false)
	killed := 0
	readyDown, liveDown, metricDown := 0, 0, 0
	apiDown, apiRefused := 0, map[int]int{}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		killed += terminate()
		// Readiness says the database is away; liveness that the process
		// is fine (a restart would not bring the database back).
		if readiness(t, plain, tg.URL) == http.StatusServiceUnavailable {
			readyDown++
		}
		if status, _, _, _ := send(plain, mustRequest(t, http.MethodGet, tg.URL+"/healthz")); status != http.StatusOK {
			liveDown++
		}
		// And the metric operators alert on says so too.
		if databaseAvailable(t, plain, metrics) == "0" {
			metricDown++
		}
		// The resource middleware cannot check the token: 503, never a
		// 401 that would make the client throw a valid token away.
		switch status, challenge, body := apiAnswer(t, plain, tg.URL, held.AccessToken); {
		case status == http.StatusServiceUnavailable && challenge == "" && bytes.Contains(body, []byte(`"error":"temporarily_unavailable"`)):
			apiDown++ // the middleware's own 503
		case status == http.StatusOK: // a backend not yet terminated
		default:
			apiRefused[status]++
		}
		time.Sleep(50 * time.Millisecond)
	}
	if readyDown == 0 {
		t.Error("/readyz never answered 503 while the database refused connections")
	}
	if liveDown != 0 {
		t.Errorf("/healthz failed %d times during the outage: liveness must not depend on the database", liveDown)
	}
	if metricDown == 0 {
		t.Error("deputy_database_available never read 0 on /metrics while the database refused connections")
	}
	if apiDown == 0 || len(apiRefused) != 0 {
		t.Errorf("the sample API with a valid token during the outage: %d answers 503, others by status %v; want 503s and nothing else", apiDown, apiRefused)
	}
	tokenDown, apprDown := tokenStats.unavailCount()-tokenBefore, apprStats.unavailCount()-apprBefore
	allowConnections(true)
	restored.Store(true)
	t.Logf("storm: %d backends terminated, %d token and %d approval answers 503", stormKilled, tokenBefore, apprBefore)
	t.Logf("outage: %d backends terminated; %d token and %d approval answers were 503 while the database refused connections", killed, tokenDown, apprDown)
	if tokenDown == 0 || apprDown == 0 {
		t.Errorf("the outage produced %d token and %d approval 503s: the fault did not reach both streams, so this test proved nothing", tokenDown, apprDown)
	}

	// Recovery, without a restart: both streams are answered 200 again.
	deadline := time.Now().Add(30 * time.Second)
	for tokenStats.okAfter() < 5 || apprStats.okAfter() < 5 {
		if time.Now().After(deadline) {
			t.Errorf("30 s after the database came back, %d token and %d approval requests had succeeded: the server did not recover", tokenStats.okAfter(), apprStats.okAfter())
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for readiness(t, plain, tg.URL) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Error("/readyz did not answer 200 again after the database came back")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Readiness checked the database just now: the metric follows.
	if v := databaseAvailable(t, plain, metrics); v != "1" {
		t.Errorf("deputy_database_available after recovery: %q, want 1", v)
	}
	if status, _, body := apiAnswer(t, plain, tg.URL, held.AccessToken); status != http.StatusOK {
		t.Errorf("API with the token held through the outage, after it: %d %s, want 200", status, body)
	}
	time.Sleep(500 * time.Millisecond)
	stopWorkers()
	tokenStats.report(t, "token stream")
	apprStats.report(t, "approval stream")

	// And one more of each, plainly, from the same process.
	for _, ap := range apps {
		if status, _, body, err := tokenRequest(ctx, plain, tg.URL, ap.a.ID, ap.a.Secret, ap.scope); err != nil || status != http.StatusOK {
			t.Errorf("token after recovery: status %d, err %v\n%s", status, err, body)
		}
	}
	for _, u := range users {
		a := &approvalAttempt{Org: demoOrg, UserID: u.id, Client: plat.ID, Session: prefix + "-after-" + u.name, Requested: []string{"projects:read"}}
		status, _, body, err := approveRequest(ctx, u.c, tg.URL, a)
		a.Status = status
		if err != nil || status != http.StatusOK {
			t.Errorf("approval by %s after recovery: status %d, err %v\n%s", u.name, status, err, body)
		} else if err := a.readAnswer(body); err != nil {
			t.Error(err)
		}
		attempts = append(attempts, a)
	}

	checkGrantIntegrity(t, db, attempts, false)
}

// readiness is the status of base's /readyz (0 when it did not answer).
func readiness(t *testing.T, c *http.Client, base string) int {
	t.Helper()
	status, _, _, _ := send(c, mustRequest(t, http.MethodGet, base+"/readyz"))
	return status
}

var metricsListening = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// waitForLog waits until the server's log has a line re matches and
// returns its first group.
func waitForLog(t *testing.T, tg *target, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if m := re.FindStringSubmatch(tg.output.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line matching %s:\n%s", re, tg.output.String())
		}
		time.Sleep(20 * time.Millisecond) // polling, not a timing assertion
	}
}

// apiAnswer is the status, WWW-Authenticate challenge and body of a GET of
// the sample API with token (status 0 when it could not be sent).
func apiAnswer(t *testing.T, c *http.Client, base, token string) (int, string, []byte) {
	t.Helper()
	req := mustRequest(t, http.MethodGet, base+"/api/orgs/"+demoOrg+"/projects")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body
}

// databaseAvailable is the value of deputy_database_available on the
// metrics listener at metricsURL ("" when /metrics does not answer it).
func databaseAvailable(t *testing.T, c *http.Client, metricsURL string) string {
	t.Helper()
	status, _, body, _ := send(c, mustRequest(t, http.MethodGet, metricsURL+"/metrics"))
	if status != http.StatusOK {
		return ""
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "deputy_database_available "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (s *faultStats) unavailCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unavail
}

func (s *faultStats) okAfter() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok200After
}
