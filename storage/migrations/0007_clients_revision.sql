-- revision counts the changes to what authenticates a client and what it
-- may do: every update of the row, every secret created or deleted. A
-- replica that keeps a client in memory (the token endpoint's client
-- cache, plugin/clientcache.go) issues a token only if the row still has
-- the revision it read: the token insert (or an agent mint's grant query)
-- checks it in the same statement, so a change made through any replica
-- takes effect on every other at once.
ALTER TABLE clients ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
