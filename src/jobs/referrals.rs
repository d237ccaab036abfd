//! Referral expiry: open referrals whose validity ended become expired, and the referring
//! organization is told.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::services::referrals::Referrals;

/// Referrals looked at per step; a larger backlog is taken by the next steps at once.
const BATCH: u32 = 500;

/// Expires lapsed referrals once a minute.
pub struct ReferralExpiry {
    referrals: Referrals,
}

impl ReferralExpiry {
    /// The expiry of `referrals`' referrals.
    pub fn new(referrals: Referrals) -> ReferralExpiry {
        ReferralExpiry { referrals }
    }
}

impl Job for ReferralExpiry {
    fn name(&self) -> &str {
        "referral-expiry"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self
                .referrals
                .expire_lapsed(BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(expired = n, "referrals expired");
            }
            Ok(Tick {
                handled: n as usize,
                more: n >= u64::from(BATCH),
            })
        })
    }

    fn period(&self) -> Duration {
        Duration::from_secs(60)
    }
}
