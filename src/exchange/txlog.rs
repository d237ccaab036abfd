//! The transaction log (message store): every inbound request and outbound call is recorded.
//!
//! Recording never blocks a request on the database: records go through a bounded channel to
//! one writer task that inserts them in batches. Readers call [`TxLog::flush`] first, which
//! waits until everything recorded before the call is stored, so an operator always sees
//! the request they just made.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::{BodyPolicy, TransactionLogSettings};
pub use crate::store::transactions::{TransactionFilter, TransactionRecord};
use crate::store::Store;

/// Whether a record describes a request we received or a call we made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A request a client sent to the gateway.
    Inbound,
    /// A call the gateway made to an external system.
    Outbound,
}

impl Direction {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

enum Msg {
    Record(Box<TransactionRecord>),
    Flush(oneshot::Sender<()>),
}

/// The storage decision for one route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDecision {
    /// Body policy.
    pub bodies: BodyPolicy,
    /// Retention in days.
    pub retention_days: u32,
}

/// Handle used by producers and readers of the transaction log.
#[derive(Clone)]
pub struct TxLog {
    tx: mpsc::Sender<Msg>,
    settings: std::sync::Arc<TransactionLogSettings>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Cuts the writer's linger short: a reader is waiting.
    hurry: std::sync::Arc<tokio::sync::Notify>,
    /// Where the records' spans are exported, when an OTLP endpoint is configured.
    spans: Option<super::spans::Spans>,
}

/// The writer task; await it after dropping every [`TxLog`] to drain the queue.
pub type TxLogHandle = tokio::task::JoinHandle<()>;

const QUEUE: usize = 16_384;
/// How long a record waits for room in a full queue before it is counted as dropped.
const QUEUE_WAIT: Duration = Duration::from_secs(2);
const BATCH: usize = 500;
/// How long the writer waits after the first record of a batch for more to arrive.
const LINGER: Duration = Duration::from_millis(50);

impl TxLog {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store, settings: TransactionLogSettings) -> (TxLog, TxLogHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let hurry = std::sync::Arc::new(tokio::sync::Notify::new());
        let handle = tokio::spawn(writer(store, rx, hurry.clone()));
        (
            TxLog {
                tx,
                settings: std::sync::Arc::new(settings),
                dropped: Default::default(),
                hurry,
                spans: None,
            },
            handle,
        )
    }

    /// The same log, its records' spans exported through `spans`.
    pub fn with_spans(mut self, spans: super::spans::Spans) -> TxLog {
        self.spans = Some(spans);
        self
    }

    /// The policy for a path: the longest matching route prefix, else the defaults.
    pub fn decide(&self, path: &str) -> RouteDecision {
        let s = &self.settings;
        s.routes
            .iter()
            .filter(|r| path.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
            .map(|r| RouteDecision {
                bodies: r.bodies,
                retention_days: r.retention_days.unwrap_or(s.default_retention_days),
            })
            .unwrap_or(RouteDecision {
                bodies: s.default_bodies,
                retention_days: s.default_retention_days,
            })
    }

    /// Largest stored body.
    pub fn max_body(&self) -> usize {
        self.settings.max_stored_body_bytes
    }

    /// Queues a record. A full queue is waited on for a moment (admission sheds new
    /// requests long before it fills); a record that still finds no room is counted as
    /// dropped and logged.
    pub async fn record(&self, record: TransactionRecord) {
        if let Some(spans) = &self.spans {
            spans.offer(&record);
        }
        let msg = match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("transaction log closed; record dropped");
                return;
            }
        };
        if !matches!(
            tokio::time::timeout(QUEUE_WAIT, self.tx.send(msg)).await,
            Ok(Ok(()))
        ) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!("transaction log queue full; record dropped");
        }
    }

    /// True when the queue is more than nine-tenths full: the writer is behind, and new
    /// requests are shed until it catches up.
    pub fn saturated(&self) -> bool {
        self.tx.capacity() < QUEUE / 10
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until every record queued before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            self.hurry.notify_one();
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::Receiver<Msg>,
    hurry: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut batch: Vec<TransactionRecord> = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut copier = store.transaction_copier();
    while let Some(first) = rx.recv().await {
        // Let a busy gateway fill the batch: a writer woken for every record costs the
        // request path a wake-up each, and a small batch costs the database a statement and
        // a commit for a few rows. Not polling the queue meanwhile is what saves the wake-ups.
        if !matches!(first, Msg::Flush(_)) {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = hurry.notified() => {}
            }
        }
        let mut next = Some(first);
        // Take whatever is already queued, up to one batch, then write once.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(w) => waiters.push(w),
            }
            if batch.len() >= BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            write_batch(&store, copier.as_mut(), &batch).await;
            batch.clear();
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Writes one batch: COPY where the backend has it, multi-row INSERTs otherwise or when
/// COPY fails (the INSERTs skip rows already stored, so a COPY that committed unseen
/// writes nothing twice). Three attempts, then the loss is logged with its size.
async fn write_batch(
    store: &Store,
    mut copier: Option<&mut crate::store::transactions::TransactionCopier>,
    batch: &[TransactionRecord],
) {
    let mut attempt = 0;
    loop {
        let result = match copier.as_deref_mut() {
            Some(c) if attempt == 0 => c.write(batch).await,
            _ => store.insert_transactions(batch).await,
        };
        match result {
            Ok(()) => return,
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "transaction log write failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, lost = batch.len(), "transaction log write failed");
                return;
            }
        }
    }
}

