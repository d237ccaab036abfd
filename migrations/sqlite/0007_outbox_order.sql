-- Effects on one object (a slot, a document, an appointment) reach their partner in order:
-- an item is claimed only when no earlier unfinished item has its ordering key. (sqlite; kept in
-- step with the other backend's 0007_outbox_order.sql.)
ALTER TABLE outbox ADD COLUMN ordering_key TEXT;
CREATE INDEX outbox_ordering ON outbox (destination, ordering_key, status);
