//! Crash safety under mixed load, on a busy machine: while two processes keep both cores
//! busy, clients book (FHIR `$book` and the SOAP hub), cancel, and submit documents to a
//! gateway process against a city MIS and a faulty registry; the gateway is killed with
//! SIGKILL mid-load and restarted. Clients retry what got no answer with the same
//! idempotency key or document UID, as real clients do. Afterwards every request was
//! accepted, every effect reached its simulator exactly once, and nothing is left held or
//! in flight. Requests are never reset while the gateway runs: it sheds with 503 instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use medgate::model::schedule::{Channel, SlotStatus};
use medgate::sim::emias::{EmiasSim, Region};
use medgate::sim::remd::{CryptoCheck, Faults, RemdSim, RemdSimConfig};
use medgate::store::schedules::SlotQuery;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::booking::{params, patient, policy};
use crate::support::*;

const ACTION: &str = "http://tempuri.org/IHubService/";
/// Seconds a hold (and a booking's wait for the MIS) lasts in the gateway under test: the
/// orphans of the kill lapse soon.
const HOLD_SECS: u64 = 4;
/// How long any one operation keeps retrying before the test calls it lost.
const GIVE_UP: Duration = Duration::from_secs(300);

pub(crate) fn config(db_url: &str, port: u16, registry: &str, emias: &str) -> String {
    let keys = format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"));
    let hash = |t: &str| hex::encode(medgate::auth::token_hash(t));
    format!(
        r#"
[http]
bind = "127.0.0.1:{port}"
[database]
url = "{db_url}"
max_connections = 24
[log]
format = "json"
filter = "warn"
[transaction_log]
default_bodies = "metadata-only"
[emias]
url = "{emias}"
timeout_secs = 3
days_ahead = 7
[booking]
sync_interval_secs = 3600
hold_secs = {HOLD_SECS}
booking_grace_secs = {HOLD_SECS}
[[clients]]
id = "admin"
token_sha256 = "{admin}"
scopes = ["admin"]
[[clients]]
id = "portal"
token_sha256 = "{portal}"
scopes = ["schedule:read", "appointment:write"]
[[clients]]
id = "clinic"
token_sha256 = "{clinic}"
organizations = ["{CLINIC_ORG}"]
scopes = ["documents:submit", "documents:read"]
[[clients]]
id = "remd"
token_sha256 = "{remd}"
scopes = ["remd:callback"]
[remd]
url = "{registry}"
client_entity_id = "crash-test"
callback_url = "http://127.0.0.1:{port}/soap/remd/callback"
file_url = "http://127.0.0.1:{port}/soap/remd/provider"
timeout_secs = 2
# Quick retries, then a tail longer than the registry breaker's 30 s cool-down: an open
# circuit holds deliveries back uncounted only for as long as the schedule spans.
retry_schedule_secs = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5, 10, 20, 30, 30, 30]
callback_timeout_secs = 3
workers = 16
[[signing.keys]]
owner = "{CLINIC_ORG}"
role = "organization"
certificate = "{keys}/org-gost256.cert.pem"
private_key = "{keys}/org-gost256.key.pem"
[[signing.keys]]
owner = "12345678964"
role = "doctor"
certificate = "{keys}/doctor-gost256.cert.pem"
private_key = "{keys}/doctor-gost256.key.pem"
"#,
        admin = hash(ADMIN_TOKEN),
        portal = hash(PORTAL_TOKEN),
        clinic = hash(CLINIC_TOKEN),
        remd = hash(REMD_TOKEN),
    )
}

pub(crate) fn spawn(config_path: &std::path::Path) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_medgate"));
    // Only the file configures the child; test-runner variables must not leak in.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MEDGATE_")) {
        cmd.env_remove(k);
    }
    cmd.args(["serve", "--config"])
        .arg(config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn medgate")
}

/// Two processes spinning on both cores for as long as the value lives.
fn burn_both_cores() -> Vec<std::process::Child> {
    (0..2)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn a burner")
        })
        .collect()
}

