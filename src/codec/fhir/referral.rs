//! Referrals as FHIR R4 workflow resources: the `ServiceRequest` (the order: patient,
//! diagnosis, requester, performer, attached documents) and its `Task` (the lifecycle:
//! status, business status, owner, the conclusion as output, every transition as an
//! extension), plus the acceptance rules as JSON.

use serde_json::{json, Value};

use super::{POLICY_SYSTEM, SNILS_SYSTEM, URI_SYSTEM};
use crate::model::organization::Region;
use crate::model::referral::{
    AcceptanceRule, PeerUpdate, Referral, ReferralEvent, ReferralStatus, RemoteDocument,
};
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
/// `Task.input` type text of a document the attending doctor attaches when confirming a
/// patient's request.
pub const SUPPORTING_DOCUMENT: &str = "supporting-document";
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
        ReferralStatus::Proposed => "draft",
        ReferralStatus::Requested | ReferralStatus::Accepted | ReferralStatus::Booked => "active",
        ReferralStatus::Completed => "completed",
        ReferralStatus::Rejected | ReferralStatus::Cancelled | ReferralStatus::Expired => "revoked",
    }
}

/// `Task.status` of a referral state (booked is in progress; expired has failed).
pub fn task_status(s: ReferralStatus) -> &'static str {
    match s {
        ReferralStatus::Proposed => "draft",
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
        "requested" => Some(ReferralStatus::Requested),
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
        // A patient's own request is a proposal until the attending doctor confirms it.
        "intent": if r.status == ReferralStatus::Proposed { "proposal" } else { "order" },
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

/// The business status in words: the state, or that the referral waits for the gateway of
/// the target's region.
fn business_text(r: &Referral) -> String {
    if r.status == ReferralStatus::Proposed {
        return "the patient's own request: waiting for the attending doctor to confirm".into();
    }
    if r.waiting_for_peer() {
        let region = Region::of(&r.target_org).map_or_else(String::new, |x| x.to_string());
        return format!("waiting for region {region}");
    }
    r.status.as_str().to_string()
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
            "text": business_text(r),
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
    match (&r.conclusion, &r.conclusion_id) {
        // A conclusion that came back from a peer travels inside the Task.
        (Some(d), _) => {
            v["contained"] = json!([conclusion_resource(d)]);
            v["output"] = json!([{
                "type": {"text": "conclusion"},
                "valueReference": {"reference": "#conclusion"},
            }]);
        }
        (None, Some(c)) => {
            v["output"] = json!([{
                "type": {"text": "conclusion"},
                "valueReference": {"reference": format!("DocumentReference/{c}")},
            }]);
        }
        (None, None) => {}
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

/// Extension of a new `ServiceRequest`: the slot of the target's duty schedule to book it
/// in (the duty path: accepted on the schedule's standing, booked at once).
pub const DUTY_SLOT_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/referral-duty-slot";

/// The duty-slot extension naming `slot` (a gateway slot id).
pub fn duty_slot_extension(slot: &str) -> Value {
    json!({"url": DUTY_SLOT_EXTENSION, "valueReference": {"reference": format!("Slot/{}", super::fhir_id(slot))}})
}

/// Identifier system of a referral's id, the same in every gateway it passes.
pub const REFERRAL_SYSTEM: &str = "urn:medgate:referral";
/// Identifier system of a document's id at the gateway that registered it.
pub const REFERRAL_DOCUMENT_SYSTEM: &str = "urn:medgate:document";
/// Code system of document kinds (NSI reference book 1522).
pub const DOCUMENT_KIND_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1522";

/// The `ServiceRequest` a gateway forwards to a peer: its documents contained, each with
/// its kind and its id at the gateway that registered it (the documents stay there).
pub fn forwarded_request(r: &Referral) -> Value {
    let mut v = service_request(r);
    let docs: Vec<Value> = r
        .documents
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "resourceType": "DocumentReference",
                "id": format!("doc{i}"),
                "status": "current",
                "identifier": [{"system": REFERRAL_DOCUMENT_SYSTEM, "value": id}],
                "type": {"coding": [{
                    "system": DOCUMENT_KIND_SYSTEM,
                    "code": r.document_kinds.get(i).map_or("", String::as_str),
                }]},
                "content": [{"attachment": {"contentType": "application/xml", "title": id}}],
            })
        })
        .collect();
    if !docs.is_empty() {
        v["supportingInfo"] = (0..docs.len())
            .map(|i| json!({"reference": format!("#doc{i}")}))
            .collect();
        if let Some(list) = v["contained"].as_array_mut() {
            list.extend(docs);
        }
    }
    v
}

