-- Retention prunes in bounded batches, oldest first: delivered outbox items by when they
-- were done, document history by when it happened, stored bodies by when they were logged.
CREATE INDEX outbox_finished ON outbox (status, updated_at);
CREATE INDEX document_events_at ON document_events (at);
