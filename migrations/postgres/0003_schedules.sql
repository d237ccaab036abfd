-- Schedules and booking (PostgreSQL). Kept in step with migrations/sqlite/0003_schedules.sql.
-- Times are BIGINT epoch milliseconds (UTC). Booking channels are an INTEGER bit mask:
-- 1 registry, 2 phone, 4 kiosk, 8 internet, 16 doctor, 32 referral.

-- Doctors (and rooms) whose schedules a clinic system publishes.
CREATE TABLE practitioners (
    id                TEXT PRIMARY KEY,
    org_oid           TEXT NOT NULL,
    source            TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    snils             TEXT NOT NULL,
    family            TEXT NOT NULL,
    given             TEXT NOT NULL,
    specialty_code    TEXT NOT NULL,
    specialty_version TEXT NOT NULL,
    position_code     TEXT NOT NULL,
    room              TEXT NOT NULL DEFAULT '',
    active            SMALLINT NOT NULL DEFAULT 1,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX practitioners_org ON practitioners (org_oid);
CREATE INDEX practitioners_specialty ON practitioners (specialty_code);

-- Slots, owned by the clinic system named in `source`; `id` = source:external id.
CREATE TABLE slots (
    id               TEXT PRIMARY KEY,
    org_oid          TEXT NOT NULL,
    practitioner_id  TEXT NOT NULL,
    specialty_code   TEXT NOT NULL,
    start_at         BIGINT NOT NULL,
    end_at           BIGINT NOT NULL,
    status           TEXT NOT NULL,
    channels         INTEGER NOT NULL,
    source           TEXT NOT NULL,
    source_version   TEXT NOT NULL DEFAULT '',
    synced_at        BIGINT NOT NULL
);
CREATE INDEX slots_org_start ON slots (org_oid, start_at, id);
CREATE INDEX slots_practitioner_start ON slots (practitioner_id, start_at, id);
CREATE INDEX slots_specialty_start ON slots (specialty_code, start_at, id);

-- Appointments; at most one active (held or booked) appointment per slot, enforced here.
CREATE TABLE appointments (
    id               TEXT PRIMARY KEY,
    slot_id          TEXT NOT NULL,
    org_oid          TEXT NOT NULL,
    patient_policy   TEXT,
    patient_snils    TEXT,
    patient_birth    TEXT,
    channel          TEXT NOT NULL,
    status           TEXT NOT NULL,
    hold_expires_at  BIGINT,
    external_id      TEXT,
    client_id        TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX appointments_one_active_per_slot ON appointments (slot_id) WHERE status IN ('held', 'booked');
CREATE INDEX appointments_patient ON appointments (patient_policy);
CREATE INDEX appointments_hold ON appointments (status, hold_expires_at);

-- Idempotency keys of creates: a replay returns the first result.
CREATE TABLE idempotency_keys (
    client_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (client_id, key)
);

-- Temporary restrictions of booking channels by organization (holidays, epidemics).
CREATE TABLE booking_restrictions (
    id          TEXT PRIMARY KEY,
    org_oid     TEXT NOT NULL,
    channels    INTEGER NOT NULL,
    from_at     BIGINT NOT NULL,
    to_at       BIGINT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX booking_restrictions_org ON booking_restrictions (org_oid, from_at);

-- Progress of synchronization per source system (change tokens).
CREATE TABLE sync_state (
    source        TEXT NOT NULL,
    scope         TEXT NOT NULL,
    change_token  TEXT NOT NULL,
    synced_at     BIGINT NOT NULL,
    PRIMARY KEY (source, scope)
);
