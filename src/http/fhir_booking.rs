//! FHIR R4 booking: `Appointment` read and search, the IHE Scheduling operations
//! `Appointment/$find` (ITI-115), `$hold` (ITI-116) and `$book` (ITI-117), cancel by
//! `PUT` with `status: cancelled`, `$reschedule`, and urgent visits (`POST Appointment` with
//! appointment type `EMERGENCY`). Also `Schedule` and `PractitionerRole` searches.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::access::{Access, Org, Route};
use super::booking::{
    booking_error, patient, reader, request_digest, requester, search_channel, PatientFields,
};
use super::fhir::{base_url, fhir_json, request_link, self_link};
use super::middleware::Operation;
use super::query::{check_params, count, first, moment, organization, organization_as, pairs};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{APPOINTMENT_READ, APPOINTMENT_WRITE, REFERRAL_READ, SCHEDULE_READ};
use crate::codec::fhir::appointment::{appointment, proposal, status_of};
use crate::codec::fhir::{
    gateway_id, searchset, IssueType, CHANNEL_EXTENSION, FHIR_JSON, POLICY_SYSTEM, SNILS_SYSTEM,
};
use crate::model::booking::{Appointment, Patient};
use crate::model::schedule::Channel;
use crate::model::time::DAY_MS;
use crate::model::{PolicyNumber, Snils};
use crate::route;
use crate::services::booking::{AppointmentQuery, AppointmentSearch, Target};
use crate::services::schedules::FreeSlots;

/// The booking routes, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/fhir" "/Appointment/$find" => find, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(POST "/fhir" "/Appointment/$find" => find, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(POST "/fhir" "/Appointment/$hold" => hold, Access::Scope(APPOINTMENT_WRITE, Org::Public)),
    route!(POST "/fhir" "/Appointment/$book" => book, Access::Scope(APPOINTMENT_WRITE, Org::Records)),
    route!(GET "/fhir" "/Appointment" => search, Access::Scope(APPOINTMENT_READ, Org::Records)),
    route!(POST "/fhir" "/Appointment" => create, Access::Scope(APPOINTMENT_WRITE, Org::Named)),
    route!(GET "/fhir" "/Appointment/{id}" => read, Access::Scope(APPOINTMENT_READ, Org::Records)),
    route!(PUT "/fhir" "/Appointment/{id}" => update, Access::Scope(APPOINTMENT_WRITE, Org::Records)),
    route!(POST "/fhir" "/Appointment/{id}/$reschedule" => reschedule, Access::Scope(APPOINTMENT_WRITE, Org::Records)),
];

