//! Documents against the registry: lost verdicts recovered (documents sent without an answer
//! past the callback timeout are looked up), quickly in a loop and, with the dead letters
//! summed up by organization and who must act, as the scheduled document reconciliation.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, StepReport, Tick};
use crate::services::documents::Documents;

/// Polls the registry for overdue verdicts.
pub struct VerdictPoll {
    documents: Documents,
    period: Duration,
}

impl VerdictPoll {
    /// A poller of `documents`' overdue verdicts every `period`.
    pub fn new(documents: Documents, period: Duration) -> VerdictPoll {
        VerdictPoll { documents, period }
    }
}

impl Job for VerdictPoll {
    fn name(&self) -> &str {
        "remd-verdict-poll"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self
                .documents
                .poll_overdue()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Tick::done(n))
        })
    }

    fn period(&self) -> Duration {
        self.period
    }
}

/// The document status reconciliation: every document sent without a final registry answer
/// past the callback timeout is asked about (the whole backlog, a batch a step), and the
/// documents refused for good or out of retries are summed up by organization, status and
/// who must act, in the run's details. Hourly by default; the poll above keeps recovery
/// quick between runs.
pub struct DocumentReconciliation {
    documents: Documents,
}

impl DocumentReconciliation {
    /// The reconciliation of `documents`' statuses with the registry.
    pub fn new(documents: Documents) -> DocumentReconciliation {
        DocumentReconciliation { documents }
    }

    async fn next(&self) -> Result<Tick, String> {
        let poll = self
            .documents
            .poll_overdue_batch()
            .await
            .map_err(|e| e.to_string())?;
        let mut report = StepReport {
            examined: poll.asked as u64,
            found: poll.asked as u64,
            repaired: poll.resolved as u64,
            ..StepReport::default()
        };
        if !poll.full {
            // The last step of the run: the dead letters as they stand now.
            let mut summary = serde_json::Map::new();
            for d in self
                .documents
                .dead_letters()
                .await
                .map_err(|e| e.to_string())?
            {
                let class = if d.error_class.is_empty() {
                    "unclassified".to_string()
                } else {
                    d.error_class
                };
                let org = summary
                    .entry(d.org)
                    .or_insert_with(|| serde_json::json!({}));
                org[format!("{}:{class}", d.status)] = d.count.into();
            }
            report.detail = Some(("dead_letters".into(), summary.into()));
        }
        Ok(Tick {
            handled: poll.resolved,
            more: poll.full,
            report: Some(report),
        })
    }
}

impl Job for DocumentReconciliation {
    fn name(&self) -> &str {
        "document-reconciliation"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(self.next())
    }

    fn period(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn cron(&self) -> Option<&str> {
        Some("0 40 * * * *")
    }
}
