package main

import (
	"bufio"
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
	"syscall"
	"time"
)

// op is one request of a cell. It returns nil when the request produced what
// it should (a token, a row); anything else counts as an error.
type op func(ctx context.Context, w *worker) error

// worker is one closed-loop client: it sends a request, waits for the answer,
// and sends the next, on one keep-alive connection (conn, read through br,
// dialed by the first request). Its buffer is reused so that the generator,
// which shares the machine's cores with the server it measures, stays cheap.
type worker struct {
	conn net.Conn
	br   *bufio.Reader
	buf  bytes.Buffer
	// retries counts requests sent again on a new connection (tokenRequest);
	// whoever counts requests sent adds them and resets it.
	retries int64
	// timeout replaces requestTimeout when set (tests).
	timeout time.Duration
}

// close drops the worker's connection; the next request dials again.
func (w *worker) close() {
	if w.conn != nil {
		w.conn.Close()
		w.conn, w.br = nil, nil
	}
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
func runLoad(ctx context.Context, clients int, warmup, duration time.Duration, o op, measuring func() func()) loadResult {
	ws := make([]*worker, clients)
	for i := range ws {
		ws[i] = &worker{}
	}
	defer func() {
		for _, w := range ws {
			w.close()
		}
	}()
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
				if t1.After(deadline) || ctx.Err() != nil {
					// A request that ends after the deadline, or that the
					// context's end cut short, is not part of the measured
					// window: counting it would skew the rate.
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
// HTTP Basic client authentication, and a 200 with an access_token is a
// success.
//
// The request's bytes are built once and written as they are; the answer
// is parsed by net/http (http.ReadResponse: status, headers, a
// Content-Length or chunked body). net/http's Client would cost the
// generator two goroutine hand-offs and a request's worth of allocations
// per token, about half the CPU the server spends on one, on the cores the
// server and its database share (docs/performance.md, "The load
// generator"); a client that is cheap to run is what wrk is for the same
// reason.
func tokenRequest(endpoint string, clientID, secret string, form url.Values) op {
	raw, addr, err := tokenRequestBytes(endpoint, clientID, secret, form)
	if err != nil {
		return func(context.Context, *worker) error { return err }
	}
	dial := loopbackDialer()
	return func(ctx context.Context, w *worker) error {
		for attempt := 0; ; attempt++ {
			reused := w.conn != nil
			if !reused {
				c, err := dial(ctx, "tcp", addr)
				if err != nil {
					return err
				}
				w.conn, w.br = c, bufio.NewReaderSize(c, 4096)
			}
			status, err := w.roundTrip(ctx, raw)
			if err != nil {
				w.close()
				if ctxErr := ctx.Err(); ctxErr != nil {
					return fmt.Errorf("%w (%v)", ctxErr, err)
				}
				// A kept-alive connection the server closed before answering
				// (it timed out while idle, say) is tried once more on a new
				// one. The server may have read the request before closing,
				// so the retry is counted as a request sent: the figures per
				// request divide by what the server was asked, not by ops.
				if reused && attempt == 0 && errors.Is(err, errUnanswered) {
					w.retries++
					continue
				}
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("HTTP %d: %.200s", status, w.buf.Bytes())
			}
			if !bytes.Contains(w.buf.Bytes(), []byte(`"access_token"`)) {
				return fmt.Errorf("HTTP 200 without an access_token: %.200s", w.buf.Bytes())
			}
			return nil
		}
	}
}

// requestTimeout bounds one attempt's write and read on a worker's
// connection (worker.timeout overrides it); dialing has its own 5 s limit.
const requestTimeout = 10 * time.Second

// errUnanswered is a connection that was closed or reset under a request
// before any byte of an answer came back. A timeout is not one.
var errUnanswered = errors.New("connection closed before an answer")

// roundTrip writes raw on the worker's connection and reads the final
// answer's status and body (at most 64 KiB, into w.buf); interim 1xx
// answers are skipped. On an error the caller closes the connection; on
// success it is left open for the next request unless the answer said to
// close it. ctx ending cuts the request short.
func (w *worker) roundTrip(ctx context.Context, raw []byte) (status int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	timeout := w.timeout
	if timeout == 0 {
		timeout = requestTimeout
	}
	if err := w.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	if ctx.Done() != nil {
		conn := w.conn
		stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	if _, err := w.conn.Write(raw); err != nil {
		return 0, unanswered(err)
	}
	if _, err := w.br.Peek(1); err != nil {
		return 0, unanswered(err)
	}
	for {
		resp, err := http.ReadResponse(w.br, nil)
		if err != nil {
			return 0, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp.StatusCode, errors.New("HTTP 101: the connection switched protocols")
		}
		if resp.StatusCode < 200 {
			continue // 100 Continue, 103 Early Hints: the final answer follows
		}
		w.buf.Reset()
		_, err = w.buf.ReadFrom(io.LimitReader(resp.Body, 1<<16+1))
		if err == nil && w.buf.Len() > 1<<16 {
			// Not drained: the caller drops the connection instead.
			return resp.StatusCode, errors.New("answer over 64 KiB")
		}
		if err != nil {
			return resp.StatusCode, err
		}
		resp.Body.Close()
		// Bytes after the answer (a server that wrote two) would be read
		// as the next request's answer: the connection goes instead.
		if resp.Close || w.br.Buffered() > 0 {
			w.close()
		}
		return resp.StatusCode, nil
	}
}

// unanswered marks err errUnanswered when it says the connection was
// closed or reset rather than slow.
func unanswered(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: %w", errUnanswered, err)
	}
	return err
}

// tokenRequestBytes builds the HTTP/1.1 request tokenRequest sends and the
// address it connects to.
func tokenRequestBytes(endpoint, clientID, secret string, form url.Values) (raw []byte, addr string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, "", fmt.Errorf("deputy-bench: %w", err)
	}
	if u.Scheme != "http" {
		return nil, "", fmt.Errorf("deputy-bench: %s: only http:// endpoints on loopback", endpoint)
	}
	addr = u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	body := form.Encode()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	if err != nil {
		return nil, "", fmt.Errorf("deputy-bench: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	var b bytes.Buffer
	if err := req.Write(&b); err != nil {
		return nil, "", fmt.Errorf("deputy-bench: %w", err)
	}
	return b.Bytes(), addr, nil
}
