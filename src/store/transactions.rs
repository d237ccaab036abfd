//! Transaction log rows: insert in bulk, query with filters and keyset paging, prune.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};

/// One recorded exchange (inbound request or outbound call).
#[derive(Debug, Clone, Serialize)]
pub struct TransactionRecord {
    /// Time-ordered UUID (v7); also the paging key.
    pub id: String,
    /// Groups the records of one business exchange across hops.
    pub correlation_id: String,
    /// The request id of the inbound request that caused this record.
    pub request_id: String,
    /// Authenticated client, if any.
    pub client_id: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `fhir`, `soap`, `admin`, `system` or an adapter name.
    pub protocol: String,
    /// Route pattern, SOAP operation or FHIR interaction.
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// Path (inbound) or URL (outbound).
    pub target: String,
    /// `ok`, `client-error`, `server-error` or `failed` (no response).
    pub status: String,
    /// HTTP status code, when there was a response.
    pub http_status: Option<i32>,
    /// Short error description.
    pub error: Option<String>,
    /// Start time, epoch milliseconds.
    pub started_at: i64,
    /// Duration in microseconds.
    pub duration_us: i64,
    /// Request size in bytes.
    pub request_bytes: i64,
    /// Response size in bytes.
    pub response_bytes: i64,
    /// `full`, `metadata-only`.
    pub body_policy: String,
    /// Stored request body (full policy only).
    #[serde(skip)]
    pub request_body: Option<Vec<u8>>,
    /// Stored response body (full policy only).
    #[serde(skip)]
    pub response_body: Option<Vec<u8>>,
    /// True when a stored body was cut to the size limit.
    pub truncated: bool,
    /// The record this one re-ran, if it is a rerun.
    pub rerun_of: Option<String>,
    /// When the record may be pruned, epoch milliseconds.
    pub expires_at: i64,
    /// The W3C trace it belongs to (32 hex digits), shared across gateways.
    pub trace_id: Option<String>,
    /// The request's Content-Type (inbound), which a rerun sends again.
    pub content_type: Option<String>,
    /// The request's SOAPAction header (inbound SOAP 1.1), which a rerun sends again.
    pub soap_action: Option<String>,
    /// Its span in that trace (16 hex digits): exported, not stored.
    #[serde(skip)]
    pub span_id: Option<String>,
    /// The span it continues (the caller's, or the request that made the call): exported,
    /// not stored.
    #[serde(skip)]
    pub parent_span_id: Option<String>,
}

/// The cut-offs of one retention pass (epoch ms): what is older goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Now: records past their own `expires_at` go.
    pub now: i64,
    /// Stored bodies of records logged before this go.
    pub bodies_before: i64,
    /// Delivered outbox items done before this go.
    pub outbox_before: i64,
    /// History of finished documents before this goes.
    pub history_before: i64,
    /// Job runs finished before this go.
    pub job_runs_before: i64,
}

/// What one retention batch removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Transaction records.
    pub transactions: u64,
    /// Stored bodies (their records kept).
    pub bodies: u64,
    /// Delivered outbox items.
    pub outbox: u64,
    /// Document history entries.
    pub history: u64,
    /// Finished job runs.
    pub job_runs: u64,
}

impl Pruned {
    /// Everything removed.
    pub fn total(&self) -> u64 {
        self.transactions + self.bodies + self.outbox + self.history + self.job_runs
    }
}

/// Filters for listing transactions; all optional, combined with AND.
#[derive(Debug, Default, Clone)]
pub struct TransactionFilter {
    /// Exact status.
    pub status: Option<String>,
    /// Exact operation.
    pub operation: Option<String>,
    /// Exact protocol.
    pub protocol: Option<String>,
    /// Exact client id.
    pub client_id: Option<String>,
    /// Exact correlation id.
    pub correlation_id: Option<String>,
    /// Exact W3C trace id.
    pub trace_id: Option<String>,
    /// Started at or after (epoch ms).
    pub from: Option<i64>,
    /// Started before (epoch ms).
    pub to: Option<i64>,
    /// Exact direction (`inbound`, `outbound`).
    pub direction: Option<String>,
    /// Reruns of this record.
    pub rerun_of: Option<String>,
    /// Return records with an id lower than this (keyset cursor, newest first).
    pub before_id: Option<String>,
}

const COLUMNS: &str = "id, correlation_id, request_id, client_id, direction, protocol, operation, \
    method, target, status, http_status, error, started_at, duration_us, request_bytes, \
    response_bytes, body_policy, request_body, response_body, truncated, rerun_of, expires_at, \
    trace_id, content_type, soap_action";
const COLUMN_COUNT: usize = 25;

