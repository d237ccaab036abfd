-- Claiming stays cheap however long the queue grows: due items are read in due order from an
-- index (the claim stops after its batch), and the order check probes one key's items.
-- SQLite's planner uses a partial index only for a query repeating its condition, so these
-- are whole. (sqlite; kept in step with the other backend's 0008_outbox_claim.sql.)
CREATE INDEX outbox_claim ON outbox (destination, status, next_attempt_at);
CREATE INDEX outbox_unfinished_key ON outbox (destination, ordering_key, status, id);
DROP INDEX outbox_ordering;
