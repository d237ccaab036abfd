//! Daily statistics: yesterday's figures finished and today's so far, computed once a day
//! (and whenever run by hand), stored for the dashboard and `/api/admin/stats`.

use std::time::Duration;

use chrono::{Duration as Days, TimeZone};
use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::model::time::SharedClock;
use crate::store::Store;

/// Computes the daily statistics of yesterday and today, in `time_zone`'s days.
pub struct DailyStats {
    store: Store,
    time_zone: chrono_tz::Tz,
    clock: SharedClock,
}

impl DailyStats {
    /// Statistics of `store`'s days in `time_zone`, timed by `clock`.
    pub fn new(store: Store, time_zone: chrono_tz::Tz, clock: SharedClock) -> DailyStats {
        DailyStats {
            store,
            time_zone,
            clock,
        }
    }

    /// The day (`YYYY-MM-DD`) `days_back` before the clock's, with its bounds (epoch ms).
    fn day(&self, days_back: i64) -> Option<(String, i64, i64)> {
        let now = self
            .time_zone
            .timestamp_millis_opt(self.clock.now_ms())
            .single()?;
        let date = now.date_naive() - Days::days(days_back);
        let start = self
            .time_zone
            .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .earliest()?;
        let end = start + Days::days(1);
        Some((
            date.to_string(),
            start.timestamp_millis(),
            end.timestamp_millis(),
        ))
    }
}

impl Job for DailyStats {
    fn name(&self) -> &str {
        "daily-stats"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let mut rows = 0;
            for back in [1, 0] {
                let (day, from, to) = self.day(back).ok_or("no such day in the time zone")?;
                rows += self
                    .store
                    .compute_daily_stats(&day, from, to, self.clock.now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(Tick::done(rows as usize))
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(86_400)
    }

    fn cron(&self) -> Option<&str> {
        // Five past midnight: yesterday is over.
        Some("0 5 0 * * *")
    }
}
