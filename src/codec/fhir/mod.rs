//! FHIR R4 JSON: hand-written builders of the resources the gateway emits (one builder per
//! resource, typed from the model), the searchset Bundle, OperationOutcome, and the code
//! systems and extensions they cite.

pub mod appeal;
pub mod appointment;
pub mod audit;
pub mod bundle;
pub mod capability;
pub mod directory;
pub mod document;
pub mod outcome;
pub mod referral;
pub mod terminology;

pub use bundle::searchset;
pub use outcome::{IssueType, OperationOutcome};

/// Media type of FHIR JSON.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Extension carrying the booking channels a slot accepts or an appointment used.
pub const CHANNEL_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/booking-channel";
/// Code system of specialties (Ministry reference book 1066).
pub const SPECIALTY_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1066";
/// Code system of positions (Ministry reference book 1002).
pub const POSITION_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1002";
/// Identifier system of SNILS.
pub const SNILS_SYSTEM: &str = "urn:oid:1.2.643.100.3";
/// Identifier system of OMS policy numbers (ENP) used by the gateway and its simulators.
pub const POLICY_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.2.1.1.635";
/// Identifier system of URIs (OIDs as `urn:oid:`, UUIDs as `urn:uuid:`).
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";

/// FHIR ids allow `[A-Za-z0-9.-]`: the stored `source:id` becomes `source.id`.
pub fn fhir_id(id: &str) -> String {
    id.replacen(':', ".", 1)
}

/// The gateway's id of a FHIR id: the inverse of [`fhir_id`].
pub fn gateway_id(fhir: &str) -> String {
    fhir.replacen('.', ":", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_both_ways_at_the_first_separator() {
        assert_eq!(fhir_id("emias:D-1.2"), "emias.D-1.2");
        assert_eq!(gateway_id("emias.D-1.2"), "emias:D-1.2");
        assert_eq!(gateway_id(&fhir_id("fhir-mis:slot.7")), "fhir-mis:slot.7");
    }
}
