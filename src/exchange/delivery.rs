//! Delivery workers: claim due outbox items, run the destination's handler, and record the
//! outcome (delivered, retry later, dead letter; an attempt a partner's open circuit refused
//! waits for the circuit uncounted, for as long as its retry schedule spans). Several workers in several processes may
//! run at once; claims are leases, so an item held by a crashed process is claimed again
//! when its lease ends. The loop around a worker's step lives in `jobs`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::partners::Partners;
use crate::model::time::SharedClock;
pub use crate::store::outbox::OutboxItem;
use crate::store::{Store, StoreError};

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
    /// Attempts an item gets (its destination's retry schedule plus the first): a retry
    /// asked for beyond them dead-letters the item instead.
    pub max_attempts: i32,
    /// How long after it was queued an item may still wait for an open circuit without the
    /// refused attempt counting (its retry schedule's span): then attempts count again, so
    /// even a partner that never comes back ends in dead letters.
    pub patience: Duration,
}

/// A delivery worker of one destination: each [`Worker::step`] claims the due items (at
/// most `concurrency`), runs the handler on them concurrently and records each outcome.
pub struct Worker {
    store: Store,
    config: WorkerConfig,
    handler: Handler,
    clock: SharedClock,
    id: String,
    recorder: Recorder,
}

impl Worker {
    /// A worker delivering `config.destination` with `handler`; claims are timed by `clock`,
    /// outcomes counted in `partners`' delivery metrics.
    pub fn new(
        store: Store,
        config: WorkerConfig,
        handler: Handler,
        clock: SharedClock,
        partners: Partners,
    ) -> Worker {
        let id = format!("{}-{}", config.destination, uuid::Uuid::new_v4().simple());
        let recorder = Recorder {
            store: store.clone(),
            worker: id.clone(),
            max_attempts: config.max_attempts,
            patience_ms: i64::try_from(config.patience.as_millis()).unwrap_or(i64::MAX),
            clock: clock.clone(),
            partners,
        };
        Worker {
            store,
            config,
            handler,
            clock,
            id,
            recorder,
        }
    }

    /// The destination.
    pub fn destination(&self) -> &str {
        &self.config.destination
    }

    /// Claims due items and delivers them; returns how many were claimed.
    pub async fn step(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let lease_until = now + self.config.lease.as_millis() as i64;
        let claimed = self
            .store
            .claim_outbox(
                &self.config.destination,
                &self.id,
                now,
                lease_until,
                self.config.concurrency as u32,
            )
            .await?;
        let n = claimed.len();
        let tasks = claimed.into_iter().map(|item| async move {
            let deliver = (self.handler)(item.clone());
            // The delivery continues the trace of the request that queued the effect.
            let trace = item
                .traceparent
                .as_deref()
                .and_then(crate::context::Trace::continue_from);
            let noted = crate::context::with_call_note(deliver);
            let (outcome, calls) = match trace {
                Some(t) => crate::context::with_trace(t, noted).await,
                None => noted.await,
            };
            self.recorder.record_attempt(&item, outcome, calls).await;
        });
        futures_util::future::join_all(tasks).await;
        Ok(n)
    }
}

/// Records what became of claimed items: a retry asked for beyond `max_attempts`
/// dead-letters the item instead; outcomes and delivery latency go to the metrics.
pub struct Recorder {
    /// The database.
    pub store: Store,
    /// Who holds the claims.
    pub worker: String,
    /// Attempts an item gets.
    pub max_attempts: i32,
    /// How long after queueing an attempt refused by an open circuit goes uncounted (ms).
    pub patience_ms: i64,
    /// Time of the outcome.
    pub clock: SharedClock,
    /// Delivery metrics.
    pub partners: Partners,
}

impl Recorder {
    /// Records the outcome of `item`'s attempt whose calls went as `calls` says: a failure
    /// because an open circuit refused its only call waits for the circuit, uncounted,
    /// while the item is younger than the patience.
    pub async fn record_attempt(
        &self,
        item: &OutboxItem,
        outcome: Outcome,
        calls: crate::context::CallNote,
    ) {
        let (id, attempts) = (&item.id, item.attempts);
        let now = self.clock.now_ms();
        let (store, worker) = (&self.store, self.worker.as_str());
        let waited = now.saturating_sub(item.created_at);
        // Refused by an open circuit, its only call never made: not an attempt.
        let postpone = match (&outcome, calls.refused_until) {
            (Outcome::RetryAt(_, err) | Outcome::Dead(err), Some(until))
                if !calls.called && waited < self.patience_ms =>
            {
                Some((until.max(now + 1000), err.clone()))
            }
            _ => None,
        };
        let outcome = match outcome {
            Outcome::RetryAt(_, err) if attempts >= self.max_attempts => {
                Outcome::Dead(format!("gave up after {attempts} attempts: {err}"))
            }
            o => o,
        };
        let (label, applied) = match (&postpone, &outcome) {
            (Some((at, err)), _) => (
                "postponed",
                store.postpone_outbox(id, worker, err, *at, now).await,
            ),
            (None, Outcome::Delivered) => {
                ("delivered", store.complete_outbox(id, worker, now).await)
            }
            (None, Outcome::RetryAt(at, err)) => (
                "retry",
                store.retry_outbox(id, worker, err, Some(*at), now).await,
            ),
            (None, Outcome::Dead(err)) => {
                ("dead", store.retry_outbox(id, worker, err, None, now).await)
            }
        };
        let queued_for = (label == "delivered")
            .then(|| Duration::from_millis(u64::try_from(now - item.created_at).unwrap_or(0)));
        self.partners
            .delivered(&item.destination, label, queued_for);
        match applied {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(item = %id, "outbox lease lost before the outcome was recorded")
            }
            Err(e) => tracing::error!(item = %id, error = %e, "could not record delivery outcome"),
        }
    }
}

/// The time of the next attempt after `attempts` failed ones, or `None` when the schedule
/// is exhausted.
pub fn next_attempt(schedule_secs: &[u64], attempts: i32, now: i64) -> Option<i64> {
    let i = usize::try_from(attempts.max(1) - 1).ok()?;
    schedule_secs.get(i).map(|s| now + (*s as i64) * 1000)
}

/// The outcome of a failed attempt that may succeed later: retry at the schedule's next
/// step, or dead-letter with the count and the last error once the schedule is spent.
pub fn retry_or_dead(schedule: &[u64], item: &OutboxItem, error: String, now: i64) -> Outcome {
    match next_attempt(schedule, item.attempts, now) {
        Some(at) => Outcome::RetryAt(at, error),
        None => Outcome::Dead(format!("gave up after {} attempts: {error}", item.attempts)),
    }
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
