package plugin

import (
	"bytes"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deputyauth/deputy/handlers/resource"
	"github.com/deputyauth/deputy/storage"
)

// This file is deputy's Prometheus metrics. deputy never registers them
// anywhere itself: the host registers Collectors in its own registry (or
// calls RegisterMetrics), and serves them where it serves its own. Every
// label takes values from a fixed list (no client id, no user id), and the
// request path reaches its counters through arrays resolved once, never a
// lookup by label values.

// Label values of deputy_token_requests_total's grant_type.
var tokenGrants = [...]string{"authorization_code", "refresh_token", "client_credentials", "agent_token", "other"}

const grantOther = len(tokenGrants) - 1

func grantIndex(grantType string) int {
	switch grantType {
	case GrantTypeAuthorizationCode:
		return 0
	case GrantTypeRefreshToken:
		return 1
	case GrantTypeClientCredentials:
		return 2
	case GrantTypeAgentToken:
		return 3
	}
	return grantOther
}

// Label values of deputy_token_requests_total's outcome: success, or the
// RFC 6749 error code the endpoint answered (other_error for any other).
var tokenOutcomes = [...]string{
	"success", "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "access_denied", "temporarily_unavailable",
	"server_error", "other_error",
}

const (
	outcomeSuccess       = 0
	outcomeInvalidClient = 2
	outcomeOther         = len(tokenOutcomes) - 1
)

// outcomeIndex maps an OAuth2 error code to its outcome. A switch on
// string(b) does not allocate.
func outcomeIndex(code []byte) int {
	switch string(code) {
	case "invalid_request":
		return 1
	case "invalid_client":
		return outcomeInvalidClient
	case "invalid_grant":
		return 3
	case "unauthorized_client":
		return 4
	case "unsupported_grant_type":
		return 5
	case "invalid_scope":
		return 6
	case "access_denied":
		return 7
	case "temporarily_unavailable":
		return 8
	case "server_error":
		return 9
	}
	return outcomeOther
}

// Label values of deputy_token_request_duration_seconds's status_class.
var statusClasses = [...]string{"2xx", "4xx", "5xx"}

func statusClassIndex(status int) int {
	switch {
	case status >= 500:
		return 2
	case status >= 400:
		return 1
	}
	return 0
}

// Label values of deputy_resource_refusals_total.
var (
	refusalKinds   = [...]string{resource.KindAgent, resource.KindAccess, resource.KindNone}
	refusalReasons = [...]string{
		resource.RefusedNoToken, resource.RefusedBadRequest, resource.RefusedInvalidToken,
		resource.RefusedVerifierError, resource.RefusedInsufficientScope, resource.RefusedWrongResource,
		resource.RefusedUnavailable,
	}
)

// Label values of deputy_consent_events_total.
var consentEvents = [...]string{storage.AuditApproved, storage.AuditDenied, storage.AuditRevoked}

// tokenDurationBuckets: the token endpoint's target is a p99 under 5 ms,
// and a database outage can hold a request for seconds.
var tokenDurationBuckets = []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics holds deputy's collectors and, resolved in advance, the children
// the request path increments.
type metrics struct {
	tokenRequests      *prometheus.CounterVec
	tokenDuration      *prometheus.HistogramVec
	clientAuthFailures prometheus.Counter
	clientAuthLimited  prometheus.Counter
	consent            *prometheus.CounterVec
	agentMinted        prometheus.Counter
	refusals           *prometheus.CounterVec
	store              *storeCollector
	keyAge             prometheus.Collector // nil without Config.Agents

	// A series appears on its first use, not before: a scrape lists what
	// happened, not every combination that could.
	tokenCells    [len(tokenGrants)][len(tokenOutcomes)]lazyChild[prometheus.Counter]
	durationCells [len(tokenGrants)][len(statusClasses)]lazyChild[prometheus.Observer]
	refusalCells  [len(refusalKinds)][len(refusalReasons)]lazyChild[prometheus.Counter]
	consentCells  [len(consentEvents)]prometheus.Counter
}

func newMetrics(st storage.Backend) *metrics {
	m := &metrics{
		tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deputy_token_requests_total",
			Help: "Token endpoint requests by grant type and outcome (success or the OAuth2 error code answered). Requests the client-authentication limiter refused are in deputy_client_auth_rate_limited_total instead.",
		}, []string{"grant_type", "outcome"}),
		tokenDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deputy_token_request_duration_seconds",
			Help:    "Time the token endpoint took to answer, by grant type and status class.",
			Buckets: tokenDurationBuckets,
		}, []string{"grant_type", "status_class"}),
		clientAuthFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deputy_client_auth_failures_total",
			Help: "Failed client authentications (401, or invalid_client) at the token, introspection and revocation endpoints.",
		}),
		clientAuthLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deputy_client_auth_rate_limited_total",
			Help: "Requests refused (429) by the client-authentication failure limiter before any secret was compared.",
		}),
		consent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deputy_consent_events_total",
			Help: "Agent grants approved, approvals denied, and grants revoked by their users.",
		}, []string{"event"}),
		agentMinted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deputy_agent_tokens_minted_total",
			Help: "Agent tokens minted, at the token endpoint or from Go.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deputy_resource_refusals_total",
			Help: "Requests the resource middleware refused, by the kind of token presented (agent, access, none) and the reason.",
		}, []string{"token_kind", "reason"}),
		store: newStoreCollector(st),
	}
	for i, e := range consentEvents {
		m.consentCells[i] = m.consent.WithLabelValues(e)
	}
	return m
}

