//! Load commands (`medgate bench ...`): real HTTP against an in-process gateway on
//! PostgreSQL, reporting throughput and latency percentiles; the soak (`bench soak`, in
//! `bench/soak.rs`) also memory over time. Figures go to BENCHMARKS.md.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use sqlx::Connection;

use crate::app::Gateway;
use crate::config::{
    BodyPolicy, ClientSettings, KeyRole, KeySettings, RemdSettings, Secret, Settings,
};

mod nsi;
mod prune;
mod reconcile;
mod referrals;
mod soak;
pub use nsi::{nsi, NsiBench};
pub use prune::{prune, PruneBench};
pub use reconcile::{reconcile, ReconcileBench};
pub use referrals::{referrals, ReferralBench};
pub use soak::{soak, OpReport, Operation, SoakBench, SoakReport};

/// Options of `medgate bench documents`.
#[derive(Debug, Clone)]
pub struct DocumentBench {
    /// PostgreSQL server URL with rights to create a database (a fresh one is made and dropped).
    pub pg_admin_url: String,
    /// Documents to submit.
    pub count: usize,
    /// Concurrent HTTP requests.
    pub concurrency: usize,
    /// Size of each CDA document in bytes (approximately).
    pub size: usize,
    /// Directory with `org-gost256.*.pem` and `doctor-gost256.*.pem`.
    pub keys: PathBuf,
    /// Signatures to make with one `openssl cms -sign` process each, for comparison.
    pub openssl_count: usize,
}

/// Results of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Documents accepted.
    pub accepted: usize,
    /// Wall time of the submission phase.
    pub elapsed: Duration,
    /// Latency percentiles (p50, p90, p99, max).
    pub latency: [Duration; 4],
    /// `openssl cms -sign` processes per second (one signature each), if measured.
    pub openssl_per_sec: Option<f64>,
    /// Document size in bytes.
    pub doc_bytes: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.accepted as f64 / self.elapsed.as_secs_f64();
        writeln!(
            f,
            "documents accepted:   {} of {} bytes each in {:.2} s",
            self.accepted,
            self.doc_bytes,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "gateway throughput:   {rate:.0} documents/s (intake + validation + 2 GOST CMS signatures + durable enqueue, through HTTP, PostgreSQL)")?;
        writeln!(
            f,
            "latency p50/p90/p99/max: {:.1} / {:.1} / {:.1} / {:.1} ms",
            ms(self.latency[0]),
            ms(self.latency[1]),
            ms(self.latency[2]),
            ms(self.latency[3])
        )?;
        if let Some(o) = self.openssl_per_sec {
            writeln!(f, "openssl cms -sign, one process per signature: {o:.0} signatures/s = {:.0} documents/s at 2 signatures each", o / 2.0)?;
        }
        Ok(())
    }
}

