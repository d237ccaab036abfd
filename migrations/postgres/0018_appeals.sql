-- Citizens' appeals: where each came from (and its id there, so a repeated intake is the
-- same appeal), its kind, district, topic and text, the citizen's contact and identifiers
-- (personal data), the organization responsible, its deadline, extension, escalation and
-- answer, and the appointment or referral it concerns when the identifiers match one.
CREATE TABLE appeals (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    external_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    district TEXT NOT NULL,
    org_oid TEXT,
    topic TEXT NOT NULL,
    body TEXT NOT NULL,
    contact TEXT NOT NULL,
    snils TEXT,
    policy TEXT,
    status TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    extended_at BIGINT,
    extension_reason TEXT,
    escalated_at BIGINT,
    answered_at BIGINT,
    answer TEXT,
    answered_by TEXT,
    linked_kind TEXT,
    linked_id TEXT,
    client_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX appeals_external ON appeals (channel, external_id);
CREATE INDEX appeals_received ON appeals (received_at);
CREATE INDEX appeals_open ON appeals (status, due_at);
CREATE INDEX appeals_org ON appeals (org_oid, received_at);

-- What happened to an appeal, in order: received, routed, rerouted, extended, escalated,
-- answered.
CREATE TABLE appeal_events (
    id TEXT PRIMARY KEY,
    appeal_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    org_oid TEXT,
    detail TEXT NOT NULL,
    client_id TEXT NOT NULL
);
CREATE INDEX appeal_events_appeal ON appeal_events (appeal_id, at);
