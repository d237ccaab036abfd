-- One row per run of a scheduled job: a replica claims the (job, tick) row before doing
-- anything, so each tick runs once however many replicas share the database; the row keeps
-- the run's outcome and what it examined, found and repaired.
CREATE TABLE job_runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    tick_at BIGINT NOT NULL,
    manual INTEGER NOT NULL DEFAULT 0,
    replica TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    ended_at BIGINT,
    outcome TEXT NOT NULL,
    examined BIGINT NOT NULL DEFAULT 0,
    found BIGINT NOT NULL DEFAULT 0,
    repaired BIGINT NOT NULL DEFAULT 0,
    error TEXT
);
CREATE UNIQUE INDEX job_runs_tick ON job_runs (job, tick_at);
CREATE INDEX job_runs_running ON job_runs (outcome, lease_until);
