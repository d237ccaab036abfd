//! Codecs at the edges: XML (secure parsing, canonicalization, signatures), SOAP, FHIR
//! resources, the portal hub's answers, CDA headers and registry messages.

pub mod cda;
pub mod fhir;
pub mod hub;
pub mod remd;
pub mod soap;
pub mod xml;
