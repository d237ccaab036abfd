//! FHIR R4 `Communication` of a citizen's appeal: its channel (`medium`), topic and kind
//! (`category`), district, deadline, extension, escalation, answer and history
//! (extensions), the organization responsible (`recipient`), the citizen's identifiers and
//! contact (a contained `Patient`, the `subject`) and what it concerns (`about`).

use serde_json::{json, Value};

use super::{POLICY_SYSTEM, SNILS_SYSTEM, URI_SYSTEM};
use crate::model::appeal::{Appeal, AppealEvent, AppealStatus};
use crate::model::time::from_ms;

/// Code system of appeal channels.
pub const CHANNEL_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/appeal-channel";
/// Code system of appeal topics.
pub const TOPIC_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/appeal-topic";
/// Code system of appeal kinds (they set the deadline).
pub const KIND_SYSTEM: &str = "https://medgate.example/fhir/CodeSystem/appeal-kind";
/// Identifier system of an appeal's id in its channel (the channel's code appended).
pub const CHANNEL_ID_SYSTEM: &str = "https://medgate.example/fhir/NamingSystem/appeal-id";
/// Extension: the district.
pub const DISTRICT_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/appeal-district";
/// Extension: the deadline.
pub const DUE_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/appeal-due";
/// Extension: the extension of the deadline (when, why).
pub const EXTENDED_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/appeal-extended";
/// Extension: escalated to the ministry's operator as overdue.
pub const ESCALATED_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/appeal-escalated";
/// Extension: the answer (when, what, by whom, on time).
pub const ANSWER_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/appeal-answer";
/// Extension: one event of the appeal's history.
pub const EVENT_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/appeal-event";

fn instant(ms: i64) -> String {
    from_ms(ms).to_rfc3339()
}

/// The appeal as a `Communication`, with its history when given.
pub fn communication(a: &Appeal, events: &[AppealEvent], now: i64) -> Value {
    let mut ext = vec![
        json!({"url": DISTRICT_EXTENSION, "valueString": a.district}),
        json!({"url": DUE_EXTENSION, "valueDateTime": instant(a.due_at)}),
    ];
    if let Some((at, why)) = &a.extension {
        ext.push(json!({"url": EXTENDED_EXTENSION, "extension": [
            {"url": "at", "valueDateTime": instant(*at)},
            {"url": "reason", "valueString": why},
        ]}));
    }
    if let Some(at) = a.escalated_at {
        ext.push(json!({"url": ESCALATED_EXTENSION, "valueDateTime": instant(at)}));
    }
    if let Some(x) = &a.answer {
        ext.push(json!({"url": ANSWER_EXTENSION, "extension": [
            {"url": "at", "valueDateTime": instant(x.at)},
            {"url": "text", "valueString": x.text},
            {"url": "by", "valueString": x.by},
            {"url": "onTime", "valueBoolean": x.at <= a.due_at},
        ]}));
    }
    for e in events {
        let mut parts = vec![
            json!({"url": "action", "valueCode": e.action}),
            json!({"url": "at", "valueDateTime": instant(e.at)}),
            json!({"url": "detail", "valueString": e.detail}),
            json!({"url": "by", "valueString": e.client_id}),
        ];
        if let Some(o) = &e.org {
            parts.push(json!({"url": "organization", "valueString": o}));
        }
        ext.push(json!({"url": EVENT_EXTENSION, "extension": parts}));
    }
    let mut identifiers = Vec::new();
    if let Some(s) = &a.snils {
        identifiers.push(json!({"system": SNILS_SYSTEM, "value": s.digits()}));
    }
    if let Some(p) = &a.policy {
        identifiers.push(json!({"system": POLICY_SYSTEM, "value": p.digits()}));
    }
    let mut v = json!({
        "resourceType": "Communication",
        "id": a.id,
        "extension": ext,
        "identifier": [{"system": format!("{CHANNEL_ID_SYSTEM}/{}", a.channel), "value": a.external_id}],
        "status": match a.status {
            AppealStatus::Answered => "completed",
            _ => "in-progress",
        },
        "category": [
            {"coding": [{"system": TOPIC_SYSTEM, "code": a.topic.as_str()}]},
            {"coding": [{"system": KIND_SYSTEM, "code": a.kind.as_str()}]},
        ],
        "priority": if a.overdue(now) { "urgent" } else { "routine" },
        "medium": [{"coding": [{"system": CHANNEL_SYSTEM, "code": a.channel.as_str()}]}],
        "sent": instant(a.received_at),
        "payload": [{"contentString": a.text}],
    });
    // The citizen: identifiers and contact, contained (no Patient record of the gateway's).
    v["contained"] = json!([{
        "resourceType": "Patient",
        "id": "citizen",
        "identifier": identifiers,
        "telecom": [{"system": "other", "value": a.contact}],
    }]);
    v["subject"] = json!({"reference": "#citizen"});
    if let Some(org) = &a.org {
        v["recipient"] =
            json!([{"identifier": {"system": URI_SYSTEM, "value": format!("urn:oid:{org}")}}]);
    }
    if let Some((kind, id)) = &a.linked {
        let resource = if kind == "referral" {
            "ServiceRequest"
        } else {
            "Appointment"
        };
        v["about"] = json!([{"reference": format!("{resource}/{id}")}]);
    }
    if let Some(x) = &a.answer {
        v["received"] = json!(instant(x.at));
    }
    v
}
