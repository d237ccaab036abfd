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
    let before = medgate::store::now_ms();
    let r = full_sync(store, &client, org, first_day(), 7, &|_| {})
        .await
        .unwrap();
    assert_eq!((r.practitioners, r.slots, r.withdrawn), (3, 72, 0));
    // Recorded, so a running gateway's next round checks every appointment.
    assert!(store
        .latest_full_sync()
        .await
        .unwrap()
        .is_some_and(|t| t >= before));
    let again = full_sync(store, &client, org, first_day(), 7, &|_| {})
        .await
        .unwrap();
    assert_eq!(again, r, "a second full sync changes nothing");
    let counts = store.slot_counts(Some(org)).await.unwrap();
    assert_eq!(counts, vec![("free".to_string(), 72)]);

    // The doctor falls ill on Tuesday: the change feed withdraws the day's slots.
    let doctor = &sim.doctors(org.as_str())[0];
    assert_eq!(sim.withdraw_day(&doctor.id, first_day() + Days::new(1)), 4);
    let inc = incremental_sync(store, &client).await.unwrap();
    assert_eq!(inc.withdrawn, 4);
    assert_eq!(
        incremental_sync(store, &client).await.unwrap().withdrawn,
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
    let err = full_sync(store, &client, org, first_day(), 7, &|_| {})
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
    let err = full_sync(store, &client, org, first_day(), 7, &|_| {})
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

/// Validates FHIR resources with PyPI's `fhir.resources` (its R4B models: the revision of
/// R4 the package ships; these resources are structurally the same).
pub fn validate_fhir(resources: &[serde_json::Value]) {
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
