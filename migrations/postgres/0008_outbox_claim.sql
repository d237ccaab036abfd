-- Claiming stays cheap however long the queue grows: due items are read in due order from an
-- index of unfinished items only (the claim stops after its batch), and the order check
-- probes the unfinished items of one key. Done items, the bulk of the table, are in neither.
-- (postgres; kept in step with the other backend's 0008_outbox_claim.sql.)
CREATE INDEX outbox_claim ON outbox (destination, status, next_attempt_at)
    WHERE status IN ('pending', 'inflight');
CREATE INDEX outbox_unfinished_key ON outbox (destination, ordering_key, id)
    WHERE status IN ('pending', 'inflight');
DROP INDEX outbox_ordering;
