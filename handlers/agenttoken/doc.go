// Package agenttoken mints and verifies deputy's agent capability tokens
// (dpy_agt_ JWTs): the Minter, the Keyring of signing keys kept in storage,
// the fast verifier the resource middleware uses, and the JWKS handler.
package agenttoken
