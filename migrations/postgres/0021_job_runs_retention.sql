-- Finished job runs are pruned by age (`retention.job_runs_days`), oldest first.
CREATE INDEX job_runs_ended ON job_runs (ended_at);
