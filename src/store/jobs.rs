//! Runs of scheduled jobs: the claim of a (job, tick) before anything runs (one replica
//! wins), the end of a run with its counts, runs whose replica died failed once their lease
//! ends, the history; and on PostgreSQL the advisory lock that keeps two runs of one job
//! from overlapping across replicas.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{corrupt, Backend, Store, StoreError};
use crate::model::job::{JobRun, RunCounts, RunKind, RunOutcome};

const COLUMNS: &str = "id, job, tick_at, manual, replica, started_at, lease_until, ended_at, \
    outcome, examined, found, repaired, error, details";

/// Largest details object kept with a run (bytes of JSON); larger ones are cut to a note.
const MAX_DETAILS: usize = 64 * 1024;

/// A job's lock across replicas, held while it runs: on PostgreSQL a session advisory lock
/// on a connection of its own that is closed when the lock is dropped (so a replica that dies
/// releases it with its connection); SQLite has one writer process, nothing to hold.
pub struct JobLock {
    _conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl Store {
    /// Claims the run of `job` for `tick` on behalf of `replica`, leased until
    /// `lease_until`; `None` when another replica claimed that tick first.
    pub async fn claim_run(
        &self,
        job: &str,
        tick: i64,
        kind: RunKind,
        replica: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<JobRun>, StoreError> {
        let run = JobRun {
            id: uuid::Uuid::now_v7().to_string(),
            job: job.to_string(),
            tick_at: tick,
            kind,
            replica: replica.to_string(),
            started_at: now,
            lease_until,
            ended_at: None,
            outcome: RunOutcome::Running,
            counts: RunCounts::default(),
            error: None,
            details: None,
        };
        let done = sqlx::query(&format!(
            "INSERT INTO job_runs ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,'running',0,0,0,NULL,NULL) \
             ON CONFLICT (job, tick_at) DO NOTHING"
        ))
        .bind(run.id.clone())
        .bind(run.job.clone())
        .bind(tick)
        .bind(kind.as_i32())
        .bind(run.replica.clone())
        .bind(now)
        .bind(lease_until)
        .execute(self.pool())
        .await?;
        Ok((done.rows_affected() == 1).then_some(run))
    }

    /// Ends a run.
    pub async fn finish_run(
        &self,
        id: &str,
        outcome: RunOutcome,
        counts: RunCounts,
        error: Option<&str>,
        details: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE job_runs SET outcome = $2, examined = $3, found = $4, repaired = $5, \
             error = $6, ended_at = $7, details = $8 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(outcome.as_str())
        .bind(i64::try_from(counts.examined).unwrap_or(i64::MAX))
        .bind(i64::try_from(counts.found).unwrap_or(i64::MAX))
        .bind(i64::try_from(counts.repaired).unwrap_or(i64::MAX))
        .bind(error.map(|e| e.chars().take(500).collect::<String>()))
        .bind(now)
        .bind(details.map(details_text))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a window of a worker's loop that handled or failed something: the replica's
    /// own row, so its tick is moved on by a millisecond when another replica's row holds it.
    pub async fn record_worker_window(
        &self,
        job: &str,
        replica: &str,
        window: (i64, i64),
        counts: RunCounts,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let (start, end) = window;
        let outcome = if error.is_some() {
            RunOutcome::Failed
        } else {
            RunOutcome::Ok
        };
        for shift in 0..16 {
            let done = sqlx::query(&format!(
                "INSERT INTO job_runs ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,NULL) \
                 ON CONFLICT (job, tick_at) DO NOTHING"
            ))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(job.to_string())
            .bind(start + shift)
            .bind(RunKind::Worker.as_i32())
            .bind(replica.to_string())
            .bind(start)
            .bind(end)
            .bind(end)
            .bind(outcome.as_str())
            .bind(i64::try_from(counts.examined).unwrap_or(i64::MAX))
            .bind(i64::try_from(counts.found).unwrap_or(i64::MAX))
            .bind(i64::try_from(counts.repaired).unwrap_or(i64::MAX))
            .bind(error.map(|e| e.chars().take(500).collect::<String>()))
            .execute(self.pool())
            .await?;
            if done.rows_affected() == 1 {
                break;
            }
        }
        Ok(())
    }

    /// Runs still marked running whose lease ended (their replica died): failed.
    pub async fn fail_lapsed_runs(&self, now: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE job_runs SET outcome = 'failed', ended_at = lease_until, \
             error = 'lease expired: the replica running it stopped' \
             WHERE outcome = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// The runs of `job`, newest first, at most `limit`.
    pub async fn job_runs(&self, job: &str, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM job_runs WHERE job = $1 ORDER BY tick_at DESC LIMIT {}",
            limit.clamp(1, 1000)
        ))
        .bind(job.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Takes `job`'s lock across replicas; `None` while another replica holds it.
    pub async fn job_lock(&self, job: &str) -> Result<Option<JobLock>, StoreError> {
        if self.backend() != Backend::Postgres {
            return Ok(Some(JobLock { _conn: None }));
        }
        let mut conn = self.pool().acquire().await?;
        // Closed, not pooled, when the lock is dropped: closing is what releases it.
        conn.close_on_drop();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 7))")
            .bind(format!("medgate-job:{job}"))
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(JobLock { _conn: Some(conn) }))
    }
}

fn decode(r: &AnyRow) -> Result<JobRun, StoreError> {
    let outcome: String = r.try_get("outcome")?;
    let count = |c: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(r.try_get::<i64, _>(c)?).unwrap_or(0))
    };
    Ok(JobRun {
        id: r.try_get("id")?,
        job: r.try_get("job")?,
        tick_at: r.try_get("tick_at")?,
        kind: {
            let n = r.try_get::<i32, _>("manual")?;
            RunKind::from_i32(n).ok_or_else(|| corrupt("job_runs.manual", &n.to_string()))?
        },
        replica: r.try_get("replica")?,
        started_at: r.try_get("started_at")?,
        lease_until: r.try_get("lease_until")?,
        ended_at: r.try_get("ended_at")?,
        outcome: RunOutcome::parse(&outcome)
            .ok_or_else(|| corrupt("job_runs.outcome", &outcome))?,
        counts: RunCounts {
            examined: count("examined")?,
            found: count("found")?,
            repaired: count("repaired")?,
        },
        error: r.try_get("error")?,
        details: r
            .try_get::<Option<String>, _>("details")?
            .and_then(|t| serde_json::from_str(&t).ok()),
    })
}

/// A run's details as stored: the JSON, or a note when it is too large to keep.
fn details_text(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.len() <= MAX_DETAILS {
        text
    } else {
        serde_json::json!({"truncated": true, "bytes": text.len()}).to_string()
    }
}
