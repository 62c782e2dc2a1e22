// Package integration holds deputy's end-to-end tests. They build
// cmd/deputy-idp, start it as a real process on a fresh database (SQLite and
// PostgreSQL), and drive it only through what a user or a client program has:
// HTTP with a cookie jar for the browser-like parts, golang.org/x/oauth2 for
// the OAuth flows, the deputy-idp admin CLI, and Chromium through chromedp.
//
// With DEPUTY_URL set the tests run against that server instead (make
// integration points it at the docker-compose stack); see docs/integration.md.
package integration