struct Burners(Vec<std::process::Child>);

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        // Idle connections are dropped well before the gateway's keep-alive ends.
        .pool_idle_timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub(crate) async fn wait_ready(http: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "gateway never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn document(uid: &str, n: u64) -> Value {
    use base64::Engine;
    let doc = medgate::codec::cda::sample_document(CLINIC_ORG, "11223344595", "12345678964", n, 0);
    json!({
        "resourceType": "DocumentReference",
        "masterIdentifier": {"value": format!("urn:uuid:{uid}")},
        "type": {"coding": [{"system": "urn:oid:1.2.643.5.1.13.13.11.1522", "version": "5.12", "code": "4"}]},
        "subject": {"identifier": {"value": "11223344595"}},
        "author": [{"identifier": {"value": "12345678964"}}],
        "custodian": {"identifier": {"value": CLINIC_ORG}},
        "content": [{"attachment": {"contentType": "application/x-hl7-cda+xml", "data": base64::engine::general_purpose::STANDARD.encode(doc)}}],
    })
}

fn envelope(op: &str, inner: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{op} xmlns="http://tempuri.org/">{inner}</{op}></s:Body></s:Envelope>"#
    )
}

fn between<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The gateway process's life as the clients see it.
const UP: u8 = 0;
const DOWN: u8 = 1;
const UP_AGAIN: u8 = 2;

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Requests answered with a transport error while the gateway was up.
    resets: AtomicUsize,
    /// Answers 503 (shed or not ready), retried after Retry-After.
    shed: AtomicUsize,
    /// Requests that failed because the gateway was down, retried.
    while_down: AtomicUsize,
    /// Retries by answer (status and code).
    retried: std::sync::Mutex<BTreeMap<String, usize>>,
}

/// The clients: one HTTP client per life of the gateway (a dead process's pooled
/// connections are not reused), the phase, and what they saw.
struct Load {
    base: String,
    store: medgate::store::Store,
    http: RwLock<reqwest::Client>,
    phase: AtomicU8,
    seen: Seen,
}

/// A request's answer: status and body text.
type Answer = (StatusCode, String);

impl Load {
    /// Sends hub operation `op` with body `inner` (about `subject`), retrying as `send` does.
    async fn hub(&self, op: &str, inner: &str, subject: &str) -> Answer {
        let body = envelope(op, inner);
        self.send(&format!("{op} {subject}"), |h, base| {
            h.post(format!("{base}/soap/hub"))
                .bearer_auth(PORTAL_TOKEN)
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", format!("\"{ACTION}{op}\""))
                .body(body.clone())
        })
        .await
    }

    /// What the gateway holds on a slot: its appointments and queued effects.
    async fn on_slot(&self, slot: &str) -> String {
        let appointments: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT id, status, reason, created_at FROM appointments WHERE slot_id = $1 ORDER BY created_at",
        )
        .bind(slot.to_string())
        .fetch_all(self.store.pool())
        .await
        .unwrap_or_default();
        let effects: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT aggregate_id, kind, status, attempts FROM outbox WHERE ordering_key = $1 ORDER BY id",
        )
        .bind(slot.to_string())
        .fetch_all(self.store.pool())
        .await
        .unwrap_or_default();
        format!(
            "appointments {appointments:?}\neffects {effects:?}\nphase {}, retried {:?}, now {}",
            self.phase.load(Ordering::SeqCst),
            self.seen.retried.lock().unwrap(),
            medgate::model::time::now_ms()
        )
    }

    /// Sends until an answer other than "try again" comes, the way a real client retries:
    /// transport errors, 503 (after its Retry-After) and a key still in progress.
    async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            assert!(
                Instant::now() < deadline,
                "{what}: no answer for {GIVE_UP:?}"
            );
            let started = self.phase.load(Ordering::SeqCst);
            let http = self.http.read().unwrap().clone();
            let pause = match build(&http, &self.base).send().await {
                Err(e) => {
                    let ended = self.phase.load(Ordering::SeqCst);
                    if started == ended && started != DOWN {
                        eprintln!("{what}: reset while the gateway was up: {e}");
                        self.seen.resets.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.seen.while_down.fetch_add(1, Ordering::Relaxed);
                    }
                    Duration::from_millis(200)
                }
                Ok(r) => {
                    let status = r.status();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let body = r.text().await.unwrap_or_default();
                    let again = status == StatusCode::SERVICE_UNAVAILABLE
                        || body.contains("IDEMPOTENCY_KEY_IN_PROGRESS");
                    if !again {
                        return (status, body);
                    }
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        self.seen.shed.fetch_add(1, Ordering::Relaxed);
                    }
                    let code = body
                        .split('"')
                        .find(|w| {
                            w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && w.len() > 3
                        })
                        .or_else(|| between(&body, "mg:code"))
                        .unwrap_or("")
                        .to_string();
                    *self
                        .seen
                        .retried
                        .lock()
                        .unwrap()
                        .entry(format!("{} {code}", status.as_u16()))
                        .or_default() += 1;
                    Duration::from_millis(retry_after.unwrap_or(1).min(5) * 500)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }
}

