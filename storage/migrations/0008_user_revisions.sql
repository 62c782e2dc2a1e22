-- revision counts the changes to what a user holds: their account's
-- state and their memberships, as the host reports them (storage
-- BumpUserRevision, plugin.Plugin.UserChanged). A replica that keeps a
-- user's scopes in memory (the token endpoint's user-scope cache,
-- plugin/userscopes.go) issues a token only if the user's row still has
-- the revision it read, checked in the token insert (or read in an agent
-- mint's subject-token lookup), so a change reported through any replica
-- or process takes effect on every other at once. No row is revision 0.
CREATE TABLE user_revisions (
    user_id  TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
