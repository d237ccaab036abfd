-- Referrals between organizations (FHIR ServiceRequest + Task) and their transitions.
CREATE TABLE referrals (
    id               TEXT PRIMARY KEY,
    patient_policy   TEXT,
    patient_birth    TEXT,
    patient_snils    TEXT,
    diagnosis        TEXT NOT NULL,
    reason           TEXT NOT NULL,
    requester_org    TEXT NOT NULL,
    requester_snils  TEXT NOT NULL,
    profile          TEXT NOT NULL,
    target_org       TEXT NOT NULL,
    urgency          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    valid_until      BIGINT NOT NULL,
    documents        TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_reason    TEXT,
    appointment_id   TEXT,
    conclusion_id    TEXT,
    client_id        TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX referrals_requester ON referrals (requester_org, created_at);
CREATE INDEX referrals_target ON referrals (target_org, created_at);
CREATE INDEX referrals_patient ON referrals (patient_policy);
CREATE INDEX referrals_open ON referrals (status, valid_until);

CREATE TABLE referral_events (
    id           TEXT PRIMARY KEY,
    referral_id  TEXT NOT NULL REFERENCES referrals (id),
    at           BIGINT NOT NULL,
    status       TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    reason       TEXT
);
CREATE INDEX referral_events_referral ON referral_events (referral_id, at);
