-- Clients that came without a person: registered through RFC 7591 dynamic
-- registration ('dynamic'), or known by a client ID metadata document they
-- host ('metadata_document': a copy the token lookups join, kit mode only).
-- Apps made by a person (the apps API, the host) keep registration ''.
--
-- registration_token_hash is the SHA-256 of a dynamic client's RFC 7592
-- registration access token (never the token). unused_expires_at is when a
-- registration that has never had a token issued is swept by
-- DeleteExpired; it is NULL for every other client, and set to NULL by the
-- first token.
ALTER TABLE clients ADD COLUMN registration TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN registration_token_hash BYTEA;
ALTER TABLE clients ADD COLUMN unused_expires_at TIMESTAMPTZ;
CREATE INDEX clients_unused_expires_idx ON clients (unused_expires_at);
