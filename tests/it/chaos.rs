//! Chaos under load, on PostgreSQL: the database becomes unreachable for ten seconds and
//! comes back; a partner turns slow and failing while another stays healthy. The crash case
//! (kill -9 under mixed load) is `crash`.
//!
//! An open circuit breaker holds deliveries back without spending their attempts, for as
//! long as their retry schedule spans.
//!
//! The outage is made by a TCP proxy between the gateway and PostgreSQL that the test cuts
//! (every connection closed, new ones refused), so the server the other tests share stays up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::documents::{cda, document, document_reference, setup_with, status_of, Setup};
use crate::support::*;

/// A TCP proxy to one upstream that can be cut and restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a loopback port and forwards every connection to `upstream`.
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (cut, conns) = (cut.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        // Down: the connection is closed at once, as by a stopped server.
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    /// Closes every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Lets connections through again.
    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// `url` with its port replaced by `port`, and the `host:port` it named.
fn through(url: &str, port: u16) -> (String, String) {
    let mut u = url::Url::parse(url).unwrap();
    let upstream = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap_or(5432));
    u.set_port(Some(port)).unwrap();
    (u.to_string(), upstream)
}

/// What clients saw during the outage.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicUsize,
    retryable: AtomicUsize,
    other: Mutex<Vec<String>>,
    slowest_ms: AtomicUsize,
}

impl Answers {
    fn note(&self, what: &str, started: Instant, r: Result<reqwest::Response, reqwest::Error>) {
        self.slowest_ms
            .fetch_max(started.elapsed().as_millis() as usize, Ordering::Relaxed);
        match r {
            Ok(r) if r.status().is_success() => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r)
                if r.status() == StatusCode::SERVICE_UNAVAILABLE
                    && r.headers().contains_key("retry-after") =>
            {
                self.retryable.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => self
                .other
                .lock()
                .unwrap()
                .push(format!("{what}: {}", r.status())),
            Err(e) => self
                .other
                .lock()
                .unwrap()
                .push(format!("{what}: no answer: {e}")),
        }
    }
}

