-- Agent grants: a user's approval of scopes for one agent session in one
-- organization. One row per (organization, user, session); approvals merge.
CREATE TABLE agent_grants (
    id               TEXT PRIMARY KEY,
    organization     TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    agent_session_id TEXT NOT NULL,
    scopes           TEXT NOT NULL DEFAULT '[]',
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT agent_grants_binding UNIQUE (organization, user_id, agent_session_id)
);
CREATE INDEX agent_grants_user_idx ON agent_grants (user_id);
CREATE INDEX agent_grants_expires_idx ON agent_grants (expires_at);

-- Append-only record of approvals, denials and revocations.
CREATE TABLE audit_events (
    id               BIGSERIAL PRIMARY KEY,
    event            TEXT NOT NULL,
    actor_user_id    TEXT NOT NULL,
    organization     TEXT NOT NULL DEFAULT '',
    agent_session_id TEXT NOT NULL DEFAULT '',
    scopes           TEXT NOT NULL DEFAULT '[]',
    grant_id         TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, created_at);
