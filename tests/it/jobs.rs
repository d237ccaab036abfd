//! Scheduled jobs across replicas: three gateways on one PostgreSQL database run a job on
//! every tick of its cron expression, each tick once (the claims are counted), never two
//! runs at a time; a replica that dies mid-run leaves its run failed once its lease ends
//! and holds nothing back; operators list the jobs and their runs and run one by hand.

use std::collections::BTreeSet;
use std::time::Duration;

use medgate::model::job::RunOutcome;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

/// Every second: twenty ticks in twenty seconds.
const EVERY_SECOND: &str = "* * * * * *";
const JOB: &str = "retention";

fn every_second(s: &mut medgate::config::Settings) {
    s.jobs.schedules.insert(JOB.into(), EVERY_SECOND.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_once_across_three_replicas() {
    let first = TestGateway::start_with(Backend::Postgres, every_second).await;
    let url = first.db.url.clone();
    let shared = |s: &mut medgate::config::Settings| {
        every_second(s);
        s.database.url = url.clone();
    };
    let second = TestGateway::start_with(Backend::Postgres, shared).await;
    let third = TestGateway::start_with(Backend::Postgres, shared).await;
    tokio::time::sleep(Duration::from_secs(23)).await;
    for t in [second, third] {
        t.stop().await;
    }
    let runs = first.gw.store.job_runs(JOB, 1000).await.unwrap();
    first.stop().await;

    let ticks: Vec<i64> = runs.iter().map(|r| r.tick_at).rev().collect();
    assert!(ticks.len() >= 20, "{} ticks run: {ticks:?}", ticks.len());
    let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice");
    // On the second, one after the other; a busy machine may miss a tick or two, no more.
    assert!(ticks.iter().all(|t| t % 1000 == 0));
    let gaps = ticks.windows(2).filter(|w| w[1] - w[0] != 1000).count();
    assert!(gaps <= 2, "ticks missed: {ticks:?}");
    // Whichever replica claims a tick runs it (one may win them all: the claim decides).
    for r in &runs {
        assert!(
            matches!(r.outcome, RunOutcome::Ok | RunOutcome::Skipped),
            "{r:?}"
        );
    }
    // Never two runs at a time.
    let mut spans: Vec<(i64, i64)> = runs
        .iter()
        .filter(|r| r.outcome == RunOutcome::Ok)
        .map(|r| (r.started_at, r.ended_at.unwrap()))
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "runs overlapped: {spans:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_replica_died_fails_and_the_next_runs() {
    use sqlx::Connection;
    let t = TestGateway::start(Backend::Postgres).await;
    let store = &t.gw.store;
    // A replica died mid-run: its run is still marked running, its session still holds the
    // job's lock (as it would until the database notices the connection is gone).
    let now = medgate::model::time::now_ms();
    let dead = store
        .claim_run(
            JOB,
            now - 60_000,
            medgate::model::job::RunKind::Tick,
            "dead-replica",
            now - 60_000,
            now - 1,
        )
        .await
        .unwrap()
        .expect("claimed");
    let mut session = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 7))")
        .bind(format!("medgate-job:{JOB}"))
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert!(held);
    let run = |t: &TestGateway| {
        let req = t
            .http
            .post(t.url(&format!("/api/admin/jobs/{JOB}/run")))
            .bearer_auth(ADMIN_TOKEN)
            .send();
        async move {
            let res = req.await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };
    let skipped = run(&t).await;
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    // Its lease has run out: it is failed, saying why.
    let runs = store.job_runs(JOB, 10).await.unwrap();
    let old = runs.iter().find(|r| r.id == dead.id).unwrap();
    assert_eq!(old.outcome, RunOutcome::Failed);
    assert!(old.error.as_deref().unwrap().contains("lease expired"));
    // The dead replica's session ends: the lock goes with it, the next run proceeds.
    session.close().await.unwrap();
    let next = run(&t).await;
    assert_eq!(next["outcome"], "ok", "{next}");
    assert_eq!(next["manual"], true);

    // Operators see the jobs, how they run, and the runs.
    let jobs: Value = t.get_admin("/api/admin/jobs").await.json().await.unwrap();
    let prune = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == JOB)
        .unwrap()
        .clone();
    assert_eq!(prune["mode"], "cron", "{prune}");
    assert_eq!(prune["cron"], "0 15 * * * *");
    assert_eq!(prune["time_zone"], "Europe/Moscow");
    assert_eq!(prune["last_run"]["outcome"], "ok");
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["name"] == "hold-sweeper" && j["mode"] == "loop"));
    let history: Value = t
        .get_admin(&format!("/api/admin/jobs/{JOB}/runs?limit=10"))
        .await
        .json()
        .await
        .unwrap();
    let outcomes: Vec<&str> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "skipped", "failed"]);
    let missing = t.get_admin("/api/admin/jobs/no-such-job/runs").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    t.stop().await;
}

