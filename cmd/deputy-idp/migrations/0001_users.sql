-- The demo IdP's accounts, memberships, browser sessions and the sample
-- API's projects. TIMESTAMP, every time written in UTC.
--
-- IF NOT EXISTS: databases created before these tables were versioned
-- already hold them; this first version adopts them as they are.

CREATE TABLE IF NOT EXISTS idp_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS idp_memberships (
    user_id      TEXT NOT NULL REFERENCES idp_users (id) ON DELETE CASCADE,
    organization TEXT NOT NULL,
    scopes       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, organization)
);

CREATE TABLE IF NOT EXISTS idp_sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES idp_users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS idp_sessions_user_idx ON idp_sessions (user_id);
CREATE INDEX IF NOT EXISTS idp_sessions_expires_idx ON idp_sessions (expires_at);

-- The sample protected API's data.
CREATE TABLE IF NOT EXISTS idp_projects (
    id           TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS idp_projects_org_idx ON idp_projects (organization, created_at);
