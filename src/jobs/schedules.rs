//! Schedule rounds: apply the clinic systems' slot changes, then make appointments follow
//! withdrawn and moved slots (each with a patient notification).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use super::{Job, Tick};
use crate::model::time::SharedClock;
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
    clock: SharedClock,
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
        clock: SharedClock,
    ) -> ScheduleRound {
        ScheduleRound {
            store,
            booking,
            sources,
            period,
            clock,
            state: Mutex::new(RoundState::default()),
        }
    }

    /// One round. It looks only at the slots its sync changed; the first round, a round
    /// after a full sync (`medgate sync schedules`, e.g. the nightly timer) and every
    /// [`FULL_CHECK_EVERY`]th look at every active appointment, the last as a backstop for
    /// a failed round. A failing part is logged and the rest still runs. Returns how many
    /// appointments followed their slots.
    pub async fn round(&self) -> usize {
        let mut state = self.state.lock().await;
        let round = state.round;
        state.round += 1;
        let mut changed = Vec::new();
        for client in &self.sources {
            match incremental_sync(&self.store, client.as_ref(), self.clock.now_ms()).await {
                Ok(r) => changed.extend(r.changed),
                Err(e) => {
                    tracing::warn!(source = client.source(), error = %e, "incremental schedule sync failed")
                }
            }
        }
        // A full sync since the last round changed slots outside the change feed.
        let latest_full = match self.store.latest_full_sync().await {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!(error = %e, "full sync lookup failed");
                None
            }
        };
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
        let scope = (round % FULL_CHECK_EVERY != 0 && !full_sync).then_some(changed.as_slice());
        let withdrawn = match self.booking.handle_withdrawn_slots(scope).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "withdrawn slot check failed");
                0
            }
        };
        if withdrawn > 0 {
            tracing::info!(
                appointments = withdrawn,
                "appointments on withdrawn slots ended, patients notified"
            );
        }
        let moved = match self.booking.handle_moved_slots(scope).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "moved slot check failed");
                0
            }
        };
        if moved > 0 {
            tracing::info!(
                appointments = moved,
                "appointments on moved slots follow the new times, patients notified"
            );
        }
        withdrawn + moved
    }
}

impl Job for ScheduleRound {
    fn name(&self) -> &str {
        "schedule-round"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move { Ok(Tick::done(self.round().await)) })
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn scheduled(&self) -> bool {
        !self.period.is_zero()
    }
}
