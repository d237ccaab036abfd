//! Codecs at the edges: XML (secure parsing, canonicalization, signatures), SOAP, FHIR.

pub mod cda;
pub mod fhir;
pub mod remd;
pub mod soap;
pub mod xml;