/// One client operation of the mix.
#[derive(Debug, Clone)]
enum Op {
    Document {
        uid: String,
        n: u64,
    },
    FhirBook {
        slot: String,
        n: u32,
        cancel: bool,
    },
    HubBook {
        slot: String,
        org: String,
        n: u32,
        cancel: bool,
    },
}

/// What an operation left: the gateway's appointment id and whether it was cancelled.
#[derive(Debug)]
enum Done {
    Document,
    Appointment { id: String, cancelled: bool },
}

async fn run(load: &Load, op: &Op) -> Done {
    match op {
        Op::Document { uid, n } => {
            let body = document(uid, *n);
            let (s, text) = load
                .send(&format!("document {uid}"), |h, base| {
                    h.post(format!("{base}/fhir/DocumentReference"))
                        .bearer_auth(CLINIC_TOKEN)
                        .json(&body)
                })
                .await;
            assert!(
                s == StatusCode::CREATED || s == StatusCode::OK,
                "document {uid}: {s} {text}"
            );
            Done::Document
        }
        Op::FhirBook { slot, n, cancel } => {
            let body = params(slot, Some(patient(*n)), None).to_string();
            let key = format!("crash-fhir-{n}");
            let (s, text) = load
                .send(&format!("$book {slot}"), |h, base| {
                    h.post(format!("{base}/fhir/Appointment/$book"))
                        .bearer_auth(PORTAL_TOKEN)
                        .header("content-type", "application/fhir+json")
                        .header("idempotency-key", &key)
                        .body(body.clone())
                })
                .await;
            if s != StatusCode::CREATED {
                panic!(
                    "$book {slot} ({key}): {s} {text}\n{}",
                    load.on_slot(slot).await
                );
            }
            let booked: Value = serde_json::from_str(&text).unwrap();
            let id = booked["id"].as_str().unwrap().to_string();
            if *cancel {
                let mut c = booked.clone();
                c["status"] = json!("cancelled");
                c["cancelationReason"] = json!({"text": "patient recovered"});
                let c = c.to_string();
                let (s, text) = load
                    .send(&format!("cancel {id}"), |h, base| {
                        h.put(format!("{base}/fhir/Appointment/{id}"))
                            .bearer_auth(PORTAL_TOKEN)
                            .header("content-type", "application/fhir+json")
                            .body(c.clone())
                    })
                    .await;
                // A retry of a cancel that was done before the kill finds it cancelled.
                assert!(
                    s == StatusCode::OK
                        || (s == StatusCode::CONFLICT && text.contains("cancelled")),
                    "cancel {id}: {s} {text}"
                );
            }
            Done::Appointment {
                id,
                cancelled: *cancel,
            }
        }
        Op::HubBook {
            slot,
            org,
            n,
            cancel,
        } => {
            let inner = format!(
                "<IdAppointment>{slot}</IdAppointment><IdLPU>{org}</IdLPU><Polis>{}</Polis><Birthday>1980-05-17</Birthday><IdempotencyKey>crash-hub-{n}</IdempotencyKey>",
                policy(*n)
            );
            let (s, text) = load.hub("SetAppointment", &inner, slot).await;
            if s != StatusCode::OK {
                panic!(
                    "SetAppointment {slot}: {s} {text}\n{}",
                    load.on_slot(slot).await
                );
            }
            let id = between(&text, "IdClaim")
                .unwrap_or_else(|| panic!("no IdClaim: {text}"))
                .to_string();
            if *cancel {
                let (s, text) = load
                    .hub(
                        "CreateClaimForRefusal",
                        &format!("<IdClaim>{id}</IdClaim>"),
                        &id,
                    )
                    .await;
                assert!(
                    s == StatusCode::OK || text.contains("cancelled"),
                    "CreateClaimForRefusal {id}: {s} {text}"
                );
            }
            Done::Appointment {
                id,
                cancelled: *cancel,
            }
        }
    }
}

