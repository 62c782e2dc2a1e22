package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// op is one request of a cell. It returns nil when the request produced what
// it should (a token, a row); anything else counts as an error.
type op func(ctx context.Context, w *worker) error

// worker is one closed-loop client: it sends a request, waits for the answer,
// and sends the next. Its buffer is reused so that the generator, which
// shares the machine's cores with the server it measures, stays cheap.
type worker struct {
	client *http.Client
	buf    bytes.Buffer
}

// loadResult is what one measured run of a cell produced.
type loadResult struct {
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	P999     time.Duration // p99.9: where a rare stall shows before the max
	Max      time.Duration
	Mean     time.Duration
	// FirstError is the first failure seen, for the report.
	FirstError string
}

// TokensPerSec is the rate of successful requests.
func (r loadResult) TokensPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

// runLoad runs o on clients workers for warmup (discarded) and then for
// duration (measured). It never runs longer than warmup+duration plus the
// time of the slowest request in flight, and ctx cancels it early.
//
// measuring, if set, is called just before the measured phase and returns
// the function called just after it.
func runLoad(ctx context.Context, clients int, warmup, duration time.Duration, newClient func() *http.Client, o op, measuring func() func()) loadResult {
	ws := make([]*worker, clients)
	for i := range ws {
		ws[i] = &worker{}
		if newClient != nil {
			ws[i].client = newClient()
		}
	}
	if warmup > 0 {
		phase(ctx, ws, warmup, o)
	}
	if measuring != nil {
		done := measuring()
		defer done()
	}
	return phase(ctx, ws, duration, o)
}

func phase(ctx context.Context, ws []*worker, d time.Duration, o op) loadResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errs     atomic.Int64
		firstErr atomic.Pointer[string]
		stop     atomic.Bool
		samples  = make([][]time.Duration, len(ws))
	)
	start := time.Now()
	deadline := start.Add(d)
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for !stop.Load() && ctx.Err() == nil {
				t0 := time.Now()
				err := o(ctx, w)
				t1 := time.Now()
				if t1.After(deadline) {
					// A request that ends after the deadline is not part of
					// the measured window: counting it would skew the rate.
					stop.Store(true)
					break
				}
				lat = append(lat, t1.Sub(t0))
				if err != nil {
					errs.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
			samples[i] = lat
		}()
	}
	timer := time.NewTimer(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	stop.Store(true)
	wg.Wait()
	elapsed := d
	if real := time.Since(start); ctx.Err() != nil && real < d {
		elapsed = real
	}

	var all []time.Duration
	for _, s := range samples {
		all = append(all, s...)
	}
	r := loadResult{Requests: int64(len(all)), Errors: errs.Load(), Elapsed: elapsed}
	if p := firstErr.Load(); p != nil {
		r.FirstError = *p
	}
	if len(all) > 0 {
		slices.Sort(all)
		r.P50 = percentile(all, 0.50)
		r.P99 = percentile(all, 0.99)
		r.P999 = percentile(all, 0.999)
		r.Max = all[len(all)-1]
		var sum time.Duration
		for _, v := range all {
			sum += v
		}
		r.Mean = sum / time.Duration(len(all))
	}
	return r
}

// percentile is the nearest-rank percentile of sorted samples: the smallest
// sample such that at least p of all samples are no larger.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted))+0.999999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// errNotLoopback refuses a target that is not this machine: a load generator
// must never be pointed at someone else's server by a typo.
var errNotLoopback = errors.New("deputy-bench: target is not a loopback address")

// checkLoopback accepts host (a name or an IP, with or without a port) only
// when every address it resolves to is a loopback address.
func checkLoopback(ctx context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" {
		return fmt.Errorf("%w: empty host", errNotLoopback)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("%w: %s", errNotLoopback, host)
		}
		return nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("deputy-bench: resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: %s resolves to nothing", errNotLoopback, host)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("%w: %s resolves to %s", errNotLoopback, host, a.IP)
		}
	}
	return nil
}

// checkURLLoopback is checkLoopback for a URL.
func checkURLLoopback(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("deputy-bench: %w", err)
	}
	return checkLoopback(ctx, u.Host)
}

// loopbackDialer dials only loopback addresses, whatever a URL says.
func loopbackDialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := checkLoopback(ctx, addr); err != nil {
			return nil, err
		}
		return d.DialContext(ctx, network, addr)
	}
}

// newHTTPClient is one keep-alive connection's worth of client for one
// worker: a worker never has two requests in flight, so every request after
// the first reuses the connection, as a token-fetching service would.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         loopbackDialer(),
			MaxIdleConns:        1,
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// tokenRequest is the op of a token endpoint cell: POST form to endpoint with
// HTTP Basic client authentication, and a 200 with an access_token is a success.
func tokenRequest(endpoint string, clientID, secret string, form url.Values) op {
	body := []byte(form.Encode())
	return func(ctx context.Context, w *worker) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
		resp, err := w.client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		w.buf.Reset()
		if _, err := w.buf.ReadFrom(io.LimitReader(resp.Body, 1<<16)); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, w.buf.Bytes())
		}
		if !bytes.Contains(w.buf.Bytes(), []byte(`"access_token"`)) {
			return fmt.Errorf("HTTP 200 without an access_token: %.200s", w.buf.Bytes())
		}
		return nil
	}
}