/// Rows per INSERT statement: keeps placeholder counts well under both backends' limits.
const INSERT_CHUNK: usize = 32;

impl Store {
    /// Inserts records with multi-row INSERTs in one transaction.
    pub async fn insert_transactions(
        &self,
        records: &[TransactionRecord],
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for chunk in super::power_of_two_chunks(records, INSERT_CHUNK) {
            let mut sql = format!("INSERT INTO transactions ({COLUMNS}) VALUES ");
            for (i, _) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..COLUMN_COUNT {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * COLUMN_COUNT + c + 1));
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(r.correlation_id.clone())
                    .bind(r.request_id.clone())
                    .bind(r.client_id.clone())
                    .bind(r.direction.clone())
                    .bind(r.protocol.clone())
                    .bind(r.operation.clone())
                    .bind(r.method.clone())
                    .bind(r.target.clone())
                    .bind(r.status.clone())
                    .bind(r.http_status)
                    .bind(r.error.clone())
                    .bind(r.started_at)
                    .bind(r.duration_us)
                    .bind(r.request_bytes)
                    .bind(r.response_bytes)
                    .bind(r.body_policy.clone())
                    .bind(r.request_body.clone())
                    .bind(r.response_body.clone())
                    .bind(i32::from(r.truncated))
                    .bind(r.rerun_of.clone())
                    .bind(r.expires_at)
                    .bind(r.trace_id.clone())
                    .bind(r.content_type.clone())
                    .bind(r.soap_action.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lists records newest first, at most `limit`, after the filter's cursor.
    pub async fn list_transactions(
        &self,
        filter: &TransactionFilter,
        limit: u32,
    ) -> Result<Vec<TransactionRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM transactions WHERE 1=1");
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |sql: &mut String, cond: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(v) = &filter.status {
            push(&mut sql, "status =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.operation {
            push(&mut sql, "operation =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.protocol {
            push(&mut sql, "protocol =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.client_id {
            push(&mut sql, "client_id =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.correlation_id {
            push(&mut sql, "correlation_id =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.trace_id {
            push(&mut sql, "trace_id =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.direction {
            push(&mut sql, "direction =", Arg::Text(v.clone()));
        }
        if let Some(v) = &filter.rerun_of {
            push(&mut sql, "rerun_of =", Arg::Text(v.clone()));
        }
        if let Some(v) = filter.from {
            push(&mut sql, "started_at >=", Arg::Int(v));
        }
        if let Some(v) = filter.to {
            push(&mut sql, "started_at <", Arg::Int(v));
        }
        if let Some(v) = &filter.before_id {
            push(&mut sql, "id <", Arg::Text(v.clone()));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// One record by id.
    pub async fn get_transaction(&self, id: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM transactions WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// One bounded batch of retention: at most `batch` rows of each kind, oldest first —
    /// transaction records past their `expires_at`, stored bodies of records logged before
    /// `bodies_before` (the record stays, `body_policy` says `pruned`), delivered outbox
    /// items done before `outbox_before`, history of documents in a final state before
    /// `history_before`, job runs finished before `job_runs_before`. Nothing younger is
    /// touched.
    pub async fn prune_batch(&self, cut: &Retention, batch: u32) -> Result<Pruned, StoreError> {
        let batch = i64::from(batch.max(1));
        let run = |sql: &'static str, before: i64| async move {
            Ok::<u64, StoreError>(
                sqlx::query(sql)
                    .bind(before)
                    .bind(batch)
                    .execute(self.pool())
                    .await?
                    .rows_affected(),
            )
        };
        Ok(Pruned {
            transactions: run(
                "DELETE FROM transactions WHERE id IN (SELECT id FROM transactions \
                 WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
                cut.now,
            )
            .await?,
            // Records about to expire lose their bodies with themselves, not before.
            bodies: sqlx::query(
                "UPDATE transactions SET request_body = NULL, response_body = NULL, \
                 body_policy = 'pruned' WHERE id IN (SELECT id FROM transactions \
                 WHERE started_at < $1 AND body_policy = 'full' AND expires_at >= $3 \
                 ORDER BY started_at LIMIT $2)",
            )
            .bind(cut.bodies_before)
            .bind(batch)
            .bind(cut.now)
            .execute(self.pool())
            .await?
            .rows_affected(),
            outbox: run(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                 WHERE status = 'done' AND updated_at < $1 ORDER BY updated_at LIMIT $2)",
                cut.outbox_before,
            )
            .await?,
            history: run(
                "DELETE FROM document_events WHERE id IN (SELECT e.id FROM document_events e \
                 JOIN documents d ON d.id = e.document_id WHERE e.at < $1 \
                 AND d.status IN ('registered', 'rejected', 'dead-lettered') \
                 ORDER BY e.at LIMIT $2)",
                cut.history_before,
            )
            .await?,
            // A run still going (no end) is never pruned.
            job_runs: run(
                "DELETE FROM job_runs WHERE id IN (SELECT id FROM job_runs \
                 WHERE ended_at < $1 ORDER BY ended_at LIMIT $2)",
                cut.job_runs_before,
            )
            .await?,
        })
    }
}

/// Writes transaction records with `COPY ... FROM STDIN` on a connection of its own
/// (PostgreSQL): one message per batch instead of 25 bound parameters per row through
/// `sqlx::Any`, which is most of what recording costs a busy gateway.
pub struct TransactionCopier {
    options: std::sync::Arc<sqlx::postgres::PgConnectOptions>,
    conn: Option<sqlx::postgres::PgConnection>,
    buf: Vec<u8>,
}

impl TransactionCopier {
    /// Writes one batch in one COPY (its own transaction). A failed COPY drops the
    /// connection, so the next batch starts on a fresh one.
    pub async fn write(&mut self, records: &[TransactionRecord]) -> Result<(), StoreError> {
        use sqlx::Connection;
        if records.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for r in records {
            copy_row(&mut self.buf, r);
        }
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self
                .conn
                .insert(sqlx::postgres::PgConnection::connect_with(&self.options).await?),
        };
        let result = async {
            let mut copy = conn
                .copy_in_raw(&format!("COPY transactions ({COLUMNS}) FROM STDIN"))
                .await?;
            if let Err(e) = copy.send(self.buf.as_slice()).await {
                let _ = copy.abort("send failed").await;
                return Err(e);
            }
            copy.finish().await.map(|_| ())
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        // Large batches leave a large buffer behind; keep it bounded between batches.
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        result.map_err(StoreError::from)
    }
}

impl Store {
    /// The COPY writer of transaction records; `None` on SQLite.
    pub fn transaction_copier(&self) -> Option<TransactionCopier> {
        self.pg_options.as_ref().map(|o| TransactionCopier {
            options: o.clone(),
            conn: None,
            buf: Vec::new(),
        })
    }
}

/// One field of a COPY row.
enum Cell<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bytes(Option<&'a [u8]>),
}

/// One row of COPY's text format: tab-separated, `\N` for NULL, escapes for the rest.
fn copy_row(out: &mut Vec<u8>, r: &TransactionRecord) {
    use std::io::Write;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let cells = [
        Cell::Text(Some(&r.id)),
        Cell::Text(Some(&r.correlation_id)),
        Cell::Text(Some(&r.request_id)),
        Cell::Text(r.client_id.as_deref()),
        Cell::Text(Some(&r.direction)),
        Cell::Text(Some(&r.protocol)),
        Cell::Text(Some(&r.operation)),
        Cell::Text(Some(&r.method)),
        Cell::Text(Some(&r.target)),
        Cell::Text(Some(&r.status)),
        Cell::Int(r.http_status.map(i64::from)),
        Cell::Text(r.error.as_deref()),
        Cell::Int(Some(r.started_at)),
        Cell::Int(Some(r.duration_us)),
        Cell::Int(Some(r.request_bytes)),
        Cell::Int(Some(r.response_bytes)),
        Cell::Text(Some(&r.body_policy)),
        Cell::Bytes(r.request_body.as_deref()),
        Cell::Bytes(r.response_body.as_deref()),
        Cell::Int(Some(i64::from(r.truncated))),
        Cell::Text(r.rerun_of.as_deref()),
        Cell::Int(Some(r.expires_at)),
        Cell::Text(r.trace_id.as_deref()),
        Cell::Text(r.content_type.as_deref()),
        Cell::Text(r.soap_action.as_deref()),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match cell {
            Cell::Text(None) | Cell::Int(None) | Cell::Bytes(None) => out.extend_from_slice(b"\\N"),
            Cell::Text(Some(v)) => {
                for &b in v.as_bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        // PostgreSQL text cannot hold NUL: dropped, so the rest is kept.
                        0 => {}
                        _ => out.push(b),
                    }
                }
            }
            Cell::Int(Some(v)) => {
                let _ = write!(out, "{v}");
            }
            // bytea's hex form `\x...`, its backslash escaped for COPY.
            Cell::Bytes(Some(v)) => {
                out.extend_from_slice(b"\\\\x");
                for &b in v.iter() {
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 15)]);
                }
            }
        }
    }
    out.push(b'\n');
}

enum Arg {
    Text(String),
    Int(i64),
}

fn decode(row: &sqlx::any::AnyRow) -> Result<TransactionRecord, StoreError> {
    Ok(TransactionRecord {
        id: row.try_get("id")?,
        correlation_id: row.try_get("correlation_id")?,
        request_id: row.try_get("request_id")?,
        client_id: row.try_get("client_id")?,
        direction: row.try_get("direction")?,
        protocol: row.try_get("protocol")?,
        operation: row.try_get("operation")?,
        method: row.try_get("method")?,
        target: row.try_get("target")?,
        status: row.try_get("status")?,
        http_status: row.try_get("http_status")?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        duration_us: row.try_get("duration_us")?,
        request_bytes: row.try_get("request_bytes")?,
        response_bytes: row.try_get("response_bytes")?,
        body_policy: row.try_get("body_policy")?,
        request_body: row.try_get("request_body")?,
        response_body: row.try_get("response_body")?,
        truncated: row.try_get::<i32, _>("truncated")? != 0,
        rerun_of: row.try_get("rerun_of")?,
        expires_at: row.try_get("expires_at")?,
        trace_id: row.try_get("trace_id")?,
        content_type: row.try_get("content_type")?,
        soap_action: row.try_get("soap_action")?,
        span_id: None,
        parent_span_id: None,
    })
}

/// One partner's outbound calls over a period, from the transaction log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerCalls {
    /// The partner (the adapter's name: `emias`, `remd`, `webhook`, ...).
    pub partner: String,
    /// Calls made.
    pub calls: i64,
    /// Of those, failed (no answer, an error answer).
    pub errors: i64,
    /// The last call's start (epoch ms).
    pub last_contact: i64,
    /// Mean duration (µs).
    pub mean_us: i64,
}

impl Store {
    /// Outbound calls since `since` (epoch ms), per partner.
    pub async fn partner_calls(&self, since: i64) -> Result<Vec<PartnerCalls>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT protocol, COUNT(*) AS calls, \
             SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS errors, \
             MAX(started_at) AS last_contact, CAST(AVG(duration_us) AS BIGINT) AS mean_us \
             FROM transactions WHERE direction = 'outbound' AND started_at >= $1 \
             GROUP BY protocol ORDER BY protocol",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PartnerCalls {
                    partner: r.try_get("protocol")?,
                    calls: r.try_get("calls")?,
                    errors: r.try_get("errors")?,
                    last_contact: r.try_get("last_contact")?,
                    mean_us: r.try_get("mean_us")?,
                })
            })
            .collect()
    }

    /// Mean duration (µs) of each partner's outbound calls per minute since `since`:
    /// (partner, minute start in epoch ms, mean µs), in time order.
    pub async fn partner_latency(&self, since: i64) -> Result<Vec<(String, i64, i64)>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT protocol, (started_at / 60000) * 60000 AS minute, \
             CAST(AVG(duration_us) AS BIGINT) AS mean_us \
             FROM transactions WHERE direction = 'outbound' AND started_at >= $1 \
             GROUP BY protocol, (started_at / 60000) * 60000 ORDER BY minute",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("protocol")?,
                    r.try_get("minute")?,
                    r.try_get("mean_us")?,
                ))
            })
            .collect()
    }
}

