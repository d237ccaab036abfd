//! Time: the stored form of instants (epoch milliseconds, UTC), the clock services read,
//! and the one reading of "a date or an instant" that every edge uses.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Where services and jobs read the current time; tests advance a [`ManualClock`] instead
/// of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch (UTC).
    fn now_ms(&self) -> i64;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// The wall clock, shared.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until told to move: starts at the wall-clock time of its
/// creation.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing the current wall-clock time.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now_ms())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Milliseconds since the Unix epoch, UTC, read from the wall clock.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored timestamp as UTC time.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// RFC 3339 with whole seconds and `Z`, as FHIR instants and hub messages print them.
pub fn instant_secs(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// RFC 3339 with milliseconds and `Z` (FHIR `meta.lastUpdated`).
pub fn instant_millis(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Midnight UTC at the start of `d`, in epoch ms.
pub fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default()
}

/// A moment read from a query parameter or message field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A whole day (`2026-11-23`): starts at midnight UTC.
    Day(i64),
    /// An instant (`2026-11-23T09:00:00+03:00`, or without an offset: UTC).
    Instant(i64),
}

impl Moment {
    /// Reads `YYYY-MM-DD`, an RFC 3339 instant, or a dateTime without offset (taken as UTC).
    pub fn parse(raw: &str) -> Option<Moment> {
        let raw = raw.trim();
        if raw.len() == 10 {
            if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
                return Some(Moment::Day(day_start_ms(d)));
            }
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
            return Some(Moment::Instant(t.timestamp_millis()));
        }
        chrono::NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|t| Moment::Instant(t.and_utc().timestamp_millis()))
    }

    /// The moment's start in epoch ms.
    pub fn ms(self) -> i64 {
        match self {
            Moment::Day(ms) | Moment::Instant(ms) => ms,
        }
    }

    /// The end of the period the moment names: the next midnight for a day, the instant
    /// itself otherwise.
    pub fn end_ms(self) -> i64 {
        match self {
            Moment::Day(ms) => ms + DAY_MS,
            Moment::Instant(ms) => ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_days_or_instants() {
        let day = Moment::parse("2026-11-23").unwrap();
        assert_eq!(day, Moment::Day(1_795_392_000_000));
        assert_eq!(day.end_ms() - day.ms(), DAY_MS);
        assert_eq!(
            Moment::parse("2026-11-23T03:00:00+03:00"),
            Some(Moment::Instant(1_795_392_000_000))
        );
        assert_eq!(
            Moment::parse("2026-11-23T00:00:00"),
            Some(Moment::Instant(1_795_392_000_000))
        );
        assert_eq!(Moment::parse("23.11.2026"), None);
        assert_eq!(Moment::parse("2026-11-31"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t = c.now_ms();
        assert_eq!(c.now_ms(), t);
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), t + 2000);
    }
}
