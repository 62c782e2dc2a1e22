package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
)

// The debug listener is for measuring deputy-idp, not for running it: the
// benchmark (cmd/deputy-bench) starts the binary with it to count the SQL
// each token costs and to profile the server as users run it. It is off
// unless DEPUTY_DEBUG_LISTEN names a loopback address, has no flag (so
// `serve -h` does not offer it), and when off the store is opened exactly
// as without this file: no counting wrapper, no handler, no listener.
//
// On it serves, to this machine only:
//
//	GET /debug/querycount   the store's driver calls so far, as JSON (storage/querycount.Counts)
//	/debug/pprof/…          net/http/pprof (profile?seconds=N, heap, goroutine, …)
//
// Counting wraps every database connection (an atomic add per call, one
// per network write on PostgreSQL), which the bench's in-process plugin
// cells pay too, so their figures stay comparable.
const debugListenEnv = "DEPUTY_DEBUG_LISTEN"

// listenDebug listens on addr, which must be a loopback IP and port: the
// profiles and counts say what the server does, and nobody else needs to
// know.
func listenDebug(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", debugListenEnv, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s %q: the debug listener only binds a loopback IP address, such as 127.0.0.1:6060", debugListenEnv, addr)
	}
	return net.Listen("tcp", addr)
}

// debugRoutes is the handler of the debug listener.
func (s *server) debugRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/querycount", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.queries.Counts())
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
