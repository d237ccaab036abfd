//! Appeal deadlines: appeals past their deadline without an answer go to the ministry's
//! operator (once each), checked every minute.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::services::appeals::Appeals;

/// Overdue appeals looked at per step; a larger backlog is taken by the next steps at once.
const BATCH: u32 = 500;

/// Escalates overdue appeals.
pub struct AppealDeadlines {
    appeals: Appeals,
}

impl AppealDeadlines {
    /// The deadline watch of `appeals`.
    pub fn new(appeals: Appeals) -> AppealDeadlines {
        AppealDeadlines { appeals }
    }
}

impl Job for AppealDeadlines {
    fn name(&self) -> &str {
        "appeal-deadlines"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self
                .appeals
                .escalate_overdue(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(appeals = n, "overdue appeals escalated to the operator");
            }
            Ok(Tick {
                handled: n as usize,
                more: n >= u64::from(BATCH),
                report: None,
            })
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }
}
