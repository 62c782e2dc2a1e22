package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// cmdHealthcheck asks a running server's /healthz (liveness) or, with
// --ready, its /readyz (readiness: the database answers), for container
// health checks on an image that has no shell or curl.
func cmdHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("healthcheck", stderr)
	target := fs.String("url", "", "endpoint to ask (default: /healthz, or /readyz with --ready, on DEPUTY_LISTEN via loopback)")
	ready := fs.Bool("ready", false, "check readiness (/readyz: the database answers) instead of liveness")
	if !parseFlags(fs, args) {
		return 2
	}
	if *target == "" {
		*target = localHealthURL(envOr("DEPUTY_LISTEN", defaultListen))
		if *ready {
			*target = strings.TrimSuffix(*target, "/healthz") + "/readyz"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return cliFail(stderr, "healthcheck", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cliFail(stderr, "healthcheck", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return cliFail(stderr, "healthcheck", fmt.Errorf("%s: %s %s", *target, resp.Status, body))
	}
	fmt.Fprintf(stdout, "%s", body)
	return 0
}

// localHealthURL turns a listen address into a URL this host can reach: an
// unspecified address (":8080", "0.0.0.0:8080") is reached on loopback.
func localHealthURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen + "/healthz"
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}
