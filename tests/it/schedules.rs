//! Schedule sync from the city MIS simulator: full sync (idempotent, bulk), withdrawn slots
//! through the change feed, MIS faults leaving the store unchanged, outbound calls logged.

use medgate::store::Backend;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use medgate::adapters::emias::EmiasClient;
use medgate::services::schedule_sync::{full_sync, incremental_sync, SyncError};
use medgate::sim::emias::{EmiasSim, Faults, Region};
use medgate::store::schedules::SlotQuery;

use crate::support::*;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap() // a Monday
}

fn region() -> Region {
    Region {
        clinics: 2,
        doctors: 6,
        days: 7,
        slots_per_day: 4,
        slot_minutes: 20,
        first_day: first_day(),
    }
}

async fn full_and_incremental_sync(backend: Backend) {
    let t = TestGateway::start(backend).await;
    let sim = EmiasSim::start(region()).unwrap();
    let client = EmiasClient::new(&sim.url, Duration::from_secs(2), t.gw.state.txlog.clone());
    let store = &t.gw.store;
    let oid = medgate::model::Oid::parse_organization("1.2.643.5.1.13.13.12.2.77.7001").unwrap();
    let org = &oid;
    // 3 doctors in this clinic, 6 working days (Sunday off) of 4 slots.
    assert_eq!(store.latest_full_sync().await.unwrap(), None);
    let before = medgate::model::time::now_ms();
    let r = full_sync(
        store,
        &client,
        org,
        first_day(),
        7,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.practitioners, r.slots, r.withdrawn), (3, 72, 0));
    // Recorded, so a running gateway's next round checks every appointment.
    assert!(store
        .latest_full_sync()
        .await
        .unwrap()
        .is_some_and(|t| t >= before));
    let again = full_sync(
        store,
        &client,
        org,
        first_day(),
        7,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(again, r, "a second full sync changes nothing");
    let counts = store.slot_counts(Some(org)).await.unwrap();
    assert_eq!(counts, vec![("free".to_string(), 72)]);

    // The doctor falls ill on Tuesday: the change feed withdraws the day's slots.
    let doctor = &sim.doctors(org.as_str())[0];
    assert_eq!(sim.withdraw_day(&doctor.id, first_day() + Days::new(1)), 4);
    let inc = incremental_sync(store, &client, medgate::model::time::now_ms())
        .await
        .unwrap();
    assert_eq!(inc.withdrawn, 4);
    assert_eq!(
        incremental_sync(store, &client, medgate::model::time::now_ms())
            .await
            .unwrap()
            .withdrawn,
        0,
        "token advanced"
    );
    let withdrawn = store
        .search_slots(
            &SlotQuery {
                status: Some(medgate::model::schedule::SlotStatus::Withdrawn),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(withdrawn.len(), 4);
    assert!(withdrawn
        .iter()
        .all(|s| s.practitioner_id == format!("emias:{}", doctor.id)));

    // Keyset paging returns every slot once, in time order.
    let mut seen = Vec::new();
    let mut q = SlotQuery {
        org: Some(oid.clone()),
        ..Default::default()
    };
    loop {
        let page = store.search_slots(&q, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        q.after = Some((last.start_at, last.id.clone()));
        seen.extend(page.into_iter().map(|s| (s.start_at, s.id)));
    }
    assert_eq!(seen.len(), 72);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // MIS failure: a typed error, nothing withdrawn or changed.
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let err = full_sync(
        store,
        &client,
        org,
        first_day(),
        7,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SyncError::Source(ref m) if m.contains("INTERNAL_ERROR")),
        "{err}"
    );
    sim.set_faults(Faults {
        timeout_rate: 1.0,
        hang: Duration::from_secs(3),
        ..Faults::default()
    });
    let err = full_sync(
        store,
        &client,
        org,
        first_day(),
        7,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SyncError::Source(ref m) if m.contains("did not answer")),
        "{err}"
    );
    assert_eq!(
        store.slot_counts(Some(org)).await.unwrap(),
        vec![("free".to_string(), 68), ("withdrawn".to_string(), 4)]
    );

    // Outbound calls are in the transaction log.
    let calls: serde_json::Value = t
        .get_admin("/api/admin/transactions?operation=emias.GetSchedule")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        calls["count"], 2,
        "one page per successful full sync: {calls}"
    );
    assert_eq!(calls["items"][0]["direction"], "outbound");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_sync_postgres() {
    full_and_incremental_sync(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_sync_sqlite() {
    full_and_incremental_sync(Backend::Sqlite).await
}

/// Where R4 lets each reference the gateway emits point: (resource type, element path,
/// target types). `#id` points into `contained`.
const REFERENCE_TARGETS: &[(&str, &str, &[&str])] = &[
    ("Schedule", "actor", ACTORS),
    ("Appointment", "participant.actor", ACTORS),
    ("Appointment", "slot", &["Slot"]),
    ("Slot", "schedule", &["Schedule"]),
    ("PractitionerRole", "practitioner", &["Practitioner"]),
    ("PractitionerRole", "organization", &["Organization"]),
    ("PractitionerRole", "location", &["Location"]),
    ("Location", "managingOrganization", &["Organization"]),
    ("DocumentReference", "custodian", &["Organization"]),
    (
        "ServiceRequest",
        "subject",
        &["Patient", "Group", "Location", "Device"],
    ),
    (
        "ServiceRequest",
        "requester",
        &[
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "Patient",
            "RelatedPerson",
            "Device",
        ],
    ),
    (
        "ServiceRequest",
        "performer",
        &[
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam",
            "HealthcareService",
            "Patient",
            "Device",
            "RelatedPerson",
        ],
    ),
    // Reference(Any) in R4: the kinds the gateway attaches.
    ("ServiceRequest", "supportingInfo", &["DocumentReference"]),
    ("Task", "basedOn", &["ServiceRequest"]),
    ("Communication", "subject", &["Patient", "Group"]),
    // Reference(Any) in R4: the gateway points at what the appeal concerns.
    ("Communication", "about", &["Appointment", "ServiceRequest"]),
    ("Task", "focus", &["ServiceRequest"]),
    (
        "Task",
        "requester",
        &[
            "Device",
            "Organization",
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "RelatedPerson",
        ],
    ),
    (
        "Task",
        "owner",
        &[
            "Practitioner",
            "PractitionerRole",
            "Organization",
            "CareTeam",
            "HealthcareService",
            "Patient",
            "Device",
            "RelatedPerson",
        ],
    ),
    ("Task", "output.valueReference", &["DocumentReference"]),
    ("Task", "input.valueReference", &["Appointment"]),
];

/// What `Schedule.actor` and `Appointment.participant.actor` may reference in R4.
const ACTORS: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Device",
    "HealthcareService",
    "Location",
];

/// Every `reference` in `v` with its element path (array positions dropped).
fn references(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(r) = m.get("reference").and_then(|r| r.as_str()) {
                out.push((path.to_string(), r.to_string()));
            }
            for (k, x) in m {
                // Contained resources are checked as resources of their own.
                if k != "contained" {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    references(x, &p, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| references(x, path, out)),
        _ => {}
    }
}

/// Checks that each reference of `resource` (and of a Bundle's entries) points at a type R4
/// allows there; a reference at a path without a rule fails too.
pub fn check_reference_targets(resource: &serde_json::Value) {
    let kind = resource["resourceType"].as_str().unwrap_or_default();
    if kind == "Bundle" {
        for e in resource["entry"].as_array().into_iter().flatten() {
            check_reference_targets(&e["resource"]);
        }
        return;
    }
    let mut refs = Vec::new();
    references(resource, "", &mut refs);
    for (path, reference) in refs {
        let path = path.trim_end_matches(".reference").to_string();
        let (_, _, allowed) = REFERENCE_TARGETS
            .iter()
            .find(|(k, p, _)| *k == kind && *p == path)
            .unwrap_or_else(|| panic!("no R4 rule for {kind}.{path} ({reference})"));
        let target = match reference.strip_prefix('#') {
            Some(id) => resource["contained"]
                .as_array()
                .and_then(|c| c.iter().find(|r| r["id"] == id))
                .and_then(|r| r["resourceType"].as_str())
                .unwrap_or_else(|| panic!("{kind}.{path}: no contained {reference}"))
                .to_string(),
            None => reference.split('/').next().unwrap_or_default().to_string(),
        };
        assert!(
            allowed.contains(&target.as_str()),
            "{kind}.{path} may not reference {target} in R4 ({reference}); allowed: {allowed:?}"
        );
    }
}

/// Validates FHIR resources with PyPI's `fhir.resources` (its R4B models: the revision of
/// R4 the package ships; these resources are structurally the same), and checks that their
/// references point where R4 allows.
pub fn validate_fhir(resources: &[serde_json::Value]) {
    for r in resources {
        check_reference_targets(r);
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, r) in resources.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.json")), r.to_string()).unwrap();
    }
    let script = format!(
        "import json, glob\nfrom fhir.resources.R4B import get_fhir_model_class\nn = 0\nfor f in sorted(glob.glob('{}/*.json')):\n    d = json.load(open(f))\n    get_fhir_model_class(d['resourceType']).model_validate(d)\n    n += 1\nprint(n)\n",
        dir.path().display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "invalid FHIR: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        resources.len().to_string()
    );
}

#[test]
fn reference_rules_catch_an_organization_as_an_actor() {
    let ok =
        serde_json::json!({"resourceType": "Schedule", "actor": [{"reference": "Location/1.2.3"}]});
    check_reference_targets(&ok);
    let bad = serde_json::json!({"resourceType": "Schedule", "actor": [{"reference": "Organization/1.2.3"}]});
    assert!(std::panic::catch_unwind(|| check_reference_targets(&bad)).is_err());
    let unknown = serde_json::json!({"resourceType": "Slot", "comment": {"reference": "Slot/x"}});
    assert!(std::panic::catch_unwind(|| check_reference_targets(&unknown)).is_err());
    let contained = serde_json::json!({"resourceType": "Appointment",
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "participant": [{"actor": {"reference": "#p"}}]});
    check_reference_targets(&contained);
}

async fn fhir_slot_search(backend: Backend) {
    use reqwest::StatusCode;
    use serde_json::Value;
    let t = TestGateway::start(backend).await;
    let sim = EmiasSim::start(region()).unwrap();
    let client = EmiasClient::new(&sim.url, Duration::from_secs(2), t.gw.state.txlog.clone());
    let org = "1.2.643.5.1.13.13.12.2.77.7002";
    full_sync(
        &t.gw.store,
        &client,
        &medgate::model::Oid::parse_organization(org).unwrap(),
        first_day(),
        7,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap();
    let get = |path: String| {
        let http = t.http.clone();
        let url = t.url(&path);
        async move {
            http.get(url)
                .bearer_auth(PORTAL_TOKEN)
                .send()
                .await
                .unwrap()
        }
    };
    // One day of one clinic: 3 doctors x 4 slots, paged by 5.
    let mut next = Some(format!(
        "/fhir/Slot?organization=Organization/{org}&start=ge2026-11-24&start=lt2026-11-25&_count=5"
    ));
    let mut slots: Vec<Value> = Vec::new();
    let mut pages = 0;
    while let Some(path) = next {
        let r = get(path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["type"], "searchset");
        slots.extend(
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"].clone()),
        );
        next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| {
                l["url"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches(&t.gw.url())
                    .to_string()
            });
        pages += 1;
    }
    assert_eq!((slots.len(), pages), (12, 3));
    assert!(slots
        .iter()
        .all(|s| s["start"].as_str().unwrap().starts_with("2026-11-24")));
    // Channels are carried; the first slot of each doctor's day is kept off the internet.
    assert!(slots.iter().any(|s| !s["extension"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["valueCode"] == "internet")));
    // Filter by practitioner and status: 6 working days x 4 slots.
    let practitioner = slots[0]["schedule"]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("Schedule/")
        .to_string();
    let b: Value = get(format!(
        "/fhir/Slot?practitioner=Practitioner/{practitioner}&status=free&_count=100"
    ))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(b["entry"].as_array().unwrap().len(), 24);
    let prs: Value = get(format!("/fhir/Practitioner?organization={org}"))
        .await
        .json()
        .await
        .unwrap();
    let practitioners: Vec<Value> = prs["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    assert_eq!(practitioners.len(), 3);
    let mut all = slots.clone();
    all.extend(practitioners);
    all.push(prs.clone());
    all.push(get("/fhir/metadata".into()).await.json().await.unwrap());
    // The directory around the slots: schedules, roles, the clinic and its place of care.
    for path in [
        format!("/fhir/Schedule?organization={org}"),
        format!("/fhir/PractitionerRole?organization={org}"),
        format!("/fhir/Location?organization={org}"),
        format!("/fhir/Location/{org}"),
        format!("/fhir/Organization/{org}"),
        "/fhir/Location?_count=2".to_string(),
    ] {
        let r = get(path.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        all.push(r.json().await.unwrap());
    }
    let schedules = &all[all.len() - 6];
    assert_eq!(schedules["entry"].as_array().unwrap().len(), 3);
    assert_eq!(
        schedules["entry"][0]["resource"]["actor"][1]["reference"],
        format!("Location/{org}")
    );
    let located: Value = get(format!("/fhir/Schedule?actor=Location/{org}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(located["entry"].as_array().unwrap().len(), 3);
    let location = &all[all.len() - 3];
    assert_eq!(
        (
            location["id"].as_str(),
            location["managingOrganization"]["reference"].as_str()
        ),
        (Some(org), Some(format!("Organization/{org}").as_str()))
    );
    let r = get("/fhir/Location/1.2.643.5.1.13.13.12.2.77.9999".into()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    validate_fhir(&all);

    // Bad input names the parameter.
    for (query, field) in [
        ("start=tomorrow", "start"),
        ("organization=clinic-7", "organization"),
        ("_count=0", "_count"),
        ("status=maybe", "status"),
        ("start=ge2026-11-25&start=lt2026-11-24", "start"),
        ("_cursor=%25%25%25", "_cursor"),
        ("colour=red", "colour"),
    ] {
        let r = get(format!("/fhir/Slot?{query}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
        let o: Value = r.json().await.unwrap();
        assert_eq!(o["issue"][0]["expression"][0], field, "{query}: {o}");
    }
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_slot_search_postgres() {
    fhir_slot_search(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_slot_search_sqlite() {
    fhir_slot_search(Backend::Sqlite).await
}
