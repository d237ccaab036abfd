//! The audit trail as FHIR R4 `AuditEvent`: who (the client), what (action on an entity),
//! whose data (the patient, masked), when, with what outcome, in which request.

use serde_json::{json, Value};

use super::{POLICY_SYSTEM, SNILS_SYSTEM};
use crate::model::audit::{AuditAction, AuditEvent};
use crate::model::time::instant_millis;

/// Extension carrying the request id of the access.
pub const REQUEST_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/request-id";

/// FHIR `AuditEvent.action` of an action (a search is an execute, `E`).
fn action_code(a: AuditAction) -> &'static str {
    match a {
        AuditAction::Create => "C",
        AuditAction::Read => "R",
        AuditAction::Update => "U",
        AuditAction::Search => "E",
    }
}

/// The `AuditEvent` of an audit event; patient identifiers are masked.
pub fn audit_event(e: &AuditEvent) -> Value {
    let mut entities = Vec::new();
    if let Some(id) = &e.entity_id {
        entities.push(json!({
            "what": {"identifier": {"system": format!("urn:medgate:{}", e.entity.as_str()), "value": id}},
            "type": {"system": "urn:medgate:audit-entity", "code": e.entity.as_str()},
        }));
    }
    // The patient, masked: the full identifier stays in the audit store.
    let patient = |system: &str, masked: String| {
        json!({
            "what": {"identifier": {"system": system, "value": masked}},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
        })
    };
    if let Some(s) = &e.snils {
        entities.push(patient(SNILS_SYSTEM, s.to_string()));
    }
    if let Some(p) = &e.policy {
        entities.push(patient(POLICY_SYSTEM, p.to_string()));
    }
    let mut v = json!({
        "resourceType": "AuditEvent",
        "id": e.id,
        "extension": [{"url": REQUEST_EXTENSION, "valueString": e.request_id}],
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": "urn:medgate:audit-entity", "code": e.entity.as_str()}],
        "action": action_code(e.action),
        "recorded": instant_millis(e.at),
        "outcome": if e.success { "0" } else { "4" },
        "agent": [{"who": {"identifier": {"system": "urn:medgate:client", "value": e.client_id}}, "requestor": true}],
        "source": {"observer": {"display": "medgate"}},
    });
    if !e.detail.is_empty() {
        v["outcomeDesc"] = json!(e.detail);
    }
    if let Some(org) = &e.org {
        v["source"]["site"] = json!(org.as_str());
    }
    if !entities.is_empty() {
        v["entity"] = json!(entities);
    }
    v
}
