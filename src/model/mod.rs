//! The canonical model: identifiers and aggregates, pure and free of I/O.
//!
//! Everything that crosses the gateway's edges is parsed into these types first;
//! a value of one of these types is valid by construction.

pub mod ids;
pub mod remd;
pub mod schedule;

pub use ids::{Icd10, IdError, NsiCode, Oid, PolicyNumber, Snils};
