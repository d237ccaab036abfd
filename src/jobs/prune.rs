//! Retention: transaction records past their retention, stored bodies, delivered outbox
//! items, finished documents' history and finished job runs past theirs are removed in
//! bounded batches, oldest first, until none is left (each batch one short statement per
//! kind).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::config::RetentionSettings;
use crate::model::time::{SharedClock, DAY_MS};
use crate::store::transactions::Retention as Cut;
use crate::store::Store;

/// Prunes what is past its retention, hourly.
pub struct Retention {
    store: Store,
    settings: RetentionSettings,
    clock: SharedClock,
}

impl Retention {
    /// A pruner of `store` keeping what `settings` says, timed by `clock`.
    pub fn new(store: Store, settings: RetentionSettings, clock: SharedClock) -> Retention {
        Retention {
            store,
            settings,
            clock,
        }
    }

    fn cut(&self) -> Cut {
        let now = self.clock.now_ms();
        let days = |d: u32| now - i64::from(d) * DAY_MS;
        Cut {
            now,
            bodies_before: days(self.settings.transaction_bodies_days),
            outbox_before: days(self.settings.outbox_delivered_days),
            history_before: days(self.settings.document_history_days),
            job_runs_before: days(self.settings.job_runs_days),
        }
    }
}

impl Job for Retention {
    fn name(&self) -> &str {
        "retention"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let batch = self.settings.batch_rows.max(1);
            let p = self
                .store
                .prune_batch(&self.cut(), batch)
                .await
                .map_err(|e| e.to_string())?;
            if p.total() > 0 {
                tracing::info!(
                    transactions = p.transactions,
                    bodies = p.bodies,
                    outbox = p.outbox,
                    history = p.history,
                    job_runs = p.job_runs,
                    "retention batch pruned"
                );
            }
            // A full batch of any kind: more of it may be waiting.
            let full = [p.transactions, p.bodies, p.outbox, p.history, p.job_runs]
                .into_iter()
                .any(|n| n >= u64::from(batch));
            Ok(Tick {
                report: None,
                handled: p.total() as usize,
                more: full,
            })
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn cron(&self) -> Option<&str> {
        // Hourly, at a quarter past (in `jobs.time_zone`).
        Some("0 15 * * * *")
    }
}
