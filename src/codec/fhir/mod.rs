//! FHIR R4 JSON: hand-written structures for the resources the gateway uses.

pub mod outcome;

pub use outcome::{IssueType, OperationOutcome};

/// Media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
