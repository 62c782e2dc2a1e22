-- fosite clients (deputy's "apps"), their secrets, and fosite's stored requests.
-- Written for PostgreSQL; dialect.go rewrites the few types SQLite names differently.

CREATE TABLE clients (
    id                         TEXT PRIMARY KEY,
    name                       TEXT NOT NULL,
    icon_url                   TEXT NOT NULL DEFAULT '',
    redirect_uris              TEXT NOT NULL DEFAULT '[]',
    grant_types                TEXT NOT NULL DEFAULT '[]',
    response_types             TEXT NOT NULL DEFAULT '[]',
    scopes                     TEXT NOT NULL DEFAULT '[]',
    audience                   TEXT NOT NULL DEFAULT '[]',
    token_endpoint_auth_method TEXT NOT NULL DEFAULT 'client_secret_basic',
    public                     BOOLEAN NOT NULL DEFAULT FALSE,
    first_party                BOOLEAN NOT NULL DEFAULT FALSE,
    owner_user_id              TEXT,
    created_at                 TIMESTAMPTZ NOT NULL,
    updated_at                 TIMESTAMPTZ NOT NULL
);
CREATE INDEX clients_owner_idx ON clients (owner_user_id);

CREATE TABLE client_secrets (
    id             TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    secret_hash    BYTEA NOT NULL UNIQUE,
    display_prefix TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ
);
CREATE INDEX client_secrets_client_idx ON client_secrets (client_id);

-- One table per kind of stored request; the columns are the same for all
-- (refresh tokens add the access token they were issued with). No foreign key
-- to clients: it would make every token insert lock the client's row (a
-- MultiXact under concurrent inserts for one client); Store.DeleteClient
-- deletes a client's requests itself, and every lookup joins clients.
CREATE TABLE oauth2_authorize_codes (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL DEFAULT '',
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL DEFAULT '[]',
    granted_scopes     TEXT NOT NULL DEFAULT '[]',
    requested_audience TEXT NOT NULL DEFAULT '[]',
    granted_audience   TEXT NOT NULL DEFAULT '[]',
    form_data          TEXT NOT NULL DEFAULT '{}',
    session_data       TEXT NOT NULL DEFAULT '{}',
    active             BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX oauth2_authorize_codes_request_idx ON oauth2_authorize_codes (request_id);
CREATE INDEX oauth2_authorize_codes_expires_idx ON oauth2_authorize_codes (expires_at);

CREATE TABLE oauth2_access_tokens (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL DEFAULT '',
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL DEFAULT '[]',
    granted_scopes     TEXT NOT NULL DEFAULT '[]',
    requested_audience TEXT NOT NULL DEFAULT '[]',
    granted_audience   TEXT NOT NULL DEFAULT '[]',
    form_data          TEXT NOT NULL DEFAULT '{}',
    session_data       TEXT NOT NULL DEFAULT '{}',
    active             BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX oauth2_access_tokens_request_idx ON oauth2_access_tokens (request_id);
CREATE INDEX oauth2_access_tokens_expires_idx ON oauth2_access_tokens (expires_at);
CREATE INDEX oauth2_access_tokens_client_subject_idx ON oauth2_access_tokens (client_id, subject);

CREATE TABLE oauth2_refresh_tokens (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL DEFAULT '',
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL DEFAULT '[]',
    granted_scopes     TEXT NOT NULL DEFAULT '[]',
    requested_audience TEXT NOT NULL DEFAULT '[]',
    granted_audience   TEXT NOT NULL DEFAULT '[]',
    form_data          TEXT NOT NULL DEFAULT '{}',
    session_data       TEXT NOT NULL DEFAULT '{}',
    active             BOOLEAN NOT NULL DEFAULT TRUE,
    access_signature   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX oauth2_refresh_tokens_request_idx ON oauth2_refresh_tokens (request_id);
CREATE INDEX oauth2_refresh_tokens_expires_idx ON oauth2_refresh_tokens (expires_at);
CREATE INDEX oauth2_refresh_tokens_client_subject_idx ON oauth2_refresh_tokens (client_id, subject);

CREATE TABLE oauth2_pkce (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL DEFAULT '',
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL DEFAULT '[]',
    granted_scopes     TEXT NOT NULL DEFAULT '[]',
    requested_audience TEXT NOT NULL DEFAULT '[]',
    granted_audience   TEXT NOT NULL DEFAULT '[]',
    form_data          TEXT NOT NULL DEFAULT '{}',
    session_data       TEXT NOT NULL DEFAULT '{}',
    active             BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX oauth2_pkce_expires_idx ON oauth2_pkce (expires_at);

CREATE TABLE oauth2_oidc (
    signature          TEXT PRIMARY KEY,
    request_id         TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    subject            TEXT NOT NULL DEFAULT '',
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ,
    requested_scopes   TEXT NOT NULL DEFAULT '[]',
    granted_scopes     TEXT NOT NULL DEFAULT '[]',
    requested_audience TEXT NOT NULL DEFAULT '[]',
    granted_audience   TEXT NOT NULL DEFAULT '[]',
    form_data          TEXT NOT NULL DEFAULT '{}',
    session_data       TEXT NOT NULL DEFAULT '{}',
    active             BOOLEAN NOT NULL DEFAULT TRUE
);
CREATE INDEX oauth2_oidc_expires_idx ON oauth2_oidc (expires_at);

-- JWT assertion ids seen (RFC 7523 replay protection).
CREATE TABLE oauth2_jti (
    jti        TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX oauth2_jti_expires_idx ON oauth2_jti (expires_at);
