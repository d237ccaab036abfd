//! Reference books (NSI), end to end: the `nsi-sync` job keeps every version of the
//! configured books from the reference-book simulator over HTTP and knows the current one;
//! drift in the simulator (a new version, a code renamed or removed in place) is picked up
//! by the next run and nothing else is fetched again; the books are served at
//! `/fhir/CodeSystem` and `/fhir/ValueSet/$expand`; documents and referrals citing codes the
//! kept books do not hold are refused naming the field; a failing or cut-off source fails
//! its run (recorded) and leaves the current versions as they were, and the next run
//! resumes where the cut-off load stopped.

use medgate::config::{NsiBookSettings, NsiSettings, Secret};
use medgate::model::nsi::{BOOK_DOCUMENT_KINDS, BOOK_ICD10, BOOK_ORGANIZATIONS, BOOK_SPECIALTIES};
use medgate::sim::nsi::{Faults, NsiSim};
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::access::{matrix_settings, referral_body, OWNER};
use crate::booking::Fx;
use crate::documents::{cda, document_reference};
use crate::support::*;

const KEY: &str = "test-nsi-user-key";

/// `[nsi]` for the simulator at `url`: `books` with the versions the registry accepts.
fn nsi(url: &str, books: &[(&str, Option<&[&str]>)]) -> NsiSettings {
    NsiSettings {
        url: url.to_string(),
        user_key: Secret::new(KEY),
        timeout_secs: 10,
        page_size: 500,
        attempts: 2,
        books: books
            .iter()
            .map(|(oid, accepts)| NsiBookSettings {
                oid: oid.to_string(),
                name: None,
                registry_accepts: accepts.map(|a| a.iter().map(|v| v.to_string()).collect()),
                code_column: None,
                display_column: None,
            })
            .collect(),
    }
}

const ALL_BOOKS: [&str; 4] = [
    BOOK_SPECIALTIES,
    BOOK_DOCUMENT_KINDS,
    BOOK_ICD10,
    BOOK_ORGANIZATIONS,
];

