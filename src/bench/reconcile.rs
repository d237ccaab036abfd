//! `medgate bench reconcile`: the schedule reconciliation of a whole region. A simulated city
//! MIS of about the asked number of slots is synchronized into a fresh PostgreSQL database,
//! a share of the slots drifts silently (on both sides), then every organization is
//! reconciled one after the other, as the nightly job does, and the repairs are counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{load_region, BenchDb, SyncBench};
use crate::config::BookingSettings;
use crate::exchange::partners::{Partners, COOL_DOWN, TRIP_AFTER};
use crate::services::booking::Booking;
use crate::services::mis::MisRegistry;
use crate::services::reconcile::{OrgReport, ScheduleReconciliation};
use crate::sim::emias::Drift;

/// Options of `medgate bench reconcile`.
#[derive(Debug, Clone)]
pub struct ReconcileBench {
    /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
    pub pg_admin_url: String,
    /// Slots in the region (approximately).
    pub slots: u64,
    /// Share of the slots that drift, in [0, 1].
    pub drift: f64,
}

/// Loads, drifts, reconciles; the report.
pub async fn reconcile(opts: ReconcileBench) -> Result<String, String> {
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run(&opts, &db.url).await;
    db.drop().await;
    result
}

async fn run(opts: &ReconcileBench, db_url: &str) -> Result<String, String> {
    let load = SyncBench {
        pg_admin_url: String::new(),
        slots: opts.slots,
        parallel: 4,
        keep: false,
    };
    let (sim, stored, took) = load_region(&load, db_url).await?;
    eprintln!(
        "region loaded: {stored} slots in {:.1} s",
        took.as_secs_f64()
    );
    let mut s = crate::config::Settings::default();
    s.database.url = db_url.to_string();
    s.database.max_connections = 8;
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    // Drift: a random share of the slots, five kinds in turn; three at the clinic, two here.
    let n = ((stored as f64) * opts.drift.clamp(0.0, 1.0)).round() as i64;
    let ids: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT id FROM slots WHERE status = 'free' ORDER BY random() LIMIT {n}"
    ))
    .fetch_all(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    let (mut gone_here, mut busy_here) = (Vec::new(), Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let sim_id = id.trim_start_matches("emias:");
        match i % 5 {
            0 => drop(sim.drift(sim_id, Drift::Withdraw)),
            1 => drop(sim.drift(sim_id, Drift::Move(15))),
            2 => drop(sim.drift(sim_id, Drift::DeskBooking)),
            3 => gone_here.push(id.clone()),
            _ => busy_here.push(id.clone()),
        }
    }
    for (sql, list) in [
        ("DELETE FROM slots WHERE id IN", &gone_here),
        ("UPDATE slots SET status = 'busy' WHERE id IN", &busy_here),
    ] {
        for chunk in list.chunks(500) {
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!("{sql} ({marks})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            q.execute(store.pool()).await.map_err(|e| e.to_string())?;
        }
    }
    let clock = crate::model::time::system_clock();
    let (txlog, _writer) = crate::exchange::TxLog::start(store.clone(), s.transaction_log.clone());
    let client = Arc::new(crate::adapters::emias::EmiasClient::new(
        &sim.url,
        Duration::from_secs(120),
        txlog,
    ));
    let mut mis = MisRegistry::default();
    mis.insert(crate::adapters::emias::SOURCE, client.clone());
    let booking = Booking::new(
        store.clone(),
        mis,
        None,
        &BookingSettings::default(),
        clock.clone(),
        Partners::new(TRIP_AFTER, COOL_DOWN, clock.clone()),
    );
    let service = ScheduleReconciliation::new(store.clone(), booking, 30, clock);
    let orgs = service.organizations().await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut total = OrgReport::default();
    for (_, org) in &orgs {
        let r = service
            .reconcile(client.as_ref(), org)
            .await
            .map_err(|e| format!("{org}: {e}"))?;
        total.examined += r.examined;
        total.added += r.added;
        total.withdrawn += r.withdrawn;
        total.changed += r.changed;
        total.booked_at_clinic += r.booked_at_clinic;
        total.freed += r.freed;
        total.pending += r.pending;
    }
    let elapsed = started.elapsed();
    sim.stop().await;
    Ok(format!(
        "schedule reconciliation: {stored} slots in {} organizations, {} drifted ({:.1}%): \
         {} found, {} repaired (added {}, withdrawn {}, changed {}, booked at the clinic {}, freed {}) \
         in {:.1} s = {:.0} slots compared/s (simulated city MIS over SOAP <-> PostgreSQL, one organization at a time)",
        orgs.len(),
        ids.len(),
        opts.drift * 100.0,
        total.found(),
        total.repaired(),
        total.added,
        total.withdrawn,
        total.changed,
        total.booked_at_clinic,
        total.freed,
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
    ))
}
