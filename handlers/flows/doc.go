// Package flows holds deputy's fosite token-endpoint handlers and their
// compose factories, one flow per file: owned client credentials, the
// agent-token grant, and introspection with the user re-check. Beside them,
// what those flows share: the Session stored with every token, the prefixed
// HMAC token strategy (dpy_at_, dpy_rt_, dpy_ac_), the EffectiveScopes
// re-check and the opaque access-token verifier for the resource middleware.
package flows
