//! FHIR R4 booking: `Appointment` read and search, the IHE Scheduling operations
//! `Appointment/$find` (ITI-115), `$hold` (ITI-116) and `$book` (ITI-117), cancel by
//! `PUT` with `status: cancelled`, `$reschedule`, and urgent visits (`POST Appointment` with
//! appointment type `EMERGENCY`). Also `Schedule` and `PractitionerRole` searches.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data, Path};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::booking::{booking_error, may_read, patient, request_digest, requester, PatientFields};
use super::fhir::{base_url, check_params, searchset};
use super::fhir_schedule::{fhir_id, store_id, CHANNEL_EXTENSION, SPECIALTY_SYSTEM};
use super::middleware::Operation;
use super::{ApiError, ApiResult, AppState, Principal};
use crate::codec::fhir::{IssueType, FHIR_JSON};
use crate::model::Oid;
use crate::services::booking::{Patient, Target};
use crate::store::appointments::{Appointment, AppointmentQuery};
use crate::store::schedules::SlotQuery;

/// Identifier system of SNILS.
pub const SNILS_SYSTEM: &str = "urn:oid:1.2.643.100.3";
/// Identifier system of OMS policy numbers (ENP) used by the gateway and its simulators.
pub const POLICY_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.2.1.1.635";
/// Extension with the gateway's own booking status (`held`, `expired`, `withdrawn`, ...).
pub const STATUS_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/booking-status";
/// Extension with the end of a hold.
pub const HOLD_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/hold-expires";
/// Code system of appointment types (HL7 v2 table 0276).
const APPOINTMENT_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0276";

/// Registers the routes (under `/fhir`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/Appointment/$find", web::get().to(find))
        .route("/Appointment/$find", web::post().to(find))
        .route("/Appointment/$hold", web::post().to(hold))
        .route("/Appointment/$book", web::post().to(book))
        .route("/Appointment", web::get().to(search))
        .route("/Appointment", web::post().to(create))
        .route("/Appointment/{id}", web::get().to(read))
        .route("/Appointment/{id}", web::put().to(update))
        .route("/Appointment/{id}/$reschedule", web::post().to(reschedule))
        .route("/Schedule", web::get().to(search_schedules))
        .route("/PractitionerRole", web::get().to(search_roles));
}

fn fhir_status(status: &str) -> &'static str {
    match status {
        "held" => "pending",
        "booked" | "urgent" => "booked",
        "failed" => "entered-in-error",
        _ => "cancelled",
    }
}

