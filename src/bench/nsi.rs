//! `medgate bench nsi`: the rate of the reference-book sync. The NSI simulator serves ICD-10
//! (about 17,000 rows a version, three versions, or only the latest); a fresh store (a
//! SQLite file, or a PostgreSQL database made and dropped) keeps them through the adapter
//! (HTTP, JSON pages) and the service, as the `nsi-sync` job does; a second run then finds
//! every version held and skips it.

use std::time::{Duration, Instant};

use super::BenchDb;
use crate::config::{NsiBookSettings, NsiSettings, Secret, TransactionLogSettings};
use crate::model::nsi::BOOK_ICD10;
use crate::services::nsi::{Book, ReferenceBooks};

/// Options of `medgate bench nsi`.
#[derive(Debug, Clone)]
pub struct NsiBench {
    /// PostgreSQL URL allowed to create a database; `None`: a SQLite file in a temporary
    /// directory.
    pub pg_admin_url: Option<String>,
    /// Every version of ICD-10 (three), or only the latest.
    pub all_versions: bool,
    /// Rows per data page.
    pub page_size: u32,
}

/// Starts the simulator and a store, syncs ICD-10 twice; the report line.
pub async fn nsi(opts: NsiBench) -> Result<String, String> {
    match &opts.pg_admin_url {
        Some(admin) => {
            let db = BenchDb::create(admin).await?;
            let result = run(&opts, &db.url, "PostgreSQL").await;
            db.drop().await;
            result
        }
        None => {
            let dir = std::env::temp_dir().join(format!(
                "medgate-bench-nsi-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let url = format!("sqlite://{}", dir.join("nsi.db").display());
            let result = run(&opts, &url, "SQLite (file, WAL)").await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
    }
}

async fn run(opts: &NsiBench, db_url: &str, backend: &str) -> Result<String, String> {
    const KEY: &str = "bench-nsi-key";
    let mut books = crate::sim::nsi::federal_books();
    books.retain(|b| b.oid == BOOK_ICD10);
    if !opts.all_versions {
        for b in &mut books {
            let keep = b.versions.len().saturating_sub(1);
            b.versions.drain(..keep);
        }
    }
    let versions: Vec<String> = books
        .iter()
        .flat_map(|b| b.versions.iter().map(|v| v.version.clone()))
        .collect();
    let sim = crate::sim::nsi::NsiSim::start_with(KEY, books).map_err(|e| e.to_string())?;
    let mut s = super::gateway_settings(db_url);
    s.database.max_connections = 4;
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let (txlog, txlog_task) = crate::exchange::TxLog::start(
        store.clone(),
        TransactionLogSettings {
            default_bodies: crate::config::BodyPolicy::MetadataOnly,
            ..s.transaction_log.clone()
        },
    );
    let settings = NsiSettings {
        url: sim.url.clone(),
        user_key: Secret::new(KEY),
        timeout_secs: 30,
        page_size: opts.page_size,
        attempts: 3,
        books: vec![NsiBookSettings {
            oid: BOOK_ICD10.into(),
            name: None,
            registry_accepts: None,
            code_column: None,
            display_column: None,
        }],
    };
    let client = crate::adapters::nsi::NsiClient::new(&settings, txlog.clone());
    let oid = crate::model::Oid::parse(BOOK_ICD10).map_err(|e| e.to_string())?;
    let service = ReferenceBooks::new(store.clone(), crate::model::time::system_clock())
        .with_source(
            std::sync::Arc::new(client),
            vec![Book {
                oid,
                name: None,
                accepts: None,
                code_column: None,
                display_column: None,
            }],
            opts.page_size,
        );
    let started = Instant::now();
    let first = service.sync_all().await;
    let took = started.elapsed().max(Duration::from_micros(1));
    let again = Instant::now();
    let second = service.sync_all().await;
    let skipped_in = again.elapsed();
    let requests = sim.requests();
    sim.stop().await;
    // The transaction log's writer ends once its last handle (the client's) is gone.
    drop(service);
    drop(txlog);
    let _ = tokio::time::timeout(Duration::from_secs(5), txlog_task).await;
    if let Some((oid, why)) = first.failed.first().or(second.failed.first()) {
        return Err(format!("sync of {oid} failed: {why}"));
    }
    let rows = first.rows();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nsi_entries")
        .fetch_one(store.pool())
        .await
        .map_err(|e| e.to_string())?;
    if u64::try_from(stored).ok() != Some(rows) || second.rows() != 0 {
        return Err(format!(
            "loaded {rows} rows, {stored} stored, {} loaded again",
            second.rows()
        ));
    }
    let current = first.books.first().and_then(|b| b.current.clone());
    store.close().await;
    Ok(format!(
        "NSI sync of ICD-10 ({} version(s): {}; current {}) into {backend}: {rows} rows in {:.2} s = {:.0} rows/s, pages of {} rows over HTTP ({} data requests); a second run skipped every version in {} ms",
        versions.len(),
        versions.join(", "),
        current.unwrap_or_default(),
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        opts.page_size,
        requests.data,
        skipped_in.as_millis(),
    ))
}
