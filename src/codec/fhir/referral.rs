//! Referrals as FHIR R4 workflow resources: the `ServiceRequest` (the order: patient,
//! diagnosis, requester, performer, attached documents) and its `Task` (the lifecycle:
//! status, business status, owner, the conclusion as output, every transition as an
//! extension), plus the acceptance rules as JSON.

use serde_json::{json, Value};

use super::{POLICY_SYSTEM, SNILS_SYSTEM, URI_SYSTEM};
use crate::model::referral::{AcceptanceRule, Referral, ReferralEvent, ReferralStatus};
use crate::model::time::{instant_millis, instant_secs};
use crate::model::Oid;

/// Code system of ICD-10.
pub const ICD10_SYSTEM: &str = "http://hl7.org/fhir/sid/icd-10";
/// Code system of referral kinds.
pub const KIND_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/referral-kind";
/// Code system of referral profiles (specialty codes as the target publishes them).
pub const PROFILE_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/referral-profile";
/// Code system of the gateway's referral states (`Task.businessStatus`).
pub const BUSINESS_STATUS_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/referral-status";
/// `Task.input` type text of a tele-consultation's video-visit link.
pub const VIDEO_VISIT: &str = "video-visit";
/// Extension of a referral's `Task`: when the target must have answered.
pub const ANSWER_DUE_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/referral-answer-due";
/// Extension of a referral's `Task`: when it was escalated to the region's operator.
pub const ESCALATED_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/referral-escalated";
/// Extension recording one transition of a referral on its `Task`.
pub const TRANSITION_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/referral-transition";

/// A reference to an organization by FRMO OID.
pub fn organization_reference(org: &Oid) -> Value {
    json!({
        "reference": format!("Organization/{org}"),
        "identifier": {"system": URI_SYSTEM, "value": format!("urn:oid:{org}")},
    })
}

/// `ServiceRequest.status` of a referral state.
pub fn request_status(s: ReferralStatus) -> &'static str {
    match s {
        ReferralStatus::Requested | ReferralStatus::Accepted | ReferralStatus::Booked => "active",
        ReferralStatus::Completed => "completed",
        ReferralStatus::Rejected | ReferralStatus::Cancelled | ReferralStatus::Expired => "revoked",
    }
}

/// `Task.status` of a referral state (booked is in progress; expired has failed).
pub fn task_status(s: ReferralStatus) -> &'static str {
    match s {
        ReferralStatus::Requested => "requested",
        ReferralStatus::Accepted => "accepted",
        ReferralStatus::Rejected => "rejected",
        ReferralStatus::Booked => "in-progress",
        ReferralStatus::Completed => "completed",
        ReferralStatus::Cancelled => "cancelled",
        ReferralStatus::Expired => "failed",
    }
}

/// The referral state a `Task.status` asks for; only the moves an organization makes.
pub fn requested_move(task_status: &str) -> Option<ReferralStatus> {
    match task_status {
        "accepted" => Some(ReferralStatus::Accepted),
        "rejected" => Some(ReferralStatus::Rejected),
        "cancelled" => Some(ReferralStatus::Cancelled),
        "completed" => Some(ReferralStatus::Completed),
        _ => None,
    }
}

fn patient(r: &Referral) -> Value {
    let mut ids = Vec::new();
    if let Some(p) = &r.patient.policy {
        ids.push(json!({"system": POLICY_SYSTEM, "value": p.digits()}));
    }
    if let Some(s) = &r.patient.snils {
        ids.push(json!({"system": SNILS_SYSTEM, "value": s.digits()}));
    }
    let mut p = json!({"resourceType": "Patient", "id": "patient", "identifier": ids});
    if let Some(b) = r.patient.birth_date {
        p["birthDate"] = json!(b.to_string());
    }
    p
}

