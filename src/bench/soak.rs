//! `medgate bench soak`: a long open-loop run of a realistic mix (slot searches, booking
//! then cancellation, document submission) against one gateway on PostgreSQL, in this
//! process or in its own, with per-operation latency in fixed-size histograms and resident
//! memory over time (of the gateway alone when it runs in its own process).

use std::collections::BTreeMap;
use std::fmt;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{
    book_body, booking_settings, client, document, document_reference, free_internet_slots,
    load_region, registry, signing_keys, Answer, BenchDb, SearchRequest, SyncBench, ORG, TOKEN,
};
use crate::app::Gateway;
use crate::sim::emias::EmiasSim;
use crate::sim::remd::{CryptoCheck, RemdSim, RemdSimConfig};

/// Bearer token of the clinic submitting documents.
const CLINIC_TOKEN: &str = "bench-clinic-token";
/// Bearer token the registry simulator presents for callbacks and file fetches.
const REMD_TOKEN: &str = "bench-remd-token";
/// Requests of the generator in flight at once; beyond, a scheduled request is not sent
/// (counted), so a stalled gateway cannot grow the generator's memory without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// How long the end of the run waits for requests still in flight.
const DRAIN_CAP: Duration = Duration::from_secs(60);
/// Longest latency a histogram holds, in microseconds (longer ones count as this).
const LATENCY_CEILING_US: u64 = 600_000_000;
/// Approximate size of each submitted CDA document in bytes.
const DOCUMENT_BYTES: usize = 10_240;

/// Options of `medgate bench soak`.
#[derive(Debug, Clone)]
pub struct SoakBench {
    /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
    pub pg_admin_url: String,
    /// Slots stored before the run (the simulated city MIS owns them).
    pub slots: u64,
    /// Seconds of load.
    pub seconds: u32,
    /// Requests per second offered on a fixed schedule (open loop).
    pub rate: u32,
    /// Seconds between samples of the process's resident memory.
    pub rss_every_secs: u32,
    /// Directory with `org-gost256.*.pem` and `doctor-gost256.*.pem`.
    pub keys: PathBuf,
    /// Run the gateway as `<binary> serve` in its own process, so the RSS series is the
    /// gateway's alone (the simulators keep every booking and document by design);
    /// `None`: in this process, RSS of everything.
    pub gateway_binary: Option<PathBuf>,
}

/// An operation of the mix, reported on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// FHIR `Slot` search of one clinic and day.
    SearchFhir,
    /// SOAP hub `GetAvaibleAppointments` of one doctor and day.
    SearchSoap,
    /// FHIR `Appointment/$book` of a free internet-channel slot.
    Book,
    /// `PUT Appointment/{id}` with status cancelled, after each successful booking.
    Cancel,
    /// FHIR `DocumentReference` POST of a CDA document, signed and delivered by the gateway.
    Document,
}

impl Operation {
    /// Every operation, in report order.
    pub const ALL: [Operation; 5] = [
        Operation::SearchFhir,
        Operation::SearchSoap,
        Operation::Book,
        Operation::Cancel,
        Operation::Document,
    ];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Operation::SearchFhir => "slot search, FHIR",
            Operation::SearchSoap => "slot search, SOAP hub",
            Operation::Book => "book ($book)",
            Operation::Cancel => "cancel (PUT cancelled)",
            Operation::Document => "document submission",
        }
    }
}

/// What one operation got during the run.
#[derive(Debug, Clone)]
pub struct OpReport {
    /// The operation.
    pub operation: Operation,
    /// Requests sent.
    pub sent: u64,
    /// Answered with success.
    pub ok: u64,
    /// Bookings answered 409 (the slot taken meanwhile), by the OperationOutcome's code: a
    /// race, not an error.
    pub conflicts: BTreeMap<String, u64>,
    /// Other answers by HTTP status and the machine code they carry (empty when none);
    /// status 0 counts requests that got no answer or a broken one.
    pub errors: BTreeMap<(u16, String), u64>,
    /// Scheduled but not sent: the generator's in-flight cap was reached.
    pub unsent: u64,
    /// Latency of successful answers in ms: p50, p99, p99.9, max; open-loop operations
    /// count from the scheduled time, a cancellation from when it was sent.
    pub latency_ms: [f64; 4],
}