fn instant(ms: i64) -> String {
    crate::store::from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The FHIR `Appointment` of a stored appointment.
pub fn appointment_resource(a: &Appointment) -> Value {
    let mut identifiers = vec![json!({"system": "urn:medgate:appointment", "value": a.id})];
    if let Some(x) = &a.external_id {
        identifiers
            .push(json!({"system": format!("urn:medgate:{}:appointment", a.source), "value": x}));
    }
    let mut patient_ids = Vec::new();
    if let Some(p) = &a.patient_policy {
        patient_ids.push(json!({"system": POLICY_SYSTEM, "value": p}));
    }
    if let Some(s) = &a.patient_snils {
        patient_ids.push(json!({"system": SNILS_SYSTEM, "value": s}));
    }
    let mut participants = Vec::new();
    let mut contained = Vec::new();
    if !patient_ids.is_empty() {
        let mut p = json!({"resourceType": "Patient", "id": "patient", "identifier": patient_ids});
        if let Some(b) = &a.patient_birth {
            p["birthDate"] = json!(b);
        }
        contained.push(p);
        participants.push(json!({"actor": {"reference": "#patient"}, "required": "required", "status": "accepted"}));
    }
    if !a.practitioner_id.is_empty() {
        participants.push(json!({"actor": {"reference": format!("Practitioner/{}", fhir_id(&a.practitioner_id))}, "required": "required", "status": "accepted"}));
    }
    participants.push(json!({"actor": {"reference": format!("Organization/{}", a.org_oid)}, "status": "accepted"}));
    let mut extension = vec![
        json!({"url": CHANNEL_EXTENSION, "valueCode": a.channel}),
        json!({"url": STATUS_EXTENSION, "valueCode": a.status}),
    ];
    if let Some(h) = a.hold_expires_at {
        extension.push(json!({"url": HOLD_EXTENSION, "valueInstant": instant(h)}));
    }
    let mut v = json!({
        "resourceType": "Appointment",
        "id": a.id,
        "meta": {"lastUpdated": crate::store::from_ms(a.updated_at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)},
        "extension": extension,
        "identifier": identifiers,
        "status": fhir_status(&a.status),
        "created": instant(a.created_at),
        "participant": participants,
    });
    if !contained.is_empty() {
        v["contained"] = json!(contained);
    }
    if a.start_at > 0 {
        v["start"] = json!(instant(a.start_at));
        v["end"] = json!(instant(a.end_at.max(a.start_at)));
    }
    if !a.slot_id.is_empty() {
        v["slot"] = json!([{"reference": format!("Slot/{}", fhir_id(&a.slot_id))}]);
    }
    if !a.specialty_code.is_empty() {
        v["specialty"] =
            json!([{"coding": [{"system": SPECIALTY_SYSTEM, "code": a.specialty_code}]}]);
    }
    if a.status == "urgent" {
        v["appointmentType"] = json!({"coding": [{"system": APPOINTMENT_TYPE_SYSTEM, "code": "EMERGENCY"}], "text": "out of schedule"});
    }
    if fhir_status(&a.status) == "cancelled" && !a.reason.is_empty() {
        v["cancelationReason"] = json!({"text": a.reason});
    } else if !a.reason.is_empty() {
        v["comment"] = json!(a.reason);
    }
    if let Some(r) = &a.replaces {
        v["comment"] = json!(format!("replaces appointment {r}"));
    }
    v
}

fn json_body(body: &[u8], what: &str) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "INVALID_JSON",
            format!("the body is not JSON: {e}"),
        )
        .at(what.to_string())
    })
}

/// The named parameters of a `Parameters` body (or the body itself when it is the
/// resource an operation expects).
struct Params {
    v: Value,
}

