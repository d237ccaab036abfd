//! The schedule reconciliation job: one organization of one clinic system a step, every
//! organization a run (nightly by default), with counts and details per organization.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use super::{Job, StepReport, Tick};
use crate::model::Oid;
use crate::services::reconcile::ScheduleReconciliation;
use crate::services::schedule_sync::ScheduleSource;

/// Compares every organization's schedule with its clinic system and repairs the drift.
pub struct ScheduleReconciliationJob {
    service: ScheduleReconciliation,
    sources: Vec<Arc<dyn ScheduleSource>>,
    state: Mutex<Pass>,
}

/// The organizations left in the current run, and those that failed in it.
#[derive(Default)]
struct Pass {
    queue: VecDeque<(String, Oid)>,
    failed: Vec<String>,
}

impl ScheduleReconciliationJob {
    /// Reconciles the schedules from `sources` with `service`.
    pub fn new(
        service: ScheduleReconciliation,
        sources: Vec<Arc<dyn ScheduleSource>>,
    ) -> ScheduleReconciliationJob {
        ScheduleReconciliationJob {
            service,
            sources,
            state: Mutex::new(Pass::default()),
        }
    }

    async fn next(&self) -> Result<Tick, String> {
        let mut pass = self.state.lock().await;
        if pass.queue.is_empty() {
            // A new run: every organization whose schedule a configured clinic system publishes.
            pass.failed.clear();
            pass.queue = self
                .service
                .organizations()
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|(source, _)| self.sources.iter().any(|s| s.source() == *source))
                .collect();
        }
        let Some((source, org)) = pass.queue.pop_front() else {
            return Ok(Tick::done(0));
        };
        let at = format!("{source} {org}");
        let client = self
            .sources
            .iter()
            .find(|s| s.source() == source)
            .ok_or_else(|| format!("{source}: not configured"))?;
        let mut report = match self.service.reconcile(client.as_ref(), &org).await {
            Ok(r) => {
                if r.found() > 0 {
                    tracing::info!(source, org = %org, found = r.found(), repaired = r.repaired(), flagged = r.flagged, "schedule drift repaired");
                }
                StepReport {
                    examined: r.examined,
                    found: r.found(),
                    repaired: r.repaired(),
                    detail: Some((at, serde_json::to_value(&r).unwrap_or_default())),
                    error: None,
                }
            }
            Err(e) => {
                tracing::warn!(source, org = %org, error = %e, "schedule reconciliation failed");
                pass.failed.push(at.clone());
                StepReport {
                    detail: Some((at, serde_json::json!({ "error": e.to_string() }))),
                    ..StepReport::default()
                }
            }
        };
        let more = !pass.queue.is_empty();
        if !more && !pass.failed.is_empty() {
            report.error = Some(format!(
                "not reconciled: {}",
                std::mem::take(&mut pass.failed).join(", ")
            ));
        }
        Ok(Tick {
            handled: report.repaired as usize,
            more,
            report: Some(report),
        })
    }
}

impl Job for ScheduleReconciliationJob {
    fn name(&self) -> &str {
        "schedule-reconciliation"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(self.next())
    }

    fn period(&self) -> Duration {
        Duration::from_secs(24 * 3600)
    }

    fn cron(&self) -> Option<&str> {
        Some("0 15 2 * * *")
    }
}
