-- Agent grants are bound to the agent platform as well: one row per
-- (organization, user, client, session). Before this, a grant was keyed by
-- (organization, user, session) only, so any other client allowed the
-- agent-token grant that used the same session id for that user got the
-- approved scopes.
--
-- Rows from before carry client_id '', which is no client's id: they unlock
-- nothing at any mint, stay listed (and revocable) on the user's grants
-- page, and are swept when they expire. The unique key changes, which SQLite
-- cannot do in place, so the table is rebuilt (the same way on both).
CREATE TABLE agent_grants_v2 (
    id               TEXT PRIMARY KEY,
    organization     TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    agent_session_id TEXT NOT NULL,
    scopes           TEXT NOT NULL DEFAULT '[]',
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    -- Also the index of the mint's one grant query: all four columns by
    -- equality, then expires_at on the row.
    CONSTRAINT agent_grants_client_binding UNIQUE (organization, user_id, client_id, agent_session_id)
);
INSERT INTO agent_grants_v2 (id, organization, user_id, client_id, agent_session_id, scopes, created_at, updated_at, expires_at)
    SELECT id, organization, user_id, '', agent_session_id, scopes, created_at, updated_at, expires_at FROM agent_grants;
DROP TABLE agent_grants;
ALTER TABLE agent_grants_v2 RENAME TO agent_grants;
CREATE INDEX agent_grants_user_idx ON agent_grants (user_id);
CREATE INDEX agent_grants_expires_idx ON agent_grants (expires_at);

-- The audit log names the platform of every approval, denial and
-- revocation; events from before have none.
ALTER TABLE audit_events ADD COLUMN client_id TEXT NOT NULL DEFAULT '';