impl Params {
    fn of(body: Value, direct: &str) -> ApiResult<Params> {
        match body["resourceType"].as_str() {
            Some("Parameters") => Ok(Params { v: body }),
            Some(t) if t == direct => Ok(Params {
                v: json!({"resourceType": "Parameters", "parameter": [{"name": "appointment", "resource": body}]}),
            }),
            other => Err(ApiError::invalid(
                "WRONG_RESOURCE_TYPE",
                "resourceType",
                format!("expected Parameters or {direct}, got {other:?}"),
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.v["parameter"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
    }

    fn code(&self, name: &str) -> Option<&str> {
        let p = self.get(name)?;
        p["valueCode"]
            .as_str()
            .or_else(|| p["valueString"].as_str())
    }

    fn resource(&self, name: &str) -> Option<&Value> {
        self.get(name)
            .map(|p| &p["resource"])
            .filter(|r| r.is_object())
    }
}

/// Patient identifiers from a Patient resource (a `patient` parameter or a contained one).
fn patient_from(resource: &Value, path: &'static str) -> ApiResult<Patient> {
    let ids = resource["identifier"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |system: &str| {
        ids.iter()
            .find(|i| i["system"].as_str() == Some(system))
            .and_then(|i| i["value"].as_str())
            .map(str::to_string)
    };
    let fields = match path {
        "patient" => PatientFields {
            policy: "Parameters.parameter[patient].resource.identifier[policy]",
            birth_date: "Parameters.parameter[patient].resource.birthDate",
            snils: "Parameters.parameter[patient].resource.identifier[snils]",
        },
        _ => PatientFields {
            policy: "Appointment.contained[Patient].identifier[policy]",
            birth_date: "Appointment.contained[Patient].birthDate",
            snils: "Appointment.contained[Patient].identifier[snils]",
        },
    };
    patient(
        find(POLICY_SYSTEM).as_deref(),
        resource["birthDate"].as_str(),
        find(SNILS_SYSTEM).as_deref(),
        &fields,
    )
}

/// The patient of a request: a `patient` parameter, or a Patient contained in the
/// appointment and referenced by a participant.
fn request_patient(p: &Params, appointment: Option<&Value>) -> ApiResult<Option<Patient>> {
    if let Some(r) = p.resource("patient") {
        return patient_from(r, "patient").map(Some);
    }
    let Some(a) = appointment else {
        return Ok(None);
    };
    let contained = a["contained"].as_array().and_then(|c| {
        c.iter()
            .find(|r| r["resourceType"].as_str() == Some("Patient"))
    });
    match contained {
        Some(r) => patient_from(r, "contained").map(Some),
        None => Ok(None),
    }
}

/// The slot an appointment names (`slot[0].reference`), as a stored id.
fn slot_of(a: &Value) -> Option<String> {
    a["slot"][0]["reference"]
        .as_str()
        .map(|r| store_id(r.trim_start_matches("Slot/")))
}

fn channel_of<'a>(p: &'a Params, a: Option<&'a Value>) -> Option<&'a str> {
    p.code("channel").or_else(|| {
        a?["extension"].as_array()?.iter().find_map(|e| {
            (e["url"].as_str() == Some(CHANNEL_EXTENSION))
                .then(|| e["valueCode"].as_str())
                .flatten()
        })
    })
}

fn field_of(f: &str) -> String {
    match f {
        "slot" => "Appointment.slot".into(),
        "channel" => "Parameters.parameter[channel]".into(),
        "appointment" => "Appointment.id".into(),
        "patient" => "Parameters.parameter[patient]".into(),
        "patient.birthDate" => "Patient.birthDate".into(),
        other => other.into(),
    }
}

fn idempotency_key(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn respond(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    a: &Appointment,
) -> HttpResponse {
    let base = base_url(state, req);
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .insert_header(("location", format!("{base}/Appointment/{}", a.id)))
        .body(appointment_resource(a).to_string())
}

fn op(req: &HttpRequest, name: &str) {
    req.extensions_mut()
        .insert(Operation(format!("fhir.Appointment.{name}")));
}

async fn hold(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "$hold");
    let params = Params::of(json_body(&body, "Parameters")?, "Appointment")?;
    let appointment = params
        .resource("appointment")
        .ok_or_else(|| ApiError::required("Parameters.parameter[appointment]"))?;
    let who = requester(
        &principal,
        channel_of(&params, Some(appointment)),
        "Parameters.parameter[channel]",
    )?;
    let slot = slot_of(appointment).ok_or_else(|| ApiError::required("Appointment.slot"))?;
    let patient = request_patient(&params, Some(appointment))?;
    let digest = request_digest(&["$hold", &String::from_utf8_lossy(&body)]);
    let key = idempotency_key(&req);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state.booking.hold(who, &slot, patient.as_ref())
        })
        .await
        .map_err(|e| booking_error(e, &field_of))?;
    Ok(respond(&state, &req, StatusCode::CREATED, &a))
}

async fn book(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "$book");
    let params = Params::of(json_body(&body, "Parameters")?, "Appointment")?;
    let appointment = params
        .resource("appointment")
        .ok_or_else(|| ApiError::required("Parameters.parameter[appointment]"))?;
    book_appointment(&state, &principal, &req, &params, appointment, &body).await
}

async fn book_appointment(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    params: &Params,
    appointment: &Value,
    body: &[u8],
) -> ApiResult<HttpResponse> {
    let who = requester(
        principal,
        channel_of(params, Some(appointment)),
        "Parameters.parameter[channel]",
    )?;
    let target = match (appointment["id"].as_str(), slot_of(appointment)) {
        (Some(id), _) => Target::Hold(id.to_string()),
        (None, Some(slot)) => Target::Slot(slot),
        (None, None) => {
            return Err(
                ApiError::required("Appointment.slot").at("Appointment.slot | Appointment.id")
            )
        }
    };
    let patient = request_patient(params, Some(appointment))?;
    let digest = request_digest(&["$book", &String::from_utf8_lossy(body)]);
    let key = idempotency_key(req);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state.booking.book(who, &target, patient.as_ref())
        })
        .await
        .map_err(|e| booking_error(e, &field_of))?;
    Ok(respond(state, req, StatusCode::CREATED, &a))
}

