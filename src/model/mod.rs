//! The canonical model: identifiers, aggregates and their states, time; pure and free of
//! I/O.
//!
//! Everything that crosses the gateway's edges is parsed into these types first;
//! a value of one of these types is valid by construction, and stays typed down to the
//! database rows.

pub mod appeal;
pub mod audit;
pub mod booking;
pub mod document;
pub mod ids;
pub mod job;
pub mod nsi;
pub mod organization;
pub mod referral;
pub mod remd;
pub mod schedule;
pub mod time;

pub use ids::{Icd10, IdError, NsiCode, Oid, PolicyNumber, Snils};
