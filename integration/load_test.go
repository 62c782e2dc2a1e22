package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoad sends 20,000 client_credentials token requests (over several
// owned apps of several users) and 2,000 consent approvals (over many agent
// sessions, some approved several times at once so that their scopes merge)
// from many goroutines over loopback to a deputy-idp on PostgreSQL, all at
// the same time. No answer may be a 5xx, nor anything but 200: every client
// is valid and every approval grantable, and successful client
// authentication is never rate-limited. Then the database must hold exactly
// what the clients were told: one access-token row per 200 token answer (per
// app), one grant row per (organization, user, session) approved, holding
// the union of the scopes approved for it, and one audit event per approval
// answered 200.
//
// Throughput is logged, never asserted: make bench measures performance.
func TestLoad(t *testing.T) {
	base := longTestPostgres(t)
	admin := openAdmin(t, base)
	_, dsn := newDatabase(t, admin, base, "deputy_load_")
	tg := startServer(t, dsn, newSecret(t))
	db := openDB(t, dsn)

	const (
		nUsers        = 4
		appsPerUser   = 2
		tokenRequests = 20000
		tokenWorkers  = 16
		approvals     = 2000
		apprWorkers   = 8
		// The first mergedApprovals approvals come in threes on one
		// session each (same user, different scopes), queued one after the
		// other so that different workers run them at the same time; the
		// rest are one per session.
		mergedApprovals = 900
	)
	userScopes := []string{"projects:read", "projects:write", "members:read"}
	scopeChoices := [][]string{
		{"projects:read"}, {"projects:write"}, {"members:read"},
		{"projects:read", "projects:write"}, {"projects:write", "members:read"}, {"projects:read", "projects:write", "members:read"},
	}

	tr := loadTransport(tokenWorkers + apprWorkers)
	defer tr.CloseIdleConnections()
	const clientTimeout = 30 * time.Second
	plain := &http.Client{Transport: tr, Timeout: clientTimeout}

	type loadUser struct {
		id string
		c  *http.Client
	}
	var users []*loadUser
	var apps []*ownedApp
	prefix := randomName("load")
	plat := newPlatform(t, tg)
	for i := range nUsers {
		name, password := fmt.Sprintf("%s-user%d", prefix, i), randomName("pw-")
		out := tg.cli(t, "users", "create", "--username", name, "--password", password,
			"--org", demoOrg, "--scope", strings.Join(userScopes, " "))
		b := newBrowser(t, tg.URL)
		b.login(name, password)
		users = append(users, &loadUser{id: str(t, out, "id"), c: sessionClient(b, tr, clientTimeout)})
		for range appsPerUser {
			apps = append(apps, createOwnedApp(t, b, userScopes...))
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Problems seen by the workers, first few kept.
	var (
		probMu   sync.Mutex
		problems []string
		nProblem int
	)
	problem := func(format string, args ...any) {
		probMu.Lock()
		defer probMu.Unlock()
		nProblem++
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}

	// Token requests: job i uses app i mod len(apps) and one of the scope
	// choices.
	tokenOK := make([]atomic.Int64, len(apps))
	var tokenStatus sync.Map // status → *atomic.Int64
	countStatus := func(m *sync.Map, status int) {
		v, _ := m.LoadOrStore(status, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	var tokenNext atomic.Int64
	tokenLatency := make([][]time.Duration, tokenWorkers)

	// Approvals, built up front so that the expected database is known.
	attempts := make([]*approvalAttempt, approvals)
	for j := range approvals {
		var sess, n int
		if j < mergedApprovals {
			sess, n = j/3, j
		} else {
			sess, n = j-mergedApprovals+mergedApprovals/3, j
		}
		u := users[sess%nUsers]
		attempts[j] = &approvalAttempt{
			Org: demoOrg, UserID: u.id, Client: plat.ID,
			Session:   fmt.Sprintf("%s-s%d", prefix, sess),
			Requested: scopeChoices[(n*5+sess)%len(scopeChoices)],
		}
	}
	userOf := map[string]*loadUser{}
	for _, u := range users {
		userOf[u.id] = u
	}
	var apprNext atomic.Int64
	var apprStatus sync.Map
	apprLatency := make([][]time.Duration, apprWorkers)

	var wg sync.WaitGroup
	var tokensDone, apprDone time.Duration
	var doneMu sync.Mutex
	start := time.Now()
	for w := range tokenWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				doneMu.Lock()
				tokensDone = max(tokensDone, time.Since(start))
				doneMu.Unlock()
			}()
			for {
				i := int(tokenNext.Add(1)) - 1
				if i >= tokenRequests {
					return
				}
				k := i % len(apps)
				scope := strings.Join(scopeChoices[(i/len(apps))%len(scopeChoices)], " ")
				t0 := time.Now()
				status, _, body, err := tokenRequest(ctx, plain, tg.URL, apps[k].ID, apps[k].Secret, scope)
				tokenLatency[w] = append(tokenLatency[w], time.Since(t0))
				if err != nil {
					problem("token request %d: no answer: %v", i, err)
					continue
				}
				countStatus(&tokenStatus, status)
				if status != http.StatusOK {
					problem("token request %d: status %d: %s", i, status, truncate(body))
					continue
				}
				var tok struct {
					AccessToken string `json:"access_token"`
				}
				if err := json.Unmarshal(body, &tok); err != nil || !strings.HasPrefix(tok.AccessToken, "dpy_at_") {
					problem("token request %d: 200 without a dpy_at_ token: %s", i, truncate(body))
				}
				tokenOK[k].Add(1)
			}
		}()
	}
	for w := range apprWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				doneMu.Lock()
				apprDone = max(apprDone, time.Since(start))
				doneMu.Unlock()
			}()
			for {
				j := int(apprNext.Add(1)) - 1
				if j >= approvals {
					return
				}
				a := attempts[j]
				t0 := time.Now()
				status, _, body, err := approveRequest(ctx, userOf[a.UserID].c, tg.URL, a)
				apprLatency[w] = append(apprLatency[w], time.Since(t0))
				if err != nil {
					problem("approval %d: no answer: %v", j, err)
					continue
				}
				a.Status = status
				countStatus(&apprStatus, status)
				if status != http.StatusOK {
					problem("approval %d: status %d: %s", j, status, truncate(body))
					continue
				}
				if err := a.readAnswer(body); err != nil {
					problem("approval %d: %v", j, err)
					a.Status = -1
					continue
				}
				if !slices.Equal(sortedCopy(a.Granted), sortedCopy(a.Requested)) {
					problem("approval %d of %v granted only %v, though the user holds every scope", j, a.Requested, a.Granted)
				}
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)

	statuses := func(m *sync.Map) map[int]int64 {
		out := map[int]int64{}
		m.Range(func(k, v any) bool { out[k.(int)] = v.(*atomic.Int64).Load(); return true })
		return out
	}
	tokens200 := int64(0)
	for k := range tokenOK {
		tokens200 += tokenOK[k].Load()
	}
	p := func(ls [][]time.Duration, q float64) time.Duration {
		var all []time.Duration
		for _, l := range ls {
			all = append(all, l...)
		}
		if len(all) == 0 {
			return 0
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		return all[min(len(all)-1, int(q*float64(len(all))))]
	}
	t.Logf("load: %d token requests (%d workers) and %d approvals (%d workers) at the same time, over %d apps of %d users, on PostgreSQL, in %v",
		tokenRequests, tokenWorkers, approvals, apprWorkers, len(apps), nUsers, total.Round(time.Millisecond))
	t.Logf("tokens: %v, %.0f tokens/s, latency p50 %v p99 %v; answers by status %v",
		tokensDone.Round(time.Millisecond), float64(tokenRequests)/tokensDone.Seconds(),
		p(tokenLatency, 0.5).Round(time.Microsecond), p(tokenLatency, 0.99).Round(time.Microsecond), statuses(&tokenStatus))
	t.Logf("approvals: %v, %.0f approvals/s, latency p50 %v p99 %v; answers by status %v",
		apprDone.Round(time.Millisecond), float64(approvals)/apprDone.Seconds(),
		p(apprLatency, 0.5).Round(time.Microsecond), p(apprLatency, 0.99).Round(time.Microsecond), statuses(&apprStatus))

	for _, msg := range problems {
		t.Error(msg)
	}
	if nProblem > len(problems) {
		t.Errorf("… and %d more problems like these", nProblem-len(problems))
	}

	// Access tokens: one row per 200, app by app.
	qctx, qcancel := context.WithTimeout(context.Background(), time.Minute)
	defer qcancel()
	rows, err := db.QueryContext(qctx, `SELECT client_id, count(*) FROM oauth2_access_tokens GROUP BY client_id`)
	if err != nil {
		t.Fatalf("count access tokens: %v", err)
	}
	perClient := map[string]int64{}
	var rowsTotal int64
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatalf("count access tokens: %v", err)
		}
		perClient[id] = n
		rowsTotal += n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("count access tokens: %v", err)
	}
	rows.Close()
	if rowsTotal != tokens200 {
		t.Errorf("%d access-token rows, but %d token requests were answered 200", rowsTotal, tokens200)
	}
	for k, a := range apps {
		if got, want := perClient[a.ID], tokenOK[k].Load(); got != want {
			t.Errorf("app %s: %d access-token rows, %d token answers 200", a.ID, got, want)
		}
	}
	t.Logf("database: %d access-token rows for %d token answers 200", rowsTotal, tokens200)

	// Grants and audit events: exactly what the approvals were told.
	checkGrantIntegrity(t, db, attempts, true)
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}