// collectors lists what the host registers.
func (m *metrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{
		m.tokenRequests, m.tokenDuration, m.clientAuthFailures, m.clientAuthLimited,
		m.consent, m.agentMinted, m.refusals, m.store,
	}
	if m.keyAge != nil {
		cs = append(cs, m.keyAge)
	}
	return cs
}

// signingKeyAge adds the age of the active agent-token signing key.
func (m *metrics) signingKeyAge(createdAt func() time.Time) {
	m.keyAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "deputy_signing_key_age_seconds",
		Help: "Age of the agent-token signing key new tokens are signed with (NaN when there is none).",
	}, func() float64 {
		t := createdAt()
		if t.IsZero() {
			return math.NaN()
		}
		return time.Since(t).Seconds()
	})
}

// tokenRequest records one answer of the token endpoint.
func (m *metrics) tokenRequest(grantType string, status int, errorCode []byte, took time.Duration) {
	g := grantIndex(grantType)
	o := outcomeSuccess
	if status >= 300 {
		o = outcomeIndex(errorCode)
	}
	m.tokenCells[g][o].get(m.tokenRequests, tokenGrants[g], tokenOutcomes[o]).Inc()
	c := statusClassIndex(status)
	m.durationCells[g][c].get(m.tokenDuration, tokenGrants[g], statusClasses[c]).Observe(took.Seconds())
}

// refused is resource.Middleware.OnRefuse.
func (m *metrics) refused(kind, reason string) {
	k := len(refusalKinds) - 1 // none
	switch kind {
	case resource.KindAgent:
		k = 0
	case resource.KindAccess:
		k = 1
	}
	r := 2 // invalid_token
	switch reason {
	case resource.RefusedNoToken:
		r = 0
	case resource.RefusedBadRequest:
		r = 1
	case resource.RefusedVerifierError:
		r = 3
	case resource.RefusedInsufficientScope:
		r = 4
	case resource.RefusedWrongResource:
		r = 5
	case resource.RefusedUnavailable:
		r = 6
	}
	m.refusalCells[k][r].get(m.refusals, refusalKinds[k], refusalReasons[r]).Inc()
}

// consentEvent is consent.Config.OnEvent.
func (m *metrics) consentEvent(event string) {
	for i, e := range consentEvents {
		if e == event {
			m.consentCells[i].Inc()
			return
		}
	}
}

// labeled is a CounterVec or a HistogramVec.
type labeled[T any] interface{ WithLabelValues(...string) T }

// lazyChild is one child of a two-label vector (a Counter, an Observer),
// resolved on first use so that the hot path is one atomic load.
type lazyChild[T any] struct{ p atomic.Pointer[T] }

func (c *lazyChild[T]) get(vec labeled[T], a, b string) T {
	if v := c.p.Load(); v != nil {
		return *v
	}
	v := vec.WithLabelValues(a, b)
	c.p.CompareAndSwap(nil, &v)
	return *c.p.Load()
}

// storeCollector exports the store's Health at scrape time: the store keeps
// plain atomic counters, so its statements pay nothing for metrics.
type storeCollector struct {
	st        storage.Backend
	errors    *prometheus.Desc
	available *prometheus.Desc
}

func newStoreCollector(st storage.Backend) *storeCollector {
	return &storeCollector{
		st: st,
		errors: prometheus.NewDesc("deputy_database_errors_total",
			"Failed database calls by class: unavailable (could not reach or be served by the database), conflict, invalid_input, other.",
			[]string{"kind"}, nil),
		available: prometheus.NewDesc("deputy_database_available",
			"1 when deputy's last database call or readiness check reached the database, 0 when it found the database unavailable.",
			nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.errors
	ch <- c.available
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.st.Health()
	for _, kv := range []struct {
		kind string
		n    uint64
	}{{"unavailable", h.Unavailable}, {"conflict", h.Conflict}, {"invalid_input", h.InvalidInput}, {"other", h.Other}} {
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(kv.n), kv.kind)
	}
	up := 0.0
	if h.Available {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.available, prometheus.GaugeValue, up)
}

// Collectors returns deputy's Prometheus collectors, for the host to
// register in its own registry (prometheus.Registerer.MustRegister(
// p.Collectors()...)) and serve with its own handler. deputy registers
// nothing globally and serves no /metrics of its own. Register them once
// per Plugin. README.md ("Metrics") lists them.
func (p *Plugin) Collectors() []prometheus.Collector { return p.metrics.collectors() }

// RegisterMetrics registers Collectors with reg.
func (p *Plugin) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range p.Collectors() {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// errorCodeOf finds the "error" member of an OAuth2 JSON error body's
// first bytes: `{"error":"invalid_client",…}` gives invalid_client.
func errorCodeOf(head []byte) []byte {
	i := bytes.Index(head, []byte(`"error"`))
	if i < 0 {
		return nil
	}
	rest := bytes.TrimLeft(head[i+len(`"error"`):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return nil
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) == 0 || rest[0] != '"' {
		return nil
	}
	rest = rest[1:]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return nil
}