fn json_body(body: &[u8], what: &str) -> ApiResult<Value> {
    ApiError::check_json(body, what)?;
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

/// The slot an appointment names (`slot[0].reference`), as a gateway id.
fn slot_of(a: &Value) -> Option<String> {
    a["slot"][0]["reference"]
        .as_str()
        .map(|r| gateway_id(r.trim_start_matches("Slot/")))
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

pub(super) fn respond(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    a: &Appointment,
) -> HttpResponse {
    let base = base_url(state, req);
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .insert_header(("location", format!("{base}/Appointment/{}", a.id)))
        .body(appointment(a).to_string())
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
    let actor = |prefixes: &[&str]| {
        resource["participant"].as_array().and_then(|ps| {
            ps.iter().find_map(|p| {
                let r = p["actor"]["reference"].as_str()?;
                prefixes.iter().any(|x| r.starts_with(x)).then_some(r)
            })
        })
    };
    // The place of care (R4: a Location); an Organization reference is read the same way.
    let org = actor(&["Location/", "Organization/"])
        .ok_or_else(|| ApiError::required("Appointment.participant[Location]"))?;
    let org = organization_as(
        "INVALID_ORGANIZATION",
        "Appointment.participant[Location]",
        org,
    )?;
    let practitioner =
        actor(&["Practitioner/"]).map(|p| gateway_id(p.trim_start_matches("Practitioner/")));
    let at = resource["start"]
        .as_str()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::invalid(
                        "INVALID_DATE",
                        "Appointment.start",
                        format!("not an instant: {s:?}"),
                    )
                })
        })
        .transpose()?;
    let digest = request_digest(&["urgent", &String::from_utf8_lossy(&body)]);
    let key = idempotency_key(&req);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state
                .booking
                .urgent(who, &org, practitioner.as_deref(), &patient, at)
        })
        .await
        .map_err(|e| {
            booking_error(e, &|f| match f {
                "practitioner" => "Appointment.participant[Practitioner]".into(),
                "organization" => "Appointment.participant[Location]".into(),
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
        .map(|r| gateway_id(r.trim_start_matches("Slot/")))
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
    let who = reader(&principal);
    let a = state
        .booking
        .appointment(who, &id)
        .await
        .map_err(|e| booking_error(e, &field_of))?;
    Ok(respond(&state, &req, StatusCode::OK, &a))
}

/// `patient:identifier` as `system|value` (SNILS or OMS policy).
fn patient_identifier(raw: &str, q: &mut AppointmentQuery) -> ApiResult<()> {
    const NAME: &str = "patient:identifier";
    let (system, value) = raw
        .split_once('|')
        .ok_or_else(|| ApiError::invalid("INVALID_PARAMETER", NAME, "expected system|value"))?;
    match system {
        POLICY_SYSTEM => {
            q.policy = Some(
                PolicyNumber::parse(value)
                    .map_err(|e| ApiError::invalid("INVALID_POLICY", NAME, e.to_string()))?,
            )
        }
        SNILS_SYSTEM => {
            q.snils = Some(
                Snils::parse(value)
                    .map_err(|e| ApiError::invalid("INVALID_SNILS", NAME, e.to_string()))?,
            )
        }
        other => {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                NAME,
                format!("identifier system {other:?} is not supported; use {POLICY_SYSTEM} or {SNILS_SYSTEM}"),
            ))
        }
    }
    Ok(())
}

async fn search(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let who = reader(&principal);
    let params = pairs(&req);
    check_params(
        &params,
        &["patient:identifier", "status", "slot", "identifier"],
    )?;
    let mut search = AppointmentSearch {
        limit: 50,
        ..AppointmentSearch::default()
    };
    for (k, v) in &params {
        match k.as_str() {
            "patient:identifier" => patient_identifier(v, &mut search.query)?,
            "status" => {
                search.query.status = Some(status_of(v).ok_or_else(|| {
                    ApiError::invalid(
                        "INVALID_PARAMETER",
                        "status",
                        format!(
                        "status must be pending, booked, cancelled or entered-in-error, got {v:?}"
                    ),
                    )
                })?)
            }
            "slot" => search.query.slot_id = Some(gateway_id(v.trim_start_matches("Slot/"))),
            "identifier" => search.id = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "_count" => search.limit = count(k, v, 1000)?,
            _ => {}
        }
    }
    let rows = state
        .booking
        .appointments(who, &search)
        .await
        .map_err(|e| {
            booking_error(e, &|f| match f {
                "patient" => "patient:identifier".into(),
                other => field_of(other),
            })
        })?;
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|a| (format!("{base}/Appointment/{}", a.id), appointment(a)))
        .collect();
    let body = searchset(&request_link(&base, "Appointment", &req), None, entries);
    Ok(fhir_json(StatusCode::OK, &body))
}

/// `$find` with `referral`: free slots of the referral's target open to the referral
/// channel (the target, channel, doctor and specialty come from the referral), for a
/// client that reads referrals of one of the referral's organizations.
async fn find_for_referral(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    criteria: &[(String, String)],
    referral: &str,
) -> ApiResult<HttpResponse> {
    if !principal.has_scope(REFERRAL_READ) {
        return Err(ApiError::forbidden(format!(
            "client {} may not read referrals (scope {REFERRAL_READ})",
            principal.id
        ))
        .at("referral"));
    }
    for fixed in ["organization", "practitioner", "specialty"] {
        if first(criteria, fixed).is_some() {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                fixed,
                format!("`{fixed}` comes from the referral; leave it out with `referral`"),
            ));
        }
    }
    if first(criteria, "channel").is_some_and(|c| c != Channel::Referral.as_str()) {
        return Err(ApiError::invalid(
            "INVALID_PARAMETER",
            "channel",
            "a referral's visit is booked through the referral channel",
        ));
    }
    let now = state.schedules.now();
    let from = first(criteria, "start")
        .map(|v| moment("start", v))
        .transpose()?
        .map_or(now, |m| m.ms().max(now));
    let to = first(criteria, "end")
        .map(|v| moment("end", v))
        .transpose()?
        .map_or(from + 31 * DAY_MS, |m| m.ms());
    if to <= from {
        return Err(ApiError::invalid(
            "INVALID_PARAMETER",
            "end",
            "`end` must be after `start` (and after now)",
        ));
    }
    let limit = first(criteria, "_count").map_or(Ok(20), |v| count("_count", v, 100))?;
    let found = state
        .referrals
        .free_slots(
            crate::services::Caller::of(principal),
            referral,
            from,
            to,
            limit as usize,
            crate::services::referrals::Remote::Ask,
        )
        .await
        .map_err(|e| {
            super::fhir_referral::referral_api_error(e, &|f| match f {
                "status" | "performer" => "referral".into(),
                other => other.into(),
            })
        })?;
    let found = match found {
        crate::services::referrals::Found::Here(slots) => slots,
        // The target's gateway answered for its slots: its searchset as it gave it.
        crate::services::referrals::Found::AtPeer(bundle) => {
            return Ok(fhir_json(StatusCode::OK, &bundle))
        }
    };
    let base = base_url(state, req);
    let entries = found
        .iter()
        .map(|s| (format!("urn:uuid:{}", uuid::Uuid::new_v4()), proposal(s)))
        .collect();
    let body = searchset(
        &self_link(&base, "Appointment/$find", criteria),
        None,
        entries,
    );
    Ok(fhir_json(StatusCode::OK, &body))
}