async fn ready(t: &TestGateway) -> StatusCode {
    match t.http.get(t.url("/readyz")).send().await {
        Ok(r) => r.status(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_away_for_ten_seconds_under_load_loses_nothing() {
    let (_, upstream) = through(&pg_admin_url(), 5432);
    let proxy = Proxy::start(upstream).await;
    let proxy_port = proxy.port;
    let Setup { t, sim } = setup_with(
        Backend::Postgres,
        medgate::sim::remd::RemdSimConfig::default(),
        vec![1, 1, 2, 2, 5, 5, 5, 5, 5, 5],
        // Verdict callbacks the registry gives up on during the outage are asked for once
        // this overdue.
        5,
        move |s| {
            s.database.url = through(&s.database.url, proxy_port).0;
            // A request waits at most this long for a connection before it is answered 503.
            s.database.acquire_timeout_secs = 2;
        },
    )
    .await;
    let t = Arc::new(t);
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let submit = |n: u64| {
        let (t, accepted) = (t.clone(), accepted.clone());
        async move {
            let uid = uuid::Uuid::new_v4().to_string();
            let started = Instant::now();
            let r = t
                .http
                .post(t.url("/fhir/DocumentReference"))
                .bearer_auth(CLINIC_TOKEN)
                .header("content-type", "application/fhir+json")
                .timeout(Duration::from_secs(30))
                .json(&document_reference(&uid, &cda(n), &[]))
                .send()
                .await;
            if matches!(&r, Ok(r) if r.status() == StatusCode::CREATED) {
                accepted.lock().unwrap().push(uid);
            }
            (started, r)
        }
    };
    let search = |t: Arc<TestGateway>| async move {
        let started = Instant::now();
        let r = t
            .http
            .get(t.url(&format!(
                "/fhir/Slot?organization={CLINIC_ORG}&status=free&_count=5"
            )))
            .bearer_auth(PORTAL_TOKEN)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        (started, r)
    };
    // Before: documents flow.
    for n in 0..20 {
        let (_, r) = submit(n).await;
        assert_eq!(r.unwrap().status(), StatusCode::CREATED);
    }

    // The database goes away for ten seconds while clients keep sending.
    proxy.cut();
    let during = Arc::new(Answers::default());
    let mut not_ready = false;
    let outage = Instant::now();
    let mut n = 100;
    while outage.elapsed() < Duration::from_secs(10) {
        let (a, b) = tokio::join!(submit(n), search(t.clone()));
        during.note("document", a.0, a.1);
        during.note("search", b.0, b.1);
        not_ready |= ready(&t).await == StatusCode::SERVICE_UNAVAILABLE;
        n += 1;
    }
    proxy.restore();
    let restored = Instant::now();

    // Recovery without a restart: ready again, documents accepted again.
    while ready(&t).await != StatusCode::OK {
        assert!(
            restored.elapsed() < Duration::from_secs(60),
            "not ready a minute after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered_in = restored.elapsed();
    for n in 1000..1020 {
        let (_, r) = submit(n).await;
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }
    // Nothing lost: every accepted document is registered, once.
    let accepted = accepted.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = 0;
        for uid in &accepted {
            if status_of(&document(&t, uid).await) != "registered" {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            let totals: Value = t
                .get_admin("/api/admin/documents?limit=1")
                .await
                .json()
                .await
                .unwrap();
            let outbox: Vec<(String, String, i32, Option<String>, i64)> = sqlx::query_as(
                "SELECT status, kind, attempts, last_error, next_attempt_at FROM outbox ORDER BY id DESC LIMIT 5",
            )
            .fetch_all(t.gw.store.pool())
            .await
            .unwrap();
            panic!(
                "{left} of {} accepted documents not registered: {} {outbox:?} {:?}",
                accepted.len(),
                totals["totals"],
                sim.counters()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for uid in &accepted {
        assert_eq!(sim.registrations(uid), 1, "{uid}");
    }
    let other = during.other.lock().unwrap().clone();
    eprintln!(
        "database outage of 10 s: {} answers during it ({} successes, {} 503 with Retry-After, {} else), slowest {} ms; ready again {:.1} s after; {} documents accepted, all registered once",
        during.ok.load(Ordering::Relaxed) + during.retryable.load(Ordering::Relaxed) + other.len(),
        during.ok.load(Ordering::Relaxed),
        during.retryable.load(Ordering::Relaxed),
        other.len(),
        during.slowest_ms.load(Ordering::Relaxed),
        recovered_in.as_secs_f64(),
        accepted.len(),
    );
    assert!(not_ready, "/readyz never said not ready during the outage");
    assert!(
        during.retryable.load(Ordering::Relaxed) > 0,
        "no retryable answer during the outage"
    );
    assert!(
        other.is_empty(),
        "answers that were not retryable: {other:?}"
    );
    sim.stop().await;
    drop(proxy);
    match Arc::try_unwrap(t) {
        Ok(t) => t.stop().await,
        Err(_) => panic!("gateway still shared"),
    }
}

/// Median of latencies.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let out = f.await;
    (started.elapsed(), out)
}

/// A partner at 2 s latency with 30% errors and some timeouts does not slow the traffic to
/// the others (bookings while the registry fails, document intake while the clinic system
/// fails), and everything queued for it ends delivered or dead-lettered with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_failing_partner_does_not_slow_the_others() {
    use crate::booking::{book, Fx};
    use crate::documents::registry_link;
    use medgate::model::schedule::Channel;
    use medgate::sim::remd::{CryptoCheck, RemdSim, RemdSimConfig};

    let registry = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(Arc::new(CryptoCheck)),
        ..RemdSimConfig::default()
    })
    .unwrap();
    let registry_url = registry.url.clone();
    let fx = Fx::start(Backend::Postgres, move |s| {
        if let Some(e) = s.emias.as_mut() {
            e.timeout_secs = 3;
        }
        registry_link(s, registry_url, vec![0, 1, 1, 2, 2], 5);
    })
    .await;
    let slots = fx.free(Channel::Internet).await;
    assert!(slots.len() >= 30, "{} free slots", slots.len());
    let uids: Arc<Mutex<Vec<String>>> = Arc::default();
    let submit = |n: u64| {
        let uids = uids.clone();
        let t = &fx.t;
        async move {
            let uid = uuid::Uuid::new_v4().to_string();
            let r = crate::documents::submit(t, &document_reference(&uid, &cda(n), &[])).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
            uids.lock().unwrap().push(uid);
        }
    };

    // Baselines, all partners healthy.
    let mut book_base = Vec::new();
    let mut intake_base = Vec::new();
    for i in 0..6u32 {
        let (d, (s, v)) = timed(book(&fx, &slots[i as usize].id, 700 + i)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        book_base.push(d);
        intake_base.push(timed(submit(u64::from(i))).await.0);
    }

    // The registry turns slow and failing: bookings keep their latency.
    registry.set_faults(medgate::sim::remd::Faults {
        latency: Duration::from_secs(2),
        internal_error: 0.3,
        timeout: 0.1,
        hang: Duration::from_secs(4),
        ..Default::default()
    });
    let mut book_during = Vec::new();
    for i in 6..16u32 {
        let ((d, (s, v)), ()) = tokio::join!(
            timed(book(&fx, &slots[i as usize].id, 700 + i)),
            submit(u64::from(100 + i))
        );
        assert_eq!(s, StatusCode::CREATED, "{v}");
        book_during.push(d);
    }
    registry.set_faults(Default::default());

    // The clinic system turns slow and failing: document intake keeps its latency;
    // bookings get an answer within its timeout (booked, or a retryable refusal).
    fx.sim.set_faults(medgate::sim::emias::Faults {
        latency: Duration::from_secs(2),
        error_rate: 0.3,
        ..Default::default()
    });
    let mut intake_during = Vec::new();
    let mut mis_answers = std::collections::BTreeMap::<u16, usize>::new();
    for i in 16..26u32 {
        let ((_, (s, _)), (d, ())) = tokio::join!(
            timed(book(&fx, &slots[i as usize].id, 700 + i)),
            timed(submit(u64::from(200 + i)))
        );
        *mis_answers.entry(s.as_u16()).or_default() += 1;
        intake_during.push(d);
    }
    fx.sim.set_faults(Default::default());

    // Everything queued ends: each document registered or dead-lettered with its reason;
    // no clinic-system effect left pending or in flight.
    let uids = uids.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (registered, dead) = loop {
        let mut states = std::collections::BTreeMap::<String, usize>::new();
        for uid in &uids {
            *states
                .entry(status_of(&document(&fx.t, uid).await))
                .or_default() += 1;
        }
        let registered = states.get("registered").copied().unwrap_or(0);
        let dead = states.get("dead-lettered").copied().unwrap_or(0);
        let mis_open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE destination = 'mis' AND status IN ('pending', 'inflight')",
        )
        .fetch_one(fx.t.gw.store.pool())
        .await
        .unwrap();
        if registered + dead == uids.len() && mis_open == 0 {
            break (registered, dead);
        }
        assert!(
            Instant::now() < deadline,
            "not settled: documents {states:?}, {mis_open} clinic-system effects open"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if dead > 0 {
        let letters: Value =
            fx.t.get_admin("/api/admin/outbox?destination=remd")
                .await
                .json()
                .await
                .unwrap();
        let items = letters["items"].as_array().unwrap();
        assert_eq!(items.len(), dead, "{letters}");
        for i in items {
            assert!(
                i["last_error"].as_str().is_some_and(|e| !e.is_empty()),
                "a dead letter without its reason: {i}"
            );
        }
    }
    for uid in &uids {
        assert!(registry.registrations(uid) <= 1, "{uid} registered twice");
    }
    let (b0, b1) = (median(book_base), median(book_during));
    let (i0, i1) = (median(intake_base), median(intake_during));
    eprintln!(
        "slow, failing partners (2 s latency, 30% errors): booking median {b0:?} healthy, {b1:?} while the registry failed; document intake median {i0:?} healthy, {i1:?} while the clinic system failed (bookings then answered {mis_answers:?}); {} documents: {registered} registered, {dead} dead-lettered with a reason",
        uids.len()
    );
    // Below the failing partner's own latency: no request waited on it.
    assert!(
        b1 < Duration::from_millis(1500),
        "bookings slowed to {b1:?}"
    );
    assert!(i1 < Duration::from_millis(1500), "intake slowed to {i1:?}");
    registry.stop().await;
    fx.sim.stop().await;
    fx.t.stop().await;
}

/// The partner of the circuit test: it refused the connection.
#[derive(Debug)]
struct Down(medgate::adapters::exchange::NoAnswer);

impl From<medgate::adapters::exchange::NoAnswer> for Down {
    fn from(e: medgate::adapters::exchange::NoAnswer) -> Down {
        Down(e)
    }
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl medgate::adapters::exchange::PartnerFault for Down {
    fn is_partner_fault(&self) -> bool {
        true
    }
}

/// A delivery refused by an open circuit is not an attempt: the item waits for the circuit
/// to let a probe through, its count unchanged, while it is younger than its retry
/// schedule's span; after that, refusals count again and it ends as a dead letter.
async fn an_open_circuit_holds_deliveries_back_uncounted(backend: Backend) {
    use medgate::adapters::exchange::{exchange, Link, Request};
    use medgate::exchange::delivery::{retry_or_dead, Handler, Outcome, Worker, WorkerConfig};
    use medgate::exchange::partners::Partners;
    use medgate::model::time::{ManualClock, SharedClock};
    use medgate::store::outbox::NewOutboxItem;

    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let manual = ManualClock::new();
    let clock: SharedClock = manual.clone();
    // One failure opens the circuit for a minute.
    let partners = Partners::new(1, Duration::from_secs(60), clock.clone());
    let (txlog, txlog_handle) = medgate::exchange::txlog::TxLog::start(
        store.clone(),
        medgate::config::Settings::default().transaction_log,
    );
    let link = Link::new(Duration::from_secs(2), txlog, partners.clone());
    let schedule = [10u64, 10];
    let handler: Handler = {
        let clock = clock.clone();
        Arc::new(move |item| {
            let (link, clock) = (link.clone(), clock.clone());
            Box::pin(async move {
                let call = Request {
                    adapter: "down",
                    operation: "Ping".into(),
                    method: reqwest::Method::POST,
                    // Nothing listens on port 1: the connection is refused at once.
                    url: "http://127.0.0.1:1/",
                    correlation_id: "",
                    headers: Vec::new(),
                    body: String::new(),
                };
                match exchange(&link, call, |_, _| Ok::<(), Down>(())).await {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => retry_or_dead(&schedule, &item, e.to_string(), clock.now_ms()),
                }
            })
        })
    };
    let worker = Worker::new(
        store.clone(),
        WorkerConfig {
            destination: "down".into(),
            concurrency: 1,
            lease: Duration::from_secs(60),
            max_attempts: 3,
            patience: Duration::from_secs(schedule.iter().sum()),
        },
        handler,
        clock.clone(),
        partners.clone(),
    );
    let start = clock.now_ms();
    for i in 0..3 {
        store
            .enqueue(
                &NewOutboxItem {
                    destination: "down".into(),
                    kind: "ping".into(),
                    aggregate_id: format!("item-{i}"),
                    payload: "{}".into(),
                    due_at: start,
                    attempts: 0,
                    ordering_key: None,
                },
                start,
            )
            .await
            .unwrap();
    }
    let items = || async {
        let mut all = Vec::new();
        for i in 0..3 {
            all.extend(store.outbox_for(&format!("item-{i}")).await.unwrap());
        }
        all.into_iter()
            .map(|o| {
                (
                    o.status,
                    o.attempts,
                    o.next_attempt_at - start,
                    o.last_error,
                )
            })
            .collect::<Vec<_>>()
    };

    // The first delivery fails for real and opens the circuit; the other two are held back
    // until it lets a probe through, their attempts not spent.
    for _ in 0..3 {
        assert_eq!(worker.step().await.unwrap(), 1);
    }
    let now = items().await;
    assert_eq!(
        now.iter()
            .map(|(s, a, at, _)| (s.as_str(), *a, *at))
            .collect::<Vec<_>>(),
        [
            ("pending", 1, 10_000),
            ("pending", 0, 60_000),
            ("pending", 0, 60_000)
        ],
        "{now:?}"
    );
    assert!(
        now[1].3.as_deref().unwrap_or("").contains("not called"),
        "{now:?}"
    );
    assert_eq!(worker.step().await.unwrap(), 0, "nothing is due");
    // Its retry comes while the circuit is still open: held back too, its one attempt kept.
    manual.advance(Duration::from_secs(10));
    assert_eq!(worker.step().await.unwrap(), 1);
    assert_eq!(items().await[0].1, 1);
    assert_eq!(items().await[0].2, 60_000);

    // A minute on, the items are older than their schedule's span: the probe fails and
    // reopens the circuit, and from now on every refusal counts, to the dead letter.
    manual.advance(Duration::from_secs(51));
    for _ in 0..30 {
        while worker.step().await.unwrap() > 0 {}
        if items().await.iter().all(|(s, ..)| s == "dead") {
            break;
        }
        manual.advance(Duration::from_secs(11));
    }
    let end = items().await;
    for (status, attempts, _, error) in &end {
        assert_eq!((status.as_str(), *attempts), ("dead", 3), "{end:?}");
        assert!(
            error
                .as_deref()
                .unwrap_or("")
                .starts_with("gave up after 3 attempts"),
            "{end:?}"
        );
    }
    drop(worker);
    txlog_handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_holds_deliveries_back_uncounted_postgres() {
    an_open_circuit_holds_deliveries_back_uncounted(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_holds_deliveries_back_uncounted_sqlite() {
    an_open_circuit_holds_deliveries_back_uncounted(Backend::Sqlite).await
}
