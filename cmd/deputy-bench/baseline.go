package main

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/url"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	fositestorage "github.com/ory/fosite/storage"
)

// The baseline is what a team gets from fosite without deputy: the provider
// composed exactly as fosite's README shows (compose.ComposeAllEnabled over
// storage.NewExampleStore, a fosite.Config with only GlobalSecret and
// AccessTokenLifespan set, so the default BCrypt secrets hasher), serving
// client_credentials with the README's token handler.
//
// Its client is the example store's "my-client"/"foobar", whose secret hash
// has bcrypt cost 10. A secret hashed by the same default hasher today would
// have cost 12 (fosite.DefaultBCryptWorkFactor), four times slower; the
// README's client is the baseline most favourable to fosite.
const (
	baselineClientID = "my-client"
	baselineSecret   = "foobar"
	baselineScope    = "photos"
)

// startBaseline serves the baseline's token endpoint on a loopback listener
// and returns its URL and a function that stops it.
func startBaseline(listen string) (string, func(), error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", nil, err
	}
	config := &fosite.Config{
		AccessTokenLifespan: 30 * time.Minute,
		GlobalSecret:        []byte("my super secret signing password"),
	}
	provider := compose.ComposeAllEnabled(config, fositestorage.NewExampleStore(), key)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /oauth2/token", func(rw http.ResponseWriter, req *http.Request) {
		ctx := req.Context()
		session := new(fosite.DefaultSession)
		ar, err := provider.NewAccessRequest(ctx, req, session)
		if err != nil {
			provider.WriteAccessError(ctx, rw, ar, err)
			return
		}
		// As fosite's example server does: a client_credentials request gets
		// the scopes it asked for, which the handler already checked against
		// the client's.
		if ar.GetGrantTypes().ExactOne("client_credentials") {
			for _, s := range ar.GetRequestedScopes() {
				ar.GrantScope(s)
			}
		}
		resp, err := provider.NewAccessResponse(ctx, ar)
		if err != nil {
			provider.WriteAccessError(ctx, rw, ar, err)
			return
		}
		provider.WriteAccessResponse(ctx, rw, ar, resp)
	})
	base, stop, err := serve(listen, mux)
	if err != nil {
		return "", nil, err
	}
	return base + "/oauth2/token", stop, nil
}

func baselineSpec(endpoint string) tokenSpec {
	return tokenSpec{Endpoint: endpoint, ClientID: baselineClientID, Secret: baselineSecret, Form: url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {baselineScope},
	}}
}

// serve runs h on a fresh loopback listener (listen must be a loopback
// address; port 0 picks one) and returns its base URL and a stop function.
func serve(listen string, h http.Handler) (string, func(), error) {
	ln, base, err := listenLoopback(listen)
	if err != nil {
		return "", nil, err
	}
	return base, serveOn(ln, h), nil
}