/// Cuts a body to the storage limit; returns the stored bytes and whether they were cut.
pub fn clip_body(body: &[u8], max: usize) -> (Vec<u8>, bool) {
    if body.len() > max {
        (body[..max].to_vec(), true)
    } else {
        (body.to_vec(), false)
    }
}

/// Builder of the transaction log record of one outbound call.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    protocol: String,
    operation: String,
    target: String,
    correlation_id: String,
    started_at: i64,
    request: Vec<u8>,
    /// The call's span and the trace it belongs to, when the work that makes it has one.
    trace: Option<crate::context::Trace>,
}

impl OutboundCall {
    /// Starts describing a call to `target` (URL) of `protocol` (adapter name).
    pub fn new(protocol: &str, operation: &str, target: &str, correlation_id: &str) -> Self {
        OutboundCall {
            protocol: protocol.to_string(),
            operation: operation.to_string(),
            target: target.to_string(),
            correlation_id: correlation_id.to_string(),
            started_at: crate::model::time::now_ms(),
            request: Vec::new(),
            // A client span of its own, child of the work's span.
            trace: crate::context::trace().map(|t| crate::context::Trace {
                parent_id: Some(t.span_id.clone()),
                span_id: crate::context::new_span_id(),
                ..t
            }),
        }
    }

    /// The `traceparent` the partner continues: this call's span.
    pub fn traceparent(&self) -> Option<String> {
        self.trace.as_ref().map(crate::context::Trace::header)
    }

    /// Keeps the request body (stored according to the route policy of the adapter).
    pub fn request_body(&mut self, body: &[u8]) {
        self.request = body.to_vec();
    }

    fn record(
        &self,
        started: std::time::Instant,
        status: &str,
        http_status: Option<u16>,
        response: &[u8],
        error: Option<String>,
    ) -> TransactionRecord {
        let request_id =
            crate::context::request_id().unwrap_or_else(|| self.correlation_id.clone());
        TransactionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            correlation_id: self.correlation_id.clone(),
            request_id,
            client_id: None,
            direction: Direction::Outbound.as_str().into(),
            protocol: self.protocol.clone(),
            operation: self.operation.clone(),
            method: "POST".into(),
            target: self.target.clone(),
            status: status.into(),
            http_status: http_status.map(i32::from),
            error: error.map(|e| e.chars().take(500).collect()),
            started_at: self.started_at,
            duration_us: started.elapsed().as_micros() as i64,
            request_bytes: self.request.len() as i64,
            response_bytes: response.len() as i64,
            body_policy: "full".into(),
            request_body: Some(self.request.clone()),
            response_body: Some(response.to_vec()),
            truncated: false,
            rerun_of: None,
            content_type: None,
            soap_action: None,
            expires_at: self.started_at + 30 * 86_400_000,
            trace_id: self.trace.as_ref().map(|t| t.trace_id.clone()),
            span_id: self.trace.as_ref().map(|t| t.span_id.clone()),
            parent_span_id: self.trace.as_ref().and_then(|t| t.parent_id.clone()),
        }
    }

    /// The record of a call that got an HTTP answer.
    pub fn answered(
        &self,
        started: std::time::Instant,
        http_status: u16,
        response: &[u8],
        error: Option<String>,
    ) -> TransactionRecord {
        let status = match (&error, http_status) {
            (None, 200..=399) => "ok",
            (_, 400..=499) => "client-error",
            _ => "server-error",
        };
        self.record(started, status, Some(http_status), response, error)
    }

    /// The record of a call that got no answer.
    pub fn failed(&self, started: std::time::Instant, error: &str) -> TransactionRecord {
        self.record(started, "failed", None, &[], Some(error.to_string()))
    }
}

impl TxLog {
    /// Applies the policy for `target`'s adapter to an outbound record (bodies, retention).
    pub async fn record_outbound(&self, mut record: TransactionRecord) {
        let decision = self.decide(&format!("/outbound/{}", record.protocol));
        match decision.bodies {
            BodyPolicy::None => return,
            BodyPolicy::MetadataOnly => {
                record.request_body = None;
                record.response_body = None;
                record.body_policy = "metadata-only".into();
            }
            BodyPolicy::Full => {
                let max = self.max_body();
                let mut truncated = false;
                for body in [&mut record.request_body, &mut record.response_body] {
                    if let Some(b) = body.as_mut() {
                        if b.len() > max {
                            b.truncate(max);
                            truncated = true;
                        }
                    }
                }
                record.truncated = truncated;
            }
        }
        record.expires_at = record.started_at + i64::from(decision.retention_days) * 86_400_000;
        self.record(record).await;
    }
}
