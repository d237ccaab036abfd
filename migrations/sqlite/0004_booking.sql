-- Booking (SQLite; kept in step with migrations/postgres/0004_booking.sql): what an appointment books (copied from the slot at hold time, so history
-- survives resynchronization), its reason for the last status change, and reschedules.
-- Statuses: held, booked (active; one per slot, see appointments_one_active_per_slot),
-- cancelled, expired, failed, withdrawn (the clinic system withdrew the slot), urgent
-- (seen out of schedule; no slot).
ALTER TABLE appointments ADD COLUMN practitioner_id TEXT NOT NULL DEFAULT '';
ALTER TABLE appointments ADD COLUMN specialty_code TEXT NOT NULL DEFAULT '';
ALTER TABLE appointments ADD COLUMN start_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appointments ADD COLUMN end_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appointments ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE appointments ADD COLUMN reason TEXT NOT NULL DEFAULT '';
ALTER TABLE appointments ADD COLUMN replaces TEXT;
CREATE INDEX appointments_slot ON appointments (slot_id);
CREATE INDEX appointments_snils ON appointments (patient_snils);
-- Only holds need finding by expiry: a partial index skips every other row (and the
-- index insert when a hold becomes booked).
DROP INDEX appointments_hold;
CREATE INDEX appointments_hold ON appointments (hold_expires_at) WHERE status = 'held';
-- (PostgreSQL sets a fill factor on slots here; SQLite has no equivalent.)
