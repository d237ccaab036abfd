//! Pruning: transaction log records past their retention are deleted.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::model::time::SharedClock;
use crate::store::Store;

/// Deletes expired transaction log records, once an hour.
pub struct TransactionPrune {
    store: Store,
    clock: SharedClock,
}

impl TransactionPrune {
    /// A pruner of `store`'s transaction log.
    pub fn new(store: Store, clock: SharedClock) -> TransactionPrune {
        TransactionPrune { store, clock }
    }
}

impl Job for TransactionPrune {
    fn name(&self) -> &str {
        "transaction-prune"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self
                .store
                .prune_transactions(self.clock.now_ms())
                .await
                .map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(removed = n, "transaction log pruned");
            }
            Ok(Tick::done(n as usize))
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
