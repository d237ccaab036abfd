//! Everything the gateway runs in the background: the hold sweeper, schedule rounds, outbox
//! delivery, verdict polling, pruning. Each job is one testable [`Job::step`]; [`Jobs`] runs
//! a loop around every step and stops them all through one cancellation token.

pub mod delivery;
pub mod documents;
pub mod holds;
pub mod prune;
pub mod referrals;
pub mod schedules;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a step did: how many things it handled, and whether more may be waiting now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick {
    /// Things handled (holds expired, items delivered, appointments followed, ...).
    pub handled: usize,
    /// True when more may be waiting: run again at once instead of pausing.
    pub more: bool,
}

impl Tick {
    /// `handled` things, no more waiting.
    pub fn done(handled: usize) -> Tick {
        Tick {
            handled,
            more: false,
        }
    }
}

/// A background job.
pub trait Job: Send + Sync {
    /// Stable name, e.g. `hold-sweeper`, `deliver:remd`.
    fn name(&self) -> &str;

    /// One unit of work.
    fn step(&self) -> BoxFuture<'_, Result<Tick, String>>;

    /// The pause after a step that left nothing waiting (or failed).
    fn period(&self) -> Duration;

    /// False for a job that runs only when asked (a step run by hand, e.g. by a test or an
    /// operator): no loop is started for it.
    fn scheduled(&self) -> bool {
        true
    }

    /// Notified by producers when work is queued: ends the pause early.
    fn wake(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// The running jobs.
pub struct Jobs {
    jobs: Vec<Arc<dyn Job>>,
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Jobs {
    /// Starts a loop per scheduled job on the current runtime.
    pub fn start(jobs: Vec<Arc<dyn Job>>) -> Jobs {
        let token = CancellationToken::new();
        let tasks = jobs
            .iter()
            .filter(|job| job.scheduled())
            .map(|job| tokio::spawn(run(job.clone(), token.clone())))
            .collect();
        Jobs { jobs, token, tasks }
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Job>> {
        self.jobs.iter().find(|j| j.name() == name).cloned()
    }

    /// Names of the jobs, in start order.
    pub fn names(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.name().to_string()).collect()
    }

    /// Stops every loop: a step under way may finish within `grace`, then it is dropped
    /// (outbox claims are leases, so an interrupted delivery is claimed again later).
    pub async fn stop(self, grace: Duration) {
        self.token.cancel();
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// The loop around one job: step, then pause unless more is waiting; stop on cancel.
async fn run(job: Arc<dyn Job>, stop: CancellationToken) {
    let wake = job.wake();
    while !stop.is_cancelled() {
        let tick = tokio::select! {
            _ = stop.cancelled() => break,
            r = job.step() => r,
        };
        match tick {
            Ok(t) if t.more => {
                tokio::task::yield_now().await;
                continue;
            }
            Ok(t) if t.handled > 0 => {
                tracing::debug!(job = job.name(), handled = t.handled, "job step")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job = job.name(), error = %e, "job step failed"),
        }
        let pause = tokio::time::sleep(job.period());
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pause => {}
            _ = async {
                match &wake {
                    Some(w) => w.notified().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        steps: AtomicUsize,
        wake: Arc<Notify>,
    }

    impl Job for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
            Box::pin(async move {
                let n = self.steps.fetch_add(1, Ordering::SeqCst);
                // The first three steps report more waiting: no pause between them.
                Ok(Tick {
                    handled: 1,
                    more: n < 2,
                })
            })
        }
        fn period(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn wake(&self) -> Option<Arc<Notify>> {
            Some(self.wake.clone())
        }
    }

    #[tokio::test]
    async fn a_loop_runs_while_more_waits_pauses_until_woken_and_stops_on_cancel() {
        let job = Arc::new(Counting {
            steps: AtomicUsize::new(0),
            wake: Arc::new(Notify::new()),
        });
        let jobs = Jobs::start(vec![job.clone()]);
        let until = |n: usize| {
            let job = job.clone();
            async move {
                while job.steps.load(Ordering::SeqCst) < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until(3))
            .await
            .expect("three steps back to back");
        // Paused for an hour now, until woken.
        job.wake.notify_one();
        tokio::time::timeout(Duration::from_secs(10), until(4))
            .await
            .expect("a wake ends the pause");
        assert_eq!(jobs.names(), ["counting"]);
        assert!(jobs.get("counting").is_some() && jobs.get("other").is_none());
        tokio::time::timeout(Duration::from_secs(10), jobs.stop(Duration::from_secs(1)))
            .await
            .expect("stops on cancel");
    }
}
