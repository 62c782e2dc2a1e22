package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
)

// The HTTP floor is a token endpoint that does none of a token endpoint's
// work: it reads the form and the Basic credentials the load generator
// sends and answers a token response of deputy's size with a fresh random
// token, checking and storing nothing. Served in this process like the
// plugin cells and driven by the same load-generator process, it is what
// HTTP alone costs on this machine: its Go µs/tok is the least any Go token
// endpoint spends here, and its p99 at 8 clients is the tail the shared
// cores' run queue gives a request that does no work. The floor (an INSERT
// per request, no HTTP) is the same for the database.
const (
	httpFloorClientID = "http-floor"
	httpFloorSecret   = "http-floor-secret"
)

// httpFloorHandler answers every well-formed POST with a token response.
func httpFloorHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		if _, _, ok := r.BasicAuth(); !ok {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		// The size of deputy's: dpy_at_, 32 random bytes, a dot and a
		// 32-byte signature, each in base64url.
		var raw [64]byte
		_, _ = rand.Read(raw[:]) // never fails (crypto/rand)
		token := "dpy_at_" + base64.RawURLEncoding.EncodeToString(raw[:32]) + "." + base64.RawURLEncoding.EncodeToString(raw[32:])
		scope, _ := json.Marshal(r.PostForm.Get("scope")) // a string always marshals
		body := `{"access_token":"` + token + `","expires_in":3599,"scope":` + string(scope) + `,"token_type":"bearer"}`
		h := w.Header()
		h.Set("Content-Type", "application/json;charset=UTF-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		w.Write([]byte(body)) //nolint:errcheck // the client went away
	})
}

func httpFloorSpec(endpoint string) tokenSpec {
	return tokenSpec{Endpoint: endpoint, ClientID: httpFloorClientID, Secret: httpFloorSecret, Form: url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {"projects:read"},
	}}
}

func (b *bench) runHTTPFloor(ctx context.Context) {
	base, stop, err := serve(b.o.listen, httpFloorHandler())
	if err != nil {
		b.unavailable(groupHTTPFloor, cellHTTPFloor, "client_credentials", "none", err)
		return
	}
	defer stop()
	spec := httpFloorSpec(base + "/token")
	b.measure(ctx, cellSpec{group: groupHTTPFloor, cell: cellHTTPFloor, grant: "client_credentials", backend: "none", request: &spec})
}
