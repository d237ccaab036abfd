//! Crash safety of document registration: the gateway process is killed with SIGKILL while
//! thousands of documents are in flight against a registry with transient faults; after a
//! restart every document ends registered exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use medgate::sim::remd::{CryptoCheck, Faults, RemdSim, RemdSimConfig};
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

fn config(db_url: &str, port: u16, registry: &str) -> String {
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
[[clients]]
id = "admin"
token_sha256 = "{admin}"
scopes = ["admin"]
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
timeout_secs = 1
retry_schedule_secs = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
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
        clinic = hash(CLINIC_TOKEN),
        remd = hash(REMD_TOKEN),
    )
}

fn spawn(config_path: &std::path::Path) -> tokio::process::Child {
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

async fn wait_ready(http: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
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

fn body(uid: &str, n: u64) -> Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_while_in_flight_registers_every_document_exactly_once() {
    let count: u64 = std::env::var("CRASH_TEST_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let sim = RemdSim::start(RemdSimConfig {
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
    let db = TestDb::new(Backend::Postgres).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("medgate.toml");
    std::fs::write(&config_path, config(&db.url, port, &sim.url)).unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let mut gateway = spawn(&config_path);
    wait_ready(&http, port).await;
    let uids: Vec<String> = (0..count)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let accepted = futures_util::stream::iter(uids.iter().enumerate())
        .map(|(i, uid)| {
            let http = http.clone();
            let b = body(uid, i as u64);
            async move {
                let r = http
                    .post(format!("http://127.0.0.1:{port}/fhir/DocumentReference"))
                    .bearer_auth(CLINIC_TOKEN)
                    .json(&b)
                    .send()
                    .await
                    .expect("submit");
                r.status()
            }
        })
        .buffer_unordered(16)
        .filter(|s| futures_util::future::ready(*s == StatusCode::CREATED))
        .count()
        .await;
    assert_eq!(accepted as u64, count, "every document is accepted");

    // Kill -9 once deliveries are well under way but not finished.
    let deadline = Instant::now() + Duration::from_secs(120);
    while sim.counters().registered < count / 5 {
        assert!(
            Instant::now() < deadline,
            "deliveries did not start: {:?}",
            sim.counters()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.start_kill().expect("kill -9");
    gateway.wait().await.expect("reap");
    let at_kill = sim.counters();
    assert!(
        at_kill.registered < count,
        "the kill came too late to prove anything: {at_kill:?}"
    );

    let mut gateway = spawn(&config_path);
    wait_ready(&http, port).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let t = totals(&http, port).await.unwrap_or(Value::Null);
        if t["registered"].as_i64() == Some(count as i64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all registered: {t} {:?}",
            sim.counters()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = sim.counters();
    assert_eq!(c.registered, count, "{c:?}");
    assert!(
        sim.registered_twice().is_empty(),
        "registered twice: {:?}",
        sim.registered_twice()
    );
    for uid in uids.iter().step_by(97) {
        assert_eq!(sim.registrations(uid), 1);
    }
    assert!(c.received > count, "faults forced retries: {c:?}");
    eprintln!("crash test: {count} documents; at kill {at_kill:?}; final {c:?}");
    gateway.start_kill().ok();
    let _ = gateway.wait().await;
    sim.stop().await;
    drop(db);
}
