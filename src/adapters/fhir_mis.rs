//! Client of clinic systems that speak FHIR R4 (contract in `adapters/fhir-mis/`): schedule
//! sync (`Practitioner`, paged `Slot`, `_lastUpdated` changes) and booking (`Appointment`
//! create with a client reference, cancel by `PUT` with `status: cancelled`).

use std::time::Duration;

use chrono::NaiveDate;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::exchange::{exchange, Link, NoAnswer, Request};
use crate::exchange::partners::Partners;
use crate::exchange::txlog::TxLog;
use crate::model::schedule::{
    Channel, Channels, Practitioner, Slot, SlotChange, SlotChangeKind, SlotStatus,
};
use crate::model::time::instant_millis;
use crate::model::Oid;
use crate::services::mis::{Mis, MisBooking, MisError};
use crate::services::schedule_sync::{Changes, SchedulePage, ScheduleSource, SyncError};

/// Source name of records that come from this system.
pub const SOURCE: &str = "fhir-mis";
/// Identifier system of the gateway's client reference on appointments.
pub const CLIENT_REF_SYSTEM: &str = "urn:medgate:client-ref";
const CHANNEL_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/booking-channel";
const ORG_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/organization";
const ROOM_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/room";

/// A failed call: no answer, or an answer with an HTTP status and the MIS's issue code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FhirMisError {
    /// Timeout or transport failure.
    #[error("FHIR MIS unreachable: {0}")]
    NoAnswer(String),
    /// An error status with the OperationOutcome's code.
    #[error("FHIR MIS answered HTTP {status} ({code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// `issue[0].details.coding[0].code`.
        code: String,
        /// `issue[0].details.text`.
        message: String,
    },
    /// The answer could not be read.
    #[error("unreadable FHIR MIS answer: {0}")]
    Malformed(String),
}

impl From<NoAnswer> for FhirMisError {
    fn from(e: NoAnswer) -> Self {
        FhirMisError::NoAnswer(e.to_string())
    }
}

impl super::exchange::PartnerFault for FhirMisError {
    fn is_partner_fault(&self) -> bool {
        match self {
            FhirMisError::NoAnswer(_) | FhirMisError::Malformed(_) => true,
            FhirMisError::Refused { status, .. } => *status >= 500,
        }
    }
}

impl From<FhirMisError> for SyncError {
    fn from(e: FhirMisError) -> Self {
        SyncError::Source(e.to_string())
    }
}

/// A configured client.
#[derive(Clone)]
pub struct FhirMisClient {
    link: Link,
    base: String,
}

