-- Daily statistics for the dashboard, computed by the daily-stats job: one row per day,
-- metric and breakdown (organization, district, channel, status; empty where it does not
-- apply), recomputed whole for a day each time.
CREATE TABLE daily_stats (
    day TEXT NOT NULL,
    metric TEXT NOT NULL,
    org TEXT NOT NULL,
    district TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    value BIGINT NOT NULL,
    computed_at BIGINT NOT NULL,
    PRIMARY KEY (day, metric, org, district, channel, status)
);
CREATE INDEX appointments_created ON appointments (created_at);
CREATE INDEX referrals_created ON referrals (created_at);
