-- What a run found where (per organization, per error class: a small JSON object) and how
-- it ran: 'tick' (a scheduled tick), 'manual' (asked for), 'worker' (a minute of a worker's
-- loop, recorded when it handled or failed something).
ALTER TABLE job_runs ADD COLUMN details TEXT;
-- A booking the clinic system lost and the gateway could not book again: a person must
-- call the patient (the reason says why); NULL when nothing is wrong.
ALTER TABLE appointments ADD COLUMN attention TEXT;
-- When the referring organization was reminded that an accepted referral, not yet booked,
-- is about to lapse (once per referral).
ALTER TABLE referrals ADD COLUMN reminded_at BIGINT;