/// `POST Appointment`: an urgent visit (appointment type `EMERGENCY`, no slot), or a booking
/// of the slot it names (as `$book`).
async fn create(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "create");
    let resource = json_body(&body, "Appointment")?;
    if resource["resourceType"].as_str() != Some("Appointment") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected an Appointment",
        ));
    }
    let params = Params::of(resource.clone(), "Appointment")?;
    let urgent = resource["appointmentType"]["coding"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x["code"].as_str() == Some("EMERGENCY")));
    if !urgent {
        return book_appointment(&state, &principal, &req, &params, &resource, &body).await;
    }
    let who = requester(
        &principal,
        channel_of(&params, Some(&resource)),
        "Appointment.extension[booking-channel]",
    )?;
    let patient = request_patient(&params, Some(&resource))?
        .ok_or_else(|| ApiError::required("Appointment.contained[Patient]"))?;
    let participants = resource["participant"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reference = |prefix: &str| {
        participants.iter().find_map(|p| {
            p["actor"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix(prefix))
                .map(str::to_string)
        })
    };
    let org = reference("Organization/")
        .ok_or_else(|| ApiError::required("Appointment.participant[Organization]"))?;
    let org = Oid::parse_organization(&org).map_err(|e| {
        ApiError::invalid(
            "INVALID_ORGANIZATION",
            "Appointment.participant[Organization]",
            e.to_string(),
        )
    })?;
    if state.store.get_organization(org.as_str()).await?.is_none() {
        return Err(ApiError::not_found(
            "UNKNOWN_ORGANIZATION",
            format!("organization {org} is not known to the gateway"),
        )
        .at("Appointment.participant[Organization]"));
    }
    let practitioner = reference("Practitioner/").map(|p| store_id(&p));
    let at = match resource["start"].as_str() {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                ApiError::invalid(
                    "INVALID_DATE",
                    "Appointment.start",
                    format!("not an instant: {s:?}"),
                )
            })?
            .timestamp_millis(),
        None => crate::store::now_ms(),
    };
    let digest = request_digest(&["urgent", &String::from_utf8_lossy(&body)]);
    let key = idempotency_key(&req);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state
                .booking
                .urgent(who, org.as_str(), practitioner.as_deref(), &patient, at)
        })
        .await
        .map_err(|e| {
            booking_error(e, &|f| match f {
                "practitioner" => "Appointment.participant[Practitioner]".into(),
                other => field_of(other),
            })
        })?;
    Ok(respond(&state, &req, StatusCode::CREATED, &a))
}

/// `PUT Appointment/{id}` with `status: cancelled` cancels; nothing else may change.
async fn update(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "cancel");
    let resource = json_body(&body, "Appointment")?;
    if resource["resourceType"].as_str() != Some("Appointment") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected an Appointment",
        ));
    }
    if resource["id"].as_str() != Some(id.as_str()) {
        return Err(ApiError::invalid(
            "ID_MISMATCH",
            "Appointment.id",
            "the resource id must equal the id in the URL",
        ));
    }
    if resource["status"].as_str() != Some("cancelled") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueType::BusinessRule,
            "UNSUPPORTED_CHANGE",
            "an appointment can only be changed to status cancelled; use $reschedule to move it",
        )
        .at("Appointment.status"));
    }
    let who = requester(&principal, None, "Appointment.extension[booking-channel]")?;
    let reason = resource["cancelationReason"]["text"].as_str().unwrap_or("");
    let a = state
        .booking
        .cancel(who, &id, reason)
        .await
        .map_err(|e| booking_error(e, &field_of))?;
    Ok(respond(&state, &req, StatusCode::OK, &a))
}

