//! Clients of external systems. Each reads its profile from configuration; contracts,
//! samples and default profiles live in `adapters/<system>/` at the repository root.

pub mod emias;
pub mod emias_booking;
pub mod exchange;
pub mod fhir_mis;
pub mod remd;