/// The `p` quantile (0 to 1) of `sorted` latencies; zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Settings of a benchmark's in-process gateway on `db_url`: any port, 32 connections,
/// warnings only, metadata-only transaction records.
fn gateway_settings(db_url: &str) -> Settings {
    let mut s = Settings::default();
    s.http.bind = "127.0.0.1:0".into();
    s.database.url = db_url.to_string();
    s.database.max_connections = 32;
    s.log.filter = "warn".into();
    s.transaction_log.default_bodies = BodyPolicy::MetadataOnly;
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the document intake benchmark.
pub async fn documents(opts: DocumentBench) -> Result<Report, String> {
    crate::sign::init_crypto();
    if !crate::sign::init_crypto().gost_available {
        return Err("GOST engine unavailable: install libengine-gost-openssl".into());
    }
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run(&opts, &db.url).await;
    db.drop().await;
    let mut report = result?;
    if opts.openssl_count > 0 {
        report.openssl_per_sec = Some(openssl_rate(&opts)?);
    }
    Ok(report)
}

/// A fresh PostgreSQL database for one benchmark run.
struct BenchDb {
    admin: sqlx::PgConnection,
    name: String,
    url: String,
}

impl BenchDb {
    /// Creates the database through `pg_admin_url`.
    async fn create(pg_admin_url: &str) -> Result<BenchDb, String> {
        let name = format!("medgate_bench_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(pg_admin_url)
            .await
            .map_err(|e| format!("PostgreSQL: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        let mut url = url::Url::parse(pg_admin_url).map_err(|e| e.to_string())?;
        url.set_path(&format!("/{name}"));
        Ok(BenchDb {
            admin,
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database.
    async fn drop(mut self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await;
    }
}

const ORG: &str = "1.2.643.5.1.13.13.12.2.77.7001";
const TOKEN: &str = "bench-token";

/// A client of the benchmark's gateway presenting `token`.
fn client(id: &str, token: &str, organizations: &[&str], scopes: &[&str]) -> ClientSettings {
    ClientSettings {
        id: id.into(),
        name: id.into(),
        token_sha256: Secret::new(hex::encode(crate::auth::token_hash(token))),
        organizations: organizations.iter().map(|o| o.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        channels: Vec::new(),
        rate: None,
        signing_certificate: None,
        certificate: None,
    }
}

/// A FHIR `DocumentReference` of [`ORG`] carrying the CDA document `cda`.
fn document_reference(cda: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "resourceType": "DocumentReference",
        "masterIdentifier": {"value": format!("urn:uuid:{}", uuid::Uuid::new_v4())},
        "type": {"coding": [{"system": "urn:oid:1.2.643.5.1.13.13.11.1522", "version": "5.12", "code": "4"}]},
        "subject": {"identifier": {"value": "11223344595"}},
        "author": [{"identifier": {"value": "12345678964"}}],
        "custodian": {"identifier": {"value": ORG}},
        "content": [{"attachment": {"contentType": "application/x-hl7-cda+xml", "data": base64::engine::general_purpose::STANDARD.encode(cda)}}],
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Registry settings of a benchmark gateway whose public URL is `base`: delivering to the
/// registry at `url`, or intake only when `None` (documents stay queued).
fn registry(url: Option<&str>, base: &str) -> RemdSettings {
    RemdSettings {
        url: url.unwrap_or("http://127.0.0.1:9/unused").into(),
        client_entity_id: "bench".into(),
        callback_url: format!("{base}/soap/remd/callback"),
        file_url: format!("{base}/soap/remd/provider"),
        timeout_secs: 10,
        retry_schedule_secs: vec![1, 5, 15, 60],
        callback_timeout_secs: 600,
        workers: if url.is_some() { 4 } else { 1 },
        max_document_bytes: 5 * 1024 * 1024,
        deliver: url.is_some(),
        message_key: None,
        callback_certificates: Vec::new(),
    }
}

/// The organization's and the doctor's GOST keys, PEM files in `keys`.
fn signing_keys(keys: &Path) -> Vec<KeySettings> {
    vec![
        key(keys, ORG, KeyRole::Organization, "org-gost256"),
        key(keys, "12345678964", KeyRole::Doctor, "doctor-gost256"),
    ]
}

fn key(keys: &Path, owner: &str, role: KeyRole, name: &str) -> KeySettings {
    KeySettings {
        owner: owner.into(),
        role,
        certificate: Some(keys.join(format!("{name}.cert.pem")).display().to_string()),
        private_key: Some(keys.join(format!("{name}.key.pem")).display().to_string()),
        pkcs12: None,
        passphrase: None,
        remote: None,
    }
}

fn document(n: usize, size: usize) -> String {
    let base = crate::codec::cda::sample_document(ORG, "11223344595", "12345678964", n as u64, 0);
    crate::codec::cda::sample_document(
        ORG,
        "11223344595",
        "12345678964",
        n as u64,
        size.saturating_sub(base.len()),
    )
}

async fn run(opts: &DocumentBench, db_url: &str) -> Result<Report, String> {
    let mut s = gateway_settings(db_url);
    s.clients = vec![client("bench", TOKEN, &[ORG], &["documents:submit"])];
    s.remd = Some(registry(None, "http://127.0.0.1:9"));
    s.signing.keys = signing_keys(&opts.keys);
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let gw = Gateway::start_on(s, store, listener, crate::model::time::system_clock())
        .await
        .map_err(|e| e.to_string())?;
    let endpoint = format!("{}/fhir/DocumentReference", gw.url());
    let bodies: Vec<Vec<u8>> = (0..opts.count)
        .map(|i| document_reference(&document(i, opts.size)))
        .collect();
    let doc_bytes = document(0, opts.size).len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let bar = indicatif::ProgressBar::new(opts.count as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} documents {per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Warm-up: connections, caches.
    for b in bodies.iter().take(opts.concurrency.min(opts.count)) {
        let _ = http
            .post(&endpoint)
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(b.clone())
            .send()
            .await;
    }
    let started = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(opts.count)));
    let accepted = futures_util::stream::iter(bodies.into_iter().skip(opts.concurrency.min(opts.count)))
        .map(|b| {
            let http = http.clone();
            let endpoint = endpoint.clone();
            let latencies = latencies.clone();
            let bar = bar.clone();
            async move {
                let t = Instant::now();
                let ok = matches!(
                    http.post(&endpoint).bearer_auth(TOKEN).header("content-type", "application/fhir+json").body(b).send().await,
                    Ok(r) if r.status().as_u16() == 201
                );
                if let Ok(mut l) = latencies.lock() {
                    l.push(t.elapsed());
                }
                bar.inc(1);
                ok
            }
        })
        .buffer_unordered(opts.concurrency)
        .filter(|ok| futures_util::future::ready(*ok))
        .count()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    gw.stop().await;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| percentile(&l, p);
    Ok(Report {
        accepted,
        elapsed,
        latency: [
            pct(0.50),
            pct(0.90),
            pct(0.99),
            l.last().copied().unwrap_or_default(),
        ],
        openssl_per_sec: None,
        doc_bytes,
    })
}

fn openssl_rate(opts: &DocumentBench) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("medgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let conf = dir.join("gost.cnf");
    std::fs::write(&conf, "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n[engine_section]\ngost = gost_section\n[gost_section]\nengine_id = gost\ndefault_algorithms = ALL\n").map_err(|e| e.to_string())?;
    let doc = dir.join("doc.xml");
    std::fs::write(&doc, document(0, opts.size)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    for i in 0..opts.openssl_count {
        let out = std::process::Command::new("openssl")
            .args(["cms", "-sign", "-binary", "-outform", "DER", "-nosmimecap"])
            .arg("-in")
            .arg(&doc)
            .arg("-out")
            .arg(dir.join(format!("{i}.p7s")))
            .arg("-signer")
            .arg(opts.keys.join("org-gost256.cert.pem"))
            .arg("-inkey")
            .arg(opts.keys.join("org-gost256.key.pem"))
            .env("OPENSSL_CONF", &conf)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl cms -sign failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let rate = opts.openssl_count as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

/// Options of `medgate bench sync`.
#[derive(Debug, Clone)]
pub struct SyncBench {
    /// PostgreSQL URL allowed to create a database.
    pub pg_admin_url: String,
    /// Slots to generate in the simulated city MIS (approximately).
    pub slots: u64,
    /// Organizations synchronized concurrently.
    pub parallel: usize,
    /// Keep the database afterwards (its URL is returned) for further measurements.
    pub keep: bool,
}

impl SyncBench {
    /// The sync that stores `slots` before another benchmark (into a database it is given).
    fn preload(slots: u64) -> SyncBench {
        SyncBench {
            pg_admin_url: String::new(),
            slots,
            parallel: 4,
            keep: false,
        }
    }
}

/// Settings of a benchmark gateway on `db_url` booking through the city MIS at `emias_url`.
fn booking_settings(db_url: &str, emias_url: &str) -> Settings {
    let mut s = Settings::default();
    s.database.url = db_url.to_string();
    s.database.max_connections = 16;
    s.log.filter = "warn".into();
    s.transaction_log.default_bodies = BodyPolicy::MetadataOnly;
    s.emias = Some(crate::config::EmiasSettings {
        url: emias_url.to_string(),
        timeout_secs: 10,
        days_ahead: 30,
    });
    s
}

/// Full sync of a simulated region into a fresh PostgreSQL database; returns (slots, time).
pub async fn sync(opts: SyncBench) -> Result<(usize, Duration, Option<String>), String> {
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run_sync(&opts, &db.url).await;
    if opts.keep && result.is_ok() {
        return result.map(|(n, t)| (n, t, Some(db.url.clone())));
    }
    db.drop().await;
    result.map(|(n, t)| (n, t, None))
}

/// Options of `medgate bench slots`.
#[derive(Debug, Clone)]
pub struct SlotSearchBench {
    /// PostgreSQL URL allowed to create a database.
    pub pg_admin_url: String,
    /// Slots to store first.
    pub slots: u64,
    /// Concurrent connections (closed loop: each sends its next request when answered).
    pub concurrency: usize,
    /// Seconds to send for.
    pub seconds: u32,
    /// Open loop: requests per second sent on a fixed schedule whatever the answers, with
    /// latency counted from each request's scheduled time (no coordinated omission);
    /// 0 means closed loop with `concurrency` connections.
    pub rate: u32,
    /// Search through the SOAP hub (`GetAvaibleAppointments` of one doctor and day)
    /// instead of FHIR (`Slot` of one clinic and day).
    pub soap: bool,
    /// What the transaction log records of each request (metadata only in production
    /// defaults; `None` measures the cost of recording).
    pub record: BodyPolicy,
}

/// Slot search latency at a fixed request rate through HTTP; returns a printable report.
pub async fn slot_search(opts: SlotSearchBench) -> Result<String, String> {
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run_slot_search(&opts, &db.url).await;
    db.drop().await;
    result
}

async fn run_slot_search(opts: &SlotSearchBench, db_url: &str) -> Result<String, String> {
    let (stored, _) = run_sync(&SyncBench::preload(opts.slots), db_url).await?;
    let mut s = Settings::default();
    s.database.url = db_url.to_string();
    s.database.max_connections = 16;
    s.log.filter = "warn".into();
    s.transaction_log.default_bodies = opts.record;
    s.clients = vec![client("bench", TOKEN, &[], &["schedule:read"])];
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let gw = Gateway::start_on(s, store, listener, crate::model::time::system_clock())
        .await
        .map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let search = Arc::new(SearchRequest::new(&gw.store, &gw.url(), &http, opts.soap).await?);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(u64::from(opts.seconds));
    let started = Instant::now();
    let record = |latencies: &std::sync::Mutex<Vec<Duration>>,
                  errors: &std::sync::atomic::AtomicUsize,
                  ok: bool,
                  took: Duration| {
        if ok {
            if let Ok(mut l) = latencies.lock() {
                l.push(took);
            }
        } else {
            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    if opts.rate > 0 {
        let period = Duration::from_secs(1) / opts.rate;
        let total = u64::from(opts.rate) * u64::from(opts.seconds);
        let mut tasks = Vec::with_capacity(total as usize);
        for n in 0..total {
            let due = started + period * (n as u32);
            tokio::time::sleep_until(due.into()).await;
            let (search, latencies, errors) = (search.clone(), latencies.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let ok = search.send(n as usize).await.ok();
                record(&latencies, &errors, ok, due.elapsed());
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
    let workers: Vec<_> = (0..if opts.rate > 0 {
        0
    } else {
        opts.concurrency.max(1)
    })
        .map(|w| {
            let (search, latencies, errors) = (search.clone(), latencies.clone(), errors.clone());
            tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = search.send(i).await.ok();
                    record(&latencies, &errors, ok, t.elapsed());
                    i += 7;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    gw.stop().await;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| percentile(&l, p);
    Ok(format!(
        "slots stored: {stored}\ninterface: {}\nrequests: {} ok, {} failed, {}, {:.0} requests/s\nlatency p50/p90/p99/max: {:.2} / {:.2} / {:.2} / {:.2} ms",
        if opts.soap {
            "SOAP hub GetAvaibleAppointments (one doctor, one day)"
        } else {
            "FHIR Slot search (one clinic, one day, 20 per page)"
        },
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        if opts.rate > 0 {
            format!("open loop at {} requests/s offered", opts.rate)
        } else {
            format!("closed loop, {} connections", opts.concurrency)
        },
        l.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(l.last().copied().unwrap_or_default()),
    ))
}

async fn run_sync(opts: &SyncBench, db_url: &str) -> Result<(usize, Duration), String> {
    let (sim, n, elapsed) = load_region(opts, db_url).await?;
    sim.stop().await;
    Ok((n, elapsed))
}

/// Fully synchronizes a simulated region of about `opts.slots` slots into `db_url`; returns
/// the simulator (still running), the slots stored and the time taken.
async fn load_region(
    opts: &SyncBench,
    db_url: &str,
) -> Result<(crate::sim::emias::EmiasSim, usize, Duration), String> {
    let mut s = Settings::default();
    s.database.url = db_url.to_string();
    s.database.max_connections = 8;
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    crate::demo::seed(&store).await.map_err(|e| e.to_string())?;
    let day = chrono::Utc::now().date_naive();
    // 30 days hold 25-26 working days of 16 slots.
    let doctors = (opts.slots / (26 * 16)).max(1) as u32;
    let region = crate::sim::emias::Region {
        doctors,
        ..crate::sim::emias::Region::demo(day)
    };
    let orgs = (0..region.clinics)
        .map(|c| crate::model::Oid::parse_organization(&region.clinic_oid(c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let sim = crate::sim::emias::EmiasSim::start(region).map_err(|e| e.to_string())?;
    let (txlog, _writer) = crate::exchange::TxLog::start(store.clone(), s.transaction_log.clone());
    let client =
        crate::adapters::emias::EmiasClient::new(&sim.url, Duration::from_secs(120), txlog);
    let bar = indicatif::ProgressBar::new(opts.slots);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos} slots {per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results: Vec<Result<usize, String>> = futures_util::stream::iter(orgs)
        .map(|org| {
            let (store, client, bar, total) =
                (store.clone(), client.clone(), bar.clone(), total.clone());
            async move {
                let last = std::sync::atomic::AtomicUsize::new(0);
                let r = crate::services::schedule_sync::full_sync(
                    &store,
                    &client,
                    &org,
                    day,
                    30,
                    crate::model::time::now_ms(),
                    &|n| {
                        let prev = last.swap(n, std::sync::atomic::Ordering::Relaxed);
                        bar.inc((n - prev) as u64);
                    },
                )
                .await
                .map_err(|e| format!("{org}: {e}"))?;
                total.fetch_add(r.slots, std::sync::atomic::Ordering::Relaxed);
                Ok(r.slots)
            }
        })
        .buffer_unordered(opts.parallel.max(1))
        .collect()
        .await;
    store
        .refresh_schedule_statistics()
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    for r in results {
        if let Err(e) = r {
            sim.stop().await;
            return Err(e);
        }
    }
    Ok((
        sim,
        total.load(std::sync::atomic::Ordering::Relaxed),
        elapsed,
    ))
}

/// An answer read in full.
struct Answer {
    /// HTTP status; 0 when none came or its body broke off.
    status: u16,
    body: actix_web::web::Bytes,
}

impl Answer {
    /// Reads the answer to `sent` to its end.
    async fn read(sent: reqwest::Result<reqwest::Response>) -> Answer {
        let Ok(r) = sent else {
            return Answer::none();
        };
        let status = r.status().as_u16();
        match r.bytes().await {
            Ok(body) => Answer { status, body },
            Err(_) => Answer::none(),
        }
    }

    fn none() -> Answer {
        Answer {
            status: 0,
            body: Default::default(),
        }
    }

    /// True for a 2xx status.
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The machine code of a refusal: a FHIR OperationOutcome's, a SOAP fault's detail (a
    /// SOAP 1.1 fault comes as 500 whatever it is) or another route's JSON error; empty
    /// when there is none.
    fn code(&self) -> String {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            let code = &v["issue"][0]["details"]["coding"][0]["code"];
            return code.as_str().or(v["error"].as_str()).unwrap_or("").into();
        }
        let text = String::from_utf8_lossy(&self.body);
        text.split_once("<mg:code>")
            .and_then(|(_, rest)| rest.split_once("</mg:code>"))
            .map(|(code, _)| code.to_string())
            .unwrap_or_default()
    }
}

/// One slot search of the benchmark, through FHIR or through the SOAP hub.
struct SearchRequest {
    http: reqwest::Client,
    base: String,
    today: chrono::NaiveDate,
    soap: bool,
    doctors: Vec<(String, String)>,
}

impl SearchRequest {
    /// Searches of the slots in `store` through the gateway at `base`, spread over every
    /// stored doctor and clinic.
    async fn new(
        store: &crate::store::Store,
        base: &str,
        http: &reqwest::Client,
        soap: bool,
    ) -> Result<Self, String> {
        let doctors = store
            .list_practitioners(None, 10_000)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| (p.org.to_string(), p.id))
            .collect();
        Ok(SearchRequest {
            http: http.clone(),
            base: base.to_string(),
            today: chrono::Utc::now().date_naive(),
            soap,
            doctors,
        })
    }

    /// Sends search `i` (a clinic and a day for FHIR, a doctor and a day for SOAP).
    async fn send(&self, i: usize) -> Answer {
        let day = self.today + chrono::Days::new(1 + (i as u64 * 7) % 28);
        let next = day + chrono::Days::new(1);
        let request = if self.soap {
            let Some((org, doc)) = self.doctors.get(i % self.doctors.len().max(1)) else {
                return Answer::none();
            };
            self.http
                .post(format!("{}/soap/hub", self.base))
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", "\"http://tempuri.org/IHubService/GetAvaibleAppointments\"")
                .body(format!(
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetAvaibleAppointments xmlns="http://tempuri.org/"><IdLPU>{org}</IdLPU><IdDoc>{doc}</IdDoc><VisitStart>{day}</VisitStart><VisitEnd>{next}</VisitEnd></GetAvaibleAppointments></s:Body></s:Envelope>"#
                ))
        } else {
            self.http.get(format!(
                "{}/fhir/Slot?organization=1.2.643.5.1.13.13.12.2.77.{}&start=ge{day}&start=lt{next}&status=free&_count=20",
                self.base,
                7001 + (i % 12)
            ))
        };
        Answer::read(request.bearer_auth(TOKEN).send().await).await
    }
}

/// Options of `medgate bench booking`.
#[derive(Debug, Clone)]
pub struct BookingBench {
    /// PostgreSQL URL allowed to create a database.
    pub pg_admin_url: String,
    /// Slots stored before the run (the simulated city MIS owns them).
    pub slots: u64,
    /// Bookings to make.
    pub count: usize,
    /// Concurrent connections (closed loop).
    pub concurrency: usize,
}

/// Booking throughput and latency through FHIR `$book` on PostgreSQL, each booking
/// forwarded to the simulated city MIS; returns a printable report.
pub async fn booking(opts: BookingBench) -> Result<String, String> {
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run_booking(&opts, &db.url).await;
    db.drop().await;
    result
}

async fn run_booking(opts: &BookingBench, db_url: &str) -> Result<String, String> {
    let (sim, stored, _) = load_region(&SyncBench::preload(opts.slots), db_url).await?;
    let mut s = booking_settings(db_url, &sim.url);
    s.booking.sync_interval_secs = 0;
    s.clients = vec![client("bench", TOKEN, &[], &["appointment:write"])];
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    let targets = free_internet_slots(&store, opts.count).await?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let gw = Gateway::start_on(s, store, listener, crate::model::time::system_clock())
        .await
        .map_err(|e| e.to_string())?;
    let base = gw.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let targets = Arc::new(targets);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            let (http, latencies, errors, base, targets, next) = (
                http.clone(),
                latencies.clone(),
                errors.clone(),
                base.clone(),
                targets.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(slot) = targets.get(i) else { break };
                    let t = Instant::now();
                    let sent = http
                        .post(format!("{base}/fhir/Appointment/$book"))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/fhir+json")
                        .body(book_body(slot, i as u64))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                            let _ = r.bytes().await;
                            if let Ok(mut l) = latencies.lock() {
                                l.push(t.elapsed());
                            }
                        }
                        other => {
                            let code = other.map(|r| r.status().as_u16()).unwrap_or(0);
                            if let Ok(mut e) = errors.lock() {
                                *e.entry(code).or_default() += 1;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed();
    let booked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM appointments WHERE status = 'booked'")
            .fetch_one(gw.store.pool())
            .await
            .map_err(|e| e.to_string())?;
    gw.stop().await;
    sim.stop().await;
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| percentile(&l, p);
    Ok(format!(
        "slots stored: {stored}\nbookings: {} created ({booked} booked in the database), failures by HTTP status: {:?}, {} connections\nthroughput: {:.0} bookings/s\nlatency p50/p90/p99/max: {:.2} / {:.2} / {:.2} / {:.2} ms",
        l.len(),
        errors.lock().map(|e| e.clone()).unwrap_or_default(),
        opts.concurrency,
        l.len() as f64 / elapsed.as_secs_f64(),
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(pct(0.99)),
        ms(l.last().copied().unwrap_or_default()),
    ))
}

/// Up to `count` free slots, an hour or more ahead, that the internet channel may take,
/// spread over the region.
async fn free_internet_slots(
    store: &crate::store::Store,
    count: usize,
) -> Result<Vec<String>, String> {
    let mut targets = Vec::with_capacity(count);
    let mut q = crate::store::schedules::SlotQuery {
        status: Some(crate::model::schedule::SlotStatus::Free),
        start_from: Some(crate::model::time::now_ms() + 3_600_000),
        ..Default::default()
    };
    while targets.len() < count {
        let page = store
            .search_slots(&q, 1000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        q.after = Some((last.start_at, last.id.clone()));
        targets.extend(
            page.into_iter()
                .filter(|r| {
                    r.channels
                        .contains(crate::model::schedule::Channel::Internet)
                })
                .map(|r| r.id),
        );
    }
    targets.truncate(count);
    Ok(targets)
}

/// FHIR `$book` parameters for `slot` and patient number `patient` (a distinct policy each).
fn book_body(slot: &str, patient: u64) -> String {
    serde_json::json!({"resourceType": "Parameters", "parameter": [
        {"name": "appointment", "resource": {"resourceType": "Appointment", "status": "proposed",
            "slot": [{"reference": format!("Slot/{}", slot.replacen(':', ".", 1))}],
            "participant": [{"status": "needs-action"}]}},
        {"name": "patient", "resource": {"resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": format!("77{patient:014}")}],
            "birthDate": "1980-05-17"}}
    ]})
    .to_string()
}