async fn reschedule(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "$reschedule");
    let params = Params::of(json_body(&body, "Parameters")?, "Parameters")?;
    let slot = params
        .get("slot")
        .and_then(|p| p["valueReference"]["reference"].as_str())
        .map(|r| store_id(r.trim_start_matches("Slot/")))
        .ok_or_else(|| ApiError::required("Parameters.parameter[slot].valueReference"))?;
    let who = requester(
        &principal,
        params.code("channel"),
        "Parameters.parameter[channel]",
    )?;
    let digest = request_digest(&["$reschedule", &id, &String::from_utf8_lossy(&body)]);
    let key = idempotency_key(&req);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state.booking.reschedule(who, &id, &slot)
        })
        .await
        .map_err(|e| {
            booking_error(e, &|f| match f {
                "slot" => "Parameters.parameter[slot]".into(),
                other => field_of(other),
            })
        })?;
    Ok(respond(&state, &req, StatusCode::CREATED, &a))
}

async fn read(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    may_read(&principal)?;
    let a = state.store.appointment(&id).await?.ok_or_else(|| {
        ApiError::not_found("UNKNOWN_APPOINTMENT", format!("no appointment {id}"))
    })?;
    if !principal.has_scope("admin") && a.client_id != principal.id {
        return Err(ApiError::forbidden(
            "the appointment belongs to another client",
        ));
    }
    Ok(respond(&state, &req, StatusCode::OK, &a))
}

fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn search(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    may_read(&principal)?;
    let params = pairs(&req);
    check_params(
        &params,
        &["patient:identifier", "status", "slot", "identifier"],
    )?;
    let mut q = AppointmentQuery::default();
    let mut by_id = None;
    let mut count = 50;
    for (k, v) in &params {
        match k.as_str() {
            "patient:identifier" => {
                let (system, value) = v.split_once('|').ok_or_else(|| {
                    ApiError::invalid("INVALID_PARAMETER", k.clone(), "expected system|value")
                })?;
                match system {
                    POLICY_SYSTEM => {
                        let p = crate::model::PolicyNumber::parse(value)
                            .map_err(|e| ApiError::invalid("INVALID_POLICY", k.clone(), e.to_string()))?;
                        q.policy = Some(p.digits().to_string());
                    }
                    SNILS_SYSTEM => {
                        let s = crate::model::Snils::parse(value)
                            .map_err(|e| ApiError::invalid("INVALID_SNILS", k.clone(), e.to_string()))?;
                        q.snils = Some(s.digits());
                    }
                    other => {
                        return Err(ApiError::invalid(
                            "INVALID_PARAMETER",
                            k.clone(),
                            format!("identifier system {other:?} is not supported; use {POLICY_SYSTEM} or {SNILS_SYSTEM}"),
                        ))
                    }
                }
            }
            "status" => {
                let stored = match v.as_str() {
                    "pending" => "held",
                    "booked" => "booked",
                    "cancelled" => "cancelled",
                    "entered-in-error" => "failed",
                    other => {
                        return Err(ApiError::invalid(
                            "INVALID_PARAMETER",
                            "status",
                            format!("status must be pending, booked, cancelled or entered-in-error, got {other:?}"),
                        ))
                    }
                };
                q.status = Some(stored.into());
            }
            "slot" => q.slot_id = Some(store_id(v.trim_start_matches("Slot/"))),
            "identifier" => by_id = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "_count" => {
                count = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "INVALID_PARAMETER",
                            "_count",
                            "`_count` must be an integer from 1 to 1000",
                        )
                    })?
            }
            _ => {}
        }
    }
    if q.policy.is_none() && q.snils.is_none() && q.slot_id.is_none() && by_id.is_none() {
        return Err(ApiError::invalid(
            "SEARCH_TOO_BROAD",
            "patient:identifier",
            "search appointments by patient:identifier, slot or identifier",
        ));
    }
    let mut rows = match &by_id {
        Some(id) => state.store.appointment(id).await?.into_iter().collect(),
        None => state.store.search_appointments(&q, count).await?,
    };
    if !principal.has_scope("admin") {
        rows.retain(|a| a.client_id == principal.id);
    }
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|a| {
            (
                format!("{base}/Appointment/{}", a.id),
                appointment_resource(a),
            )
        })
        .collect();
    let self_url = format!("{base}/Appointment?{}", req.query_string());
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(searchset(&self_url, None, entries).to_string()))
}

