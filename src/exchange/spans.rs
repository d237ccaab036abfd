//! Spans of the gateway's exchanges, exported over OTLP/HTTP when an endpoint is
//! configured: each request it serves (a server span continuing the caller's trace) and
//! each call it makes (a client span, parent of the partner's own), built from the
//! transaction records, batched, and sent by the OpenTelemetry exporter. Export is best
//! effort: a full queue or a failed batch drops spans (counted), never a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

use crate::store::transactions::TransactionRecord;

/// Spans waiting for export at most; beyond, new ones are dropped.
const QUEUE: usize = 8_192;
/// Spans per export request.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);

/// The export queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spans {
    tx: mpsc::Sender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl Spans {
    /// Starts exporting to the OTLP/HTTP collector at `endpoint` (its base URL; spans go to
    /// `/v1/traces`) as service `service`.
    pub fn start(
        endpoint: &str,
        service: &str,
        timeout: Duration,
    ) -> Result<(Spans, tokio::task::JoinHandle<()>), String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(timeout)
            .build()
            .map_err(|e| format!("log.otlp_endpoint: {e}"))?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_string())
                .build(),
        );
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(export(exporter, rx, dropped.clone()));
        Ok((Spans { tx, dropped }, task))
    }

    /// Queues the span of `record`, if it has one.
    pub fn offer(&self, record: &TransactionRecord) {
        let Some(span) = span_of(record) else {
            return;
        };
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped (queue full, or their batch failed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The span a transaction record stands for: server for a request served, client for a
/// call made.
fn span_of(r: &TransactionRecord) -> Option<SpanData> {
    let trace_id = TraceId::from_hex(r.trace_id.as_deref()?).ok()?;
    let span_id = SpanId::from_hex(r.span_id.as_deref()?).ok()?;
    let parent = r
        .parent_span_id
        .as_deref()
        .and_then(|p| SpanId::from_hex(p).ok())
        .unwrap_or(SpanId::INVALID);
    let inbound = r.direction == "inbound";
    let start = UNIX_EPOCH + Duration::from_millis(u64::try_from(r.started_at).unwrap_or(0));
    let end = start + Duration::from_micros(u64::try_from(r.duration_us).unwrap_or(0));
    let mut attributes = vec![
        KeyValue::new("http.request.method", r.method.clone()),
        KeyValue::new(
            if inbound { "url.path" } else { "url.full" },
            r.target.clone(),
        ),
        KeyValue::new("medgate.protocol", r.protocol.clone()),
        KeyValue::new("medgate.request_id", r.request_id.clone()),
        KeyValue::new("medgate.outcome", r.status.clone()),
    ];
    if let Some(code) = r.http_status {
        attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
    }
    if let Some(client) = &r.client_id {
        attributes.push(KeyValue::new("medgate.client", client.clone()));
    }
    let failed = matches!(r.status.as_str(), "server-error" | "failed");
    Some(SpanData {
        span_context: SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: inbound && parent != SpanId::INVALID,
        span_kind: if inbound {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        name: r.operation.clone().into(),
        start_time: start,
        end_time: end.max(start),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if failed {
            Status::error(r.error.clone().unwrap_or_default())
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("medgate").build(),
    })
}

/// Sends batches until every [`Spans`] is dropped; a failed batch is dropped (the
/// exporter has its own timeout), so export never holds anything up.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        if let Err(e) = exporter.export(std::mem::take(&mut batch)).await {
            dropped.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(error = %e, spans = n, "OTLP export failed; spans dropped");
        }
    }
}
