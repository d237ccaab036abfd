//! The health of the partners the gateway calls: one circuit breaker per partner (a
//! partner that keeps failing is skipped for a cool-down, the others unaffected), and the
//! delivery metrics per destination (outcomes, time from queue to delivery), all exposed
//! to Prometheus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::model::time::{system_clock, SharedClock};

/// Consecutive failures that open a circuit.
pub const TRIP_AFTER: u32 = 5;
/// How long an open circuit refuses calls before one probe goes through.
pub const COOL_DOWN: Duration = Duration::from_secs(30);
/// How long a call refused while a probe is on its way waits before asking again (ms).
const PROBE_WAIT_MS: i64 = 1000;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused at once until the cool-down ends.
    Open,
    /// The cool-down ended: one probe call is on its way.
    HalfOpen,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Circuit {
    state: CircuitState,
    failures: u32,
    /// When it opened, or when its probe went (epoch ms).
    since: i64,
}

impl Circuit {
    fn closed() -> Circuit {
        Circuit {
            state: CircuitState::Closed,
            failures: 0,
            since: 0,
        }
    }
}

/// The breakers and delivery metrics of every partner; cheap to clone.
#[derive(Clone)]
pub struct Partners {
    circuits: Arc<Mutex<HashMap<String, Circuit>>>,
    trip_after: u32,
    cool_down_ms: i64,
    clock: SharedClock,
    state: IntGaugeVec,
    trips: IntCounterVec,
    deliveries: IntCounterVec,
    delivery_latency: HistogramVec,
}

impl std::fmt::Debug for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partners").finish_non_exhaustive()
    }
}

impl Default for Partners {
    fn default() -> Self {
        Partners::new(TRIP_AFTER, COOL_DOWN, system_clock())
    }
}