/// `$find`: free slots matching the criteria as proposed appointments.
async fn find(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "$find");
    let mut criteria: Vec<(String, String)> = pairs(&req);
    if !body.is_empty() {
        let params = Params::of(json_body(&body, "Parameters")?, "Parameters")?;
        for p in params.v["parameter"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = p["name"].as_str().unwrap_or("").to_string();
            let value = [
                "valueDateTime",
                "valueInstant",
                "valueDate",
                "valueString",
                "valueCode",
            ]
            .iter()
            .find_map(|k| p[*k].as_str().map(str::to_string))
            .or_else(|| {
                p["valueReference"]["reference"]
                    .as_str()
                    .map(str::to_string)
            })
            .or_else(|| p["valueCoding"]["code"].as_str().map(str::to_string))
            .or_else(|| {
                p["valueCodeableConcept"]["coding"][0]["code"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
            criteria.push((name, value));
        }
    }
    check_params(
        &criteria,
        &[
            "start",
            "end",
            "specialty",
            "organization",
            "practitioner",
            "channel",
        ],
    )?;
    let who = requester(
        &principal,
        criteria
            .iter()
            .find(|(k, _)| k == "channel")
            .map(|(_, v)| v.as_str()),
        "channel",
    )
    .or_else(|e| {
        // Reading free slots needs no write scope; the channel still filters.
        if e.status == StatusCode::FORBIDDEN && e.field.is_none() {
            Ok(crate::services::booking::Requester {
                client_id: &principal.id,
                admin: false,
                channel: crate::model::schedule::Channel::Internet,
            })
        } else {
            Err(e)
        }
    })?;
    let mut q = SlotQuery {
        status: Some("free".into()),
        start_from: Some(crate::store::now_ms()),
        ..SlotQuery::default()
    };
    let mut count = 20u32;
    let time = |k: &str, v: &str| -> ApiResult<i64> {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
            return Ok(d
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or_default());
        }
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                ApiError::invalid(
                    "INVALID_DATE",
                    k.to_string(),
                    format!("`{k}` must be a date or an instant, got {v:?}"),
                )
            })
    };
    for (k, v) in &criteria {
        match k.as_str() {
            "start" => q.start_from = Some(time(k, v)?.max(q.start_from.unwrap_or(0))),
            "end" => q.start_to = Some(time(k, v)?),
            "specialty" => q.specialty_code = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "organization" => {
                let oid = Oid::parse_organization(v.trim_start_matches("Organization/")).map_err(
                    |e| ApiError::invalid("INVALID_PARAMETER", "organization", e.to_string()),
                )?;
                q.org_oid = Some(oid.to_string());
            }
            "practitioner" => {
                q.practitioner_id = Some(store_id(v.trim_start_matches("Practitioner/")))
            }
            "_count" => {
                count = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "INVALID_PARAMETER",
                            "_count",
                            "`_count` must be an integer from 1 to 100",
                        )
                    })?
            }
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (q.start_from, q.start_to) {
        if a >= b {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                "end",
                "`end` must be after `start` (and after now)",
            ));
        }
    }
    let mut proposals = Vec::new();
    let mut after = None;
    // Skip slots the channel may not take, reading a few pages at most.
    for _ in 0..5 {
        q.after = after.clone();
        let rows = state.store.search_slots(&q, 200).await?;
        let last = rows.last().map(|s| (s.start_at, s.id.clone()));
        for s in rows {
            if proposals.len() as u32 >= count {
                break;
            }
            if crate::model::schedule::Channels(s.channels).contains(who.channel) {
                proposals.push(s);
            }
        }
        if proposals.len() as u32 >= count || last.is_none() {
            break;
        }
        after = last;
    }
    let base = base_url(&state, &req);
    let entries = proposals
        .iter()
        .map(|s| {
            let resource = json!({
                "resourceType": "Appointment",
                "status": "proposed",
                "extension": crate::model::schedule::Channels(s.channels).iter().map(|c| json!({"url": CHANNEL_EXTENSION, "valueCode": c.as_str()})).collect::<Vec<_>>(),
                "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": s.specialty_code}]}],
                "start": instant(s.start_at),
                "end": instant(s.end_at),
                "slot": [{"reference": format!("Slot/{}", fhir_id(&s.id))}],
                "participant": [
                    {"actor": {"reference": format!("Practitioner/{}", fhir_id(&s.practitioner_id))}, "required": "required", "status": "needs-action"},
                    {"actor": {"reference": format!("Organization/{}", s.org_oid)}, "status": "needs-action"}
                ],
            });
            (format!("urn:uuid:{}", uuid::Uuid::new_v4()), resource)
        })
        .collect();
    let self_url = format!("{base}/Appointment/$find");
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(searchset(&self_url, None, entries).to_string()))
}

