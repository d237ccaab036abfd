//! Simulators of external systems, speaking their real message formats, with injectable
//! latency and faults. Used by `medgate demo`, the tests and the benchmarks.

pub mod emias;
pub mod federation;
pub mod fhir_mis;
pub mod nsi;
pub mod remd;
pub mod signer;

/// A cheap random number in [0, 1) for fault injection.
pub fn roll() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}
