//! What operators and orchestrators read about the gateway itself: the transaction log,
//! readiness of the database, connection pool figures, the background jobs and their runs
//! (and a run asked for by hand, through the jobs' port).

use super::{audit_event, Caller};
pub use crate::exchange::txlog::{TransactionFilter, TransactionRecord};
use crate::exchange::TxLog;
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
pub use crate::model::job::JobRun;
pub use crate::store::audit::AuditQuery;
pub use crate::store::outbox::OutboxEntry;
pub use crate::store::stats::DailyStat;
pub use crate::store::transactions::RouteTraffic;
use crate::store::{Store, StoreError};

/// A background job as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobInfo {
    /// Its name.
    pub name: String,
    /// `cron` (on its ticks), `loop` (a worker), `manual` (run by hand only) or `disabled`.
    pub mode: &'static str,
    /// Its cron expression, when it runs on ticks.
    pub cron: Option<String>,
}

/// Why a run asked for by hand did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job of that name.
    #[error("no job named {0}")]
    Unknown(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Port: the background jobs, to list and to run one by hand.
pub trait JobControl: Send + Sync {
    /// Every job.
    fn jobs(&self) -> Vec<JobInfo>;
    /// Runs `name` now (its own claimed run, under its lock), reporting the running count.
    fn run_now<'a>(
        &'a self,
        name: &'a str,
        progress: &'a (dyn Fn(u64) + Send + Sync),
    ) -> futures_util::future::BoxFuture<'a, Result<JobRun, JobError>>;
}

/// Why record `r` itself cannot be rerun (its client and earlier reruns aside), if it
/// cannot: not an inbound FHIR or SOAP change that failed with its whole request kept.
pub fn rerun_refusal(r: &TransactionRecord) -> Option<(&'static str, String)> {
    if r.direction != "inbound" {
        return Some((
            "NOT_INBOUND",
            format!(
                "an outbound call is repeated by what caused it: its outbox item (the dead \
                 letters) or the inbound request `{}`",
                r.request_id
            ),
        ));
    }
    if !matches!(r.protocol.as_str(), "fhir" | "soap") {
        return Some((
            "NOT_AN_EXCHANGE",
            format!(
                "only FHIR and SOAP exchanges are rerun, not `{}` requests",
                r.protocol
            ),
        ));
    }
    if matches!(r.method.as_str(), "GET" | "HEAD") {
        return Some((
            "READ_ONLY",
            "a read changes nothing: its client asks again".into(),
        ));
    }
    if r.status == "ok" {
        return Some((
            "TRANSACTION_SUCCEEDED",
            "it succeeded: a rerun would repeat its effect".into(),
        ));
    }
    let body = match &r.request_body {
        Some(b) if r.body_policy == "full" => b,
        _ => {
            return Some((
                "NO_STORED_BODY",
                format!(
                    "its request was not kept (body policy `{}`): there is nothing to send again",
                    r.body_policy
                ),
            ))
        }
    };
    if body.len() as i64 != r.request_bytes {
        return Some((
            "BODY_TRUNCATED",
            format!(
                "its request was kept cut to {} of {} bytes",
                body.len(),
                r.request_bytes
            ),
        ));
    }
    None
}

/// The owner of the keys that hold one rerun of a record at a time.
const RERUN_KEYS: &str = "medgate:rerun";
/// After this long a rerun's claim is taken as left by a process that died (ms).
const RERUN_STALE_MS: i64 = 300_000;

/// A failed inbound exchange to send once more through the gateway, as the client that
/// sent it.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The record it re-runs.
    pub of: String,
    /// The client that sent it, whose rights the rerun has.
    pub client: std::sync::Arc<crate::auth::Client>,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Content-Type sent.
    pub content_type: Option<String>,
    /// SOAPAction sent.
    pub soap_action: Option<String>,
    /// The request body as it came.
    pub body: Vec<u8>,
}

