//! Everything the gateway runs in the background: the hold sweeper, schedule rounds, outbox
//! delivery, verdict polling, pruning. Each job is one testable [`Job::step`]; [`Jobs`] runs
//! a loop around the steps of a worker, or runs a scheduled job on its cron ticks
//! (tokio-cron-scheduler, in the configured time zone): each tick is claimed in the
//! database first, so it runs once across replicas, under the job's lock, with its run
//! recorded ([`Runner`]); one cancellation token stops them all.

pub mod appeals;
pub mod delivery;
pub mod documents;
pub mod holds;
pub mod nsi;
pub mod prune;
pub mod reconcile;
pub mod referrals;
pub mod schedules;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a step did: how many things it handled, and whether more may be waiting now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tick {
    /// Things handled (holds expired, items delivered, appointments followed, ...).
    pub handled: usize,
    /// True when more may be waiting: run again at once instead of pausing.
    pub more: bool,
    /// What a checking job examined, found and repaired, and where (else each step counts
    /// as one examined and its handled things as found and repaired).
    pub report: Option<StepReport>,
}

/// A checking job's account of one step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepReport {
    /// Things compared.
    pub examined: u64,
    /// Things found wrong.
    pub found: u64,
    /// Things put right.
    pub repaired: u64,
    /// Where (an organization, an error class) and what, kept in the run's details.
    pub detail: Option<(String, serde_json::Value)>,
    /// Set when the run must end failed though its steps went on (some part not done).
    pub error: Option<String>,
}

/// Places a run keeps details for; the rest are counted only.
const MAX_DETAIL_KEYS: usize = 1000;

/// Steps one run takes at most before it ends (the next tick goes on).
const MAX_STEPS_PER_RUN: usize = 10_000;

impl Tick {
    /// `handled` things, no more waiting.
    pub fn done(handled: usize) -> Tick {
        Tick {
            handled,
            more: false,
            report: None,
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

    /// Its cron expression when it runs on ticks rather than in a loop (the configuration
    /// may give one to any job).
    fn cron(&self) -> Option<&str> {
        None
    }
}

/// Runs scheduled jobs' ticks and runs asked for by hand: claim, lock, steps, record.
#[derive(Clone)]
pub struct Runner {
    store: crate::store::Store,
    replica: String,
    lease_ms: i64,
    clock: crate::model::time::SharedClock,
    /// Length of a worker's window in its history (ms).
    window_ms: i64,
}

/// What became of a tick (or a run asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Another replica claimed the tick.
    Elsewhere,
    /// Run (or skipped, or failed): its record.
    Run(crate::model::job::JobRun),
}

impl Runner {
    /// Runs recorded in `store` as `replica`, each leased for `lease`.
    pub fn new(
        store: crate::store::Store,
        replica: &str,
        lease: Duration,
        clock: crate::model::time::SharedClock,
    ) -> Runner {
        Runner {
            store,
            replica: replica.to_string(),
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2),
            clock,
            window_ms: 60_000,
        }
    }

    /// Workers' history sums up `window` a row.
    pub fn with_worker_window(mut self, window: Duration) -> Runner {
        self.window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
        self
    }

