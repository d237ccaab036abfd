//! Admission control: at most `http.max_inflight` requests of served, protected routes are
//! at work at once; a request beyond waits at most `http.queue_timeout_ms` for its turn and
//! is otherwise shed with 503 and `Retry-After`, as it is while the transaction log's writer
//! is behind. Under overload clients get a fast, retryable answer instead of a reset
//! connection or an unbounded wait.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every slot stayed busy for the whole queue wait.
    Busy,
    /// The transaction log's queue is nearly full.
    Recording,
}

impl Shed {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::Busy => "busy",
            Shed::Recording => "recording",
        }
    }
}

/// The gate requests pass.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Admission {
    /// At most `max_inflight` at once, each waiting at most `wait` for a slot.
    pub fn new(max_inflight: usize, wait: Duration) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_inflight.max(1))),
            wait,
        }
    }

    /// A slot for one request, held until the permit is dropped; refused at once while the
    /// transaction log is `recording_behind`.
    pub async fn enter(&self, recording_behind: bool) -> Result<OwnedSemaphorePermit, Shed> {
        if recording_behind {
            return Err(Shed::Recording);
        }
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Shed::Busy),
        }
    }

    /// Requests at work now.
    pub fn inflight(&self, max_inflight: usize) -> usize {
        max_inflight.saturating_sub(self.slots.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_limit_a_request_waits_then_is_shed() {
        let a = Admission::new(2, Duration::from_millis(0));
        let p1 = a.enter(false).await.unwrap();
        let _p2 = a.enter(false).await.unwrap();
        assert_eq!(a.enter(false).await.unwrap_err(), Shed::Busy);
        drop(p1);
        assert!(a.enter(false).await.is_ok());
        assert_eq!(a.enter(true).await.unwrap_err(), Shed::Recording);
    }
}
