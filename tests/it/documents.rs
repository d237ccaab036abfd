//! Documents end to end: intake through FHIR, GOST signing, registration in the registry
//! simulator with faults, verdicts by callback and by polling, operator views.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use medgate::config::{KeyRole, KeySettings, RemdSettings};
use medgate::model::document::DocumentStatus;
use medgate::model::remd::ErrorClass;
use medgate::model::time::{Clock, ManualClock};
use medgate::sim::remd::{CryptoCheck, Faults, RemdSim, RemdSimConfig};
use medgate::store::documents::StatusChange;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const PATIENT: &str = "112-233-445 95";
pub(crate) const AUTHOR: &str = "123-456-789 64";

fn keys_dir() -> String {
    format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn key(owner: &str, role: KeyRole, name: &str) -> KeySettings {
    KeySettings {
        owner: owner.into(),
        role,
        certificate: Some(format!("{}/{name}.cert.pem", keys_dir())),
        private_key: Some(format!("{}/{name}.key.pem", keys_dir())),
        pkcs12: None,
        passphrase: None,
        remote: None,
    }
}

fn remote_key(owner: &str, role: KeyRole, url: &str, key_id: &str) -> KeySettings {
    KeySettings {
        owner: owner.into(),
        role,
        certificate: None,
        private_key: None,
        pkcs12: None,
        passphrase: None,
        remote: Some(medgate::config::RemoteKeySettings {
            url: url.into(),
            key_id: key_id.into(),
            token: medgate::config::Secret::new("signer-token"),
            timeout_secs: 2,
        }),
    }
}

pub(crate) struct Setup {
    pub(crate) t: TestGateway,
    pub(crate) sim: RemdSim,
}

pub(crate) async fn setup(
    backend: Backend,
    sim_config: RemdSimConfig,
    retry: Vec<u64>,
    callback_timeout: u64,
) -> Setup {
    setup_with(backend, sim_config, retry, callback_timeout, |_| {}).await
}

pub(crate) async fn setup_with(
    backend: Backend,
    sim_config: RemdSimConfig,
    retry: Vec<u64>,
    callback_timeout: u64,
    tweak: impl FnOnce(&mut medgate::config::Settings) + Send + 'static,
) -> Setup {
    let clock = medgate::model::time::system_clock();
    setup_clocked(backend, clock, sim_config, retry, callback_timeout, tweak).await
}

/// A gateway with a registry simulator whose services and jobs read `clock`.
pub(crate) async fn setup_clocked(
    backend: Backend,
    clock: medgate::model::time::SharedClock,
    sim_config: RemdSimConfig,
    retry: Vec<u64>,
    callback_timeout: u64,
    tweak: impl FnOnce(&mut medgate::config::Settings) + Send + 'static,
) -> Setup {
    let sim = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(Arc::new(CryptoCheck)),
        ..sim_config
    })
    .unwrap();
    let url = sim.url.clone();
    let t = TestGateway::start_clocked(backend, clock, move |s| {
        registry_link(s, url, retry, callback_timeout);
        tweak(s);
    })
    .await;
    Setup { t, sim }
}

/// Registration in the registry at `url` with the test's keys: 2 s timeout, 4 workers,
/// `retry` as the schedule, verdicts overdue after `callback_timeout` seconds.
pub(crate) fn registry_link(
    s: &mut medgate::config::Settings,
    url: String,
    retry: Vec<u64>,
    callback_timeout: u64,
) {
    let base = s.http.public_url.clone().unwrap();
    s.remd = Some(RemdSettings {
        url,
        client_entity_id: "medgate-test".into(),
        callback_url: format!("{base}/soap/remd/callback"),
        file_url: format!("{base}/soap/remd/provider"),
        timeout_secs: 2,
        retry_schedule_secs: retry,
        callback_timeout_secs: callback_timeout,
        workers: 4,
        max_document_bytes: 1024 * 1024,
        deliver: true,
        message_key: None,
        callback_certificates: Vec::new(),
    });
    s.signing.keys = vec![
        key(CLINIC_ORG, KeyRole::Organization, "org-gost256"),
        key(AUTHOR, KeyRole::Doctor, "doctor-gost256"),
    ];
}

pub(crate) fn cda(number: u64) -> String {
    medgate::codec::cda::sample_document(CLINIC_ORG, "11223344595", "12345678964", number, 200)
}

pub(crate) fn document_reference(uid: &str, doc: &str, signatures: &[(&str, Vec<u8>)]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut content = vec![
        json!({"attachment": {"contentType": "application/x-hl7-cda+xml", "data": b64.encode(doc)}}),
    ];
    for (role, cms) in signatures {
        content.push(json!({"attachment": {"contentType": "application/pkcs7-signature", "title": role, "data": b64.encode(cms)}}));
    }
    json!({
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{uid}")},
        "status": "current",
        "type": {"coding": [{"system": "urn:oid:1.2.643.5.1.13.13.11.1522", "version": "5.12", "code": "4"}]},
        "subject": {"identifier": {"system": "urn:oid:1.2.643.100.3", "value": PATIENT}},
        "author": [{"identifier": {"system": "urn:oid:1.2.643.100.3", "value": AUTHOR}}],
        "custodian": {"identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{CLINIC_ORG}")}},
        "content": content,
    })
}