fn org_param(params: &[(String, String)]) -> ApiResult<Option<String>> {
    params
        .iter()
        .find(|(k, _)| k == "organization")
        .map(|(_, v)| {
            Oid::parse_organization(v.trim_start_matches("Organization/"))
                .map(|o| o.to_string())
                .map_err(|e| ApiError::invalid("INVALID_PARAMETER", "organization", e.to_string()))
        })
        .transpose()
}

/// `Schedule`: one per practitioner (the practitioner's bookable time).
async fn search_schedules(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["organization", "actor"])?;
    let org = org_param(&params)?;
    let actor = params
        .iter()
        .find(|(k, _)| k == "actor")
        .map(|(_, v)| store_id(v.trim_start_matches("Practitioner/")));
    let mut rows = state.store.list_practitioners(org.as_deref(), 1000).await?;
    if let Some(a) = &actor {
        rows.retain(|p| &p.id == a);
    }
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|p| {
            (
                format!("{base}/Schedule/{}", fhir_id(&p.id)),
                json!({
                    "resourceType": "Schedule",
                    "id": fhir_id(&p.id),
                    "active": true,
                    "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code}]}],
                    "actor": [{"reference": format!("Practitioner/{}", fhir_id(&p.id))}, {"reference": format!("Organization/{}", p.org_oid)}],
                    "comment": format!("room {}", p.room),
                }),
            )
        })
        .collect();
    let self_url = format!("{base}/Schedule?{}", req.query_string());
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(searchset(&self_url, None, entries).to_string()))
}

/// `PractitionerRole`: a practitioner's specialty at an organization.
async fn search_roles(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["organization", "specialty", "practitioner"])?;
    let org = org_param(&params)?;
    let mut rows = state.store.list_practitioners(org.as_deref(), 1000).await?;
    for (k, v) in &params {
        match k.as_str() {
            "specialty" => {
                let code = v.rsplit('|').next().unwrap_or(v).to_string();
                rows.retain(|p| p.specialty_code == code)
            }
            "practitioner" => {
                let id = store_id(v.trim_start_matches("Practitioner/"));
                rows.retain(|p| p.id == id)
            }
            _ => {}
        }
    }
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|p| {
            (
                format!("{base}/PractitionerRole/{}", fhir_id(&p.id)),
                json!({
                    "resourceType": "PractitionerRole",
                    "id": fhir_id(&p.id),
                    "active": true,
                    "practitioner": {"reference": format!("Practitioner/{}", fhir_id(&p.id))},
                    "organization": {"reference": format!("Organization/{}", p.org_oid)},
                    "code": [{"coding": [{"system": "urn:oid:1.2.643.5.1.13.13.11.1002", "code": p.position_code}]}],
                    "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code, "version": p.specialty_version}]}],
                }),
            )
        })
        .collect();
    let self_url = format!("{base}/PractitionerRole?{}", req.query_string());
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(searchset(&self_url, None, entries).to_string()))
}
