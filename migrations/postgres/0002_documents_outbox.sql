-- Documents and the outbox (PostgreSQL). Kept in step with migrations/sqlite/0002_documents_outbox.sql.
-- Times are BIGINT epoch milliseconds (UTC).

-- Structured medical documents accepted by the gateway; `id` is the submitter's local UID.
CREATE TABLE documents (
    id               TEXT PRIMARY KEY,
    org_oid          TEXT NOT NULL,
    kind_code        TEXT NOT NULL,
    kind_version     TEXT NOT NULL,
    patient_snils    TEXT NOT NULL,
    author_snils     TEXT NOT NULL,
    submitted_by     TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    content          BYTEA NOT NULL,
    content_type     TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    streebog256      TEXT NOT NULL,
    org_signature    BYTEA NOT NULL,
    doctor_signature BYTEA NOT NULL,
    signed_by_gateway SMALLINT NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    emdr_id          TEXT,
    registered_at    BIGINT,
    message_id       TEXT,
    error_class      TEXT,
    error_codes      TEXT,
    error_message    TEXT,
    rerun_of         TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
-- Exact bytes are stored for retrieval, not compressed: saves CPU on every intake.
ALTER TABLE documents ALTER COLUMN content SET STORAGE EXTERNAL;
ALTER TABLE documents ALTER COLUMN org_signature SET STORAGE EXTERNAL;
ALTER TABLE documents ALTER COLUMN doctor_signature SET STORAGE EXTERNAL;
CREATE INDEX documents_status ON documents (status, updated_at);
CREATE INDEX documents_org ON documents (org_oid, created_at);
CREATE INDEX documents_kind ON documents (kind_code, created_at);
CREATE INDEX documents_message ON documents (message_id);

-- Every status change of a document, for its history.
CREATE TABLE document_events (
    id           TEXT PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents (id),
    at           BIGINT NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT NOT NULL
);
CREATE INDEX document_events_document ON document_events (document_id, at);

-- Outbound effects, written in the same transaction as the state change that causes them.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    destination     TEXT NOT NULL,
    kind            TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_by       TEXT,
    locked_until    BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_aggregate ON outbox (aggregate_id);