/// The criteria of `$find`: the query string, then the body's `Parameters` as name/value.
fn find_criteria(req: &HttpRequest, body: &[u8]) -> ApiResult<Vec<(String, String)>> {
    let mut criteria = pairs(req);
    if body.is_empty() {
        return Ok(criteria);
    }
    let params = Params::of(json_body(body, "Parameters")?, "Parameters")?;
    for p in params.v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let value = [
            "valueDateTime",
            "valueInstant",
            "valueDate",
            "valueString",
            "valueCode",
        ]
        .iter()
        .find_map(|k| p[*k].as_str())
        .or_else(|| p["valueReference"]["reference"].as_str())
        .or_else(|| p["valueCoding"]["code"].as_str())
        .or_else(|| p["valueCodeableConcept"]["coding"][0]["code"].as_str())
        .unwrap_or_default();
        criteria.push((name, value.to_string()));
    }
    Ok(criteria)
}

/// `$find`: free slots matching the criteria as proposed appointments.
async fn find(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    op(&req, "$find");
    let criteria = find_criteria(&req, &body)?;
    check_params(
        &criteria,
        &[
            "start",
            "end",
            "specialty",
            "organization",
            "practitioner",
            "channel",
            "referral",
        ],
    )?;
    if let Some(referral) = first(&criteria, "referral") {
        return find_for_referral(&state, &principal, &req, &criteria, referral).await;
    }
    // Another region's organization: its gateway answers for its slots (its duty
    // schedules among them).
    if let Some(raw) = first(&criteria, "organization") {
        let org = organization("organization", raw)?;
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(criteria.iter())
            .finish();
        if let Some(answer) = state.referrals.find_at_peer(&org, &query).await {
            let bundle = answer.map_err(|e| {
                super::fhir_referral::referral_api_error(e, &|f| match f {
                    "performer" => "organization".into(),
                    other => other.into(),
                })
            })?;
            return Ok(fhir_json(StatusCode::OK, &bundle));
        }
    }
    let mut q = FreeSlots {
        org: None,
        practitioner_id: None,
        specialty_code: None,
        from: None,
        to: None,
        channel: search_channel(&principal, first(&criteria, "channel"), "channel")?,
        limit: 20,
        scan: 1000,
    };
    for (k, v) in &criteria {
        match k.as_str() {
            "start" => q.from = Some(moment(k, v)?.ms()),
            "end" => q.to = Some(moment(k, v)?.ms()),
            "specialty" => q.specialty_code = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "organization" => q.org = Some(organization(k, v)?),
            "practitioner" => {
                q.practitioner_id = Some(gateway_id(v.trim_start_matches("Practitioner/")))
            }
            "_count" => q.limit = count(k, v, 100)? as usize,
            _ => {}
        }
    }
    if let Some(end) = q.to {
        if q.from.unwrap_or(i64::MIN).max(state.schedules.now()) >= end {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                "end",
                "`end` must be after `start` (and after now)",
            ));
        }
    }
    let found = state.schedules.find_free(&q).await?;
    let base = base_url(&state, &req);
    let entries = found
        .iter()
        .map(|s| (format!("urn:uuid:{}", uuid::Uuid::new_v4()), proposal(s)))
        .collect();
    let body = searchset(
        &self_link(&base, "Appointment/$find", &criteria),
        None,
        entries,
    );
    Ok(fhir_json(StatusCode::OK, &body))
}
