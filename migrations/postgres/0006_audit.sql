-- Audit trail (postgres; kept in step with the other backend's 0006_audit.sql): one row per access
-- to personal data (appointments, documents, a patient's history, transaction bodies,
-- patient lookups), written in the same transaction as the change for writes. The full
-- patient identifiers are kept here and nowhere else; logs and answers mask them.
CREATE TABLE audit_events (
    id              TEXT PRIMARY KEY,
    at              BIGINT NOT NULL,
    request_id      TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    org_oid         TEXT,
    action          TEXT NOT NULL,
    entity          TEXT NOT NULL,
    entity_id       TEXT,
    patient_snils   TEXT,
    patient_policy  TEXT,
    outcome         TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_request ON audit_events (request_id);
CREATE INDEX audit_events_client ON audit_events (client_id, at);
CREATE INDEX audit_events_snils ON audit_events (patient_snils) WHERE patient_snils IS NOT NULL;
CREATE INDEX audit_events_policy ON audit_events (patient_policy) WHERE patient_policy IS NOT NULL;
