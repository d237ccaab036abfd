//! `medgate bench referrals`: referrals created and answered per second inside a region. A
//! referring clinic's doctors send tele-consultation referrals through FHIR to a target
//! whose acceptance rules are checked on each, then the target accepts each through its
//! Task (closed loop, a fixed number of connections), on a fresh PostgreSQL database.
//! With `--peer` the referring clinic is in another region: two gateways (each its own
//! database) linked over mutual TLS; each creation is forwarded to the target's gateway
//! within the request, and each acceptance travels back through the outbox.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{client, gateway_settings, ms, percentile, BenchDb, ORG};
use crate::app::Gateway;
use crate::config::AcceptanceRuleSettings;

/// The target of the referrals (a seeded organization of the demo region).
const TARGET: &str = "1.2.643.5.1.13.13.12.2.77.7012";
const REFERRER_TOKEN: &str = "bench-referrer-token";
const TARGET_TOKEN: &str = "bench-target-token";

/// Options of `medgate bench referrals`.
#[derive(Debug, Clone)]
pub struct ReferralBench {
    /// PostgreSQL URL allowed to create a database (a fresh one is made and dropped).
    pub pg_admin_url: String,
    /// Referrals to create (and accept).
    pub count: usize,
    /// Concurrent connections (closed loop).
    pub concurrency: usize,
    /// Across a peer link: the referring clinic in region 78, the target in region 77.
    pub across_peer: bool,
}

/// The referring clinic of the cross-region run (region 78).
const REMOTE_REFERRER: &str = "1.2.643.5.1.13.13.12.2.78.8001";

/// Runs the benchmark: creation, then acceptance, each measured on its own.
pub async fn referrals(opts: ReferralBench) -> Result<String, String> {
    if opts.count == 0 || opts.concurrency == 0 {
        return Err("count and concurrency must be above 0".into());
    }
    let db = BenchDb::create(&opts.pg_admin_url).await?;
    let result = if opts.across_peer {
        match BenchDb::create(&opts.pg_admin_url).await {
            Ok(second) => {
                let r = across(&opts, &db.url, &second.url).await;
                second.drop().await;
                r
            }
            Err(e) => Err(e),
        }
    } else {
        run(&opts, &db.url).await
    };
    db.drop().await;
    result
}

/// The target's rules: circulatory diseases, tele-consultations, no documents required.
fn target_rules() -> Vec<AcceptanceRuleSettings> {
    vec![AcceptanceRuleSettings {
        org: TARGET.into(),
        name: "diseases of the circulatory system".into(),
        kinds: vec!["teleconsultation".into()],
        diagnoses: vec!["I00-I99".into()],
        profiles: Vec::new(),
        answer_within_hours: None,
        required_documents: Vec::new(),
    }]
}

/// A gateway on `s`, its database migrated and seeded.
async fn start(s: crate::config::Settings) -> Result<Gateway, String> {
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    crate::demo::seed(&store).await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Gateway::start_on(s, store, listener, crate::model::time::system_clock())
        .await
        .map_err(|e| e.to_string())
}

fn http_client(concurrency: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

fn line(what: &str, n: usize, t: Duration, l: &[Duration]) -> String {
    format!(
        "{what}: {n} in {:.2} s = {:.0}/s; latency p50/p99/max: {:.2} / {:.2} / {:.2} ms",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64().max(1e-9),
        ms(percentile(l, 0.50)),
        ms(percentile(l, 0.99)),
        ms(percentile(l, 1.0)),
    )
}

/// Two regions' gateways linked as peers: referrals created in region 78 for region 77's
/// target, accepted there, the acceptances routed back.
async fn across(opts: &ReferralBench, db_77: &str, db_78: &str) -> Result<String, String> {
    use crate::sim::federation::{Member, Pki};
    let dir = tempfile_dir()?;
    let pki = Pki::create(&dir, &["msk", "spb"])?;
    let free = || -> Result<String, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr()
            .map(|a| a.to_string())
            .map_err(|e| e.to_string())
    };
    let members = [
        Member {
            name: "msk".into(),
            region: "77".into(),
            peer_bind: free()?,
        },
        Member {
            name: "spb".into(),
            region: "78".into(),
            peer_bind: free()?,
        },
    ];
    let mut s77 = gateway_settings(db_77);
    s77.clients = vec![client(
        "target",
        TARGET_TOKEN,
        &[TARGET],
        &["referral:write"],
    )];
    s77.referrals.rules = target_rules();
    s77.federation = Some(pki.settings(&members[0], &members));
    let mut s78 = gateway_settings(db_78);
    s78.clients = vec![client(
        "referrer",
        REFERRER_TOKEN,
        &[REMOTE_REFERRER],
        &["referral:write"],
    )];
    s78.federation = Some(pki.settings(&members[1], &members));
    let (msk, spb) = (start(s77).await?, start(s78).await?);
    let http = http_client(opts.concurrency)?;
    let (msk_url, spb_url) = (msk.url(), spb.url());
    for i in 0..opts.concurrency.min(opts.count) {
        let _ = create(&http, &spb_url, REMOTE_REFERRER, opts.count + i).await;
    }
    let (created, create_time, create_lat) = phase(opts, |i| {
        let (http, base) = (http.clone(), spb_url.clone());
        async move { create(&http, &base, REMOTE_REFERRER, i).await }
    })
    .await;
    let ids: Arc<Vec<String>> = Arc::new(created.into_iter().flatten().collect());
    let started = Instant::now();
    let (accepted, accept_time, accept_lat) = phase(
        &ReferralBench {
            count: ids.len(),
            ..opts.clone()
        },
        |i| {
            let (http, base, ids) = (http.clone(), msk_url.clone(), ids.clone());
            async move { accept(&http, &base, &ids[i]).await }
        },
    )
    .await;
    let accepted = accepted.into_iter().flatten().count();
    // Every acceptance back in region 78, through the outbox.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut back = 0;
    while Instant::now() < deadline {
        back = spb
            .store
            .count_referrals(crate::model::referral::ReferralStatus::Accepted)
            .await
            .map_err(|e| e.to_string())?
            .try_into()
            .unwrap_or(0);
        if back >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let routed_back = started.elapsed();
    msk.stop().await;
    spb.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "referrals across a peer link (region 78 -> 77, mutual TLS, two gateways, two PostgreSQL databases), {} connections\n{}\n{}\n\
         acceptances routed back to region 78 (outbox, one PUT Task each): {back} of {accepted} within {:.2} s of the first acceptance = {:.0}/s",
        opts.concurrency,
        line(
            "created in 78 and forwarded to 77 within the request",
            ids.len(),
            create_time,
            &create_lat
        ),
        line(
            "accepted by the target in 77 (PUT Task)",
            accepted,
            accept_time,
            &accept_lat
        ),
        routed_back.as_secs_f64(),
        back as f64 / routed_back.as_secs_f64().max(1e-9),
    ))
}