    /// Runs `job` for `tick` (epoch ms) if this replica claims it: under the job's lock
    /// (skipped while another run holds it), steps until nothing more waits, the counts
    /// recorded; `progress` hears the running count after each step.
    pub async fn run(
        &self,
        job: &dyn Job,
        tick: i64,
        kind: crate::model::job::RunKind,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Ran, crate::store::StoreError> {
        use crate::model::job::{RunCounts, RunOutcome};
        let now = self.clock.now_ms();
        self.store.fail_lapsed_runs(now).await?;
        let Some(mut run) = self
            .store
            .claim_run(
                job.name(),
                tick,
                kind,
                &self.replica,
                now,
                now + self.lease_ms,
            )
            .await?
        else {
            return Ok(Ran::Elsewhere);
        };
        let Some(lock) = self.store.job_lock(job.name()).await? else {
            let why = "an earlier run of this job is still going";
            self.store
                .finish_run(
                    &run.id,
                    RunOutcome::Skipped,
                    RunCounts::default(),
                    Some(why),
                    None,
                    now,
                )
                .await?;
            run.outcome = RunOutcome::Skipped;
            run.error = Some(why.into());
            run.ended_at = Some(now);
            return Ok(Ran::Run(run));
        };
        let mut counts = RunCounts::default();
        let mut details = serde_json::Map::new();
        let mut outcome = (RunOutcome::Ok, None);
        for _ in 0..MAX_STEPS_PER_RUN {
            match job.step().await {
                Ok(t) => {
                    match t.report {
                        Some(r) => {
                            counts.examined += r.examined;
                            counts.found += r.found;
                            counts.repaired += r.repaired;
                            if let Some((at, what)) = r.detail {
                                if details.len() < MAX_DETAIL_KEYS {
                                    details.insert(at, what);
                                }
                            }
                            if let Some(e) = r.error {
                                outcome = (RunOutcome::Failed, Some(e));
                            }
                            progress(counts.examined);
                        }
                        None => {
                            counts.examined += 1;
                            counts.found += t.handled as u64;
                            counts.repaired += t.handled as u64;
                            progress(counts.repaired);
                        }
                    }
                    if !t.more {
                        break;
                    }
                }
                Err(e) => {
                    outcome = (RunOutcome::Failed, Some(e));
                    break;
                }
            }
        }
        let end = self.clock.now_ms();
        let details = (!details.is_empty()).then_some(serde_json::Value::Object(details));
        self.store
            .finish_run(
                &run.id,
                outcome.0,
                counts,
                outcome.1.as_deref(),
                details.as_ref(),
                end,
            )
            .await?;
        drop(lock);
        run.outcome = outcome.0;
        run.error = outcome.1;
        run.counts = counts;
        run.ended_at = Some(end);
        run.details = details;
        Ok(Ran::Run(run))
    }
}

/// The running jobs.
pub struct Jobs {
    jobs: Vec<Arc<dyn Job>>,
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    scheduler: Option<tokio_cron_scheduler::JobScheduler>,
}

/// How the scheduled jobs run: the runner, the time zone of their cron expressions, the
/// expressions the configuration gives, the jobs switched off.
pub struct Schedule {
    /// Claims, locks and records runs.
    pub runner: Runner,
    /// Time zone of the expressions.
    pub time_zone: chrono_tz::Tz,
    /// Expressions by job name (over the jobs' own).
    pub crons: std::collections::BTreeMap<String, String>,
    /// Jobs that do not run.
    pub disabled: Vec<String>,
    /// False: nothing runs on its own (a process for runs by hand).
    pub run_scheduled: bool,
}

impl Jobs {
    /// Starts a loop per looping job on the current runtime (no cron ticks: tests).
    pub fn start(jobs: Vec<Arc<dyn Job>>) -> Jobs {
        let token = CancellationToken::new();
        let tasks = jobs
            .iter()
            .filter(|job| job.scheduled())
            .map(|job| tokio::spawn(run(job.clone(), None, token.clone())))
            .collect();
        Jobs {
            jobs,
            token,
            tasks,
            scheduler: None,
        }
    }