/// The `ServiceRequest` of a referral.
pub fn service_request(r: &Referral) -> Value {
    let requester = json!({
        "resourceType": "PractitionerRole",
        "id": "requester",
        "practitioner": {"identifier": {"system": SNILS_SYSTEM, "value": r.requester_snils.digits()}},
        "organization": organization_reference(&r.requester_org),
    });
    let mut v = json!({
        "resourceType": "ServiceRequest",
        "id": r.id,
        "meta": {"lastUpdated": instant_millis(r.updated_at)},
        "contained": [patient(r), requester],
        "identifier": [{"system": "urn:medgate:referral", "value": r.id}],
        "status": request_status(r.status),
        "intent": "order",
        "category": [{"coding": [{"system": KIND_SYSTEM, "code": r.kind.as_str()}]}],
        "priority": r.urgency.fhir_priority(),
        "code": {"coding": [{"system": PROFILE_SYSTEM, "code": r.profile}]},
        "subject": {"reference": "#patient"},
        "occurrencePeriod": {"start": instant_secs(r.created_at), "end": instant_secs(r.valid_until)},
        "authoredOn": instant_secs(r.created_at),
        "requester": {"reference": "#requester"},
        "performer": [organization_reference(&r.target_org)],
        "reasonCode": [{
            "coding": [{"system": ICD10_SYSTEM, "code": r.diagnosis.as_str()}],
            "text": r.reason,
        }],
    });
    if !r.documents.is_empty() {
        v["supportingInfo"] = r
            .documents
            .iter()
            .map(|d| json!({"reference": format!("DocumentReference/{d}")}))
            .collect();
    }
    v
}

/// The `Task` of a referral, with its transitions.
pub fn task(r: &Referral, events: &[ReferralEvent]) -> Value {
    let mut extensions =
        vec![json!({"url": ANSWER_DUE_EXTENSION, "valueInstant": instant_secs(r.answer_due)})];
    if let Some(at) = r.escalated_at {
        extensions.push(json!({"url": ESCALATED_EXTENSION, "valueInstant": instant_secs(at)}));
    }
    let transitions: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut parts = vec![
                json!({"url": "status", "valueCode": e.status.as_str()}),
                json!({"url": "at", "valueInstant": instant_millis(e.at)}),
                json!({"url": "by", "valueString": e.client_id}),
            ];
            if let Some(reason) = &e.reason {
                parts.push(json!({"url": "reason", "valueString": reason}));
            }
            json!({"url": TRANSITION_EXTENSION, "extension": parts})
        })
        .collect();
    let mut v = json!({
        "resourceType": "Task",
        "id": r.id,
        "meta": {"lastUpdated": instant_millis(r.updated_at)},
        "identifier": [{"system": "urn:medgate:referral", "value": r.id}],
        "basedOn": [{"reference": format!("ServiceRequest/{}", r.id)}],
        "status": task_status(r.status),
        "businessStatus": {
            "coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": r.status.as_str()}],
            "text": r.status.as_str(),
        },
        "intent": "order",
        "priority": r.urgency.fhir_priority(),
        "focus": {"reference": format!("ServiceRequest/{}", r.id)},
        "authoredOn": instant_secs(r.created_at),
        "lastModified": instant_secs(r.updated_at),
        "requester": organization_reference(&r.requester_org),
        "owner": organization_reference(&r.target_org),
        "restriction": {"period": {"end": instant_secs(r.valid_until)}},
    });
    extensions.extend(transitions);
    v["extension"] = json!(extensions);
    if let Some(reason) = &r.status_reason {
        v["statusReason"] = json!({"text": reason});
    }
    if let Some(c) = &r.conclusion_id {
        v["output"] = json!([{
            "type": {"text": "conclusion"},
            "valueReference": {"reference": format!("DocumentReference/{c}")},
        }]);
    }
    let mut inputs = Vec::new();
    if let Some(a) = &r.appointment_id {
        inputs.push(json!({
            "type": {"text": "appointment"},
            "valueReference": {"reference": format!("Appointment/{a}")},
        }));
    }
    if let Some(url) = &r.video_url {
        inputs.push(json!({"type": {"text": VIDEO_VISIT}, "valueUrl": url}));
    }
    if !inputs.is_empty() {
        v["input"] = json!(inputs);
    }
    v
}

/// The acceptance rules as published JSON.
pub fn rules(rules: &[AcceptanceRule]) -> Value {
    json!({
        "rules": rules.iter().map(|r| json!({
            "organization": r.org.as_str(),
            "name": r.name,
            "kinds": r.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "diagnoses": r.diagnoses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "profiles": r.profiles,
            "requiredDocuments": r.required_documents.iter().map(|d| json!({
                "kind": d.kind,
                "kindSystem": "urn:oid:1.2.643.5.1.13.13.11.1522",
                "name": d.name,
                "whenAvailable": d.when_available,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}