impl OpReport {
    /// Requests answered (or given up) in any way.
    pub fn settled(&self) -> u64 {
        self.ok + self.conflicts.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

/// Results of a soak run.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// Requests per second offered.
    pub rate: u32,
    /// Seconds of load.
    pub seconds: u32,
    /// Slots stored before the run.
    pub slots_stored: usize,
    /// Free internet-channel slots booked round-robin.
    pub booking_slots: usize,
    /// Requests on the schedule (every operation but cancellations).
    pub scheduled: u64,
    /// Wall time from the first scheduled request to the last answer.
    pub elapsed: Duration,
    /// Most the generator fell behind its schedule before sending a request.
    pub generator_lag: Duration,
    /// Requests still in flight when the wait for them gave up (0 when all answered).
    pub left_in_flight: usize,
    /// Per operation, in [`Operation::ALL`] order.
    pub operations: Vec<OpReport>,
    /// Resident memory of the process: (seconds since the start of the load, MiB).
    pub rss: Vec<(f64, f64)>,
    /// Least-squares slope of RSS in MiB per minute over the samples from
    /// `rss_slope_from_secs` on; `None` with fewer than two samples.
    pub rss_slope_mib_per_min: Option<f64>,
    /// First sample the slope uses (60 s for runs of two minutes or more, else 0).
    pub rss_slope_from_secs: f64,
    /// True when the series is the gateway's own process (`gateway_binary`).
    pub rss_gateway_only: bool,
    /// Documents the registry simulator registered.
    pub documents_registered: u64,
    /// Documents the registry simulator rejected.
    pub documents_rejected: u64,
    /// How long after the load the documents took to settle (registered or rejected, none
    /// left queued); `None` when they had not within `settle_wait`.
    pub documents_settled_after: Option<Duration>,
    /// How long the end of the run waited for documents to settle at most.
    pub settle_wait: Duration,
    /// Appointments still booked at the end.
    pub bookings_left: i64,
    /// Outbox items left by destination and status (`pending`, `inflight`, `dead`).
    pub outbox: Vec<(String, String, i64)>,
}

impl SoakReport {
    /// The report of one operation.
    pub fn op(&self, operation: Operation) -> &OpReport {
        self.operations
            .iter()
            .find(|o| o.operation == operation)
            .unwrap_or(&self.operations[0])
    }

