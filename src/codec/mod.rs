//! Codecs at the edges: XML (secure parsing, canonicalization, signatures), JSON limits,
//! SOAP, FHIR resources, the portal hub's answers, CDA headers and registry messages.

pub mod cda;
pub mod fhir;
pub mod hub;
pub mod json;
pub mod remd;
pub mod soap;
pub mod xml;
