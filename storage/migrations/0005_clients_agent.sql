-- An agent client is software acting for whoever authorizes it (an MCP
-- client, say): the write scopes a user grants it at the authorization
-- endpoint are an approval, recorded as an agent grant that expires after the
-- grant lifespan, instead of lasting as long as its refresh token. Clients
-- registered dynamically or by metadata document are agents; an
-- administrator marks others.
ALTER TABLE clients ADD COLUMN agent BOOLEAN NOT NULL DEFAULT FALSE;