/// Runs `nsi-sync` by hand through the operators' API; its recorded run.
async fn run_sync(t: &TestGateway) -> Value {
    let r = t
        .http
        .post(t.url("/api/admin/jobs/nsi-sync/run"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A run by hand is its own tick: one a second after the last on a manual clock.
async fn run_after(t: &TestGateway, clock: &medgate::model::time::ManualClock) -> Value {
    clock.advance(std::time::Duration::from_secs(1));
    run_sync(t).await
}

async fn get(t: &TestGateway, path: &str) -> (StatusCode, Value) {
    let r = t.get_admin(path).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The `(code, field)` an OperationOutcome names.
fn fault(v: &Value) -> (&str, &str) {
    let issue = &v["issue"][0];
    (
        issue["details"]["coding"][0]["code"].as_str().unwrap_or(""),
        issue["expression"][0].as_str().unwrap_or(""),
    )
}

/// `(version, current)` of the fully loaded versions kept of `oid`.
async fn kept(t: &TestGateway, oid: &str) -> Vec<(String, bool)> {
    t.gw.store
        .nsi_versions(Some(oid))
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.loaded)
        .map(|v| (v.version, v.current))
        .collect()
}

fn current(kept: &[(String, bool)]) -> Option<&str> {
    kept.iter().find(|(_, c)| *c).map(|(v, _)| v.as_str())
}

fn displays(expansion: &Value) -> Vec<(String, String)> {
    expansion["expansion"]["contains"]
        .as_array()
        .unwrap_or_else(|| panic!("{expansion}"))
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_string(),
                c["display"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn the_sync_keeps_every_version_and_picks_up_drift(backend: Backend) {
    let sim = NsiSim::start(KEY).unwrap();
    let url = sim.url.clone();
    let books: Vec<(&str, Option<&[&str]>)> = ALL_BOOKS.iter().map(|b| (*b, None)).collect();
    let t = TestGateway::start_with(backend, |s| s.nsi = Some(nsi(&url, &books))).await;

    // Every version of every book, the latest current.
    let run = run_sync(&t).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    let published: usize = ALL_BOOKS
        .iter()
        .flat_map(|b| sim.versions(b).into_iter().map(move |v| (b, v)))
        .map(|(b, v)| sim.rows(b, &v))
        .sum();
    assert_eq!(run["found"].as_u64(), Some(published as u64), "{run}");
    assert!(published > 45_000, "{published} rows");
    for book in ALL_BOOKS {
        let held = kept(&t, book).await;
        let versions: Vec<String> = held.iter().map(|(v, _)| v.clone()).collect();
        assert_eq!(versions, sim.versions(book), "{book}");
        assert_eq!(
            current(&held),
            sim.versions(book).last().map(String::as_str)
        );
    }
    let icd = sim.versions(BOOK_ICD10);
    let latest_icd = icd.last().unwrap().clone();
    assert!((16_000..=18_500).contains(&sim.rows(BOOK_ICD10, &latest_icd)));

    // Drift: a new version with a code renamed and one removed; a code renamed in place in
    // an old version of another book.
    assert!(sim.publish(BOOK_DOCUMENT_KINDS, "5.14"));
    assert!(sim.rename(
        BOOK_DOCUMENT_KINDS,
        "5.14",
        "4",
        "Protocol of instrumental examination (revised)"
    ));
    assert!(sim.remove(BOOK_DOCUMENT_KINDS, "5.14", "40"));
    assert!(sim.rename(BOOK_SPECIALTIES, "4.12", "27", "therapy (renamed in place)"));
    let before = sim.requests();
    let run = run_sync(&t).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    // Only what changed was fetched again: one page of 5.14, one of 4.12.
    assert_eq!(sim.requests().data - before.data, 2, "{:?}", sim.requests());
    assert_eq!(run["found"].as_u64(), Some(49 + 110), "{run}");
    let kinds = kept(&t, BOOK_DOCUMENT_KINDS).await;
    assert_eq!(kinds.len(), 4);
    assert_eq!(current(&kinds), Some("5.14"));

    // Served over HTTP: the current version by default, the old ones still there.
    let kinds_url = format!("urn:oid:{BOOK_DOCUMENT_KINDS}");
    let (s, v) = get(
        &t,
        &format!("/fhir/ValueSet/$expand?url={kinds_url}&filter=revised"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], "5.14");
    assert_eq!(v["expansion"]["total"], 1);
    assert_eq!(
        displays(&v),
        [(
            "4".to_string(),
            "Protocol of instrumental examination (revised)".to_string()
        )]
    );
    let (_, v) = get(
        &t,
        &format!("/fhir/ValueSet/$expand?url={kinds_url}&valueSetVersion=5.12&filter=INSTRUMENTAL"),
    )
    .await;
    assert_eq!(
        displays(&v),
        [(
            "4".to_string(),
            "Protocol of instrumental examination".to_string()
        )],
        "{v}"
    );
    for (version, left) in [("5.13", 1), ("5.14", 0)] {
        let (_, v) = get(
            &t,
            &format!(
                "/fhir/ValueSet/$expand?url={kinds_url}&valueSetVersion={version}&filter=kind%2040"
            ),
        )
        .await;
        assert_eq!(v["expansion"]["total"], left, "{version}: {v}");
    }
    let (s, v) = get(&t, &format!("/fhir/CodeSystem/{BOOK_SPECIALTIES}-4.12")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["content"], &v["count"], &v["version"]),
        (&json!("complete"), &json!(110), &json!("4.12"))
    );
    let therapy = v["concept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "27")
        .unwrap();
    assert_eq!(therapy["display"], "therapy (renamed in place)");
    let (_, v) = get(&t, &format!("/fhir/CodeSystem/{BOOK_SPECIALTIES}-4.11")).await;
    let therapy = v["concept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "27")
        .unwrap();
    assert_eq!(therapy["display"], "therapy");
    let (_, v) = get(&t, &format!("/fhir/CodeSystem?url={kinds_url}")).await;
    let ids: Vec<&str> = v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{v}");
    let (_, v) = get(
        &t,
        &format!("/fhir/CodeSystem?url={kinds_url}&version=5.12"),
    )
    .await;
    assert_eq!(v["entry"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["entry"][0]["resource"]["content"], "not-present");
    // ICD-10 is paged, never sent whole.
    let (_, v) = get(&t, &format!("/fhir/CodeSystem/{BOOK_ICD10}-{latest_icd}")).await;
    assert_eq!(v["content"], "not-present", "{}", v["content"]);
    assert_eq!(
        v["count"].as_u64(),
        Some(sim.rows(BOOK_ICD10, &latest_icd) as u64)
    );
    assert!(v.get("concept").is_none());
    let icd_url = format!("urn:oid:{BOOK_ICD10}");
    let page =
        |offset: u32| format!("/fhir/ValueSet/$expand?url={icd_url}&count=5&offset={offset}");
    let (_, first) = get(&t, &page(100)).await;
    let (_, next) = get(&t, &page(105)).await;
    assert_eq!(
        first["expansion"]["total"].as_u64(),
        Some(sim.rows(BOOK_ICD10, &latest_icd) as u64)
    );
    assert_eq!(first["expansion"]["offset"], 100);
    let (a, b) = (displays(&first), displays(&next));
    assert_eq!((a.len(), b.len()), (5, 5));
    assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
    let (_, v) = get(
        &t,
        &format!("/fhir/ValueSet/$expand?url={icd_url}&filter=I21&count=50"),
    )
    .await;
    let codes: Vec<String> = displays(&v).into_iter().map(|(c, _)| c).collect();
    assert_eq!(codes.first().map(String::as_str), Some("I21"), "{codes:?}");
    assert!(codes.contains(&"I21.4".to_string()));
    assert_eq!(v["expansion"]["total"].as_u64(), Some(codes.len() as u64));

    // Valid FHIR R4 (checked by an independent model).
    let read = |path: String| {
        let t = &t;
        async move { get(t, &path).await.1 }
    };
    crate::schedules::validate_fhir(&[
        read(format!("/fhir/CodeSystem/{BOOK_SPECIALTIES}-4.12")).await,
        read(format!("/fhir/CodeSystem/{BOOK_ICD10}-{latest_icd}")).await,
        read(format!("/fhir/CodeSystem?url={kinds_url}")).await,
        read(format!(
            "/fhir/ValueSet/$expand?url={icd_url}&filter=I21&count=3"
        ))
        .await,
    ]);

    // Bad parameters are named.
    for (path, status, code, field) in [
        ("/fhir/ValueSet/$expand".to_string(), 400, "REQUIRED", "url"),
        (
            "/fhir/ValueSet/$expand?url=1.2.3".to_string(),
            400,
            "INVALID_PARAMETER",
            "url",
        ),
        (
            format!("/fhir/ValueSet/$expand?url={icd_url}&count=0"),
            400,
            "INVALID_PARAMETER",
            "count",
        ),
        (
            format!("/fhir/ValueSet/$expand?url={icd_url}&offset=-1"),
            400,
            "INVALID_PARAMETER",
            "offset",
        ),
        (
            format!("/fhir/ValueSet/$expand?url={icd_url}&valueSetVersion=9.99"),
            404,
            "VALUESET_NOT_FOUND",
            "valueSetVersion",
        ),
        (
            "/fhir/ValueSet/$expand?url=urn:oid:1.2.3.4".to_string(),
            404,
            "VALUESET_NOT_FOUND",
            "url",
        ),
        (
            format!("/fhir/CodeSystem?url={icd_url}&colour=red"),
            400,
            "UNKNOWN_SEARCH_PARAMETER",
            "colour",
        ),
        (
            "/fhir/CodeSystem/no-such-book".to_string(),
            404,
            "CODESYSTEM_NOT_FOUND",
            "CodeSystem.id",
        ),
    ] {
        let (s, v) = get(&t, &path).await;
        assert_eq!(s.as_u16(), status, "{path}: {v}");
        let (c, f) = fault(&v);
        assert!(
            c == code || (code == "REQUIRED" && c.contains("REQUIRED")),
            "{path}: {v}"
        );
        assert_eq!(f, field, "{path}: {v}");
    }
    // A client without the scope is refused.
    let r = t
        .http
        .get(t.url(&format!("/fhir/ValueSet/$expand?url={icd_url}")))
        .bearer_auth(CLINIC_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Nothing changed: nothing is loaded again.
    let before = sim.requests();
    let run = run_sync(&t).await;
    assert_eq!(
        (&run["outcome"], &run["found"]),
        (&json!("ok"), &json!(0)),
        "{run}"
    );
    assert_eq!(sim.requests().data, before.data);
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_keeps_every_version_and_picks_up_drift_postgres() {
    the_sync_keeps_every_version_and_picks_up_drift(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_keeps_every_version_and_picks_up_drift_sqlite() {
    the_sync_keeps_every_version_and_picks_up_drift(Backend::Sqlite).await
}

/// The simulator's books with ICD-10 in its latest version only (a lighter start).
fn light_books() -> Vec<medgate::sim::nsi::SimBook> {
    let mut books = medgate::sim::nsi::federal_books();
    for b in books.iter_mut().filter(|b| b.oid == BOOK_ICD10) {
        let keep = b.versions.len() - 1;
        b.versions.drain(..keep);
    }
    books
}

/// A document of kind `code` in `version` of the kinds book, from the owner's clinic.
fn document(code: &str, version: &str, n: u64) -> Value {
    let doc = cda(n).replace(
        r#"code="4" codeSystem="1.2.643.5.1.13.13.11.1522" codeSystemVersion="5.12""#,
        &format!(
            r#"code="{code}" codeSystem="1.2.643.5.1.13.13.11.1522" codeSystemVersion="{version}""#
        ),
    );
    let mut v = document_reference(&uuid::Uuid::new_v4().to_string(), &doc, &[]);
    v["type"]["coding"][0]["code"] = json!(code);
    v["type"]["coding"][0]["version"] = json!(version);
    v
}

/// The owner submits a document of kind `code` in `version`.
async fn submit(fx: &Fx, code: &str, version: &str, n: u64) -> (StatusCode, Value) {
    fx.post(
        OWNER,
        "/fhir/DocumentReference",
        &document(code, version, n),
        None,
    )
    .await
}

async fn codes_are_checked_and_a_failing_source_corrupts_nothing(backend: Backend) {
    let sim = NsiSim::start_with(KEY, light_books()).unwrap();
    let url = sim.url.clone();
    let accepts: &[&str] = &["5.12", "5.13"];
    // The partner's breaker opens after the failures; its cool-down passes on this clock.
    let clock = medgate::model::time::ManualClock::new();
    let fx = Fx::start_clocked(backend, clock.clone(), |s| {
        matrix_settings(s);
        s.nsi = Some(nsi(
            &url,
            &[
                (BOOK_SPECIALTIES, None),
                (BOOK_DOCUMENT_KINDS, Some(accepts)),
                (BOOK_ICD10, None),
            ],
        ));
    })
    .await;
    let t = &fx.t;
    // Before the first sync nothing is kept: codes pass unchecked (the gateway cannot know).
    let (s, v) = submit(&fx, "999", "5.12", 61).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let run = run_after(t, &clock).await;
    assert_eq!(run["outcome"], "ok", "{run}");

    // Documents: a version the registry does not accept, a code not in the version.
    let (s, v) = submit(&fx, "4", "5.11", 62).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, field) = fault(&v);
    assert_eq!(code, "INVALID_DICTIONARY_VERSION", "{v}");
    assert!(field.starts_with("DocumentReference.type.coding[0]"), "{v}");
    assert!(field.contains("codeSystemVersion"), "{v}");
    let (s, v) = submit(&fx, "999", "5.12", 63).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(fault(&v).0, "INVALID_ELEMENT_VALUE_CODE", "{v}");
    assert!(
        fault(&v).1.starts_with("DocumentReference.type.coding[0]"),
        "{v}"
    );
    // 45 kinds in 5.12, 50 in 5.13.
    let (s, v) = submit(&fx, "48", "5.12", 64).await;
    assert_eq!(
        (s, fault(&v).0),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_ELEMENT_VALUE_CODE"
        ),
        "{v}"
    );
    for (code, version, n) in [("4", "5.12", 65), ("48", "5.13", 66)] {
        let (s, v) = submit(&fx, code, version, n).await;
        assert_eq!(s, StatusCode::CREATED, "{code} {version}: {v}");
    }

    // Referrals: a diagnosis not in ICD-10, a profile given as an unknown specialty code.
    let mut unknown = referral_body();
    unknown["reasonCode"][0]["coding"][0]["code"] = json!("A00.9");
    let (s, v) = fx.post(OWNER, "/fhir/ServiceRequest", &unknown, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        fault(&v),
        ("INVALID_ELEMENT_VALUE_CODE", "ServiceRequest.reasonCode"),
        "{v}"
    );
    assert!(
        v["issue"][0]["details"]["text"]
            .as_str()
            .unwrap()
            .contains("A00.9"),
        "{v}"
    );
    let mut profile = referral_body();
    profile["code"]["coding"][0]["code"] = json!("999");
    let (s, v) = fx.post(OWNER, "/fhir/ServiceRequest", &profile, None).await;
    assert_eq!(
        fault(&v),
        ("INVALID_ELEMENT_VALUE_CODE", "ServiceRequest.code"),
        "{s} {v}"
    );
    let mut known = referral_body();
    known["code"]["coding"][0]["code"] = json!("76");
    let (s, v) = fx.post(OWNER, "/fhir/ServiceRequest", &known, None).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The source fails: the run fails, recorded; the current versions stand.
    assert!(sim.publish(BOOK_DOCUMENT_KINDS, "5.14"));
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let run = run_after(t, &clock).await;
    assert_eq!(run["outcome"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("attempt 2 of 2"),
        "{error}"
    );
    assert!(!error.contains(KEY), "the user key stays secret: {error}");
    let runs = t.gw.store.job_runs("nsi-sync", 10).await.unwrap();
    assert_eq!(runs[0].outcome, medgate::model::job::RunOutcome::Failed);
    assert_eq!(current(&kept(t, BOOK_DOCUMENT_KINDS).await), Some("5.13"));
    clock.advance(medgate::exchange::partners::COOL_DOWN);

    // Cut off part way: ICD-10 publishes a new version and the source fails after five of
    // its pages. Nothing of it shows; the current version stands.
    let icd_latest = sim.versions(BOOK_ICD10).last().unwrap().clone();
    let rows = sim.rows(BOOK_ICD10, &icd_latest) as u64;
    assert!(sim.publish(BOOK_ICD10, "2.21"));
    sim.set_faults(Faults::default());
    let run = run_after(t, &clock).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    assert!(sim.publish(BOOK_ICD10, "2.22"));
    sim.set_faults(Faults {
        fail_data_after: Some(5),
        ..Faults::default()
    });
    let run = run_after(t, &clock).await;
    assert_eq!(run["outcome"], "failed", "{run}");
    assert_eq!(current(&kept(t, BOOK_ICD10).await), Some("2.21"));
    clock.advance(medgate::exchange::partners::COOL_DOWN);
    let icd_url = format!("urn:oid:{BOOK_ICD10}");
    let (s, v) = get(
        t,
        &format!("/fhir/ValueSet/$expand?url={icd_url}&valueSetVersion=2.22"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (_, v) = get(t, &format!("/fhir/ValueSet/$expand?url={icd_url}&count=1")).await;
    assert_eq!(
        (&v["version"], v["expansion"]["total"].as_u64()),
        (&json!("2.21"), Some(rows)),
        "{v}"
    );
    let (_, v) = get(t, &format!("/fhir/CodeSystem?url={icd_url}")).await;
    assert_eq!(
        v["entry"].as_array().unwrap().len(),
        2,
        "the half-loaded version is not listed: {v}"
    );
    // Codes are still checked against the current version meanwhile.
    let (s, _) = fx.post(OWNER, "/fhir/ServiceRequest", &unknown, None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // The source recovers: the load resumes after the five pages it had.
    sim.set_faults(Faults::default());
    let before = sim.requests();
    let run = run_after(t, &clock).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    let pages = rows.div_ceil(500);
    assert_eq!(
        sim.requests().data - before.data,
        pages - 5,
        "resumed, not started over"
    );
    assert_eq!(current(&kept(t, BOOK_ICD10).await), Some("2.22"));
    let (_, v) = get(t, &format!("/fhir/ValueSet/$expand?url={icd_url}&count=1")).await;
    assert_eq!(
        (&v["version"], v["expansion"]["total"].as_u64()),
        (&json!("2.22"), Some(rows)),
        "{v}"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM nsi_entries WHERE oid = $1 AND version = '2.22'")
            .bind(BOOK_ICD10)
            .fetch_one(t.gw.store.pool())
            .await
            .unwrap();
    assert_eq!(stored as u64, rows, "no row twice, none missing");
    sim.stop().await;
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_checked_and_a_failing_source_corrupts_nothing_postgres() {
    codes_are_checked_and_a_failing_source_corrupts_nothing(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_checked_and_a_failing_source_corrupts_nothing_sqlite() {
    codes_are_checked_and_a_failing_source_corrupts_nothing(Backend::Sqlite).await
}

/// A wrong user key is the service's refusal, not retried, and named in the failed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_user_key_fails_the_run_without_retries() {
    let sim = NsiSim::start("another-key").unwrap();
    let url = sim.url.clone();
    let t = TestGateway::start_with(Backend::Sqlite, |s| {
        s.nsi = Some(nsi(&url, &[(BOOK_SPECIALTIES, None)]))
    })
    .await;
    let run = run_sync(&t).await;
    assert_eq!(run["outcome"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("refused") && error.contains("attempt 1 of 2"),
        "{error}"
    );
    assert_eq!(sim.requests().versions, 1);
    assert!(kept(&t, BOOK_SPECIALTIES).await.is_empty());
    sim.stop().await;
    t.stop().await;
}

/// `medgate job run nsi-sync --config FILE` keeps the configured books from the command
/// line, as a replica would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_runs_from_the_command_line() {
    let sim = NsiSim::start(KEY).unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medgate.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n\n[nsi]\nurl = \"{}\"\nuser_key = \"{KEY}\"\n\n\
             [[nsi.books]]\noid = \"{BOOK_SPECIALTIES}\"\n\n\
             [[nsi.books]]\noid = \"{BOOK_DOCUMENT_KINDS}\"\nregistry_accepts = [\"5.12\"]\n",
            db.url, sim.url
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_medgate"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MEDGATE_")) {
            cmd.env_remove(k);
        }
        cmd.args(["job", "run", "nsi-sync", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nsi-sync: ok"), "{text}");
    for book in [BOOK_SPECIALTIES, BOOK_DOCUMENT_KINDS] {
        let held: Vec<String> = store
            .nsi_versions(Some(book))
            .await
            .unwrap()
            .into_iter()
            .filter(|v| v.loaded)
            .map(|v| v.version)
            .collect();
        assert_eq!(held, sim.versions(book), "{book}");
    }
    let runs = store.job_runs("nsi-sync", 10).await.unwrap();
    assert!(
        runs.len() == 1 && runs[0].kind == medgate::model::job::RunKind::Manual,
        "{runs:?}"
    );
    sim.stop().await;
}
