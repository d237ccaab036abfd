//! Documents as FHIR R4 `DocumentReference`: metadata, registration state and the
//! registry's answer, not the bytes.

use serde_json::{json, Value};

use super::{SNILS_SYSTEM, URI_SYSTEM};
use crate::model::document::{Document, DocumentStatus};
use crate::model::time::from_ms;

/// Code system of document kinds (Ministry reference book 1522).
pub const KIND_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1522";
/// Extension with the registration state.
pub const REGISTRATION_STATUS_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/registration-status";
/// Extension with the registry's last error.
pub const REGISTRATION_ERROR_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/registration-error";

/// The `DocumentReference` of a document; its attachment URL is under `base`.
pub fn document_reference(d: &Document, base: &str) -> Value {
    let mut identifiers =
        vec![json!({"system": URI_SYSTEM, "value": format!("urn:uuid:{}", d.id)})];
    if let Some(e) = &d.emdr_id {
        identifiers.push(json!({"system": "urn:medgate:remd:emdrId", "value": e}));
    }
    let mut v = json!({
        "resourceType": "DocumentReference",
        "id": d.id,
        "meta": {"lastUpdated": from_ms(d.updated_at).to_rfc3339()},
        "extension": [{
            "url": REGISTRATION_STATUS_EXTENSION,
            "valueCode": d.status.as_str()
        }],
        "masterIdentifier": {"system": URI_SYSTEM, "value": format!("urn:uuid:{}", d.id)},
        "identifier": identifiers,
        "status": "current",
        "docStatus": if d.status == DocumentStatus::Registered { "final" } else { "preliminary" },
        "type": {"coding": [{"system": KIND_SYSTEM, "version": d.kind_version, "code": d.kind_code}]},
        "subject": {"identifier": {"system": SNILS_SYSTEM, "value": d.patient.digits()}},
        "date": from_ms(d.created_at).to_rfc3339(),
        "author": [{"identifier": {"system": SNILS_SYSTEM, "value": d.author.digits()}}],
        "custodian": {"reference": format!("Organization/{}", d.org), "identifier": {"system": URI_SYSTEM, "value": format!("urn:oid:{}", d.org)}},
        "content": [{"attachment": {"contentType": d.content_type, "size": d.content.len(), "url": format!("{base}/DocumentReference/{}", d.id)}}],
    });
    if let (Some(class), Some(codes)) = (&d.error_class, &d.error_codes) {
        if let Some(a) = v["extension"].as_array_mut() {
            a.push(json!({"url": REGISTRATION_ERROR_EXTENSION, "extension": [
                {"url": "class", "valueCode": class.as_str()},
                {"url": "codes", "valueString": codes},
                {"url": "message", "valueString": d.error_message.clone().unwrap_or_default()}
            ]}));
        }
    }
    v
}