/// Why an exchange is not rerun.
#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    /// No such record of the caller's.
    #[error("no such transaction record")]
    NotFound,
    /// The record is not one a rerun can repeat, and why.
    #[error("{why}")]
    Refused {
        /// Machine-readable reason.
        code: &'static str,
        /// For the operator.
        why: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A connected system as operators see it: its calls over the last hour and its breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemHealth {
    /// The partner (adapter name).
    pub partner: String,
    /// `closed`, `open` or `half-open`.
    pub circuit: &'static str,
    /// Calls in the last hour.
    pub calls: i64,
    /// Share of them that failed.
    pub error_rate: f64,
    /// Last contact (epoch ms), if any in the hour.
    pub last_contact: Option<i64>,
    /// Mean latency (ms) over the hour.
    pub mean_ms: f64,
    /// Mean latency (ms) per minute of the hour: (minute start, ms).
    pub latency: Vec<(i64, f64)>,
}

/// Reads of the gateway's own state.
#[derive(Clone)]
pub struct Operations {
    store: Store,
    txlog: TxLog,
    jobs: Option<std::sync::Arc<dyn JobControl>>,
    partners: Option<crate::exchange::partners::Partners>,
}

impl Operations {
    /// Reads over `store`, with the transaction log's writer `txlog`.
    pub fn new(store: Store, txlog: TxLog) -> Operations {
        Operations {
            partners: None,
            store,
            txlog,
            jobs: None,
        }
    }

    /// The same, with the background jobs.
    pub fn with_jobs(mut self, jobs: std::sync::Arc<dyn JobControl>) -> Operations {
        self.jobs = Some(jobs);
        self
    }

    /// The daily statistics of the days `from`..=`to` (`YYYY-MM-DD`), of the caller's
    /// organizations (operators: all).
    pub async fn daily_stats(
        &self,
        caller: Caller<'_>,
        from: &str,
        to: &str,
        metric: Option<&str>,
    ) -> Result<Vec<DailyStat>, StoreError> {
        self.store
            .daily_stats(from, to, metric, caller.scope())
            .await
    }

    /// Every job with its latest run.
    pub async fn jobs(&self) -> Result<Vec<(JobInfo, Option<JobRun>)>, StoreError> {
        let mut out = Vec::new();
        for info in self.jobs.iter().flat_map(|j| j.jobs()) {
            let last = self.store.job_runs(&info.name, 1).await?.into_iter().next();
            out.push((info, last));
        }
        Ok(out)
    }

    /// The runs of job `name`, newest first; `Unknown` for a job that does not exist.
    pub async fn job_runs(&self, name: &str, limit: u32) -> Result<Vec<JobRun>, JobError> {
        if !self
            .jobs
            .iter()
            .flat_map(|j| j.jobs())
            .any(|j| j.name == name)
        {
            return Err(JobError::Unknown(name.to_string()));
        }
        Ok(self.store.job_runs(name, limit).await?)
    }

    /// Runs job `name` now, by hand.
    pub async fn run_job(
        &self,
        name: &str,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<JobRun, JobError> {
        match &self.jobs {
            Some(j) => j.run_now(name, progress).await,
            None => Err(JobError::Unknown(name.to_string())),
        }
    }

    /// Transaction records matching `filter`, newest first, at most `limit`: a client's
    /// own, all for operators; everything recorded before the call is included.
    pub async fn transactions(
        &self,
        caller: Caller<'_>,
        filter: &TransactionFilter,
        limit: u32,
    ) -> Result<Vec<TransactionRecord>, StoreError> {
        let mut filter = filter.clone();
        if !caller.operator {
            if filter
                .client_id
                .as_deref()
                .is_some_and(|c| c != caller.client_id)
            {
                return Ok(Vec::new());
            }
            filter.client_id = Some(caller.client_id.to_string());
        }
        self.txlog.flush().await;
        self.store.list_transactions(&filter, limit).await
    }

    /// One transaction record, if it is the caller's (operators: any); reading its stored
    /// bodies (`with_bodies`), which carry personal data, is audited.
    pub async fn transaction(
        &self,
        caller: Caller<'_>,
        id: &str,
        with_bodies: bool,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        self.txlog.flush().await;
        let record = self
            .store
            .get_transaction(id)
            .await?
            .filter(|r| caller.operator || r.client_id.as_deref() == Some(caller.client_id));
        if with_bodies {
            let mut event = audit_event(
                caller,
                AuditAction::Read,
                AuditEntity::TransactionBody,
                crate::model::time::now_ms(),
            );
            event.entity_id = Some(id.to_string());
            if record.is_none() {
                event = event.refused("TRANSACTION_NOT_FOUND");
            }
            self.store.insert_audit(&event).await?;
        }
        Ok(record)
    }

    /// Prepares the rerun of a failed inbound exchange: the record must be the caller's
    /// (operators: any), inbound on the exchange protocols, a change (not a read), failed,
    /// with its whole request stored, its client still known, no other rerun of it on its
    /// way and none succeeded; the rerun acts as that client, and [`Operations::rerun_done`]
    /// ends it. Asking is audited (the stored body carries personal data), refusals too.
    pub async fn rerun_transaction(
        &self,
        caller: Caller<'_>,
        id: &str,
        clients: &crate::auth::ClientRegistry,
    ) -> Result<Replay, RerunError> {
        self.txlog.flush().await;
        let mut event = audit_event(
            caller,
            AuditAction::Update,
            AuditEntity::TransactionBody,
            crate::model::time::now_ms(),
        );
        event.entity_id = Some(id.to_string());
        let result = match self.check_rerun(caller, id, clients).await {
            Ok(replay) => self.claim_rerun(replay).await,
            refused => refused,
        };
        match &result {
            Ok(_) => {}
            Err(RerunError::NotFound) => event = event.refused("TRANSACTION_NOT_FOUND"),
            Err(RerunError::Refused { code, .. }) => event = event.refused(code),
            Err(RerunError::Store(_)) => return result,
        }
        self.store.insert_audit(&event).await?;
        result
    }

    /// Holds the record's one rerun at a time (across replicas: a key in the database),
    /// then makes sure no rerun of it succeeded meanwhile; a claim left by a process that
    /// died is taken over after [`RERUN_STALE_MS`].
    async fn claim_rerun(&self, replay: Replay) -> Result<Replay, RerunError> {
        let now = crate::model::time::now_ms();
        let claim = self
            .store
            .claim_idempotency_key(RERUN_KEYS, &replay.of, "rerun", now, now - RERUN_STALE_MS)
            .await?;
        if !matches!(claim, crate::store::appointments::KeyClaim::Fresh) {
            return Err(RerunError::Refused {
                code: "RERUN_IN_PROGRESS",
                why: "another rerun of it is on its way".into(),
            });
        }
        let done = TransactionFilter {
            rerun_of: Some(replay.of.clone()),
            status: Some("ok".into()),
            ..TransactionFilter::default()
        };
        if let Some(earlier) = self.store.list_transactions(&done, 1).await?.first() {
            self.store
                .abandon_idempotency_key(RERUN_KEYS, &replay.of)
                .await?;
            return Err(RerunError::Refused {
                code: "ALREADY_RERUN",
                why: format!("its rerun `{}` succeeded already", earlier.id),
            });
        }
        Ok(replay)
    }

    /// Ends the rerun of record `of` claimed by [`Operations::rerun_transaction`], once its
    /// own record is written: the next rerun (of a record whose rerun failed) may go.
    pub async fn rerun_done(&self, of: &str) -> Result<(), StoreError> {
        self.txlog.flush().await;
        self.store.abandon_idempotency_key(RERUN_KEYS, of).await
    }

    async fn check_rerun(
        &self,
        caller: Caller<'_>,
        id: &str,
        clients: &crate::auth::ClientRegistry,
    ) -> Result<Replay, RerunError> {
        let r = self
            .store
            .get_transaction(id)
            .await?
            .filter(|r| caller.operator || r.client_id.as_deref() == Some(caller.client_id))
            .ok_or(RerunError::NotFound)?;
        let refuse = |code: &'static str, why: String| Err(RerunError::Refused { code, why });
        if let Some((code, why)) = rerun_refusal(&r) {
            return refuse(code, why);
        }
        // Checked above: a whole request is kept.
        let body = r.request_body.unwrap_or_default();
        let Some(client_id) = r.client_id else {
            return refuse(
                "NO_CLIENT",
                "it came from no authenticated client, so nobody to act as".into(),
            );
        };
        let Some(client) = clients.get(&client_id) else {
            return refuse(
                "CLIENT_GONE",
                format!("its client `{client_id}` is no longer configured"),
            );
        };
        Ok(Replay {
            of: r.id,
            client,
            method: r.method,
            path: r.target,
            content_type: r.content_type,
            soap_action: r.soap_action,
            body,
        })
    }

    /// Audit events matching `q` of the caller's organizations (operators: all), newest
    /// first.
    pub async fn audit_events(
        &self,
        caller: Caller<'_>,
        q: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut q = q.clone();
        if let Some(orgs) = caller.scope() {
            q.orgs = Some(orgs.to_vec());
        }
        self.store.audit_events(&q, limit).await
    }

    /// Ready when the database answers and every migration is applied; else why not.
    pub async fn readiness(&self) -> Result<(), String> {
        self.store.check_ready().await
    }

    /// Outbox items in `status` (e.g. `dead`: the dead letters with their reason), of the
    /// caller's organizations (operators: all), newest first.
    pub async fn outbox(
        &self,
        caller: Caller<'_>,
        status: &str,
        destination: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store
            .list_outbox(status, destination, caller.scope(), before, limit)
            .await
    }

    /// Sends a dead letter of the caller's organizations again (its cause fixed): back in
    /// the queue, due now, attempts counted afresh. `Ok(false)`: no such dead letter of theirs.
    pub async fn rerun_dead_letter(
        &self,
        caller: Caller<'_>,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let theirs = self
            .store
            .outbox_entry(id, "dead", caller.scope())
            .await?
            .is_some();
        if !theirs {
            return Ok(false);
        }
        self.store.requeue_dead(id, now).await
    }

    /// Requests answered since `since` (epoch ms) per operation, busiest first: every
    /// client's for an operator, the caller's own otherwise.
    pub async fn route_traffic(
        &self,
        caller: Caller<'_>,
        since: i64,
    ) -> Result<Vec<RouteTraffic>, StoreError> {
        let client = (!caller.operator).then_some(caller.client_id);
        self.store.route_traffic(since, client).await
    }

    /// Reads that show the partners' breakers too.
    pub fn with_partners(mut self, partners: crate::exchange::partners::Partners) -> Operations {
        self.partners = Some(partners);
        self
    }

    /// Every connected system's hour up to `now`: calls, error rate, last contact, latency
    /// per minute (from the transaction log) and its circuit breaker.
    pub async fn connected_systems(&self, now: i64) -> Result<Vec<SystemHealth>, StoreError> {
        use crate::exchange::partners::CircuitState;
        let since = now - 3_600_000;
        let calls = self.store.partner_calls(since).await?;
        let latency = self.store.partner_latency(since).await?;
        let states = self
            .partners
            .as_ref()
            .map(|p| p.states())
            .unwrap_or_default();
        let mut names: Vec<String> = calls.iter().map(|c| c.partner.clone()).collect();
        names.extend(states.iter().map(|(n, _)| n.clone()));
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|partner| {
                let c = calls.iter().find(|c| c.partner == partner);
                let circuit = match states.iter().find(|(n, _)| *n == partner).map(|s| s.1) {
                    Some(CircuitState::Open) => "open",
                    Some(CircuitState::HalfOpen) => "half-open",
                    _ => "closed",
                };
                SystemHealth {
                    circuit,
                    calls: c.map_or(0, |c| c.calls),
                    error_rate: c.map_or(0.0, |c| c.errors as f64 / c.calls.max(1) as f64),
                    last_contact: c.map(|c| c.last_contact),
                    mean_ms: c.map_or(0.0, |c| c.mean_us as f64 / 1000.0),
                    latency: latency
                        .iter()
                        .filter(|(p, _, _)| *p == partner)
                        .map(|(_, m, us)| (*m, *us as f64 / 1000.0))
                        .collect(),
                    partner,
                }
            })
            .collect())
    }

    /// Outbox items by destination and status (pending, in flight, dead), for the metrics.
    pub async fn outbox_depths(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.store.outbox_depths().await
    }

    /// The database engine's name.
    pub fn database(&self) -> &'static str {
        self.store.backend().name()
    }

    /// Open and idle database connections.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.store.pool_stats()
    }

    /// Transaction records dropped because the log's queue was full.
    pub fn txlog_dropped(&self) -> u64 {
        self.txlog.dropped()
    }
}
