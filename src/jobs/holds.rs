//! The hold sweeper: holds whose time ran out become expired, freeing their slots.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Job, Tick};
use crate::services::booking::Booking;

/// Expires lapsed holds, several times per hold time.
pub struct HoldSweeper {
    booking: Booking,
}

impl HoldSweeper {
    /// A sweeper of `booking`'s holds.
    pub fn new(booking: Booking) -> HoldSweeper {
        HoldSweeper { booking }
    }
}

impl Job for HoldSweeper {
    fn name(&self) -> &str {
        "hold-sweeper"
    }

    fn step(&self) -> BoxFuture<'_, Result<Tick, String>> {
        Box::pin(async move {
            let n = self
                .booking
                .expire_holds()
                .await
                .map_err(|e| e.to_string())?;
            if n > 0 {
                tracing::info!(expired = n, "holds expired");
            }
            Ok(Tick::done(n as usize))
        })
    }

    fn period(&self) -> Duration {
        Duration::from_millis((self.booking.hold_ms() / 4).clamp(200, 30_000) as u64)
    }
}
