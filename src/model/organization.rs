//! Medical organizations known to the gateway (clinics, hospitals, federal centres).

use super::Oid;

/// A medical organization identified by its FRMO OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// FRMO OID.
    pub oid: Oid,
    /// Full name.
    pub name: String,
    /// Short name shown to patients.
    pub short_name: String,
    /// Postal address.
    pub address: String,
    /// District (used by the portal to group clinics).
    pub district: String,
    /// Where the record came from: `config`, `emias`, `fhir-mis`, ...
    pub source: String,
    /// False when the organization is switched off.
    pub active: bool,
}
