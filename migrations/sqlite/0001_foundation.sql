-- Foundation schema (SQLite). Kept in step with migrations/postgres/0001_foundation.sql.
-- Conventions: timestamps are BIGINT milliseconds since the Unix epoch (UTC);
-- identifiers are TEXT (UUIDs in their hyphenated lower-case form, OIDs dotted);
-- flags are INTEGER 0/1 so that both backends decode them the same way.

CREATE TABLE organizations (
    oid         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    short_name  TEXT NOT NULL,
    address     TEXT NOT NULL DEFAULT '',
    district    TEXT NOT NULL DEFAULT '',
    source      TEXT NOT NULL DEFAULT 'config',
    active      INTEGER NOT NULL DEFAULT 1,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE transactions (
    id              TEXT PRIMARY KEY,
    correlation_id  TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    client_id       TEXT,
    direction       TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    operation       TEXT NOT NULL,
    method          TEXT NOT NULL,
    target          TEXT NOT NULL,
    status          TEXT NOT NULL,
    http_status     INTEGER,
    error           TEXT,
    started_at      BIGINT NOT NULL,
    duration_us     BIGINT NOT NULL,
    request_bytes   BIGINT NOT NULL,
    response_bytes  BIGINT NOT NULL,
    body_policy     TEXT NOT NULL,
    request_body    BLOB,
    response_body   BLOB,
    truncated       INTEGER NOT NULL DEFAULT 0,
    rerun_of        TEXT,
    expires_at      BIGINT NOT NULL
);
CREATE INDEX transactions_started ON transactions (started_at);
CREATE INDEX transactions_status ON transactions (status, id);
CREATE INDEX transactions_operation ON transactions (operation, id);
CREATE INDEX transactions_correlation ON transactions (correlation_id);
CREATE INDEX transactions_expires ON transactions (expires_at);