    /// Outbox items of `destination` still pending or in flight.
    pub fn outbox_queued(&self, destination: &str) -> i64 {
        self.outbox
            .iter()
            .filter(|(d, s, _)| d == destination && s != "dead")
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Outbox items of `destination` given up on.
    pub fn outbox_dead(&self, destination: &str) -> i64 {
        self.outbox
            .iter()
            .filter(|(d, s, _)| d == destination && s == "dead")
            .map(|(_, _, n)| n)
            .sum()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let answered: u64 = self.operations.iter().map(OpReport::settled).sum();
        writeln!(
            f,
            "soak: open loop, {} requests/s offered for {} s ({} scheduled: 80% slot search alternating FHIR/SOAP, 15% book then cancel, 5% document); {} slots stored, {} booked round-robin",
            self.rate, self.seconds, self.scheduled, self.slots_stored, self.booking_slots
        )?;
        writeln!(
            f,
            "answered: {answered} requests (cancellations included) in {:.1} s = {:.0} requests/s; generator behind schedule by up to {:.1} ms; left in flight: {}",
            self.elapsed.as_secs_f64(),
            answered as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.generator_lag.as_secs_f64() * 1000.0,
            self.left_in_flight
        )?;
        writeln!(f)?;
        writeln!(f, "| operation | sent | ok | 409 races by code | errors by status | not sent (cap) | p50 ms | p99 ms | p99.9 ms | max ms |")?;
        writeln!(f, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")?;
        for o in &self.operations {
            let errors = counts(
                &o.errors
                    .iter()
                    .map(|((status, code), n)| (format!("{status} {code}").trim().to_string(), *n))
                    .collect(),
            );
            let conflicts = counts(&o.conflicts);
            let [p50, p99, p999, max] = o.latency_ms;
            writeln!(
                f,
                "| {} | {} | {} | {conflicts} | {errors} | {} | {p50:.2} | {p99:.2} | {p999:.2} | {max:.2} |",
                o.operation.name(),
                o.sent,
                o.ok,
                o.unsent
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "RSS of {}, t s: MiB",
            if self.rss_gateway_only {
                "the gateway process alone"
            } else {
                "the process (gateway, generator and simulators)"
            }
        )?;
        for row in self.rss.chunks(8) {
            let cells: Vec<String> = row
                .iter()
                .map(|(t, mib)| format!("{t:>5.0}: {mib:>6.1}"))
                .collect();
            writeln!(f, "  {}", cells.join("  "))?;
        }
        match self.rss_slope_mib_per_min {
            Some(slope) => writeln!(
                f,
                "RSS slope: {slope:+.2} MiB/min (least squares over the samples from {:.0} s on)",
                self.rss_slope_from_secs
            )?,
            None => writeln!(f, "RSS slope: too few samples")?,
        }
        let docs = self.op(Operation::Document);
        writeln!(
            f,
            "documents: {} accepted, {} registered at the registry simulator, {} rejected, {} still queued, {} dead; {}",
            docs.ok,
            self.documents_registered,
            self.documents_rejected,
            self.outbox_queued(crate::services::documents::DESTINATION),
            self.outbox_dead(crate::services::documents::DESTINATION),
            match self.documents_settled_after {
                Some(d) => format!("settled {:.1} s after the load", d.as_secs_f64()),
                None => format!("not settled within {} s", self.settle_wait.as_secs()),
            }
        )?;
        writeln!(f, "bookings left booked: {}", self.bookings_left)?;
        let outbox = if self.outbox.is_empty() {
            "empty".to_string()
        } else {
            self.outbox
                .iter()
                .map(|(d, s, n)| format!("{d} {s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "outbox depth at the end: {outbox}")
    }
}

/// `key: n, ...` of a tally, or `none`.
fn counts<K: fmt::Display>(tally: &BTreeMap<K, u64>) -> String {
    if tally.is_empty() {
        return "none".into();
    }
    tally
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the soak: a fresh database, a synchronized region, one gateway with the city MIS
/// and registry simulators, the open-loop mix, then the tallies.
pub async fn soak(opts: SoakBench) -> Result<SoakReport, String> {
    if opts.rate == 0 || opts.seconds == 0 {
        return Err("rate and seconds must be above 0".into());
    }
    if !crate::sign::init_crypto().gost_available {
        return Err("GOST engine unavailable: install libengine-gost-openssl".into());
    }
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = run(&opts, &db.url).await;
    db.drop().await;
    result
}

/// The running system under load: gateway and both simulators.
struct System {
    gateway: GatewayRun,
    /// The gateway's database, for the checks before and after the load.
    store: crate::store::Store,
    /// The gateway's base URL.
    base: String,
    emias: EmiasSim,
    remd: RemdSim,
}

/// Where the gateway runs.
enum GatewayRun {
    InProcess(Gateway),
    Child(ChildGateway),
}

impl GatewayRun {
    /// The process whose memory is sampled: the child's, else this one.
    fn pid(&self) -> Option<u32> {
        match self {
            GatewayRun::InProcess(_) => None,
            GatewayRun::Child(c) => c.child.id(),
        }
    }
}

impl System {
    /// Stops the gateway, then the simulators.
    async fn stop(self) {
        match self.gateway {
            GatewayRun::InProcess(gw) => gw.stop().await,
            GatewayRun::Child(c) => c.stop().await,
        }
        self.store.close().await;
        self.emias.stop().await;
        self.remd.stop().await;
    }
}

/// Stores the region and starts the simulators and the gateway; also the slots stored.
async fn start(opts: &SoakBench, db_url: &str) -> Result<(System, usize), String> {
    let (emias, stored, _) = load_region(&SyncBench::preload(opts.slots), db_url).await?;
    let remd = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(Arc::new(CryptoCheck)),
        ..RemdSimConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let base = format!("http://{addr}");
    let mut s = booking_settings(db_url, &emias.url);
    s.http.public_url = Some(base.clone());
    s.remd = Some(registry(Some(&remd.url), &base));
    s.signing.keys = signing_keys(&opts.keys);
    s.clients = vec![
        client("bench", TOKEN, &[], &["schedule:read", "appointment:write"]),
        client("clinic", CLINIC_TOKEN, &[ORG], &["documents:submit"]),
        client("remd", REMD_TOKEN, &[], &["remd:callback"]),
    ];
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    let gateway = match &opts.gateway_binary {
        None => GatewayRun::InProcess(
            Gateway::start_on(
                s,
                store.clone(),
                listener,
                crate::model::time::system_clock(),
            )
            .await
            .map_err(|e| e.to_string())?,
        ),
        Some(binary) => {
            // The child binds the address itself; the moment it is free is short.
            drop(listener);
            s.http.bind = addr.to_string();
            GatewayRun::Child(ChildGateway::start(binary, &s, &base).await?)
        }
    };
    Ok((
        System {
            gateway,
            store,
            base,
            emias,
            remd,
        },
        stored,
    ))
}

/// `medgate serve` in its own process, with a configuration file written for the run.
struct ChildGateway {
    child: tokio::process::Child,
    config: PathBuf,
}

impl ChildGateway {
    /// Writes the settings (owner-only: they hold the tokens), starts the binary and waits
    /// until it is ready.
    async fn start(
        binary: &std::path::Path,
        settings: &crate::config::Settings,
        base: &str,
    ) -> Result<ChildGateway, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = toml::to_string(settings).map_err(|e| format!("settings as TOML: {e}"))?;
        let config = std::env::temp_dir().join(format!(
            "medgate-soak-{}-{}.toml",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("{}: {e}", config.display()))?;
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()));
        let mut gateway = match child {
            Ok(child) => ChildGateway { child, config },
            Err(e) => {
                let _ = std::fs::remove_file(&config);
                return Err(e);
            }
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                gateway.stop().await;
                return Err(format!("the gateway process ended at start: {status}"));
            }
            let ready = http.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(gateway);
            }
            if Instant::now() > deadline {
                gateway.stop().await;
                return Err("the gateway process was not ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the process to stop (SIGTERM: it drains), kills it if it has not within 30 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Counts of one operation, shared by the request tasks; fixed size whatever the run's length.
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    conflicts: Mutex<BTreeMap<String, u64>>,
    unsent: AtomicU64,
    errors: Mutex<BTreeMap<(u16, String), u64>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Result<Tally, String> {
        Ok(Tally {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            conflicts: Mutex::new(BTreeMap::new()),
            unsent: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, LATENCY_CEILING_US, 3).map_err(|e| e.to_string())?,
            ),
        })
    }

    /// Counts an answer that took `took`.
    fn answer(&self, answer: &Answer, took: Duration) {
        if !answer.ok() {
            return self.fail(answer.status, answer.code());
        }
        self.ok.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.latency_us.lock() {
            h.saturating_record(took.as_micros().min(u128::from(LATENCY_CEILING_US)) as u64);
        }
    }

    /// Counts a failure: HTTP `status` (0: no answer) with the machine `code` it carried.
    fn fail(&self, status: u16, code: String) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry((status, code)).or_default() += 1;
        }
    }

    /// Counts a 409 answer whose OperationOutcome carries `code`.
    fn conflict(&self, code: &str) {
        if let Ok(mut c) = self.conflicts.lock() {
            *c.entry(code.to_string()).or_default() += 1;
        }
    }

    fn report(&self, operation: Operation) -> OpReport {
        let ms = |us: u64| us as f64 / 1000.0;
        let latency_ms = self
            .latency_us
            .lock()
            .map(|h| {
                if h.is_empty() {
                    [0.0; 4]
                } else {
                    [
                        ms(h.value_at_quantile(0.5)),
                        ms(h.value_at_quantile(0.99)),
                        ms(h.value_at_quantile(0.999)),
                        ms(h.max()),
                    ]
                }
            })
            .unwrap_or_default();
        OpReport {
            operation,
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            conflicts: self.conflicts.lock().map(|c| c.clone()).unwrap_or_default(),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            unsent: self.unsent.load(Ordering::Relaxed),
            latency_ms,
        }
    }
}

/// One scheduled request of the mix.
#[derive(Debug, Clone, Copy)]
enum Request {
    /// Slot search number `i` (it picks the clinic or doctor and the day).
    Search { soap: bool, i: usize },
    /// Booking number `n`: slot `n` round-robin, patient `n`, then its cancellation.
    Book { n: u64 },
    /// Document number `n`.
    Document { n: u64 },
}

impl Request {
    fn operation(self) -> Operation {
        match self {
            Request::Search { soap: false, .. } => Operation::SearchFhir,
            Request::Search { soap: true, .. } => Operation::SearchSoap,
            Request::Book { .. } => Operation::Book,
            Request::Document { .. } => Operation::Document,
        }
    }
}

/// The schedule's mix: of every 20 requests 16 search, 3 book (then cancel), 1 submits a
/// document; running counts number each kind.
#[derive(Default)]
struct Mix {
    searches: usize,
    bookings: u64,
    documents: u64,
}

impl Mix {
    fn request(&mut self, n: u64) -> Request {
        match n % 20 {
            19 => {
                self.documents += 1;
                Request::Document {
                    n: self.documents - 1,
                }
            }
            3 | 10 | 17 => {
                self.bookings += 1;
                Request::Book {
                    n: self.bookings - 1,
                }
            }
            _ => {
                self.searches += 1;
                Request::Search {
                    soap: self.searches % 2 == 0,
                    i: self.searches - 1,
                }
            }
        }
    }
}

/// What every request task shares.
struct Load {
    http: reqwest::Client,
    base: String,
    fhir_search: SearchRequest,
    soap_search: SearchRequest,
    slots: Vec<String>,
    tallies: [Tally; 5],
}

impl Load {
    fn tally(&self, operation: Operation) -> &Tally {
        &self.tallies[Operation::ALL
            .iter()
            .position(|o| *o == operation)
            .unwrap_or(0)]
    }

    /// Sends `request` scheduled at `due` and counts its answer (and a booking's cancellation).
    async fn send(&self, request: Request, due: Instant) {
        let operation = request.operation();
        self.tally(operation).sent.fetch_add(1, Ordering::Relaxed);
        match request {
            Request::Search { soap, i } => {
                let search = if soap {
                    &self.soap_search
                } else {
                    &self.fhir_search
                };
                let answer = search.send(i).await;
                self.tally(operation).answer(&answer, due.elapsed());
            }
            Request::Book { n } => {
                let slot = &self.slots[n as usize % self.slots.len()];
                let sent = self
                    .http
                    .post(format!("{}/fhir/Appointment/$book", self.base))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/fhir+json")
                    .body(book_body(slot, n))
                    .send()
                    .await;
                let answer = Answer::read(sent).await;
                let tally = self.tally(operation);
                if answer.status == 409 {
                    return tally.conflict(&answer.code());
                }
                if !answer.ok() {
                    return tally.answer(&answer, due.elapsed());
                }
                let booked = serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                match booked {
                    Some(id) => {
                        tally.answer(&answer, due.elapsed());
                        self.cancel(&id).await;
                    }
                    // A success without an appointment id cannot be cancelled: a failure.
                    None => tally.fail(answer.status, "NO_APPOINTMENT_ID".into()),
                }
            }
            Request::Document { n } => {
                let body = document_reference(&document(n as usize, DOCUMENT_BYTES));
                let sent = self
                    .http
                    .post(format!("{}/fhir/DocumentReference", self.base))
                    .bearer_auth(CLINIC_TOKEN)
                    .header("content-type", "application/fhir+json")
                    .body(body)
                    .send()
                    .await;
                let answer = Answer::read(sent).await;
                self.tally(operation).answer(&answer, due.elapsed());
            }
        }
    }

    /// Cancels appointment `id` as the patient's portal would.
    async fn cancel(&self, id: &str) {
        let tally = self.tally(Operation::Cancel);
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "resourceType": "Appointment",
            "id": id,
            "status": "cancelled",
            "cancelationReason": {"text": "soak: patient cancelled"},
        });
        let started = Instant::now();
        let sent = self
            .http
            .put(format!("{}/fhir/Appointment/{id}", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await;
        tally.answer(&Answer::read(sent).await, started.elapsed());
    }
}

/// Lowers the in-flight count when a request task ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the system on `db_url`, loads it and stops it whatever the outcome.
async fn run(opts: &SoakBench, db_url: &str) -> Result<SoakReport, String> {
    let (system, slots_stored) = start(opts, db_url).await?;
    let result = drive(opts, &system, slots_stored).await;
    system.stop().await;
    result
}

/// The load on a started system, the settling of documents, and the report.
async fn drive(
    opts: &SoakBench,
    system: &System,
    slots_stored: usize,
) -> Result<SoakReport, String> {
    let store = &system.store;
    // Enough distinct slots that one is cancelled long before its turn comes again.
    let slots = free_internet_slots(store, 100_000).await?;
    if slots.is_empty() {
        return Err("no free internet-channel slot to book: raise --slots".into());
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let load = Arc::new(Load {
        http: http.clone(),
        base: system.base.clone(),
        fhir_search: SearchRequest::new(store, &system.base, &http, false).await?,
        soap_search: SearchRequest::new(store, &system.base, &http, true).await?,
        slots,
        tallies: [
            Tally::new()?,
            Tally::new()?,
            Tally::new()?,
            Tally::new()?,
            Tally::new()?,
        ],
    });
    let booking_slots = load.slots.len();
    let scheduled = u64::from(opts.rate) * u64::from(opts.seconds);
    let run = generate(opts, &load, scheduled, system.gateway.pid()).await;
    let slope_from = if opts.seconds >= 120 { 60.0 } else { 0.0 };
    let accepted = load.tally(Operation::Document).ok.load(Ordering::Relaxed);
    // Long enough for the retry schedule's first steps, short enough for a test's budget.
    let settle_wait = Duration::from_secs(u64::from(opts.seconds).clamp(30, 120));
    let (documents_settled_after, outbox) = settle(system, accepted, settle_wait).await?;
    let counters = system.remd.counters();
    let bookings_left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM appointments WHERE status = 'booked'")
            .fetch_one(store.pool())
            .await
            .map_err(|e| e.to_string())?;
    Ok(SoakReport {
        rate: opts.rate,
        seconds: opts.seconds,
        slots_stored,
        booking_slots,
        scheduled,
        elapsed: run.elapsed,
        generator_lag: run.generator_lag,
        left_in_flight: run.left_in_flight,
        operations: Operation::ALL
            .iter()
            .map(|o| load.tally(*o).report(*o))
            .collect(),
        rss_slope_mib_per_min: slope_per_minute(&run.rss, slope_from),
        rss_slope_from_secs: slope_from,
        rss_gateway_only: opts.gateway_binary.is_some(),
        rss: run.rss,
        documents_registered: counters.registered,
        documents_rejected: counters.rejected,
        documents_settled_after,
        settle_wait,
        bookings_left,
        outbox,
    })
}

/// What the generator saw of its own run.
struct Run {
    elapsed: Duration,
    generator_lag: Duration,
    left_in_flight: usize,
    rss: Vec<(f64, f64)>,
}

/// Sends `scheduled` requests of the mix on the open-loop schedule, then waits (bounded)
/// for the last answers, sampling RSS throughout.
async fn generate(opts: &SoakBench, load: &Arc<Load>, scheduled: u64, pid: Option<u32>) -> Run {
    let started = Instant::now();
    let rss = RssSampler::start(
        started,
        Duration::from_secs(u64::from(opts.rss_every_secs.max(1))),
        pid,
    );
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut mix = Mix::default();
    let mut generator_lag = Duration::ZERO;
    for n in 0..scheduled {
        // From the start, not from the previous request, so rounding never drifts.
        let due = started + Duration::from_nanos(n * 1_000_000_000 / u64::from(opts.rate));
        tokio::time::sleep_until(due.into()).await;
        generator_lag = generator_lag.max(due.elapsed());
        let request = mix.request(n);
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            load.tally(request.operation())
                .unsent
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(in_flight.clone());
        let load = Arc::clone(load);
        // Not kept: a handle per request would grow with the run.
        tokio::spawn(async move {
            let _guard = guard;
            load.send(request, due).await;
        });
    }
    let drain_until = Instant::now() + DRAIN_CAP;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Run {
        elapsed: started.elapsed(),
        left_in_flight: in_flight.load(Ordering::Relaxed),
        generator_lag,
        rss: rss.stop().await,
    }
}

/// Waits at most `wait` until the registry simulator has decided on `accepted` documents
/// and none is left in the outbox; how long that took (`None`: not within `wait`) and the
/// outbox depths then.
async fn settle(
    system: &System,
    accepted: u64,
    wait: Duration,
) -> Result<(Option<Duration>, Vec<(String, String, i64)>), String> {
    let started = Instant::now();
    loop {
        let outbox = system
            .store
            .outbox_depths()
            .await
            .map_err(|e| e.to_string())?;
        let c = system.remd.counters();
        let queued = outbox
            .iter()
            .any(|(d, s, _)| d == crate::services::documents::DESTINATION && s != "dead");
        if c.registered + c.rejected >= accepted && !queued {
            return Ok((Some(started.elapsed()), outbox));
        }
        if started.elapsed() > wait {
            return Ok((None, outbox));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Samples a process's resident memory at a fixed period until stopped.
struct RssSampler {
    started: Instant,
    pid: Option<u32>,
    every: Duration,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(started: Instant, every: Duration, pid: Option<u32>) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (samples, stop) = (samples.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval_at(started.into(), every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.notified() => break,
                    }
                    if let (Some(mib), Ok(mut s)) = (rss_mib(pid), samples.lock()) {
                        s.push((started.elapsed().as_secs_f64(), mib));
                    }
                }
            }
        });
        RssSampler {
            started,
            pid,
            every,
            samples,
            stop,
            task,
        }
    }

    /// Stops sampling, takes a last sample and returns the series.
    async fn stop(self) -> Vec<(f64, f64)> {
        self.stop.notify_one();
        let _ = self.task.await;
        let mut samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let now = self.started.elapsed().as_secs_f64();
        // The end of the load, unless a periodic sample was just taken.
        if samples
            .last()
            .is_none_or(|(t, _)| now - t >= self.every.as_secs_f64() / 2.0)
        {
            if let Some(mib) = rss_mib(self.pid) {
                samples.push((now, mib));
            }
        }
        samples
    }
}

/// VmRSS of process `pid` (else this one) in MiB (Linux `/proc`); `None` elsewhere.
fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Least-squares slope of `(t seconds, MiB)` samples from `from` seconds on, in MiB/min.
fn slope_per_minute(samples: &[(f64, f64)], from: f64) -> Option<f64> {
    let used: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= from)
        .collect();
    if used.len() < 2 {
        return None;
    }
    let n = used.len() as f64;
    let mean_t = used.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_m = used.iter().map(|s| s.1).sum::<f64>() / n;
    let cov: f64 = used.iter().map(|(t, m)| (t - mean_t) * (m - mean_m)).sum();
    let var: f64 = used.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    (var > 0.0).then(|| cov / var * 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_its_gradient_per_minute() {
        let samples: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 10.0, 50.0 + i as f64))
            .collect();
        let slope = slope_per_minute(&samples, 0.0).unwrap();
        assert!((slope - 6.0).abs() < 1e-9, "{slope}");
        assert_eq!(slope_per_minute(&samples, 85.0), None);
    }

    #[test]
    fn a_refusal_is_counted_by_the_code_it_carries() {
        let answer = |status: u16, body: String| Answer {
            status,
            body: body.into(),
        };
        let outcome = serde_json::json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "conflict", "details": {"coding": [{"code": "SLOT_TAKEN"}]}}]});
        assert_eq!(answer(409, outcome.to_string()).code(), "SLOT_TAKEN");
        let fault = crate::codec::soap::fault(
            crate::codec::soap::SoapVersion::V11,
            &crate::codec::soap::Fault {
                side: crate::codec::soap::FaultSide::Receiver,
                code: "OVERLOADED",
                message: "busy",
                field: None,
                request_id: "r1",
            },
        );
        assert_eq!(answer(500, fault).code(), "OVERLOADED");
        assert_eq!(
            answer(503, r#"{"error": "OVERLOADED"}"#.into()).code(),
            "OVERLOADED"
        );
        assert_eq!(answer(0, String::new()).code(), "");
    }

    #[test]
    fn mix_is_sixteen_three_one_of_twenty() {
        let mut mix = Mix::default();
        let mut counts = [0usize; 5];
        for n in 0..2000 {
            let op = mix.request(n).operation();
            counts[Operation::ALL.iter().position(|o| *o == op).unwrap()] += 1;
        }
        assert_eq!(counts, [800, 800, 300, 0, 100]);
    }
}