fn conclusion_resource(d: &RemoteDocument) -> Value {
    use base64::Engine;
    let mut doc = json!({
        "resourceType": "DocumentReference",
        "id": "conclusion",
        "status": "current",
        "identifier": [{"system": REFERRAL_DOCUMENT_SYSTEM, "value": d.id}],
        "type": {"coding": [{"system": DOCUMENT_KIND_SYSTEM, "code": d.kind}]},
        "content": [{"attachment": {
            "contentType": d.content_type,
            "data": base64::engine::general_purpose::STANDARD.encode(&d.content),
        }}],
    });
    if let Some(n) = &d.registry_number {
        doc["masterIdentifier"] = json!({"system": REGISTRY_NUMBER_SYSTEM, "value": n});
    }
    doc
}

/// Identifier system of a document's number in the federal registry.
pub const REGISTRY_NUMBER_SYSTEM: &str = "urn:medgate:remd-number";

/// The `Task` a gateway sends a linked peer to tell it of a move: the state as
/// `businessStatus`, and what came with the move (visit, video link, conclusion).
pub fn peer_task(u: &PeerUpdate) -> Value {
    let mut v = json!({
        "resourceType": "Task",
        "id": u.referral_id,
        "identifier": [{"system": REFERRAL_SYSTEM, "value": u.referral_id}],
        "basedOn": [{"reference": format!("ServiceRequest/{}", u.referral_id)}],
        "status": task_status(u.status),
        "businessStatus": {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": u.status.as_str()}]},
        "intent": "order",
    });
    if let Some(reason) = &u.reason {
        v["statusReason"] = json!({"text": reason});
    }
    let mut inputs = Vec::new();
    if let Some(a) = &u.appointment_id {
        inputs.push(json!({
            "type": {"text": "appointment"},
            "valueReference": {"reference": format!("Appointment/{a}")},
        }));
    }
    if let Some(url) = &u.video_url {
        inputs.push(json!({"type": {"text": VIDEO_VISIT}, "valueUrl": url}));
    }
    if !inputs.is_empty() {
        v["input"] = json!(inputs);
    }
    if let Some(d) = &u.conclusion {
        v["contained"] = json!([conclusion_resource(d)]);
        v["output"] = json!([{
            "type": {"text": "conclusion"},
            "valueReference": {"reference": "#conclusion"},
        }]);
    }
    v
}

/// Reads a peer's `Task` (as [`peer_task`] writes it) for referral `id`; a fault names the
/// field.
pub fn peer_update(id: &str, v: &Value) -> Result<PeerUpdate, (String, String)> {
    use base64::Engine;
    let bad = |f: &str, why: &str| (format!("Task.{f}"), why.to_string());
    let code = v["businessStatus"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["system"].as_str() == Some(BUSINESS_STATUS_SYSTEM))
        .and_then(|c| c["code"].as_str())
        .ok_or_else(|| bad("businessStatus", "a peer's Task names the referral's state"))?;
    let status =
        ReferralStatus::parse(code).ok_or_else(|| bad("businessStatus", "not a referral state"))?;
    let input = |text: &str| {
        v["input"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["type"]["text"].as_str() == Some(text))
            .cloned()
    };
    let appointment_id = input("appointment")
        .and_then(|i| {
            i["valueReference"]["reference"]
                .as_str()
                .map(str::to_string)
        })
        .map(|r| r.trim_start_matches("Appointment/").to_string());
    let video_url = match input(VIDEO_VISIT) {
        None => None,
        Some(i) => {
            let raw = i["valueUrl"].as_str().unwrap_or("");
            match url::Url::parse(raw) {
                Ok(u) if u.scheme() == "https" && raw.len() <= 2000 => Some(u.to_string()),
                _ => return Err(bad("input[video-visit].valueUrl", "an absolute https URL")),
            }
        }
    };
    let conclusion = match v["contained"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"].as_str() == Some("conclusion"))
    {
        None => None,
        Some(d) => {
            let attachment = &d["content"][0]["attachment"];
            let content = attachment["data"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or_else(|| bad("contained[conclusion].content", "base64 data"))?;
            let doc_id = d["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["system"].as_str() == Some(REFERRAL_DOCUMENT_SYSTEM))
                .and_then(|i| i["value"].as_str())
                .ok_or_else(|| bad("contained[conclusion].identifier", "the document's id"))?;
            let kind = d["type"]["coding"][0]["code"]
                .as_str()
                .ok_or_else(|| bad("contained[conclusion].type", "the document's kind"))?;
            Some(RemoteDocument {
                id: doc_id.chars().take(200).collect(),
                kind: kind.chars().take(50).collect(),
                registry_number: d["masterIdentifier"]["value"]
                    .as_str()
                    .map(|s| s.chars().take(100).collect()),
                content_type: attachment["contentType"]
                    .as_str()
                    .unwrap_or("application/xml")
                    .chars()
                    .take(100)
                    .collect(),
                content,
            })
        }
    };
    Ok(PeerUpdate {
        referral_id: id.to_string(),
        status,
        reason: v["statusReason"]["text"]
            .as_str()
            .map(|s| s.chars().take(2000).collect()),
        appointment_id: appointment_id.map(|a| a.chars().take(200).collect()),
        video_url,
        conclusion,
    })
}
