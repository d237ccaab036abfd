-- Intake indexes (SQLite; kept in step with migrations/postgres/0005_intake_indexes.sql).
-- A document has no registration message id until it is first sent, so indexing only the
-- rows that have one spares every intake an index insert; lookups by message id
-- (`message_id = $1` implies NOT NULL) use the partial index as before.
DROP INDEX documents_message;
CREATE INDEX documents_message ON documents (message_id) WHERE message_id IS NOT NULL;