    /// Starts every job as `schedule` says: on its cron ticks, or in a loop, or not at all.
    pub async fn start_scheduled(
        jobs: Vec<Arc<dyn Job>>,
        schedule: Schedule,
    ) -> Result<Jobs, String> {
        let token = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut scheduler = None;
        for job in &jobs {
            if !schedule.run_scheduled
                || schedule.disabled.iter().any(|d| d == job.name())
                || !job.scheduled()
            {
                continue;
            }
            let cron = schedule
                .crons
                .get(job.name())
                .map(String::as_str)
                .or_else(|| job.cron());
            let Some(cron) = cron else {
                tasks.push(tokio::spawn(run(
                    job.clone(),
                    Some(schedule.runner.clone()),
                    token.clone(),
                )));
                continue;
            };
            if scheduler.is_none() {
                scheduler = Some(
                    tokio_cron_scheduler::JobScheduler::new()
                        .await
                        .map_err(|e| format!("job scheduler: {e}"))?,
                );
            }
            let (job, runner) = (job.clone(), schedule.runner.clone());
            let name = job.name().to_string();
            let ticks = tokio_cron_scheduler::Job::new_async_tz(cron, schedule.time_zone, move |_, _| {
                let (job, runner) = (job.clone(), runner.clone());
                Box::pin(async move {
                    // The tick is the second it fell on: every replica names it alike.
                    let tick = runner.clock.now_ms() / 1000 * 1000;
                    match runner.run(job.as_ref(), tick, crate::model::job::RunKind::Tick, &|_| {}).await {
                        Ok(Ran::Run(r)) if r.outcome == crate::model::job::RunOutcome::Failed => {
                            tracing::warn!(job = %r.job, error = ?r.error, "scheduled run failed")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(job = job.name(), error = %e, "scheduled run not recorded"),
                    }
                })
            })
            .map_err(|e| format!("jobs.schedules.{name}: `{cron}`: {e}"))?;
            if let Some(s) = scheduler.as_mut() {
                s.add(ticks)
                    .await
                    .map_err(|e| format!("job scheduler: {e}"))?;
            }
        }
        if let Some(s) = scheduler.as_mut() {
            s.start().await.map_err(|e| format!("job scheduler: {e}"))?;
        }
        Ok(Jobs {
            jobs,
            token,
            tasks,
            scheduler,
        })
    }

    /// Every job, for listings and runs by hand.
    pub fn all(&self) -> &[Arc<dyn Job>] {
        &self.jobs
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
    pub async fn stop(mut self, grace: Duration) {
        if let Some(s) = self.scheduler.as_mut() {
            let _ = s.shutdown().await;
        }
        self.token.cancel();
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// The jobs as operators see them and run them by hand: the [`crate::services::operations::JobControl`]
/// port.
pub struct Board {
    jobs: Vec<Arc<dyn Job>>,
    runner: Runner,
    crons: std::collections::BTreeMap<String, String>,
    disabled: Vec<String>,
}

impl Board {
    /// The board of `jobs` as `schedule` runs them.
    pub fn new(jobs: &[Arc<dyn Job>], schedule: &Schedule) -> Board {
        Board {
            jobs: jobs.to_vec(),
            runner: schedule.runner.clone(),
            crons: schedule.crons.clone(),
            disabled: schedule.disabled.clone(),
        }
    }
}

impl crate::services::operations::JobControl for Board {
    fn jobs(&self) -> Vec<crate::services::operations::JobInfo> {
        self.jobs
            .iter()
            .map(|j| {
                let cron = self
                    .crons
                    .get(j.name())
                    .cloned()
                    .or_else(|| j.cron().map(str::to_string));
                let mode = if self.disabled.iter().any(|d| d == j.name()) {
                    "disabled"
                } else if !j.scheduled() {
                    "manual"
                } else if cron.is_some() {
                    "cron"
                } else {
                    "loop"
                };
                crate::services::operations::JobInfo {
                    name: j.name().to_string(),
                    mode,
                    cron,
                }
            })
            .collect()
    }

    fn run_now<'a>(
        &'a self,
        name: &'a str,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> BoxFuture<'a, Result<crate::model::job::JobRun, crate::services::operations::JobError>>
    {
        use crate::services::operations::JobError;
        Box::pin(async move {
            let job = self
                .jobs
                .iter()
                .find(|j| j.name() == name)
                .ok_or_else(|| JobError::Unknown(name.to_string()))?;
            // A run by hand is its own tick: now, to the millisecond.
            let tick = self.runner.clock.now_ms();
            match self
                .runner
                .run(
                    job.as_ref(),
                    tick,
                    crate::model::job::RunKind::Manual,
                    progress,
                )
                .await?
            {
                Ran::Run(r) => Ok(r),
                Ran::Elsewhere => Err(JobError::Unknown(format!("{name} (its tick was taken)"))),
            }
        })
    }
}

/// A worker's account of its current window, written to the history when it closes.
struct Window {
    start: i64,
    counts: crate::model::job::RunCounts,
    error: Option<String>,
}

impl Window {
    fn new(start: i64) -> Window {
        Window {
            start,
            counts: Default::default(),
            error: None,
        }
    }

    fn add(&mut self, step: &Result<Tick, String>) {
        self.counts.examined += 1;
        match step {
            Ok(t) => {
                self.counts.found += t.handled as u64;
                self.counts.repaired += t.handled as u64;
            }
            Err(e) => self.error = Some(e.clone()),
        }
    }

    /// Closes the window when it is over: recorded if it handled or failed something (a
    /// quiet minute leaves no row), and a new one begins.
    async fn roll(&mut self, job: &str, runner: &Runner) {
        let now = runner.clock.now_ms();
        if now - self.start < runner.window_ms {
            return;
        }
        let closed = std::mem::replace(self, Window::new(now));
        if closed.counts.found == 0 && closed.error.is_none() {
            return;
        }
        if let Err(e) = runner
            .store
            .record_worker_window(
                job,
                &runner.replica,
                (closed.start, now),
                closed.counts,
                closed.error.as_deref(),
            )
            .await
        {
            tracing::warn!(job, error = %e, "worker history not recorded");
        }
    }
}

/// The loop around one job: step, then pause unless more is waiting; stop on cancel. With a
/// runner its work is recorded in the history a window at a time.
async fn run(job: Arc<dyn Job>, runner: Option<Runner>, stop: CancellationToken) {
    let wake = job.wake();
    let mut window = runner.as_ref().map(|r| Window::new(r.clock.now_ms()));
    while !stop.is_cancelled() {
        let tick = tokio::select! {
            _ = stop.cancelled() => break,
            r = job.step() => r,
        };
        if let (Some(w), Some(r)) = (window.as_mut(), runner.as_ref()) {
            w.add(&tick);
            w.roll(job.name(), r).await;
        }
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
                    report: None,
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