impl FhirMisClient {
    /// A client of the FHIR base URL `base` (e.g. `https://mis.example/fhir`).
    pub fn new(base: &str, timeout: Duration, txlog: TxLog) -> FhirMisClient {
        FhirMisClient {
            link: Link::new(timeout, txlog, Partners::default()),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The same client reporting to the gateway's shared breakers.
    pub fn with_partners(mut self, partners: Partners) -> FhirMisClient {
        self.link.partners = partners;
        self
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        operation: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), FhirMisError> {
        let url = format!("{}/{path}", self.base);
        let request = Request {
            method,
            adapter: SOURCE,
            operation: format!("fhir-mis.{operation}"),
            url: &url,
            correlation_id: operation,
            headers: vec![
                ("content-type", "application/fhir+json".into()),
                ("accept", "application/fhir+json".into()),
            ],
            body: body.map(|b| b.to_string()).unwrap_or_default(),
        };
        exchange(&self.link, request, |status, bytes| {
            let v: Value = serde_json::from_slice(bytes)
                .map_err(|e| FhirMisError::Malformed(e.to_string()))?;
            if status >= 400 {
                let issue = &v["issue"][0];
                return Err(FhirMisError::Refused {
                    status,
                    code: issue["details"]["coding"][0]["code"]
                        .as_str()
                        .unwrap_or("UNKNOWN")
                        .to_string(),
                    message: issue["details"]["text"].as_str().unwrap_or("").to_string(),
                });
            }
            Ok((status, v))
        })
        .await
    }

    fn entries(v: &Value) -> Vec<&Value> {
        v["entry"]
            .as_array()
            .map(|e| e.iter().map(|x| &x["resource"]).collect())
            .unwrap_or_default()
    }

    async fn practitioners(&self, org: &Oid) -> Result<Vec<Practitioner>, FhirMisError> {
        let (_, v) = self
            .call(
                reqwest::Method::GET,
                &format!("Practitioner?organization={org}"),
                "Practitioner.search",
                None,
            )
            .await?;
        Self::entries(&v)
            .into_iter()
            .map(|p| {
                let ext = |url: &str| {
                    p["extension"].as_array().and_then(|e| {
                        e.iter()
                            .find(|x| x["url"].as_str() == Some(url))
                            .and_then(|x| x["valueString"].as_str())
                    })
                };
                let id = p["id"]
                    .as_str()
                    .ok_or_else(|| FhirMisError::Malformed("Practitioner.id missing".into()))?;
                let coding = &p["qualification"][0]["code"]["coding"][0];
                let org = match ext(ORG_EXTENSION) {
                    Some(o) => Oid::parse_organization(o).map_err(|e| {
                        FhirMisError::Malformed(format!("Practitioner organization: {e}"))
                    })?,
                    None => org.clone(),
                };
                Ok(Practitioner {
                    id: format!("{SOURCE}:{id}"),
                    org,
                    source: SOURCE.into(),
                    external_id: id.to_string(),
                    snils: p["identifier"][0]["value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    family: p["name"][0]["family"].as_str().unwrap_or("").to_string(),
                    given: p["name"][0]["given"][0].as_str().unwrap_or("").to_string(),
                    specialty_code: coding["code"].as_str().unwrap_or("").to_string(),
                    specialty_version: coding["version"].as_str().unwrap_or("").to_string(),
                    position_code: String::new(),
                    room: ext(ROOM_EXTENSION).unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    fn slot_row(
        s: &Value,
        org: &Oid,
        specialty_of: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<Slot, FhirMisError> {
        let id = s["id"]
            .as_str()
            .ok_or_else(|| FhirMisError::Malformed("Slot.id missing".into()))?;
        let time = |k: &str| {
            s[k].as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| FhirMisError::Malformed(format!("Slot.{k} is not an instant")))
        };
        let practitioner = format!(
            "{SOURCE}:{}",
            s["schedule"]["reference"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("Schedule/")
        );
        let channels = s["extension"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| x["url"].as_str() == Some(CHANNEL_EXTENSION))
                    .filter_map(|x| x["valueCode"].as_str().and_then(Channel::parse))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok(Slot {
            id: format!("{SOURCE}:{id}"),
            org: org.clone(),
            specialty_code: specialty_of(&practitioner),
            practitioner_id: practitioner,
            start_at: time("start")?,
            end_at: time("end")?,
            status: match s["status"].as_str() {
                Some("free") => SlotStatus::Free,
                Some("busy") | Some("busy-tentative") => SlotStatus::Busy,
                _ => SlotStatus::Withdrawn,
            },
            channels: Channels::of(&channels),
            source: SOURCE.into(),
        })
    }
}

impl ScheduleSource for FhirMisClient {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn resources<'a>(
        &'a self,
        org: &'a Oid,
    ) -> BoxFuture<'a, Result<Vec<Practitioner>, SyncError>> {
        Box::pin(async move { Ok(self.practitioners(org).await?) })
    }

    fn schedule_page<'a>(
        &'a self,
        org: &'a Oid,
        from: NaiveDate,
        to: NaiveDate,
        page: Option<&'a str>,
        specialty_of: &'a (dyn Fn(&str) -> String + Sync),
    ) -> BoxFuture<'a, Result<SchedulePage, SyncError>> {
        Box::pin(async move {
            let path = match page {
                Some(next) => next.to_string(),
                None => format!("Slot?organization={org}&start=ge{from}&start=lt{to}&_count=2000"),
            };
            let (_, v) = self
                .call(reqwest::Method::GET, &path, "Slot.search", None)
                .await?;
            let rows = Self::entries(&v)
                .into_iter()
                .map(|s| Self::slot_row(s, org, specialty_of))
                .collect::<Result<Vec<_>, _>>()?;
            let next = v["link"].as_array().and_then(|l| {
                l.iter()
                    .find(|x| x["relation"].as_str() == Some("next"))
                    .and_then(|x| x["url"].as_str())
                    .map(|u| u.trim_start_matches(&format!("{}/", self.base)).to_string())
            });
            Ok((rows, next))
        })
    }

    fn changes<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Changes, SyncError>> {
        Box::pin(async move {
            let since = token.parse::<i64>().unwrap_or(0);
            let instant = instant_millis(since).replace('+', "%2B");
            let (_, v) = self
                .call(
                    reqwest::Method::GET,
                    &format!("Slot?_lastUpdated=gt{instant}"),
                    "Slot.changes",
                    None,
                )
                .await?;
            let mut next = since;
            let mut out = Vec::new();
            for s in Self::entries(&v) {
                let (Some(id), Some(status)) = (s["id"].as_str(), s["status"].as_str()) else {
                    continue;
                };
                if let Some(t) = s["meta"]["lastUpdated"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    next = next.max(t.timestamp_millis());
                }
                let kind = match status {
                    "free" => SlotChangeKind::Free,
                    "busy" | "busy-tentative" => SlotChangeKind::Booked,
                    _ => SlotChangeKind::Withdrawn,
                };
                let time = |n: &str| {
                    s[n].as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp_millis())
                };
                out.push(SlotChange {
                    id: format!("{SOURCE}:{id}"),
                    kind,
                    times: time("start").zip(time("end")),
                });
            }
            Ok((out, next.to_string()))
        })
    }
}

fn mis_error(e: FhirMisError) -> MisError {
    match e {
        FhirMisError::Refused {
            status,
            code,
            message,
        } if (400..500).contains(&status) => MisError::Refused { code, message },
        other => MisError::Unavailable(other.to_string()),
    }
}

impl Mis for FhirMisClient {
    fn book(&self, b: MisBooking) -> BoxFuture<'_, Result<String, MisError>> {
        Box::pin(async move {
            let mut ids = Vec::new();
            if let Some(p) = &b.patient.policy {
                ids.push(
                    json!({"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": p.digits()}),
                );
            }
            if let Some(s) = &b.patient.snils {
                ids.push(json!({"system": "urn:oid:1.2.643.100.3", "value": s.digits()}));
            }
            let mut patient =
                json!({"resourceType": "Patient", "id": "patient", "identifier": ids});
            if let Some(d) = b.patient.birth_date {
                patient["birthDate"] = json!(d.to_string());
            }
            let body = json!({
                "resourceType": "Appointment", "status": "booked",
                "identifier": [{"system": CLIENT_REF_SYSTEM, "value": b.client_ref}],
                "extension": [{"url": CHANNEL_EXTENSION, "valueCode": b.channel.as_str()}],
                "slot": [{"reference": format!("Slot/{}", b.slot_external_id)}],
                "contained": [patient],
                "participant": [{"actor": {"reference": "#patient"}, "status": "accepted"}],
            });
            let (_, v) = self
                .call(
                    reqwest::Method::POST,
                    "Appointment",
                    "Appointment.create",
                    Some(body),
                )
                .await
                .map_err(mis_error)?;
            v["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| MisError::Unavailable("answer without Appointment.id".into()))
        })
    }

    fn cancel<'a>(
        &'a self,
        external_id: Option<&'a str>,
        client_ref: &'a str,
    ) -> BoxFuture<'a, Result<(), MisError>> {
        Box::pin(async move {
            let id = match external_id {
                Some(id) => id.to_string(),
                None => {
                    let (_, v) = self
                        .call(
                            reqwest::Method::GET,
                            &format!("Appointment?identifier={CLIENT_REF_SYSTEM}|{client_ref}"),
                            "Appointment.search",
                            None,
                        )
                        .await
                        .map_err(mis_error)?;
                    match Self::entries(&v).first().and_then(|a| a["id"].as_str()) {
                        Some(id) => id.to_string(),
                        // Never booked there: nothing to undo.
                        None => return Ok(()),
                    }
                }
            };
            let body = json!({"resourceType": "Appointment", "id": id, "status": "cancelled",
                "participant": [{"status": "declined"}]});
            match self
                .call(
                    reqwest::Method::PUT,
                    &format!("Appointment/{id}"),
                    "Appointment.cancel",
                    Some(body),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(FhirMisError::Refused { status: 404, .. }) => Ok(()),
                Err(e) => Err(mis_error(e)),
            }
        })
    }
}