async fn totals(http: &reqwest::Client, port: u16) -> Option<Value> {
    let r = http
        .get(format!(
            "http://127.0.0.1:{port}/api/admin/documents?limit=1"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?;
    Some(r.json::<Value>().await.ok()?["totals"].clone())
}

/// Free internet-channel slots, an hour or more ahead, once the first schedule round
/// has stored them.
async fn free_slots(store: &medgate::store::Store, want: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let q = SlotQuery {
            status: Some(SlotStatus::Free),
            start_from: Some(medgate::model::time::now_ms() + 3_600_000),
            ..SlotQuery::default()
        };
        let slots: Vec<(String, String)> = store
            .search_slots(&q, 2000)
            .await
            .unwrap()
            .into_iter()
            .filter(|s| s.channels.contains(Channel::Internet))
            .map(|s| (s.id, s.org.to_string()))
            .collect();
        if slots.len() >= want {
            return slots;
        }
        assert!(
            Instant::now() < deadline,
            "only {} free slots stored",
            slots.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_mixed_load_on_a_busy_machine_loses_and_repeats_nothing() {
    let docs: u64 = std::env::var("CRASH_TEST_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bookings: u32 = 120;
    let registry = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(Arc::new(CryptoCheck)),
        verdict_delay: Duration::from_millis(5),
        faults: Faults {
            rate_limit: 0.15,
            internal_error: 0.15,
            ..Faults::default()
        },
        ..RemdSimConfig::default()
    })
    .unwrap();
    let day = chrono::Utc::now().date_naive() + chrono::Days::new(1);
    let region = Region {
        clinics: 2,
        doctors: 6,
        days: 7,
        slots_per_day: 16,
        slot_minutes: 20,
        first_day: day,
    };
    let mis = EmiasSim::start(region.clone()).unwrap();
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("medgate.toml");
    std::fs::write(&config_path, config(&db.url, port, &registry.url, &mis.url)).unwrap();
    // The region's clinics, and their week ahead as the nightly full sync stores it.
    medgate::demo::seed(&store).await.unwrap();
    {
        let (txlog, _writer) = medgate::exchange::TxLog::start(
            store.clone(),
            medgate::config::Settings::default().transaction_log,
        );
        let source =
            medgate::adapters::emias::EmiasClient::new(&mis.url, Duration::from_secs(30), txlog);
        for c in 0..region.clinics {
            let org = medgate::model::Oid::parse_organization(&region.clinic_oid(c)).unwrap();
            medgate::services::schedule_sync::full_sync(
                &store,
                &source,
                &org,
                day,
                7,
                medgate::model::time::now_ms(),
                &|_| {},
            )
            .await
            .unwrap();
        }
    }
    let _burners = Burners(burn_both_cores());
    let started = Instant::now();

    let load = Arc::new(Load {
        base: format!("http://127.0.0.1:{port}"),
        store: store.clone(),
        http: RwLock::new(client()),
        phase: AtomicU8::new(UP),
        seen: Seen::default(),
    });
    let mut gateway = spawn(&config_path);
    wait_ready(&client(), port).await;
    let slots = free_slots(&store, bookings as usize).await;

    // The mix: every 10th operation a booking (alternately FHIR and hub, every other one
    // cancelled), the rest documents.
    let mut ops = Vec::new();
    let mut slots_iter = slots.iter();
    let mut b = 0u32;
    for n in 0..docs {
        if n % 9 == 0 && b < bookings {
            let (slot, org) = slots_iter.next().unwrap();
            let cancel = b % 4 < 2;
            ops.push(if b % 2 == 0 {
                Op::FhirBook {
                    slot: slot.clone(),
                    n: 9000 + b,
                    cancel,
                }
            } else {
                Op::HubBook {
                    slot: slot.clone(),
                    org: org.clone(),
                    n: 9000 + b,
                    cancel,
                }
            });
            b += 1;
        }
        ops.push(Op::Document {
            uid: uuid::Uuid::new_v4().to_string(),
            n,
        });
    }
    let total_ops = ops.len();
    let bookings = b;

    // The killer: once a fifth of the documents are registered, kill -9 and restart.
    let killer = {
        let load = load.clone();
        let registry_counters = {
            let r = &registry;
            move || r.counters()
        };
        let config_path = config_path.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(240);
            while registry_counters().registered < docs / 5 {
                assert!(
                    Instant::now() < deadline,
                    "deliveries did not start: {:?}",
                    registry_counters()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            load.phase.store(DOWN, Ordering::SeqCst);
            gateway.start_kill().expect("kill -9");
            gateway.wait().await.expect("reap");
            let at_kill = registry_counters();
            let gateway = spawn(&config_path);
            wait_ready(&client(), port).await;
            *load.http.write().unwrap() = client();
            load.phase.store(UP_AGAIN, Ordering::SeqCst);
            (gateway, at_kill)
        }
    };
    let work = futures_util::stream::iter(ops.clone())
        .map(|op| {
            let load = load.clone();
            async move { (run(&load, &op).await, op) }
        })
        .buffer_unordered(16)
        .collect::<Vec<(Done, Op)>>();
    let (done, (mut gateway, at_kill)) = tokio::join!(work, killer);
    assert_eq!(done.len(), total_ops, "every request was accepted");
    assert!(
        at_kill.registered < docs,
        "the kill came too late to prove anything: {at_kill:?}"
    );

    // Recovery: every document registered, no cancel still queued, no hold left.
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let t = totals(&http, port).await.unwrap_or(Value::Null);
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'inflight')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        let held: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM appointments WHERE status = 'held'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if t["registered"].as_i64() == Some(docs as i64) && unfinished == 0 && held == 0 {
            break;
        }
        if Instant::now() >= deadline {
            // Why the ones that did not make it were given up, for whoever reads the failure.
            let why: Vec<(Option<String>, i64)> = sqlx::query_as(
                "SELECT last_error, COUNT(*) FROM outbox WHERE status = 'dead' GROUP BY last_error",
            )
            .fetch_all(store.pool())
            .await
            .unwrap_or_default();
            eprintln!("dead letters: {why:?}");
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: documents {t}, {unfinished} outbox items unfinished, {held} holds; registry {:?}",
            registry.counters()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Documents: each registered exactly once.
    let c = registry.counters();
    assert_eq!(c.registered, docs, "{c:?}");
    assert!(
        registry.registered_twice().is_empty(),
        "registered twice: {:?}",
        registry.registered_twice()
    );
    assert!(c.received > docs, "faults forced retries: {c:?}");

    // Bookings: the clinic system holds exactly the bookings the gateway holds.
    let mut expected: HashMap<String, bool> = HashMap::new();
    for (d, _) in &done {
        if let Done::Appointment { id, cancelled } = d {
            expected.insert(id.clone(), *cancelled);
        }
    }
    assert_eq!(expected.len(), bookings as usize);
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, slot_id FROM appointments")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let status: HashMap<String, (String, Option<String>)> = rows
        .into_iter()
        .map(|(id, s, slot)| (id, (s, slot)))
        .collect();
    let at_mis: HashMap<String, String> = mis
        .active_bookings()
        .into_iter()
        .map(|(slot, client_ref)| (format!("emias:{slot}"), client_ref))
        .collect();
    for (id, cancelled) in &expected {
        let (s, slot) = &status[id];
        let slot = slot.clone().unwrap();
        if *cancelled {
            assert_eq!(s, "cancelled", "{id}");
            assert_ne!(at_mis.get(&slot), Some(id), "{id} still booked at the MIS");
        } else {
            assert_eq!(s, "booked", "{id}");
            assert_eq!(at_mis.get(&slot), Some(id), "{id} not booked at the MIS");
        }
    }
    let booked_here: HashSet<&String> = expected
        .iter()
        .filter(|(_, c)| !**c)
        .map(|(id, _)| id)
        .collect();
    let strays: Vec<_> = at_mis
        .iter()
        .filter(|(_, r)| !booked_here.contains(r))
        .collect();
    assert!(strays.is_empty(), "booked at the MIS only: {strays:?}");
    // The ones we asked for, plus at most one per booking cut short by the kill.
    assert!(
        mis.creates() >= u64::from(bookings),
        "{} creates",
        mis.creates()
    );

    let seen = &load.seen;
    let report = format!(
        "crash test: {total_ops} requests ({docs} documents, {bookings} bookings of which half cancelled) in {:.1} s with both cores busy; all accepted, lost 0, duplicates 0; registry at kill {at_kill:?}, final {c:?}; MIS creates {}; retried: {} while down, {} shed (503), by answer {:?}; resets while up {}",
        started.elapsed().as_secs_f64(),
        mis.creates(),
        seen.while_down.load(Ordering::Relaxed),
        seen.shed.load(Ordering::Relaxed),
        seen.retried.lock().unwrap(),
        seen.resets.load(Ordering::Relaxed),
    );
    eprintln!("{report}");
    assert_eq!(
        seen.resets.load(Ordering::Relaxed),
        0,
        "connections were reset while the gateway ran: {report}"
    );
    gateway.start_kill().ok();
    let _ = gateway.wait().await;
    registry.stop().await;
    mis.stop().await;
    drop(db);
}
