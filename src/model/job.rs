//! Runs of scheduled jobs: which tick, which replica ran it, how it ended and what it
//! examined, found and repaired.

use std::fmt;

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Under way (until its lease ends).
    Running,
    /// Done.
    Ok,
    /// A step failed, or the replica running it died (its lease ran out).
    Failed,
    /// Not run: an earlier run of the job was still going.
    Skipped,
}

impl RunOutcome {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Skipped => "skipped",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<RunOutcome> {
        [
            RunOutcome::Running,
            RunOutcome::Ok,
            RunOutcome::Failed,
            RunOutcome::Skipped,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A scheduled tick, claimed by one replica.
    Tick,
    /// Asked for by hand (an operator, `medgate job run`).
    Manual,
    /// A window of a worker's loop (a replica's own), recorded when it handled or failed
    /// something.
    Worker,
}

impl RunKind {
    /// Stored number (the `manual` column: 0, 1, 2).
    pub fn as_i32(self) -> i32 {
        match self {
            RunKind::Tick => 0,
            RunKind::Manual => 1,
            RunKind::Worker => 2,
        }
    }

    /// Reads a stored number.
    pub fn from_i32(n: i32) -> Option<RunKind> {
        [RunKind::Tick, RunKind::Manual, RunKind::Worker]
            .into_iter()
            .find(|k| k.as_i32() == n)
    }

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Tick => "tick",
            RunKind::Manual => "manual",
            RunKind::Worker => "worker",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunCounts {
    /// Things looked at.
    pub examined: u64,
    /// Things found wrong (drift, due, expired).
    pub found: u64,
    /// Things put right (or removed, sent, moved).
    pub repaired: u64,
}

/// One run of a scheduled job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// Run id (UUIDv7).
    pub id: String,
    /// The job.
    pub job: String,
    /// The tick it stands for (epoch ms); a run asked for by hand has its own.
    pub tick_at: i64,
    /// A tick, a run asked for, or a worker's window.
    pub kind: RunKind,
    /// The replica (gateway instance) that claimed it.
    pub replica: String,
    /// Started (epoch ms).
    pub started_at: i64,
    /// Until when its replica holds it; a running run past it died with its replica.
    pub lease_until: i64,
    /// Ended (epoch ms).
    pub ended_at: Option<i64>,
    /// How it ended.
    pub outcome: RunOutcome,
    /// What it did.
    pub counts: RunCounts,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// What it found where (by organization, by error class), as the job reports it.
    pub details: Option<serde_json::Value>,
}