pub(crate) async fn submit(t: &TestGateway, body: &Value) -> reqwest::Response {
    t.http
        .post(t.url("/fhir/DocumentReference"))
        .bearer_auth(CLINIC_TOKEN)
        .header("content-type", "application/fhir+json")
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) fn status_of(v: &Value) -> String {
    v["extension"][0]["valueCode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The document as FHIR shows it to its clinic.
pub(crate) async fn document(t: &TestGateway, uid: &str) -> Value {
    t.http
        .get(t.url(&format!("/fhir/DocumentReference/{uid}")))
        .bearer_auth(CLINIC_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub(crate) async fn wait_status(t: &TestGateway, uid: &str, want: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = document(t, uid).await;
        if status_of(&v) == want {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "document {uid} never reached {want}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn issue(o: &Value) -> &Value {
    assert_eq!(o["resourceType"], "OperationOutcome", "{o}");
    &o["issue"][0]
}

async fn gost_signed_document_is_registered_once(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1, 1, 1], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    let r = submit(&t, &document_reference(&uid, &cda(1), &[])).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], uid);
    let v = wait_status(&t, &uid, "registered", 15).await;
    assert_eq!(v["docStatus"], "final");
    let emdr = v["identifier"][1]["value"].as_str().unwrap();
    assert!(emdr.starts_with("16.62.23.09."), "{v}");
    // The registry fetched the bytes, its GOST digest and both GOST signatures checked out.
    assert_eq!(sim.registrations(&uid), 1);
    assert_eq!(sim.counters().rejected, 0);
    // The stored organization signature is GOST and verifies independently with openssl.
    let doc = t.gw.store.get_document(&uid).await.unwrap().unwrap();
    assert!(doc.signed_by_gateway);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("doc.xml"), &doc.content).unwrap();
    std::fs::write(dir.path().join("org.p7s"), &doc.org_signature).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-noverify",
            "-in",
            "org.p7s",
            "-content",
            "doc.xml",
            "-out",
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("OPENSSL_CONF", format!("{}/openssl-gost.cnf", keys_dir()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The operator sees the history and the outbound calls.
    let shown: Value = t
        .get_admin(&format!("/api/admin/documents/{uid}"))
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "sent", "registered"], "{shown}");
    let calls: Value = t
        .get_admin(&format!(
            "/api/admin/transactions?operation=remd.registerDocument&correlation_id={uid}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(calls["count"], 1, "{calls}");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gost_signed_document_is_registered_once_postgres() {
    gost_signed_document_is_registered_once(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gost_signed_document_is_registered_once_sqlite() {
    gost_signed_document_is_registered_once(Backend::Sqlite).await
}

async fn invalid_documents_are_refused_naming_the_field(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    let bad_realm = cda(2).replace(r#"<realmCode code="RU"/>"#, r#"<realmCode code="US"/>"#);
    let r = submit(&t, &document_reference(&uid, &bad_realm, &[])).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let o: Value = r.json().await.unwrap();
    assert!(
        issue(&o)["expression"][0]
            .as_str()
            .unwrap()
            .contains("ClinicalDocument/realmCode/@code"),
        "{o}"
    );

    let mut body = document_reference(&uid, &cda(2), &[]);
    body["subject"]["identifier"]["value"] = json!("123-456-789 64");
    let o: Value = submit(&t, &body).await.json().await.unwrap();
    assert_eq!(
        issue(&o)["details"]["coding"][0]["code"],
        "METADATA_MISMATCH",
        "{o}"
    );
    assert!(
        issue(&o)["expression"][0]
            .as_str()
            .unwrap()
            .starts_with("DocumentReference.subject"),
        "{o}"
    );

    let mut body = document_reference(&uid, &cda(2), &[]);
    body["subject"]["identifier"]["value"] = json!("112-233-445 94");
    let o: Value = submit(&t, &body).await.json().await.unwrap();
    assert_eq!(issue(&o)["details"]["coding"][0]["code"], "INVALID_SNILS");

    let mut body = document_reference("not-a-uuid", &cda(2), &[]);
    let o: Value = submit(&t, &body).await.json().await.unwrap();
    assert_eq!(
        issue(&o)["expression"][0],
        "DocumentReference.masterIdentifier.value"
    );
    body["content"][0]["attachment"]["data"] = json!("%%%");
    body["masterIdentifier"]["value"] = json!(uid);
    let o: Value = submit(&t, &body).await.json().await.unwrap();
    assert_eq!(
        issue(&o)["expression"][0],
        "DocumentReference.content[0].attachment.data"
    );
    let r = t
        .http
        .post(t.url("/fhir/DocumentReference"))
        .bearer_auth(CLINIC_TOKEN)
        .body("{\"resourceType\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let o: Value = r.json().await.unwrap();
    assert_eq!(issue(&o)["expression"][0], "DocumentReference.resourceType");

    // A bomb in the document is refused before anything is stored.
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><ClinicalDocument xmlns="urn:hl7-org:v3">&b;</ClinicalDocument>"#;
    let o: Value = submit(&t, &document_reference(&uid, bomb, &[]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        issue(&o)["details"]["coding"][0]["code"],
        "CDA_FORBIDDEN_DTD"
    );
    // Another organization's clinic may not submit.
    let other = cda(2).replace(CLINIC_ORG, "1.2.643.5.1.13.13.12.2.77.7002");
    let mut body = document_reference(&uid, &other, &[]);
    body["custodian"]["identifier"]["value"] = json!("urn:oid:1.2.643.5.1.13.13.12.2.77.7002");
    assert_eq!(submit(&t, &body).await.status(), StatusCode::FORBIDDEN);
    assert!(t.gw.store.get_document(&uid).await.unwrap().is_none());
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_refused_naming_the_field_postgres() {
    invalid_documents_are_refused_naming_the_field(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_documents_are_refused_naming_the_field_sqlite() {
    invalid_documents_are_refused_naming_the_field(Backend::Sqlite).await
}

fn cms(name: &str, data: &[u8]) -> Vec<u8> {
    use medgate::sign::Signer;
    let dir = keys_dir();
    medgate::sign::LocalSigner::from_pem(
        &std::fs::read(format!("{dir}/{name}.key.pem")).unwrap(),
        &std::fs::read(format!("{dir}/{name}.cert.pem")).unwrap(),
        None,
    )
    .unwrap()
    .sign_detached_cms(data)
    .unwrap()
}

async fn incoming_signatures_are_verified(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let doc = cda(3);
    let org_sig = cms("org-ec", doc.as_bytes());
    let wrong = cms("doctor-ec", b"some other bytes");
    let uid = uuid::Uuid::new_v4().to_string();
    let r = submit(
        &t,
        &document_reference(
            &uid,
            &doc,
            &[("organization", org_sig.clone()), ("doctor", wrong)],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let o: Value = r.json().await.unwrap();
    assert_eq!(
        issue(&o)["details"]["coding"][0]["code"],
        "SIGNATURE_MISMATCH",
        "{o}"
    );
    assert!(
        issue(&o)["expression"][0]
            .as_str()
            .unwrap()
            .contains("doctor"),
        "{o}"
    );
    // Signed by someone who is not the author.
    let r = submit(
        &t,
        &document_reference(
            &uid,
            &doc,
            &[
                ("organization", org_sig.clone()),
                ("doctor", cms("org-ec", doc.as_bytes())),
            ],
        ),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "org certificate has no SNILS, so only a SNILS mismatch is refused"
    );
    // Correct ECDSA signatures from the clinic are accepted and registered.
    let uid2 = uuid::Uuid::new_v4().to_string();
    let r = submit(
        &t,
        &document_reference(
            &uid2,
            &doc,
            &[
                ("organization", org_sig),
                ("doctor", cms("doctor-ec", doc.as_bytes())),
            ],
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    wait_status(&t, &uid2, "registered", 15).await;
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_signatures_are_verified_postgres() {
    incoming_signatures_are_verified(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_signatures_are_verified_sqlite() {
    incoming_signatures_are_verified(Backend::Sqlite).await
}

async fn duplicate_submission_returns_the_first_result(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    let body = document_reference(&uid, &cda(4), &[]);
    let first = submit(&t, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = submit(&t, &body).await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["date"], first["date"]);
    let different = submit(&t, &document_reference(&uid, &cda(5), &[])).await;
    assert_eq!(different.status(), StatusCode::CONFLICT);
    wait_status(&t, &uid, "registered", 15).await;
    assert_eq!(sim.registrations(&uid), 1);
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submission_returns_the_first_result_postgres() {
    duplicate_submission_returns_the_first_result(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submission_returns_the_first_result_sqlite() {
    duplicate_submission_returns_the_first_result(Backend::Sqlite).await
}

async fn transient_registry_faults_are_retried_until_success(backend: Backend) {
    let faults = Faults {
        rate_limit: 1.0,
        ..Faults::default()
    };
    let clock = ManualClock::new();
    let Setup { t, sim } = setup_clocked(
        backend,
        clock.clone(),
        RemdSimConfig {
            faults,
            ..RemdSimConfig::default()
        },
        vec![60, 60, 60, 60],
        30,
        |_| {},
    )
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        submit(&t, &document_reference(&uid, &cda(6), &[]))
            .await
            .status(),
        StatusCode::CREATED
    );
    // The first attempt goes at once and is refused; the retry waits for its time.
    let attempts = |n: i32| {
        let store = t.gw.store.clone();
        let uid = uid.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let items = store.outbox_for(&uid).await.unwrap();
                if items[0].attempts == n && items[0].status == "pending" {
                    return items[0].next_attempt_at;
                }
                assert!(std::time::Instant::now() < deadline, "{items:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let due = attempts(1).await;
    assert_eq!(due, clock.now_ms() + 60_000, "the schedule's first delay");
    t.step("deliver:remd").await;
    assert_eq!(
        sim.counters().received,
        1,
        "nothing is sent before it is due"
    );
    let d = t.gw.store.get_document(&uid).await.unwrap().unwrap();
    assert_eq!(d.status.as_str(), "queued");
    assert_eq!(d.error_class.map(|c| c.as_str()), Some("retryable"));
    for n in 2..=3 {
        clock.advance(Duration::from_secs(60));
        t.step("deliver:remd").await;
        attempts(n).await;
        assert_eq!(sim.counters().received, n as u64);
    }
    // The registry recovers; the next attempt succeeds.
    sim.set_faults(Faults::default());
    clock.advance(Duration::from_secs(60));
    t.step("deliver:remd").await;
    wait_status(&t, &uid, "registered", 15).await;
    assert_eq!(sim.registrations(&uid), 1);
    let deliveries = t.gw.store.outbox_for(&uid).await.unwrap();
    assert_eq!(
        (deliveries.len(), deliveries[0].attempts),
        (1, 4),
        "{deliveries:?}"
    );
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_registry_faults_are_retried_until_success_postgres() {
    transient_registry_faults_are_retried_until_success(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_registry_faults_are_retried_until_success_sqlite() {
    transient_registry_faults_are_retried_until_success(Backend::Sqlite).await
}

async fn data_errors_are_not_retried_and_name_who_fixes_them(backend: Backend) {
    let config = RemdSimConfig {
        known_orgs: Some(["1.2.643.5.1.13.13.12.2.77.9999".to_string()].into()),
        ..RemdSimConfig::default()
    };
    let Setup { t, sim } = setup(backend, config, vec![0, 0, 0], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&uid, &cda(7), &[])).await;
    let v = wait_status(&t, &uid, "rejected", 15).await;
    assert_eq!(
        v["extension"][1]["extension"][0]["valueCode"], "data",
        "{v}"
    );
    assert_eq!(
        v["extension"][1]["extension"][1]["valueString"],
        "ORG_NOT_FOUND_IN_FRMO"
    );
    // A data error must not be retried: nothing is left to deliver.
    let items = t.gw.store.outbox_for(&uid).await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!((items[0].status.as_str(), items[0].attempts), ("done", 1));
    assert_eq!(t.step("deliver:remd").await, 0);
    assert_eq!(sim.counters().received, 1);
    let list: Value = t
        .get_admin("/api/admin/documents?status=rejected&error_class=data")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1);
    assert_eq!(
        list["items"][0]["error"]["to_be_fixed_by"],
        "the clinic that submitted the document"
    );
    // Rerun after the fix (here: the registry now knows the organization is irrelevant; the
    // rerun is queued and tried again exactly once more).
    let r = t
        .http
        .post(t.url(&format!("/api/admin/documents/{uid}/rerun")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    wait_status(&t, &uid, "rejected", 15).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sim.counters().received < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = t
        .http
        .post(t.url(&format!("/api/admin/documents/{uid}/rerun")))
        .bearer_auth(CLINIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_errors_are_not_retried_and_name_who_fixes_them_postgres() {
    data_errors_are_not_retried_and_name_who_fixes_them(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_errors_are_not_retried_and_name_who_fixes_them_sqlite() {
    data_errors_are_not_retried_and_name_who_fixes_them(Backend::Sqlite).await
}

async fn lost_callback_is_recovered_by_polling(backend: Backend) {
    let faults = Faults {
        lost_callback: 1.0,
        ..Faults::default()
    };
    let clock = ManualClock::new();
    let Setup { t, sim } = setup_clocked(
        backend,
        clock.clone(),
        RemdSimConfig {
            faults,
            ..RemdSimConfig::default()
        },
        vec![60],
        30,
        |_| {},
    )
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&uid, &cda(8), &[])).await;
    wait_status(&t, &uid, "sent", 15).await;
    wait_for("the lost callback", || sim.counters().callbacks_lost == 1).await;
    // Not overdue yet: the registry is not asked.
    assert_eq!(t.step("remd-verdict-poll").await, 0);
    wait_status(&t, &uid, "sent", 1).await;
    // Well past the callback timeout, the poll asks the registry and records its verdict.
    clock.advance(Duration::from_secs(120));
    t.step("remd-verdict-poll").await;
    wait_status(&t, &uid, "registered", 15).await;
    assert_eq!(sim.counters().callbacks_sent, 0);
    assert_eq!(sim.counters().callbacks_lost, 1);
    assert_eq!(sim.registrations(&uid), 1);
    let shown: Value = t
        .get_admin(&format!("/api/admin/documents/{uid}"))
        .await
        .json()
        .await
        .unwrap();
    let last = shown["history"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("recovered by polling"),
        "{shown}"
    );
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_callback_is_recovered_by_polling_postgres() {
    lost_callback_is_recovered_by_polling(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_callback_is_recovered_by_polling_sqlite() {
    lost_callback_is_recovered_by_polling(Backend::Sqlite).await
}

/// The scheduled document reconciliation (the quick poll switched off): a verdict the
/// registry decided but whose callback was lost is asked for once overdue, and the dead
/// letters are summed up by organization and who must act, in the run's record.
async fn document_reconciliation_recovers_and_sums_up(backend: Backend) {
    let clock = ManualClock::new();
    let Setup { t, sim } = setup_clocked(
        backend,
        clock.clone(),
        RemdSimConfig {
            faults: Faults {
                lost_callback: 1.0,
                ..Faults::default()
            },
            ..RemdSimConfig::default()
        },
        vec![],
        30,
        |s| s.jobs.disabled.push("remd-verdict-poll".into()),
    )
    .await;
    let lost = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&lost, &cda(8), &[])).await;
    wait_status(&t, &lost, "sent", 15).await;
    wait_for("the lost callback", || sim.counters().callbacks_lost == 1).await;
    // The registry fails the next document; with no retries left it is a dead letter.
    sim.set_faults(Faults {
        internal_error: 1.0,
        ..Faults::default()
    });
    let dead = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&dead, &cda(9), &[])).await;
    wait_status(&t, &dead, "dead-lettered", 15).await;
    sim.set_faults(Faults::default());
    let run = |t: &TestGateway| {
        let req = t
            .http
            .post(t.url("/api/admin/jobs/document-reconciliation/run"))
            .bearer_auth(ADMIN_TOKEN)
            .send();
        async move {
            let res = req.await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };
    // Not overdue yet: nothing asked.
    let first = run(&t).await;
    assert_eq!(
        (first["found"].as_u64(), first["repaired"].as_u64()),
        (Some(0), Some(0)),
        "{first}"
    );
    clock.advance(Duration::from_secs(120));
    let second = run(&t).await;
    assert_eq!(second["outcome"], "ok", "{second}");
    assert_eq!(
        (second["found"].as_u64(), second["repaired"].as_u64()),
        (Some(1), Some(1)),
        "{second}"
    );
    wait_status(&t, &lost, "registered", 15).await;
    assert_eq!(sim.registrations(&lost), 1);
    let summary = &second["details"]["dead_letters"][CLINIC_ORG];
    assert_eq!(summary.as_object().map(|o| o.len()), Some(1), "{second}");
    // Out of retries on a transient error: the regional operator looks at the registry link.
    assert_eq!(summary["dead-lettered:retryable"], 1, "{second}");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_reconciliation_recovers_and_sums_up_postgres() {
    document_reconciliation_recovers_and_sums_up(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_reconciliation_recovers_and_sums_up_sqlite() {
    document_reconciliation_recovers_and_sums_up(Backend::Sqlite).await
}

/// Waits until the history of `uid` has an entry containing `text`.
async fn wait_event(t: &TestGateway, uid: &str, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = t.gw.store.document_events(uid).await.unwrap();
        if events.iter().any(|e| e.detail.contains(text)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{text}` in the history of {uid}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The registry cannot fetch the file (its verdicts say DOCUMENT_FILE_UNAVAILABLE, which
/// asks for a retry): each verdict is an attempt of the schedule, and after the last the
/// document is dead-lettered with the reason, its history one or two entries per attempt.
async fn retries_the_registry_asks_for_follow_the_schedule_and_end(backend: Backend) {
    let clock = ManualClock::new();
    let Setup { t, sim } = setup_clocked(
        backend,
        clock.clone(),
        RemdSimConfig::default(),
        vec![60, 60, 60],
        3600,
        |s| {
            // Nothing listens there: the registry's fetch of the file fails.
            s.remd.as_mut().unwrap().file_url = "http://127.0.0.1:9/soap/remd/provider".into();
        },
    )
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&uid, &cda(9), &[])).await;
    for attempt in 1..=3 {
        wait_event(
            &t,
            &uid,
            &format!("attempt {attempt}: registry asked to retry"),
        )
        .await;
        // Not due before its time on the schedule.
        assert_eq!(t.step("deliver:remd").await, 0);
        clock.advance(Duration::from_secs(60));
    }
    // The last verdict comes by callback; one lost on a busy machine is asked for by the
    // verdict poll once overdue (the callback timeout here is an hour).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while status_of(&document(&t, &uid).await) != "dead-lettered"
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if status_of(&document(&t, &uid).await) != "dead-lettered" {
        clock.advance(Duration::from_secs(3_601));
        t.step("remd-verdict-poll").await;
    }
    wait_status(&t, &uid, "dead-lettered", 60).await;
    let items = t.gw.store.outbox_for(&uid).await.unwrap();
    let attempts: Vec<i32> = items.iter().map(|i| i.attempts).collect();
    assert_eq!(attempts, [1, 2, 3, 4], "{items:?}");
    // Nothing is left to deliver, even much later.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(t.step("deliver:remd").await, 0);
    assert_eq!(sim.counters().received, 4);
    let shown: Value = t
        .get_admin(&format!("/api/admin/documents/{uid}"))
        .await
        .json()
        .await
        .unwrap();
    let history = shown["history"].as_array().unwrap();
    assert!(history.len() <= 1 + 2 * 4, "{shown}");
    let last = history.last().unwrap()["detail"].as_str().unwrap();
    assert!(
        last.contains("gave up after 4 attempts") && last.contains("DOCUMENT_FILE_UNAVAILABLE"),
        "{shown}"
    );
    assert_eq!(shown["error"]["class"], "retryable", "{shown}");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_the_registry_asks_for_follow_the_schedule_and_end_postgres() {
    retries_the_registry_asks_for_follow_the_schedule_and_end(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_the_registry_asks_for_follow_the_schedule_and_end_sqlite() {
    retries_the_registry_asks_for_follow_the_schedule_and_end(Backend::Sqlite).await
}

/// The registry holds another document under this UID: its duplicate answer is not taken
/// for a registration; the document is a conflict for a person to resolve.
async fn a_duplicate_answer_is_checked_against_the_registry(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    sim.preregister(&uid, CLINIC_ORG, &"ab".repeat(32));
    submit(&t, &document_reference(&uid, &cda(10), &[])).await;
    let v = wait_status(&t, &uid, "rejected", 30).await;
    assert_eq!(
        v["extension"][1]["extension"][0]["valueCode"], "conflict",
        "{v}"
    );
    let shown: Value = t
        .get_admin(&format!("/api/admin/documents/{uid}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["emdr_id"], Value::Null, "{shown}");
    let why = shown["error"]["message"].as_str().unwrap();
    assert!(why.contains(&"ab".repeat(32)), "{shown}");
    assert!(
        shown["error"]["to_be_fixed_by"]
            .as_str()
            .unwrap()
            .contains("regional operator"),
        "{shown}"
    );
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_answer_is_checked_against_the_registry_postgres() {
    a_duplicate_answer_is_checked_against_the_registry(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_answer_is_checked_against_the_registry_sqlite() {
    a_duplicate_answer_is_checked_against_the_registry(Backend::Sqlite).await
}

async fn shipped_sample_document_is_accepted_and_registered(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let sample = std::fs::read(format!(
        "{}/adapters/remd/samples/document-reference.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let r = t
        .http
        .post(t.url("/fhir/DocumentReference"))
        .bearer_auth(CLINIC_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(sample)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = wait_status(&t, "6f1c9a52-3d0e-4b8a-9b1e-2f5d7c8e9a01", "registered", 15).await;
    assert_eq!(
        v["custodian"]["reference"],
        format!("Organization/{CLINIC_ORG}")
    );
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_sample_document_is_accepted_and_registered_postgres() {
    shipped_sample_document_is_accepted_and_registered(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_sample_document_is_accepted_and_registered_sqlite() {
    shipped_sample_document_is_accepted_and_registered(Backend::Sqlite).await
}

/// Callbacks as the codec writes them validate against the schema the gateway publishes.
#[test]
fn callback_messages_match_the_published_schema() {
    use medgate::codec::remd::{RegisterResult, RegistryError, RegistryItem};
    let dir = tempfile::tempdir().unwrap();
    let ok = RegisterResult {
        relates_to_message: "urn:uuid:1".into(),
        status: "success".into(),
        item: Some(RegistryItem {
            emdr_id: "16.62.23.09.000000001".into(),
            local_uid: "6f1c9a52-3d0e-4b8a-9b1e-2f5d7c8e9a01".into(),
            registration_date_time: chrono::Utc::now().to_rfc3339(),
            content_digest: Some("00ff".repeat(16)),
        }),
        errors: vec![],
    };
    let bad = RegisterResult {
        relates_to_message: "urn:uuid:2".into(),
        status: "error".into(),
        item: None,
        errors: vec![RegistryError {
            code: "DIGEST_MISMATCH".into(),
            message: "a & b < c".into(),
        }],
    };
    for (i, r) in [ok, bad].iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.xml")), r.to_xml()).unwrap();
    }
    let script = format!(
        "from lxml import etree\nimport glob\ns = etree.XMLSchema(etree.parse('{}/schemas/remd-callback.xsd'))\nfor f in sorted(glob.glob('{}/*.xml')):\n    s.assertValid(etree.parse(f))\nprint('valid')\n",
        env!("CARGO_MANIFEST_DIR"),
        dir.path().display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "valid");
}

async fn keys_in_an_external_signing_service(backend: Backend) {
    let load = |name: &str| {
        medgate::sign::LocalSigner::from_pem(
            &std::fs::read(format!("{}/{name}.key.pem", keys_dir())).unwrap(),
            &std::fs::read(format!("{}/{name}.cert.pem", keys_dir())).unwrap(),
            None,
        )
        .unwrap()
    };
    let signer = medgate::sim::signer::SignerSim::start(
        "signer-token",
        [
            ("org-1".to_string(), load("org-gost512")),
            ("doc-1".to_string(), load("doctor-gost256")),
        ]
        .into(),
    )
    .unwrap();
    let sim = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(Arc::new(CryptoCheck)),
        ..RemdSimConfig::default()
    })
    .unwrap();
    let (registry, signer_url) = (sim.url.clone(), signer.url.clone());
    let t = TestGateway::start_with(backend, move |s| {
        let base = s.http.public_url.clone().unwrap();
        s.remd = Some(RemdSettings {
            url: registry,
            client_entity_id: "t".into(),
            callback_url: format!("{base}/soap/remd/callback"),
            file_url: format!("{base}/soap/remd/provider"),
            timeout_secs: 2,
            retry_schedule_secs: vec![1],
            callback_timeout_secs: 30,
            workers: 2,
            max_document_bytes: 1024 * 1024,
            deliver: true,
            message_key: None,
            callback_certificates: Vec::new(),
        });
        s.signing.keys = vec![
            remote_key(CLINIC_ORG, KeyRole::Organization, &signer_url, "org-1"),
            remote_key(AUTHOR, KeyRole::Doctor, &signer_url, "doc-1"),
        ];
    })
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        submit(&t, &document_reference(&uid, &cda(9), &[]))
            .await
            .status(),
        StatusCode::CREATED
    );
    wait_status(&t, &uid, "registered", 15).await;
    assert_eq!(signer.signatures(), 2);
    let doc = t.gw.store.get_document(&uid).await.unwrap().unwrap();
    let v = medgate::sign::verify_detached_cms(&doc.content, &doc.org_signature, None).unwrap();
    assert_eq!(v.ogrn.as_deref(), Some("1027700000001"));

    // The token is unavailable: a clear 503, nothing stored, the clinic retries later.
    signer.set_down(true);
    let uid2 = uuid::Uuid::new_v4().to_string();
    let r = submit(&t, &document_reference(&uid2, &cda(10), &[])).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let o: Value = r.json().await.unwrap();
    assert_eq!(
        issue(&o)["details"]["coding"][0]["code"],
        "SIGNER_UNAVAILABLE"
    );
    assert!(t.gw.store.get_document(&uid2).await.unwrap().is_none());
    signer.set_down(false);
    assert_eq!(
        submit(&t, &document_reference(&uid2, &cda(10), &[]))
            .await
            .status(),
        StatusCode::CREATED
    );
    signer.stop().await;
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_an_external_signing_service_postgres() {
    keys_in_an_external_signing_service(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_an_external_signing_service_sqlite() {
    keys_in_an_external_signing_service(Backend::Sqlite).await
}

fn soap_submit(uid: &str, doc: &str, patient: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><SubmitDocument xmlns="urn:medgate:documents:v1"><LocalUid>{uid}</LocalUid><Kind code="4" version="5.12"/><Organization>{CLINIC_ORG}</Organization><PatientSnils>{patient}</PatientSnils><AuthorSnils>{AUTHOR}</AuthorSnils><Document contentType="application/x-hl7-cda+xml">{}</Document></SubmitDocument></s:Body></s:Envelope>"#,
        b64.encode(doc)
    )
}

async fn soap_intake_for_soap_speaking_mis(backend: Backend) {
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let post = |action: &str, body: String| {
        t.http
            .post(t.url("/soap/documents"))
            .bearer_auth(CLINIC_TOKEN)
            .header("content-type", "text/xml; charset=utf-8")
            .header(
                "soapaction",
                format!("\"urn:medgate:documents:v1/{action}\""),
            )
            .body(body)
            .send()
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let r = post("SubmitDocument", soap_submit(&uid, &cda(11), PATIENT))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("<Status>queued</Status>") && text.contains("<Replay>false</Replay>"),
        "{text}"
    );
    let again = post("SubmitDocument", soap_submit(&uid, &cda(11), PATIENT))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("<Replay>true</Replay>"), "{again}");
    wait_status(&t, &uid, "registered", 15).await;
    let status = post("GetDocumentStatus", format!(r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetDocumentStatus xmlns="urn:medgate:documents:v1"><LocalUid>{uid}</LocalUid></GetDocumentStatus></s:Body></s:Envelope>"#)).await.unwrap().text().await.unwrap();
    assert!(
        status.contains("<Status>registered</Status>") && status.contains("<EmdrId>16.62.23.09."),
        "{status}"
    );

    // A bad field gets a Fault naming the element.
    let uid2 = uuid::Uuid::new_v4().to_string();
    let fault = post(
        "SubmitDocument",
        soap_submit(&uid2, &cda(12), "112-233-445 94"),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        fault.contains("<mg:code>INVALID_SNILS</mg:code>")
            && fault.contains("<mg:field>SubmitDocument/PatientSnils</mg:field>"),
        "{fault}"
    );
    let fault = post(
        "SubmitDocument",
        soap_submit(&uid2, &cda(12).replace("POCD_MT000040", "X"), PATIENT),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        fault.contains("ClinicalDocument/typeId/@extension"),
        "{fault}"
    );

    // SOAP 1.2 works the same way.
    let v12 = soap_submit(&uid2, &cda(12), PATIENT).replace(
        "http://schemas.xmlsoap.org/soap/envelope/",
        "http://www.w3.org/2003/05/soap-envelope",
    );
    let r = t.http.post(t.url("/soap/documents")).bearer_auth(CLINIC_TOKEN)
        .header("content-type", "application/soap+xml; charset=utf-8; action=\"urn:medgate:documents:v1/SubmitDocument\"")
        .body(v12).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("http://www.w3.org/2003/05/soap-envelope"));
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_intake_for_soap_speaking_mis_postgres() {
    soap_intake_for_soap_speaking_mis(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_intake_for_soap_speaking_mis_sqlite() {
    soap_intake_for_soap_speaking_mis(Backend::Sqlite).await
}

async fn registry_messages_are_signed_with_xmldsig(backend: Backend) {
    let config = RemdSimConfig {
        require_signed_messages: true,
        ..RemdSimConfig::default()
    };
    let Setup { t, sim } = setup_with(backend, config, vec![1], 30, |s| {
        if let Some(r) = s.remd.as_mut() {
            r.message_key = Some(CLINIC_ORG.into());
        }
    })
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&uid, &cda(13), &[])).await;
    wait_status(&t, &uid, "registered", 15).await;
    assert!(sim.signed_messages() >= 1);
    // The logged outbound message carries the GOST XMLDSig.
    t.gw.state.txlog.flush().await;
    let calls =
        t.gw.store
            .list_transactions(
                &medgate::store::transactions::TransactionFilter {
                    operation: Some("remd.registerDocument".into()),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
    let body = String::from_utf8(calls[0].request_body.clone().unwrap()).unwrap();
    assert!(body.contains("gostr34102012-gostr34112012-256"), "{body}");
    sim.stop().await;
    t.stop().await;

    // Unsigned messages are refused by such a registry with a code the operator owns.
    let config = RemdSimConfig {
        require_signed_messages: true,
        ..RemdSimConfig::default()
    };
    let Setup { t, sim } = setup(backend, config, vec![0], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    submit(&t, &document_reference(&uid, &cda(14), &[])).await;
    let v = wait_status(&t, &uid, "rejected", 15).await;
    assert_eq!(
        v["extension"][1]["extension"][0]["valueCode"], "gateway",
        "{v}"
    );
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_messages_are_signed_with_xmldsig_postgres() {
    registry_messages_are_signed_with_xmldsig(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_messages_are_signed_with_xmldsig_sqlite() {
    registry_messages_are_signed_with_xmldsig(Backend::Sqlite).await
}

async fn concurrent_intakes_are_written_together_and_replays_collapse(backend: Backend) {
    // 30 documents, each submitted twice at the same moment (60 requests in flight): on
    // PostgreSQL they are written in shared statements (group commit), a UID repeated
    // within one statement waits for the next. Each UID ends with one document, one
    // outbox item and one registration; its two answers are one 201 and one 200 replay.
    let Setup { t, sim } = setup(backend, RemdSimConfig::default(), vec![1], 30).await;
    let uids: Vec<String> = (0..30).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let bodies: Vec<(String, Value)> = uids
        .iter()
        .enumerate()
        .flat_map(|(i, u)| {
            let body = document_reference(u, &cda(100 + i as u64), &[]);
            [(u.clone(), body.clone()), (u.clone(), body)]
        })
        .collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|(u, b)| {
        let t = &t;
        async move {
            let r = submit(t, b).await;
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            (u.clone(), status, v)
        }
    }))
    .await;
    for uid in &uids {
        let mut statuses: Vec<u16> = answers
            .iter()
            .filter(|(u, _, _)| u == uid)
            .map(|(_, s, v)| {
                assert_eq!(v["id"], json!(uid), "{v}");
                s.as_u16()
            })
            .collect();
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 201], "answers for {uid}");
        assert_eq!(
            t.gw.store.outbox_for(uid).await.unwrap().len(),
            1,
            "outbox of {uid}"
        );
        let events = t.gw.store.document_events(uid).await.unwrap();
        assert!(!events.is_empty(), "history of {uid}");
    }
    for uid in &uids {
        wait_status(&t, uid, "registered", 30).await;
        assert_eq!(sim.registrations(uid), 1, "registrations of {uid}");
    }
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_intakes_are_written_together_and_replays_collapse_postgres() {
    concurrent_intakes_are_written_together_and_replays_collapse(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_intakes_are_written_together_and_replays_collapse_sqlite() {
    concurrent_intakes_are_written_together_and_replays_collapse(Backend::Sqlite).await
}

async fn concurrent_reruns_queue_one_registration(backend: Backend) {
    // Delivery is off: the document stays where the test puts it.
    let Setup { t, sim } = setup_with(backend, RemdSimConfig::default(), vec![1], 30, |s| {
        if let Some(r) = s.remd.as_mut() {
            r.deliver = false;
        }
    })
    .await;
    let uid = uuid::Uuid::new_v4().to_string();
    let rerun = |token: &'static str| {
        let (http, url) = (
            t.http.clone(),
            t.url(&format!("/api/admin/documents/{uid}/rerun")),
        );
        async move {
            let r = http.post(url).bearer_auth(token).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        submit(&t, &document_reference(&uid, &cda(31), &[]))
            .await
            .status(),
        StatusCode::CREATED
    );
    // Queued, not refused: nothing to rerun, and nothing more is queued.
    let (s, v) = rerun(ADMIN_TOKEN).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_QUEUED")),
        "{v}"
    );
    // The registry refused it; two operators rerun it at the same moment.
    let refused = StatusChange {
        error_class: Some(ErrorClass::Data),
        ..StatusChange::to(DocumentStatus::Rejected, "refused (test)")
    };
    let store = &t.gw.store;
    assert!(store
        .update_document_status(&uid, &refused, medgate::model::time::now_ms())
        .await
        .unwrap());
    let (a, b) = futures_util::future::join(rerun(ADMIN_TOKEN), rerun(ADMIN_TOKEN)).await;
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::ACCEPTED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let loser = if a.0 == StatusCode::CONFLICT {
        a.1
    } else {
        b.1
    };
    assert_eq!(loser["error"], "ALREADY_QUEUED", "{loser}");
    let items = store.outbox_for(&uid).await.unwrap();
    assert_eq!(
        items.len(),
        2,
        "the intake's registration and one rerun: {items:?}"
    );
    // Registered documents are not rerun; unknown ones are not found.
    let done = StatusChange {
        emdr_id: Some("16.62.23.09.000000001".into()),
        ..StatusChange::to(DocumentStatus::Registered, "registered (test)")
    };
    store
        .update_document_status(&uid, &done, medgate::model::time::now_ms())
        .await
        .unwrap();
    let (s, v) = rerun(ADMIN_TOKEN).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("NOT_RERUNNABLE")),
        "{v}"
    );
    let unknown = t
        .http
        .post(t.url(&format!(
            "/api/admin/documents/{}/rerun",
            uuid::Uuid::new_v4()
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(store.outbox_for(&uid).await.unwrap().len(), 2);
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reruns_queue_one_registration_postgres() {
    concurrent_reruns_queue_one_registration(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reruns_queue_one_registration_sqlite() {
    concurrent_reruns_queue_one_registration(Backend::Sqlite).await
}

fn signer(name: &str) -> medgate::sign::LocalSigner {
    let dir = keys_dir();
    medgate::sign::LocalSigner::from_pem(
        &std::fs::read(format!("{dir}/{name}.key.pem")).unwrap(),
        &std::fs::read(format!("{dir}/{name}.cert.pem")).unwrap(),
        None,
    )
    .unwrap()
}

/// A SOAP envelope signed (WS-Security, over the Body) by key `name`.
fn signed(
    version: medgate::codec::soap::SoapVersion,
    header: &str,
    body: &str,
    name: &str,
) -> String {
    medgate::codec::xml::dsig::sign_envelope(
        version,
        header,
        body,
        &signer(name),
        &medgate::codec::xml::Limits::default(),
    )
    .unwrap()
}

/// The Fault's machine code.
fn fault_code(xml: &str) -> String {
    xml.split("<mg:code>")
        .nth(1)
        .and_then(|r| r.split("</mg:code>").next())
        .unwrap_or("")
        .to_string()
}

async fn signed_soap_is_verified_for_clients_and_the_registry(backend: Backend) {
    let dir = keys_dir();
    let trusted = format!("{dir}/org-ec.cert.pem");
    let client_cert = format!("{dir}/doctor-ec.cert.pem");
    let Setup { t, sim } = setup_with(
        backend,
        RemdSimConfig {
            callback_signer: Some(Arc::new(signer("org-ec"))),
            ..RemdSimConfig::default()
        },
        vec![1],
        30,
        move |s| {
            if let Some(r) = s.remd.as_mut() {
                r.callback_certificates = vec![trusted];
            }
            if let Some(c) = s.clients.iter_mut().find(|c| c.id == "clinic") {
                c.signing_certificate = Some(client_cert);
            }
        },
    )
    .await;
    use medgate::codec::soap::SoapVersion;
    // The registry's verdicts, signed with its trusted key, register documents.
    let uid = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        submit(&t, &document_reference(&uid, &cda(61), &[]))
            .await
            .status(),
        StatusCode::CREATED
    );
    wait_status(&t, &uid, "registered", 15).await;
    // Unsigned, untrusted and tampered verdicts are refused, saying why.
    let verdict = r#"<registerDocumentResult xmlns="http://egisz.rosminzdrav.ru/iehr/emdr/callback/"><relatesToMessage>urn:uuid:00000000-0000-0000-0000-000000000000</relatesToMessage><status>error</status></registerDocumentResult>"#;
    let callback = |body: String| {
        let (http, url) = (t.http.clone(), t.url("/soap/remd/callback"));
        async move {
            let r = http
                .post(url)
                .bearer_auth(REMD_TOKEN)
                .header("content-type", "application/soap+xml; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let unsigned = medgate::codec::soap::envelope(SoapVersion::V12, "", verdict);
    let (s, f) = callback(unsigned).await;
    assert_eq!(
        (s, fault_code(&f)),
        (StatusCode::FORBIDDEN, "UNSIGNED".into()),
        "{f}"
    );
    let (s, f) = callback(signed(SoapVersion::V12, "", verdict, "other-ec")).await;
    assert_eq!(
        (s, fault_code(&f)),
        (StatusCode::FORBIDDEN, "UNTRUSTED_CERTIFICATE".into()),
        "{f}"
    );
    let tampered = signed(SoapVersion::V12, "", verdict, "org-ec").replace(">error<", ">success<");
    let (_, f) = callback(tampered).await;
    assert_eq!(fault_code(&f), "DIGEST_MISMATCH", "{f}");
    // A signed one gets past the check (its message is unknown).
    let (s, f) = callback(signed(SoapVersion::V12, "", verdict, "org-ec")).await;
    assert_eq!(
        (s, fault_code(&f)),
        (StatusCode::BAD_REQUEST, "UNKNOWN_MESSAGE".into()),
        "{f}"
    );

    // The clinic signs its SOAP requests: unsigned or wrongly signed ones are refused.
    let status = format!(
        r#"<GetDocumentStatus xmlns="urn:medgate:documents:v1"><LocalUid>{uid}</LocalUid></GetDocumentStatus>"#
    );
    let soap = |body: String| {
        let (http, url) = (t.http.clone(), t.url("/soap/documents"));
        async move {
            let r = http
                .post(url)
                .bearer_auth(CLINIC_TOKEN)
                .header("content-type", "text/xml; charset=utf-8")
                .header(
                    "soapaction",
                    "\"urn:medgate:documents:v1/GetDocumentStatus\"",
                )
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (_, f) = soap(medgate::codec::soap::envelope(
        SoapVersion::V11,
        "",
        &status,
    ))
    .await;
    assert_eq!(fault_code(&f), "UNSIGNED", "{f}");
    let (_, f) = soap(signed(SoapVersion::V11, "", &status, "other-ec")).await;
    assert_eq!(fault_code(&f), "UNTRUSTED_CERTIFICATE", "{f}");
    let (s, answer) = soap(signed(SoapVersion::V11, "", &status, "doctor-ec")).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert!(answer.contains("<Status>registered</Status>"), "{answer}");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_soap_is_verified_for_clients_and_the_registry_postgres() {
    signed_soap_is_verified_for_clients_and_the_registry(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_soap_is_verified_for_clients_and_the_registry_sqlite() {
    signed_soap_is_verified_for_clients_and_the_registry(Backend::Sqlite).await
}
