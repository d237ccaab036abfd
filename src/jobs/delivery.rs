//! Outbox delivery as jobs: one per destination (registry, clinic systems, patient
//! notifications), woken when its service queues an item.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::{Job, Tick};
use crate::exchange::delivery::Worker;

/// Delivers the due items of one destination.
pub struct Delivery {
    name: String,
    worker: Worker,
    wake: Arc<Notify>,
    idle_poll: Duration,
}

impl Delivery {
    /// A job around `worker`, woken by `wake`, polling every `idle_poll` otherwise.
    pub fn new(worker: Worker, wake: Arc<Notify>, idle_poll: Duration) -> Delivery {
        Delivery {
            name: format!("deliver:{}", worker.destination()),
            worker,
            wake,
            idle_poll,
        }
    }
}

impl Job for Delivery {
    fn name(&self) -> &str {
        &self.name
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self.worker.step().await.map_err(|e| e.to_string())?;
            // Anything claimed: claim again at once, an item may have been queued meanwhile.
            Ok(Tick {
                report: None,
                handled: n,
                more: n > 0,
            })
        })
    }

    fn period(&self) -> Duration {
        self.idle_poll
    }

    fn wake(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
}