impl Partners {
    /// Breakers that open after `trip_after` consecutive failures for `cool_down`, timed
    /// by `clock`.
    pub fn new(trip_after: u32, cool_down: Duration, clock: SharedClock) -> Partners {
        Partners {
            circuits: Arc::new(Mutex::new(HashMap::new())),
            trip_after: trip_after.max(1),
            cool_down_ms: i64::try_from(cool_down.as_millis()).unwrap_or(i64::MAX),
            clock,
            state: IntGaugeVec::new(
                Opts::new(
                    "partner_circuit_state",
                    "Circuit breaker per partner: 0 closed, 1 open, 2 half-open",
                ),
                &["partner"],
            )
            .expect("static metric definition"),
            trips: IntCounterVec::new(
                Opts::new(
                    "partner_circuit_trips_total",
                    "Times a partner's circuit opened",
                ),
                &["partner"],
            )
            .expect("static metric definition"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "outbox_deliveries_total",
                    "Outbox delivery attempts by destination and outcome (delivered, retry, dead, postponed: refused by an open circuit, not counted)",
                ),
                &["destination", "outcome"],
            )
            .expect("static metric definition"),
            delivery_latency: HistogramVec::new(
                HistogramOpts::new(
                    "outbox_delivery_seconds",
                    "Time from queueing an effect to its delivery, by destination",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                    7200.0,
                ]),
                &["destination"],
            )
            .expect("static metric definition"),
        }
    }

    /// Registers the metric families in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.state.clone()))?;
        registry.register(Box::new(self.trips.clone()))?;
        registry.register(Box::new(self.deliveries.clone()))?;
        registry.register(Box::new(self.delivery_latency.clone()))
    }

    /// Whether a call to `partner` may go now; an open circuit whose cool-down ended lets
    /// this one call through as the probe (and another, should a probe never report).
    pub fn allow(&self, partner: &str) -> bool {
        self.gate(partner).is_ok()
    }

    /// As [`Partners::allow`]; a refusal says when the circuit lets a probe through
    /// (epoch ms), so a delivery can wait until then.
    pub fn gate(&self, partner: &str) -> Result<(), i64> {
        let Ok(mut map) = self.circuits.lock() else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let c = map
            .entry(partner.to_string())
            .or_insert_with(Circuit::closed);
        match c.state {
            CircuitState::Closed => Ok(()),
            CircuitState::Open | CircuitState::HalfOpen
                if now.saturating_sub(c.since) >= self.cool_down_ms =>
            {
                c.state = CircuitState::HalfOpen;
                c.since = now;
                self.state
                    .with_label_values(&[partner])
                    .set(c.state.gauge());
                Ok(())
            }
            CircuitState::Open => Err(c.since.saturating_add(self.cool_down_ms)),
            // The probe is on its way: its answer decides in moments, not a cool-down.
            CircuitState::HalfOpen => Err(now.saturating_add(PROBE_WAIT_MS)),
        }
    }

    /// Records the outcome of a call to `partner`: a failure is no answer or the partner's
    /// own fault (not a refusal of the request).
    pub fn record(&self, partner: &str, failed: bool) {
        let Ok(mut map) = self.circuits.lock() else {
            return;
        };
        let c = map
            .entry(partner.to_string())
            .or_insert_with(Circuit::closed);
        if failed {
            c.failures += 1;
            let trip = c.state == CircuitState::HalfOpen
                || (c.state == CircuitState::Closed && c.failures >= self.trip_after);
            if trip {
                c.state = CircuitState::Open;
                c.since = self.clock.now_ms();
                self.trips.with_label_values(&[partner]).inc();
                tracing::warn!(
                    partner,
                    failures = c.failures,
                    "circuit opened: partner skipped for the cool-down"
                );
            }
        } else {
            if c.state != CircuitState::Closed {
                tracing::info!(partner, "circuit closed: partner answers again");
            }
            *c = Circuit::closed();
        }
        self.state
            .with_label_values(&[partner])
            .set(c.state.gauge());
    }

    /// Every partner's circuit as it stands, by name.
    pub fn states(&self) -> Vec<(String, CircuitState)> {
        let mut v: Vec<(String, CircuitState)> = self
            .circuits
            .lock()
            .map(|m| m.iter().map(|(k, c)| (k.clone(), c.state)).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The state of `partner`'s circuit.
    pub fn state(&self, partner: &str) -> CircuitState {
        self.circuits
            .lock()
            .ok()
            .and_then(|m| m.get(partner).map(|c| c.state))
            .unwrap_or(CircuitState::Closed)
    }

    /// Counts a delivery attempt's outcome; `queued_for` is the time since the effect was
    /// queued, observed when it was delivered.
    pub fn delivered(&self, destination: &str, outcome: &str, queued_for: Option<Duration>) {
        self.deliveries
            .with_label_values(&[destination, outcome])
            .inc();
        if let Some(d) = queued_for {
            self.delivery_latency
                .with_label_values(&[destination])
                .observe(d.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::time::{Clock, ManualClock};

    #[test]
    fn a_failing_partner_is_skipped_for_the_cool_down_and_probed_after() {
        let clock = ManualClock::new();
        let p = Partners::new(3, Duration::from_secs(30), clock.clone());
        for _ in 0..2 {
            assert!(p.allow("emias"));
            p.record("emias", true);
        }
        assert_eq!(p.state("emias"), CircuitState::Closed);
        p.record("emias", true);
        assert_eq!(p.state("emias"), CircuitState::Open);
        let opened = clock.now_ms();
        assert!(!p.allow("emias"));
        // A refused call learns when the probe goes.
        assert_eq!(p.gate("emias"), Err(opened + 30_000));
        // Another partner is unaffected.
        assert!(p.allow("remd"));
        clock.advance(Duration::from_secs(29));
        assert!(!p.allow("emias"));
        clock.advance(Duration::from_secs(1));
        // One probe; others wait a moment for its outcome.
        assert!(p.allow("emias"));
        assert!(!p.allow("emias"));
        assert_eq!(p.gate("emias"), Err(clock.now_ms() + 1000));
        p.record("emias", true);
        assert_eq!(p.state("emias"), CircuitState::Open);
        clock.advance(Duration::from_secs(30));
        assert!(p.allow("emias"));
        p.record("emias", false);
        assert_eq!(p.state("emias"), CircuitState::Closed);
        assert!(p.allow("emias"));
    }
}
