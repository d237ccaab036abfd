//! `medgate bench prune`: the retention job's pruning rate. A fresh PostgreSQL database is
//! filled with transaction records past their retention (and as many young ones, which must
//! stay), then the job's steps run until nothing is left to prune.

use std::time::{Duration, Instant};

use super::BenchDb;
use crate::config::RetentionSettings;
use crate::jobs::prune::Retention;
use crate::jobs::Job;
use crate::store::transactions::TransactionRecord;

/// Options of `medgate bench prune`.
#[derive(Debug, Clone)]
pub struct PruneBench {
    /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
    pub pg_admin_url: String,
    /// Records past their retention (as many young ones are written too).
    pub rows: usize,
    /// Rows per statement.
    pub batch: u32,
}

/// Fills, prunes, counts; the report line.
pub async fn prune(opts: PruneBench) -> Result<String, String> {
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run(&opts, &db.url).await;
    db.drop().await;
    result
}

fn record(i: usize, now: i64, expired: bool) -> TransactionRecord {
    TransactionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        correlation_id: format!("bench-{i}"),
        request_id: format!("bench-{i}"),
        client_id: Some("bench".into()),
        direction: "inbound".into(),
        protocol: "fhir".into(),
        operation: "GET /fhir/Slot".into(),
        method: "GET".into(),
        target: "/fhir/Slot".into(),
        status: "ok".into(),
        http_status: Some(200),
        error: None,
        started_at: now - 40 * 86_400_000,
        duration_us: 900,
        request_bytes: 0,
        response_bytes: 2048,
        body_policy: "metadata-only".into(),
        request_body: None,
        response_body: None,
        truncated: false,
        rerun_of: None,
        content_type: None,
        soap_action: None,
        expires_at: if expired { now - 1 } else { now + 86_400_000 },
        trace_id: None,
        span_id: None,
        parent_span_id: None,
    }
}

async fn run(opts: &PruneBench, url: &str) -> Result<String, String> {
    let mut s = super::gateway_settings(url);
    s.database.max_connections = 4;
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let now = crate::model::time::now_ms();
    let filled = Instant::now();
    let mut written = 0;
    while written < opts.rows {
        let n = (opts.rows - written).min(2000);
        let rows: Vec<TransactionRecord> = (written..written + n)
            .flat_map(|i| [record(i, now, true), record(i, now, false)])
            .collect();
        store
            .insert_transactions(&rows)
            .await
            .map_err(|e| e.to_string())?;
        written += n;
    }
    let fill = filled.elapsed();
    let job = Retention::new(
        store.clone(),
        RetentionSettings {
            batch_rows: opts.batch,
            ..RetentionSettings::default()
        },
        crate::model::time::system_clock(),
    );
    let started = Instant::now();
    let (mut pruned, mut statements) = (0usize, 0usize);
    loop {
        let tick = job.step().await?;
        pruned += tick.handled;
        statements += 1;
        if !tick.more {
            break;
        }
    }
    let took = started.elapsed().max(Duration::from_micros(1));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transactions")
        .fetch_one(store.pool())
        .await
        .map_err(|e| e.to_string())?;
    if pruned != opts.rows || usize::try_from(left).ok() != Some(opts.rows) {
        return Err(format!(
            "pruned {pruned} of {} expired records, {left} left (expected {})",
            opts.rows, opts.rows
        ));
    }
    Ok(format!(
        "retention on PostgreSQL: {pruned} expired transaction records (among {} rows, filled in {:.1} s) pruned in {:.2} s = {:.0} rows/s, {} steps of at most {} rows per statement; the {left} young records kept",
        opts.rows * 2,
        fill.as_secs_f64(),
        took.as_secs_f64(),
        pruned as f64 / took.as_secs_f64(),
        statements,
        opts.batch,
    ))
}