/// A fresh directory for the federation's certificates.
fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "medgate-bench-pki-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

async fn run(opts: &ReferralBench, db_url: &str) -> Result<String, String> {
    let mut s = gateway_settings(db_url);
    s.clients = vec![
        client("referrer", REFERRER_TOKEN, &[ORG], &["referral:write"]),
        client("target", TARGET_TOKEN, &[TARGET], &["referral:write"]),
    ];
    s.referrals.rules = target_rules();
    let gw = start(s).await?;
    let base = gw.url();
    let http = http_client(opts.concurrency)?;
    // Warm-up: connections, prepared statements.
    for i in 0..opts.concurrency.min(opts.count) {
        let _ = create(&http, &base, ORG, i).await;
    }
    let (created, create_time, create_lat) = phase(opts, |i| {
        let (http, base) = (http.clone(), base.clone());
        async move { create(&http, &base, ORG, i).await }
    })
    .await;
    let ids: Arc<Vec<String>> = Arc::new(created.into_iter().flatten().collect());
    let (accepted, accept_time, accept_lat) = phase(
        &ReferralBench {
            count: ids.len(),
            ..opts.clone()
        },
        |i| {
            let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
            async move { accept(&http, &base, &ids[i]).await }
        },
    )
    .await;
    gw.stop().await;
    let accepted = accepted.into_iter().flatten().count();
    Ok(format!(
        "referrals inside a region, {} connections, PostgreSQL, rules checked on each\n{}\n{}",
        opts.concurrency,
        line(
            "created (POST ServiceRequest)",
            ids.len(),
            create_time,
            &create_lat
        ),
        line(
            "accepted by the target (PUT Task)",
            accepted,
            accept_time,
            &accept_lat
        ),
    ))
}

/// Runs `count` calls of `call` on `concurrency` connections; the results in any order,
/// the elapsed time and the sorted latencies.
async fn phase<F, Fut, T>(opts: &ReferralBench, call: F) -> (Vec<T>, Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(opts.count)));
    let started = Instant::now();
    let results: Vec<T> = futures_util::stream::iter(0..opts.count)
        .map(|i| {
            let latencies = latencies.clone();
            let fut = call(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                if let Ok(mut l) = latencies.lock() {
                    l.push(t.elapsed());
                }
                r
            }
        })
        .buffer_unordered(opts.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    (results, elapsed, l)
}

/// Referral `i` from a doctor of `requester` (its patient named by a fake policy number
/// and a birth date); its id if created.
async fn create(http: &reqwest::Client, base: &str, requester: &str, i: usize) -> Option<String> {
    let body = json!({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "priority": "routine",
        "category": [{"coding": [{"system": crate::codec::fhir::referral::KIND_SYSTEM, "code": "teleconsultation"}]}],
        "code": {"coding": [{"system": crate::codec::fhir::referral::PROFILE_SYSTEM, "code": "cardiology"}]},
        "contained": [
            {"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01",
             "identifier": [{"system": crate::codec::fhir::POLICY_SYSTEM, "value": format!("77{:014}", i)}]},
            {"resourceType": "PractitionerRole", "id": "r",
             "practitioner": {"identifier": {"system": crate::codec::fhir::SNILS_SYSTEM, "value": "12345678964"}},
             "organization": {"reference": format!("Organization/{requester}")}},
        ],
        "subject": {"reference": "#p"}, "requester": {"reference": "#r"},
        "performer": [{"reference": format!("Organization/{TARGET}")}],
        "reasonCode": [{"coding": [{"system": crate::codec::fhir::referral::ICD10_SYSTEM, "code": "I20.8"}], "text": "bench"}],
    });
    let res = http
        .post(format!("{base}/fhir/ServiceRequest"))
        .bearer_auth(REFERRER_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if res.status().as_u16() != 201 {
        return None;
    }
    let v: Value = res.json().await.ok()?;
    v["id"].as_str().map(str::to_string)
}

async fn accept(http: &reqwest::Client, base: &str, id: &str) -> Option<()> {
    let res = http
        .put(format!("{base}/fhir/Task/{id}"))
        .bearer_auth(TARGET_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(r#"{"resourceType":"Task","status":"accepted","intent":"order"}"#)
        .send()
        .await
        .ok()?;
    (res.status().as_u16() == 200).then_some(())
}
