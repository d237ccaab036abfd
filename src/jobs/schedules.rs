//! Schedule rounds: apply the clinic systems' slot changes, then make appointments follow
//! withdrawn and moved slots (each with a patient notification).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use super::{Job, Tick};
use crate::services::booking::Booking;
use crate::services::schedule_sync::{incremental_sync, ScheduleSource};
use crate::store::Store;

/// Rounds between checks of every active appointment against its slot.
const FULL_CHECK_EVERY: u64 = 60;

/// One round per period over every clinic system.
pub struct ScheduleRound {
    store: Store,
    booking: Booking,
    sources: Vec<Arc<dyn ScheduleSource>>,
    period: Duration,
    state: Mutex<RoundState>,
}

#[derive(Default)]
struct RoundState {
    round: u64,
    full_seen: Option<i64>,
}

impl ScheduleRound {
    /// Rounds over `sources` every `period` (zero: only when a step is run by hand),
    /// following with `booking`.
    pub fn new(
        store: Store,
        booking: Booking,
        sources: Vec<Arc<dyn ScheduleSource>>,
        period: Duration,
    ) -> ScheduleRound {
        ScheduleRound {
            store,
            booking,
            sources,
            period,
            state: Mutex::new(RoundState::default()),
        }
    }

    /// One round. It looks only at the slots its sync changed; the first round, a round
    /// after a full sync (`medgate sync schedules`, e.g. the nightly timer) and every
    /// [`FULL_CHECK_EVERY`]th look at every active appointment, the last as a backstop for
    /// a failed round. Returns how many appointments followed their slots.
    pub async fn round(&self) -> Result<usize, String> {
        let mut state = self.state.lock().await;
        let mut changed = Vec::new();
        for client in &self.sources {
            match incremental_sync(&self.store, client.as_ref()).await {
                Ok(r) => changed.extend(r.changed),
                Err(e) => {
                    tracing::warn!(source = client.source(), error = %e, "incremental schedule sync failed")
                }
            }
        }
        // A full sync since the last round changed slots outside the change feed.
        let latest_full = self
            .store
            .latest_full_sync()
            .await
            .map_err(|e| e.to_string())?;
        let full_sync = match state.full_seen {
            None => {
                state.full_seen = Some(latest_full.unwrap_or(0));
                false
            }
            Some(seen) => latest_full.is_some_and(|at| at > seen),
        };
        if full_sync {
            state.full_seen = latest_full;
        }
        let scope =
            (state.round % FULL_CHECK_EVERY != 0 && !full_sync).then_some(changed.as_slice());
        state.round += 1;
        let withdrawn = self
            .booking
            .handle_withdrawn_slots(scope)
            .await
            .map_err(|e| format!("withdrawn slot check failed: {e}"))?;
        if withdrawn > 0 {
            tracing::info!(
                appointments = withdrawn,
                "appointments on withdrawn slots ended, patients notified"
            );
        }
        let moved = self
            .booking
            .handle_moved_slots(scope)
            .await
            .map_err(|e| format!("moved slot check failed: {e}"))?;
        if moved > 0 {
            tracing::info!(
                appointments = moved,
                "appointments on moved slots follow the new times, patients notified"
            );
        }
        Ok(withdrawn + moved)
    }
}

impl Job for ScheduleRound {
    fn name(&self) -> &str {
        "schedule-round"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move { self.round().await.map(Tick::done) })
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn scheduled(&self) -> bool {
        !self.period.is_zero()
    }
}