/// `medgate job run NAME` runs one job by hand from the command line, as a replica would
/// (claimed, locked, recorded), printing plain lines when not on a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_the_command_line() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medgate.toml");
    std::fs::write(&config, format!("[database]\nurl = \"{}\"\n", db.url)).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_medgate"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MEDGATE_")) {
            cmd.env_remove(k);
        }
        cmd.args(["job", "run", JOB, "--config"])
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
    assert!(text.contains("retention: ok"), "{text}");
    let runs = store.job_runs(JOB, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].kind == medgate::model::job::RunKind::Manual && runs[0].outcome == RunOutcome::Ok,
        "{runs:?}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_medgate"))
        .args(["job", "run", "no-such-job", "--config"])
        .arg(dir.path().join("medgate.toml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no job named no-such-job"));
}

/// Retention, provably: a database filled with records old and young, delivered and
/// pending outbox items; one run of the job (small batches, many statements) removes
/// exactly what is past its retention and nothing younger.
async fn retention_prunes_what_is_old_and_nothing_younger(backend: Backend) {
    use medgate::store::transactions::TransactionRecord;
    let t = TestGateway::start_with(backend, |s| {
        s.retention.batch_rows = 128;
        s.retention.transaction_bodies_days = 7;
        s.retention.outbox_delivered_days = 7;
        s.jobs.disabled = vec![JOB.into()];
    })
    .await;
    let now = medgate::model::time::now_ms();
    let day = 86_400_000;
    let record = |i: usize, started_at: i64, expires_at: i64| TransactionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        correlation_id: format!("fill-{i}"),
        request_id: format!("fill-{i}"),
        client_id: Some("filler".into()),
        direction: "inbound".into(),
        protocol: "fhir".into(),
        operation: "fill".into(),
        method: "GET".into(),
        target: "/fill".into(),
        status: "ok".into(),
        http_status: Some(200),
        error: None,
        started_at,
        duration_us: 10,
        request_bytes: 4,
        response_bytes: 4,
        body_policy: "full".into(),
        request_body: Some(b"body".to_vec()),
        response_body: Some(b"body".to_vec()),
        truncated: false,
        rerun_of: None,
        content_type: None,
        soap_action: None,
        expires_at,
        trace_id: None,
        span_id: None,
        parent_span_id: None,
    };
    // 700 expired; 600 kept with bodies older than 7 days; 500 young with bodies.
    let mut records = Vec::new();
    for i in 0..700 {
        records.push(record(i, now - 40 * day, now - day));
    }
    for i in 700..1300 {
        records.push(record(i, now - 10 * day, now + 20 * day));
    }
    for i in 1300..1800 {
        records.push(record(i, now - day, now + 29 * day));
    }
    for chunk in records.chunks(500) {
        t.gw.store.insert_transactions(chunk).await.unwrap();
    }
    // Outbox: 300 delivered long ago, 200 delivered yesterday, 50 pending since long ago.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&t.db.url).await.unwrap();
    let item = |i: usize, status: &str, at: i64| {
        sqlx::query(
            "INSERT INTO outbox (id, destination, kind, aggregate_id, payload, status, attempts, \
             next_attempt_at, created_at, updated_at) VALUES ($1,'fill','fill',$2,'{}',$3,1,$4,$4,$4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(format!("fill-{i}"))
        .bind(status.to_string())
        .bind(at)
    };
    for i in 0..550 {
        let (status, at) = match i {
            0..300 => ("done", now - 30 * day),
            300..500 => ("done", now - day),
            _ => ("pending", now - 30 * day),
        };
        item(i, status, at).execute(&pool).await.unwrap();
    }
    // Job runs: 40 finished long ago, 10 finished yesterday, 5 started long ago and still
    // going, their lease held (a run is never pruned while it has no end).
    for i in 0..55i64 {
        let (ended, at, lease) = match i {
            0..40 => (Some(now - 100 * day), now - 100 * day, now - 100 * day),
            40..50 => (Some(now - day), now - day, now - day),
            _ => (None, now - 100 * day, now + day),
        };
        sqlx::query(
            "INSERT INTO job_runs (id, job, tick_at, manual, replica, started_at, lease_until, \
             ended_at, outcome) VALUES ($1, 'fill', $2, 0, 'r', $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(i)
        .bind(at)
        .bind(lease)
        .bind(ended)
        .bind(if ended.is_some() { "ok" } else { "running" })
        .execute(&pool)
        .await
        .unwrap();
    }

    let res = t
        .http
        .post(t.url(&format!("/api/admin/jobs/{JOB}/run")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let run: Value = res.json().await.unwrap();
    assert_eq!(run["outcome"], "ok", "{run}");
    // 700 records, 600 bodies, 300 items, 40 runs; at most 128 of a kind per statement.
    assert_eq!(run["repaired"], 700 + 600 + 300 + 40, "{run}");
    assert!(run["examined"].as_u64().unwrap() > 700 / 128, "{run}");

    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM transactions WHERE operation = 'fill'").await,
        1100
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM transactions WHERE operation = 'fill' AND request_body IS NOT NULL").await,
        500,
        "the young records keep their bodies"
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM transactions WHERE operation = 'fill' AND body_policy = 'pruned'"
        )
        .await,
        600
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE destination = 'fill' AND status = 'done'").await,
        200
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE destination = 'fill' AND status = 'pending'")
            .await,
        50
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM job_runs WHERE job = 'fill'").await,
        15,
        "yesterday's runs and the unfinished ones are kept"
    );
    // Nothing is left to prune: a second run removes nothing.
    let again: Value = t
        .http
        .post(t.url(&format!("/api/admin/jobs/{JOB}/run")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["repaired"], 0, "{again}");
    pool.close().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_what_is_old_and_nothing_younger_postgres() {
    retention_prunes_what_is_old_and_nothing_younger(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_what_is_old_and_nothing_younger_sqlite() {
    retention_prunes_what_is_old_and_nothing_younger(Backend::Sqlite).await
}

/// The pruning benchmark on a short profile: every expired record pruned, every young one
/// kept (no speed asserted: figures come from `medgate bench prune`, BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_benchmark_prunes_exactly_the_expired() {
    let report = medgate::bench::prune(medgate::bench::PruneBench {
        pg_admin_url: crate::support::pg_admin_url(),
        rows: 3000,
        batch: 700,
    })
    .await
    .expect("benchmark ran");
    println!("{report}");
    assert!(
        report.contains("3000 expired transaction records (among 6000 rows"),
        "{report}"
    );
    assert!(report.contains("the 3000 young records kept"), "{report}");
}

/// The daily statistics: bookings of the day by organization, district and channel (holds
/// left out), computed by the job and served to the organization's own clients.
async fn daily_statistics_count_the_days_bookings(backend: Backend) {
    let t = TestGateway::start_with(backend, |s| {
        s.clients.push(client(
            "clinic-stats",
            "test-clinic-stats-token",
            &[CLINIC_ORG],
            &["stats:read"],
        ))
    })
    .await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&t.db.url).await.unwrap();
    let now = medgate::model::time::now_ms();
    let other = "1.2.643.5.1.13.13.12.2.77.7002";
    for (i, (org, channel, status)) in [
        (CLINIC_ORG, "internet", "booked"),
        (CLINIC_ORG, "internet", "booked"),
        (CLINIC_ORG, "registry", "cancelled"),
        (CLINIC_ORG, "internet", "held"),
        (other, "phone", "booked"),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO appointments (id, slot_id, org_oid, channel, status, client_id, \
             created_at, updated_at) VALUES ($1,$2,$3,$4,$5,'stats',$6,$6)",
        )
        .bind(format!("stats-{i}"))
        .bind(format!("stats-slot-{i}"))
        .bind(org)
        .bind(channel)
        .bind(status)
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    }
    assert!(t.step("daily-stats").await >= 3);
    let stats: Value = t
        .get_admin("/api/admin/stats?metric=bookings")
        .await
        .json()
        .await
        .unwrap();
    let rows: Vec<(String, String, String, i64)> = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["org"].as_str().unwrap().to_string(),
                r["district"].as_str().unwrap().to_string(),
                r["channel"].as_str().unwrap().to_string(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                CLINIC_ORG.to_string(),
                "Central".to_string(),
                "internet".to_string(),
                2
            ),
            (
                CLINIC_ORG.to_string(),
                "Central".to_string(),
                "registry".to_string(),
                1
            ),
            (
                other.to_string(),
                "North".to_string(),
                "phone".to_string(),
                1
            ),
        ],
        "{stats}"
    );
    // The clinic's own client sees its figures only.
    let mine: Value = t
        .http
        .get(t.url("/api/admin/stats?metric=bookings"))
        .bearer_auth("test-clinic-stats-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["stats"].as_array().unwrap().len(), 2, "{mine}");
    assert!(!mine.to_string().contains(other));
    pool.close().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_statistics_count_the_days_bookings_postgres() {
    daily_statistics_count_the_days_bookings(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_statistics_count_the_days_bookings_sqlite() {
    daily_statistics_count_the_days_bookings(Backend::Sqlite).await
}

/// Three `medgate serve` processes on one database: every tick of the jobs due every second
/// runs once whichever process claims it; the process that took the most ticks is killed
/// (SIGKILL) in the middle and holds nothing back: the others go on taking the ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_ticks_and_one_killed_holds_nothing_back() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = free();
        let path = dir.path().join(format!("replica-{i}.toml"));
        std::fs::write(
            &path,
            format!(
                "instance = \"replica-{i}\"\n[http]\nbind = \"127.0.0.1:{port}\"\n\
                 [database]\nurl = \"{}\"\nmax_connections = 4\n\
                 [jobs.schedules]\n\"{JOB}\" = \"{EVERY_SECOND}\"\n\
                 \"daily-stats\" = \"{EVERY_SECOND}\"\n",
                db.url
            ),
        )
        .unwrap();
        children.push(crate::crash::spawn(&path));
        ports.push(port);
    }
    let http = reqwest::Client::new();
    for port in &ports {
        crate::crash::wait_ready(&http, *port).await;
    }
    // A run's replica is its process's instance name and a suffix of its own.
    let process = |r: &medgate::model::job::JobRun| {
        r.replica
            .rsplit_once('-')
            .map_or(r.replica.clone(), |(a, _)| a.to_string())
    };
    tokio::time::sleep(Duration::from_secs(12)).await;
    // The process that took the most ticks so far is killed: the others must take over.
    let so_far = store.job_runs(JOB, 1000).await.unwrap();
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for r in &so_far {
        *tally.entry(process(r)).or_default() += 1;
    }
    let busiest = tally
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| p.clone())
        .expect("ticks ran");
    let victim: usize = busiest.trim_start_matches("replica-").parse().unwrap();
    let killed_at = medgate::model::time::now_ms();
    children[victim].start_kill().unwrap();
    let _ = children[victim].wait().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    for c in &mut children {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }

    // Every job on its ticks: each tick claimed once, by whichever process came first.
    for job in [JOB, "daily-stats"] {
        let runs = store.job_runs(job, 1000).await.unwrap();
        let ticks: Vec<i64> = runs.iter().map(|r| r.tick_at).rev().collect();
        assert!(ticks.len() >= 20, "{job}: {} ticks: {ticks:?}", ticks.len());
        let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
        assert_eq!(distinct.len(), ticks.len(), "{job}: a tick ran twice");
        let gaps = ticks.windows(2).filter(|w| w[1] - w[0] != 1000).count();
        assert!(gaps <= 3, "{job}: ticks missed: {ticks:?}");
    }
    let runs = store.job_runs(JOB, 1000).await.unwrap();
    let by: BTreeSet<String> = runs.iter().map(process).collect();
    assert!(by.iter().all(|p| p.starts_with("replica-")), "{by:?}");
    assert!(by.len() >= 2, "another process took over: {by:?}");
    let after: BTreeSet<String> = runs
        .iter()
        .filter(|r| r.tick_at > killed_at + 2000)
        .map(process)
        .collect();
    assert!(
        !after.is_empty() && !after.contains(&busiest),
        "the survivors went on without {busiest}: {after:?}"
    );
}

/// Three `medgate serve` processes on one database compete for the registry's outbox (the
/// registry refusing now and then, so items go round again): every document is registered,
/// each exactly once (the registry simulator counts), and more than one process delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_deliver_each_outbox_item_once() {
    use medgate::sim::remd::{Faults, RemdSim, RemdSimConfig};
    let registry = RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        check: Some(std::sync::Arc::new(medgate::sim::remd::CryptoCheck)),
        verdict_delay: Duration::from_millis(5),
        faults: Faults {
            rate_limit: 0.1,
            internal_error: 0.1,
            ..Faults::default()
        },
        ..RemdSimConfig::default()
    })
    .unwrap();
    let mis = medgate::sim::emias::EmiasSim::start(medgate::sim::emias::Region::demo(
        chrono::Utc::now().date_naive(),
    ))
    .unwrap();
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    medgate::demo::seed(&store).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.path().join(format!("replica-{i}.toml"));
        let config = crate::crash::config(&db.url, port, &registry.url, &mis.url)
            .replace("max_connections = 24", "max_connections = 6");
        std::fs::write(
            &path,
            format!("instance = \"replica-{i}\"\n{config}\n[jobs]\nworker_window_secs = 1\n"),
        )
        .unwrap();
        children.push(crate::crash::spawn(&path));
        ports.push(port);
    }
    let http = reqwest::Client::new();
    for port in &ports {
        crate::crash::wait_ready(&http, *port).await;
    }
    let uids: Vec<String> = (0..60).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for (n, uid) in uids.iter().enumerate() {
        let port = ports[n % 3];
        let r = http
            .post(format!("http://127.0.0.1:{port}/fhir/DocumentReference"))
            .bearer_auth(CLINIC_TOKEN)
            .json(&crate::crash::document(uid, n as u64))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while registry.counters().registered < uids.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "registered {} of {}",
            registry.counters().registered,
            uids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The workers' last windows close on their next steps.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for c in &mut children {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    for uid in &uids {
        assert_eq!(registry.registrations(uid), 1, "{uid}");
    }
    assert!(registry.registered_twice().is_empty());
    let c = registry.counters();
    assert_eq!(c.registered, uids.len() as u64, "{c:?}");
    // The registry's refusals made items go round again: received more than registered.
    assert!(c.received > c.registered, "{c:?}");
    let delivered: Vec<(String, i64)> = sqlx::query_as(
        "SELECT replica, repaired FROM job_runs WHERE job = 'deliver:remd' AND manual = 2",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let by: BTreeSet<&str> = delivered
        .iter()
        .filter(|(_, n)| *n > 0)
        .filter_map(|(r, _)| r.rsplit_once('-').map(|(p, _)| p))
        .collect();
    assert!(
        by.len() >= 2,
        "one process delivered everything: {delivered:?}"
    );
    mis.stop().await;
    registry.stop().await;
}
