//! Referral upkeep: open referrals whose validity ended become expired, booked referrals
//! whose visit was cancelled return to accepted (the referring organization is told of
//! both), referrals the target leaves unanswered too long go to the region's operator, and
//! the referring organization is reminded of accepted referrals about to lapse unbooked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::{Job, Tick};
use crate::services::referrals::Referrals;

/// Referrals looked at per step and kind; a larger backlog is taken by the next steps at once.
const BATCH: u32 = 500;

/// Expires lapsed referrals and releases ended bookings once a minute, and at once when a
/// referral's visit is cancelled.
pub struct ReferralUpkeep {
    referrals: Referrals,
    wake: Arc<Notify>,
}

impl ReferralUpkeep {
    /// The upkeep of `referrals`' referrals, woken by `wake` (a referral visit cancelled).
    pub fn new(referrals: Referrals, wake: Arc<Notify>) -> ReferralUpkeep {
        ReferralUpkeep { referrals, wake }
    }
}

impl Job for ReferralUpkeep {
    fn name(&self) -> &str {
        "referral-upkeep"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let expired = self
                .referrals
                .expire_lapsed(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            let released = self
                .referrals
                .release_ended_bookings(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            let escalated = self
                .referrals
                .escalate_unanswered(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            let reminded = self
                .referrals
                .remind_expiring(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if expired + released + escalated + reminded > 0 {
                tracing::info!(expired, released, escalated, reminded, "referrals kept up");
            }
            Ok(Tick {
                report: None,
                handled: (expired + released + escalated + reminded) as usize,
                more: [expired, released, escalated, reminded]
                    .iter()
                    .any(|n| *n >= u64::from(BATCH)),
            })
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn wake(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
}
