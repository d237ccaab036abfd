//! The directory and schedules as FHIR R4: `Organization`, `Location` (the place of care an
//! organization runs, which schedules and appointments reference), `Practitioner`,
//! `PractitionerRole`, `Schedule` and `Slot`. A page of slots is serialized from typed
//! structs straight to JSON (slot search is the hottest read path).

use serde::Serialize;
use serde_json::{json, Value};

use super::{fhir_id, CHANNEL_EXTENSION, POSITION_SYSTEM, SPECIALTY_SYSTEM, URI_SYSTEM};
use crate::model::organization::Organization;
use crate::model::schedule::{Practitioner, Slot, SlotStatus};
use crate::model::time::instant_secs;
use crate::model::Oid;

/// The reference to the place of care of organization `org`.
pub fn location_reference(org: &Oid) -> String {
    format!("Location/{org}")
}

/// The `Organization` of an organization.
pub fn organization(o: &Organization) -> Value {
    json!({
        "resourceType": "Organization",
        "id": o.oid.as_str(),
        "identifier": [{"system": URI_SYSTEM, "value": format!("urn:oid:{}", o.oid)}],
        "active": o.active,
        "name": o.name,
        "alias": [o.short_name],
        "address": [{"text": o.address, "district": o.district}],
    })
}

/// The `Location` where organization `o` sees patients: one per organization, with the
/// organization's OID as its id.
pub fn location(o: &Organization) -> Value {
    json!({
        "resourceType": "Location",
        "id": o.oid.as_str(),
        "identifier": [{"system": URI_SYSTEM, "value": format!("urn:oid:{}", o.oid)}],
        "status": if o.active { "active" } else { "inactive" },
        "name": o.name,
        "alias": [o.short_name],
        "mode": "instance",
        "address": {"text": o.address, "district": o.district},
        "managingOrganization": {"reference": format!("Organization/{}", o.oid)},
    })
}

/// The `Practitioner` of a practitioner.
pub fn practitioner(p: &Practitioner) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": fhir_id(&p.id),
        "identifier": [{"system": format!("urn:medgate:{}:practitioner", p.source), "value": p.external_id}],
        "active": true,
        "name": [{"family": p.family, "given": [p.given]}],
        "qualification": [{"code": {"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code, "version": p.specialty_version}]}}],
    })
}

/// The `PractitionerRole` of a practitioner: specialty and position at an organization.
pub fn practitioner_role(p: &Practitioner) -> Value {
    json!({
        "resourceType": "PractitionerRole",
        "id": fhir_id(&p.id),
        "active": true,
        "practitioner": {"reference": format!("Practitioner/{}", fhir_id(&p.id))},
        "organization": {"reference": format!("Organization/{}", p.org)},
        "location": [{"reference": location_reference(&p.org)}],
        "code": [{"coding": [{"system": POSITION_SYSTEM, "code": p.position_code}]}],
        "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code, "version": p.specialty_version}]}],
    })
}

/// The `Schedule` of a practitioner (their bookable time at the organization's place).
pub fn schedule(p: &Practitioner) -> Value {
    json!({
        "resourceType": "Schedule",
        "id": fhir_id(&p.id),
        "active": true,
        "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code}]}],
        "actor": [
            {"reference": format!("Practitioner/{}", fhir_id(&p.id))},
            {"reference": location_reference(&p.org)}
        ],
        "comment": format!("room {}", p.room),
    })
}

/// A `Slot` as serialized.
#[derive(Serialize)]
pub struct SlotOut<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    extension: Vec<CodeExtension>,
    specialty: [Concept<'a>; 1],
    schedule: Reference,
    status: &'static str,
    start: String,
    end: String,
}

#[derive(Serialize)]
struct CodeExtension {
    url: &'static str,
    #[serde(rename = "valueCode")]
    value_code: &'static str,
}

#[derive(Serialize)]
struct Concept<'a> {
    coding: [Coding<'a>; 1],
}

#[derive(Serialize)]
struct Coding<'a> {
    system: &'static str,
    code: &'a str,
}

#[derive(Serialize)]
struct Reference {
    reference: String,
}

#[derive(Serialize)]
struct Link<'a> {
    relation: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(rename = "fullUrl")]
    full_url: String,
    resource: SlotOut<'a>,
    search: Mode,
}

#[derive(Serialize)]
struct Mode {
    mode: &'static str,
}

#[derive(Serialize)]
struct SlotBundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    link: Vec<Link<'a>>,
    entry: Vec<Entry<'a>>,
}

/// FHIR `Slot.status` of a slot state (a withdrawn slot is `busy-unavailable`).
pub fn slot_status(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Free => "free",
        SlotStatus::Busy => "busy",
        SlotStatus::Withdrawn => "busy-unavailable",
    }
}

/// The slot state a FHIR `Slot.status` search value names.
pub fn slot_status_of(fhir: &str) -> Option<SlotStatus> {
    match fhir {
        "free" => Some(SlotStatus::Free),
        "busy" => Some(SlotStatus::Busy),
        "busy-unavailable" => Some(SlotStatus::Withdrawn),
        _ => None,
    }
}

/// The `Slot` of a slot.
pub fn slot(s: &Slot) -> SlotOut<'_> {
    SlotOut {
        resource_type: "Slot",
        id: fhir_id(&s.id),
        extension: s
            .channels
            .iter()
            .map(|c| CodeExtension {
                url: CHANNEL_EXTENSION,
                value_code: c.as_str(),
            })
            .collect(),
        specialty: [Concept {
            coding: [Coding {
                system: SPECIALTY_SYSTEM,
                code: &s.specialty_code,
            }],
        }],
        schedule: Reference {
            reference: format!("Schedule/{}", fhir_id(&s.practitioner_id)),
        },
        status: slot_status(s.status),
        start: instant_secs(s.start_at),
        end: instant_secs(s.end_at),
    }
}

/// A searchset of slots, as JSON bytes: entries under `base`, `self` and `next` links.
pub fn slot_searchset(
    base: &str,
    self_url: &str,
    next_url: Option<&str>,
    slots: &[Slot],
) -> serde_json::Result<Vec<u8>> {
    let mut link = vec![Link {
        relation: "self",
        url: self_url,
    }];
    if let Some(n) = next_url {
        link.push(Link {
            relation: "next",
            url: n,
        });
    }
    serde_json::to_vec(&SlotBundle {
        resource_type: "Bundle",
        kind: "searchset",
        link,
        entry: slots
            .iter()
            .map(|s| Entry {
                full_url: format!("{base}/Slot/{}", fhir_id(&s.id)),
                resource: slot(s),
                search: Mode { mode: "match" },
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_states_map_both_ways() {
        for s in [SlotStatus::Free, SlotStatus::Busy, SlotStatus::Withdrawn] {
            assert_eq!(slot_status_of(slot_status(s)), Some(s));
        }
        assert_eq!(slot_status_of("withdrawn"), None);
    }
}