/// The requests of one operation over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTraffic {
    /// The operation (method and route, or SOAP operation).
    pub operation: String,
    /// Requests answered.
    pub requests: i64,
    /// Of those, answered with an error.
    pub errors: i64,
    /// Mean time to answer (ms).
    pub mean_ms: f64,
    /// Longest (ms).
    pub max_ms: f64,
}

impl Store {
    /// Inbound requests since `since` (epoch ms) per operation (of one client when given),
    /// busiest first, at most 200 operations.
    pub async fn route_traffic(
        &self,
        since: i64,
        client: Option<&str>,
    ) -> Result<Vec<RouteTraffic>, StoreError> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT operation, COUNT(*) AS requests, \
             SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS errors, \
             CAST(AVG(duration_us) AS BIGINT) AS mean_us, MAX(duration_us) AS max_us \
             FROM transactions WHERE direction = 'inbound' AND started_at >= $1 \
             AND ($2 = '' OR client_id = $2) \
             GROUP BY operation ORDER BY COUNT(*) DESC, operation LIMIT 200",
        )
        .bind(since)
        .bind(client.unwrap_or_default().to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RouteTraffic {
                    operation: r.try_get("operation")?,
                    requests: r.try_get("requests")?,
                    errors: r.try_get("errors")?,
                    mean_ms: r.try_get::<i64, _>("mean_us")? as f64 / 1000.0,
                    max_ms: r.try_get::<i64, _>("max_us")? as f64 / 1000.0,
                })
            })
            .collect()
    }
}
