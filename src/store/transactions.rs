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
    /// Started at or after (epoch ms).
    pub from: Option<i64>,
    /// Started before (epoch ms).
    pub to: Option<i64>,
    /// Return records with an id lower than this (keyset cursor, newest first).
    pub before_id: Option<String>,
}

const COLUMNS: &str = "id, correlation_id, request_id, client_id, direction, protocol, operation, \
    method, target, status, http_status, error, started_at, duration_us, request_bytes, \
    response_bytes, body_policy, request_body, response_body, truncated, rerun_of, expires_at";
const COLUMN_COUNT: usize = 22;

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
                    .bind(r.expires_at);
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

    /// Deletes records whose retention has ended; returns how many were removed.
    pub async fn prune_transactions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM transactions WHERE expires_at < $1")
            .bind(now_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
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
    })
}
