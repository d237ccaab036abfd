//! Recovery of lost registry verdicts: documents sent without an answer past the callback
//! timeout are looked up in the registry.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
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
