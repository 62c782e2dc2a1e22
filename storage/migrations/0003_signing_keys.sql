-- Signing keys of agent capability tokens. Every replica on the database signs
-- with the one active key and verifies with every key not yet dropped. The
-- private half is sealed (AES-GCM under a key derived from the system secret)
-- by the caller; the store only keeps bytes.
CREATE TABLE signing_keys (
    id          TEXT PRIMARY KEY,        -- the JWS "kid"
    algorithm   TEXT NOT NULL,           -- "EdDSA" or "ES256"
    public_key  BYTEA NOT NULL,          -- PKIX DER
    private_key BYTEA NOT NULL,          -- sealed PKCS #8 DER
    active      BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    retired_at  TIMESTAMPTZ,
    drop_after  TIMESTAMPTZ              -- when the last token it signed has expired
);
-- At most one active key: replicas racing to create the first key, or to
-- rotate, collide here instead of each signing with its own.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
