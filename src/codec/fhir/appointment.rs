//! Appointments as FHIR R4: the `Appointment` of a booking (the patient contained, the
//! practitioner and the organization's place of care as participants), the proposals of
//! `$find`, and the one mapping between the gateway's states and FHIR's.

use serde_json::{json, Value};

use super::directory::location_reference;
use super::{fhir_id, CHANNEL_EXTENSION, POLICY_SYSTEM, SNILS_SYSTEM, SPECIALTY_SYSTEM};
use crate::model::booking::{Appointment, AppointmentStatus};
use crate::model::schedule::Slot;
use crate::model::time::{instant_millis, instant_secs};

/// Extension with the gateway's own booking state (`held`, `expired`, `withdrawn`, ...).
pub const STATUS_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/booking-status";
/// Extension with the end of a hold.
pub const HOLD_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/hold-expires";
/// Code system of appointment types (HL7 v2 table 0276).
pub const APPOINTMENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";

/// FHIR `Appointment.status` of a gateway state.
pub fn fhir_status(s: AppointmentStatus) -> &'static str {
    match s {
        AppointmentStatus::Held => "pending",
        AppointmentStatus::Booked | AppointmentStatus::Urgent => "booked",
        AppointmentStatus::Failed => "entered-in-error",
        AppointmentStatus::Cancelled
        | AppointmentStatus::Expired
        | AppointmentStatus::Withdrawn => "cancelled",
    }
}

/// The gateway state a FHIR `status` search value selects.
pub fn status_of(fhir: &str) -> Option<AppointmentStatus> {
    match fhir {
        "pending" => Some(AppointmentStatus::Held),
        "booked" => Some(AppointmentStatus::Booked),
        "cancelled" => Some(AppointmentStatus::Cancelled),
        "entered-in-error" => Some(AppointmentStatus::Failed),
        _ => None,
    }
}

/// The `Appointment` of an appointment.
pub fn appointment(a: &Appointment) -> Value {
    let mut identifiers = vec![json!({"system": "urn:medgate:appointment", "value": a.id})];
    if let Some(x) = &a.external_id {
        identifiers
            .push(json!({"system": format!("urn:medgate:{}:appointment", a.source), "value": x}));
    }
    let mut patient_ids = Vec::new();
    if let Some(p) = &a.patient.policy {
        patient_ids.push(json!({"system": POLICY_SYSTEM, "value": p.digits()}));
    }
    if let Some(s) = &a.patient.snils {
        patient_ids.push(json!({"system": SNILS_SYSTEM, "value": s.digits()}));
    }
    let mut participants = Vec::new();
    let mut contained = Vec::new();
    if !patient_ids.is_empty() {
        let mut p = json!({"resourceType": "Patient", "id": "patient", "identifier": patient_ids});
        if let Some(b) = a.patient.birth_date {
            p["birthDate"] = json!(b.to_string());
        }
        contained.push(p);
        participants.push(json!({"actor": {"reference": "#patient"}, "required": "required", "status": "accepted"}));
    }
    if !a.practitioner_id.is_empty() {
        participants.push(json!({"actor": {"reference": format!("Practitioner/{}", fhir_id(&a.practitioner_id))}, "required": "required", "status": "accepted"}));
    }
    participants
        .push(json!({"actor": {"reference": location_reference(&a.org)}, "status": "accepted"}));
    let mut extension = vec![
        json!({"url": CHANNEL_EXTENSION, "valueCode": a.channel.as_str()}),
        json!({"url": STATUS_EXTENSION, "valueCode": a.status.as_str()}),
    ];
    if let Some(h) = a.hold_expires_at {
        extension.push(json!({"url": HOLD_EXTENSION, "valueInstant": instant_secs(h)}));
    }
    let status = fhir_status(a.status);
    let mut v = json!({
        "resourceType": "Appointment",
        "id": a.id,
        "meta": {"lastUpdated": instant_millis(a.updated_at)},
        "extension": extension,
        "identifier": identifiers,
        "status": status,
        "created": instant_secs(a.created_at),
        "participant": participants,
    });
    if !contained.is_empty() {
        v["contained"] = json!(contained);
    }
    if a.start_at > 0 {
        v["start"] = json!(instant_secs(a.start_at));
        v["end"] = json!(instant_secs(a.end_at.max(a.start_at)));
    }
    if let Some(slot) = &a.slot_id {
        v["slot"] = json!([{"reference": format!("Slot/{}", fhir_id(slot))}]);
    }
    if !a.specialty_code.is_empty() {
        v["specialty"] =
            json!([{"coding": [{"system": SPECIALTY_SYSTEM, "code": a.specialty_code}]}]);
    }
    if a.status == AppointmentStatus::Urgent {
        v["appointmentType"] = json!({"coding": [{"system": APPOINTMENT_TYPE_SYSTEM, "code": "EMERGENCY"}], "text": "out of schedule"});
    }
    if status == "cancelled" && !a.reason.is_empty() {
        v["cancelationReason"] = json!({"text": a.reason});
    } else if !a.reason.is_empty() {
        v["comment"] = json!(a.reason);
    }
    if let Some(r) = &a.replaces {
        v["comment"] = json!(format!("replaces appointment {r}"));
    }
    v
}

/// A free slot proposed by `$find` as an appointment to book.
pub fn proposal(s: &Slot) -> Value {
    json!({
        "resourceType": "Appointment",
        "status": "proposed",
        "extension": s.channels.iter().map(|c| json!({"url": CHANNEL_EXTENSION, "valueCode": c.as_str()})).collect::<Vec<_>>(),
        "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": s.specialty_code}]}],
        "start": instant_secs(s.start_at),
        "end": instant_secs(s.end_at),
        "slot": [{"reference": format!("Slot/{}", fhir_id(&s.id))}],
        "participant": [
            {"actor": {"reference": format!("Practitioner/{}", fhir_id(&s.practitioner_id))}, "required": "required", "status": "needs-action"},
            {"actor": {"reference": location_reference(&s.org)}, "status": "needs-action"}
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searchable_states_map_back() {
        for s in ["pending", "booked", "cancelled", "entered-in-error"] {
            assert_eq!(fhir_status(status_of(s).unwrap()), s);
        }
        assert_eq!(status_of("proposed"), None);
    }
}
