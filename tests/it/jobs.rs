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
const JOB: &str = "transaction-prune";

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
    let replicas: BTreeSet<&str> = runs.iter().map(|r| r.replica.as_str()).collect();
    assert!(replicas.len() >= 2, "the replicas competed: {replicas:?}");
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
            false,
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
    assert!(text.contains("transaction-prune: ok"), "{text}");
    let runs = store.job_runs(JOB, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].manual && runs[0].outcome == RunOutcome::Ok,
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
