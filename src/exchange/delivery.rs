//! Delivery workers: claim due outbox items, run the destination's handler, and record the
//! outcome (delivered, retry later, dead letter). Several workers in several processes may
//! run at once; claims are leases, so an item held by a crashed process is claimed again
//! when its lease ends.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::store::outbox::OutboxItem;
use crate::store::{now_ms, Store};

/// What a handler made of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; never try again.
    Delivered,
    /// Try again at the given time (epoch ms) after this error.
    RetryAt(i64, String),
    /// Give up: dead letter with this error.
    Dead(String),
}

/// A destination's delivery function.
pub type Handler = Arc<dyn Fn(OutboxItem) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Settings of one worker pool.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Destination whose items this pool delivers.
    pub destination: String,
    /// Items handled concurrently.
    pub concurrency: usize,
    /// How long a claim lasts before another worker may take the item.
    pub lease: Duration,
    /// Idle poll interval when nothing is due and nobody notifies.
    pub idle_poll: Duration,
}

/// Runs a pool until the task is aborted. `wake` is notified by producers after they
/// enqueue, so new work starts without waiting for the poll interval.
pub async fn run(store: Store, config: WorkerConfig, handler: Handler, wake: Arc<Notify>) {
    let worker = format!("{}-{}", config.destination, uuid::Uuid::new_v4().simple());
    loop {
        let now = now_ms();
        let lease_until = now + config.lease.as_millis() as i64;
        let claimed = match store
            .claim_outbox(
                &config.destination,
                &worker,
                now,
                lease_until,
                config.concurrency as u32,
            )
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, destination = %config.destination, "outbox claim failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            let _ = tokio::time::timeout(config.idle_poll, wake.notified()).await;
            continue;
        }
        let full = claimed.len() == config.concurrency;
        let tasks = claimed.into_iter().map(|item| {
            let store = store.clone();
            let handler = handler.clone();
            let worker = worker.clone();
            async move {
                let id = item.id.clone();
                let outcome = handler(item).await;
                let now = now_ms();
                let applied = match &outcome {
                    Outcome::Delivered => store.complete_outbox(&id, &worker, now).await,
                    Outcome::RetryAt(at, err) => store.retry_outbox(&id, &worker, err, Some(*at), now).await,
                    Outcome::Dead(err) => store.retry_outbox(&id, &worker, err, None, now).await,
                };
                match applied {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(item = %id, "outbox lease lost before the outcome was recorded"),
                    Err(e) => tracing::error!(item = %id, error = %e, "could not record delivery outcome"),
                }
            }
        });
        futures_util::future::join_all(tasks).await;
        if !full {
            // Fewer than a full batch was due: give producers a moment before claiming again.
            tokio::task::yield_now().await;
        }
    }
}

/// The time of the next attempt after `attempts` failed ones, or `None` when the schedule
/// is exhausted.
pub fn next_attempt(schedule_secs: &[u64], attempts: i32, now: i64) -> Option<i64> {
    let i = usize::try_from(attempts.max(1) - 1).ok()?;
    schedule_secs.get(i).map(|s| now + (*s as i64) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ends_in_dead_letter() {
        let s = [10, 60];
        assert_eq!(next_attempt(&s, 1, 0), Some(10_000));
        assert_eq!(next_attempt(&s, 2, 0), Some(60_000));
        assert_eq!(next_attempt(&s, 3, 0), None);
    }
}
