//! The portal booking hub (HubService-style SOAP 1.1, WSDL in `schemas/hub/`), as regional
//! buses publish it to the citizen portal and call centres: clinics, specialties, doctors,
//! dates and free slots, booking, refusal (cancel) and a patient's history. Each operation
//! reads its elements, makes one service call and answers through `codec::hub`.

use std::collections::BTreeMap;

use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use chrono::NaiveDate;

use super::access::{Access, Org, Route};
use super::booking::{booking_error, patient, reader, request_digest, requester, PatientFields};
use super::fhir_referral::referral_api_error;
use super::query::moment;
use super::soap::{accept, answer, unknown_operation, HUB};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{
    APPOINTMENT_READ, APPOINTMENT_WRITE, REFERRAL_READ, REFERRAL_WRITE, SCHEDULE_READ,
};
use crate::codec::hub;
use crate::codec::xml::Element;
use crate::model::booking::Patient;
use crate::model::schedule::Channel;
use crate::model::time::{from_ms, Moment, DAY_MS};
use crate::model::Oid;
use crate::route;
use crate::services::booking::{AppointmentSearch, Target};
// The portal contract cannot carry another region's slots: such referrals are refused here.
use crate::services::referrals::{Found, Remote, Visit};
use crate::services::schedules::{CountBy, FreeSlots, ScheduleError};
use crate::services::Caller;

/// The hub's operations and who may call them.
pub const OPERATIONS: &[(&str, &str, Org)] = &[
    ("CheckPatient", SCHEDULE_READ, Org::Public),
    ("GetLPUList", SCHEDULE_READ, Org::Public),
    ("GetSpesialityList", SCHEDULE_READ, Org::Public),
    ("GetDoctorList", SCHEDULE_READ, Org::Public),
    ("GetAvailableDates", SCHEDULE_READ, Org::Public),
    ("GetAvaibleAppointments", SCHEDULE_READ, Org::Public),
    ("SetAppointment", APPOINTMENT_WRITE, Org::Public),
    ("CreateClaimForRefusal", APPOINTMENT_WRITE, Org::Records),
    ("GetPatientHistory", APPOINTMENT_READ, Org::Records),
    ("CheckReferral", REFERRAL_READ, Org::Records),
    (
        "GetAvaibleAppointmentsByReferral",
        REFERRAL_READ,
        Org::Records,
    ),
];

/// The hub's routes: the service and its WSDL.
pub const ROUTES: &[Route] = &[
    route!(POST "/soap" "/hub" => hub, Access::Soap(OPERATIONS)),
    route!(GET "/soap" "/hub" => wsdl, Access::Open),
];

/// The WSDL, with `HUB_ADDRESS` standing for the endpoint URL.
const WSDL: &str = include_str!("../../schemas/hub/HubService.wsdl");

const PATIENT_FIELDS: PatientFields = PatientFields {
    policy: "Polis",
    birth_date: "Birthday",
    snils: "Snils",
};

fn hub_field(f: &str) -> String {
    match f {
        "slot" => "IdAppointment".into(),
        "channel" => "Channel".into(),
        "appointment" => "IdClaim".into(),
        "patient" => "Polis".into(),
        "patient.birthDate" => "Birthday".into(),
        "organization" | "performer" => "IdLPU".into(),
        "status" => "IdReferral".into(),
        "practitioner" => "IdDoc".into(),
        other => other.into(),
    }
}

/// A directory error named by the hub's elements.
fn directory_error(e: ScheduleError) -> ApiError {
    let field = match e {
        ScheduleError::UnknownOrganization(_) => "IdLPU",
        _ => "IdDoc",
    };
    let mut api = ApiError::from(e);
    if api.field.is_some() {
        api.field = Some(field.into());
    }
    api
}

/// `GET /soap/hub?wsdl` (or `?singleWsdl`): the service description with this gateway's
/// address.
pub async fn wsdl(state: Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let q = req.query_string();
    if !(q.eq_ignore_ascii_case("wsdl") || q.eq_ignore_ascii_case("singlewsdl")) {
        return Err(ApiError::not_found(
            "NO_SUCH_ROUTE",
            "GET /soap/hub serves the WSDL only: /soap/hub?wsdl",
        ));
    }
    let base = match &state.settings.http.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(WSDL.replace("HUB_ADDRESS", &format!("{base}/soap/hub"))))
}

/// `POST /soap/hub`: one operation per request.
pub async fn hub(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let parsed = match accept(&state, &req, &body, &HUB) {
        Ok(p) => p,
        Err(f) => return *f,
    };
    let version = parsed.version;
    let op = &parsed.operation;
    let result = match op.name.as_str() {
        "GetLPUList" => get_lpu_list(&state, op).await,
        "CheckPatient" => check_patient(&state, &principal, op).await,
        "GetSpesialityList" => get_speciality_list(&state, &principal, op).await,
        "GetDoctorList" => get_doctor_list(&state, &principal, op).await,
        "GetAvailableDates" => get_available_dates(&state, &principal, op).await,
        "GetAvaibleAppointments" => get_available_appointments(&state, &principal, op).await,
        "SetAppointment" => set_appointment(&state, &principal, &req, op).await,
        "CreateClaimForRefusal" => create_claim_for_refusal(&state, &principal, op).await,
        "GetPatientHistory" => get_patient_history(&state, &principal, op).await,
        "CheckReferral" => check_referral(&state, &principal, op).await,
        "GetAvaibleAppointmentsByReferral" => {
            get_appointments_by_referral(&state, &principal, op).await
        }
        other => Err(unknown_operation(other)),
    };
    answer(version, result)
}

fn required<'a>(op: &'a Element, name: &str) -> ApiResult<&'a str> {
    op.child_text(name).ok_or_else(|| ApiError::required(name))
}

/// `IdLPU`: an FRMO OID.
fn clinic_oid(op: &Element) -> ApiResult<Oid> {
    Oid::parse_organization(required(op, "IdLPU")?)
        .map_err(|e| ApiError::invalid("INVALID_ORGANIZATION", "IdLPU", e.to_string()))
}

/// `IdLPU`: an organization the gateway knows.
async fn clinic(state: &AppState, op: &Element) -> ApiResult<Oid> {
    let oid = clinic_oid(op)?;
    state
        .schedules
        .known_organization(&oid)
        .await
        .map_err(directory_error)?;
    Ok(oid)
}

/// `VisitStart`/`VisitEnd`: the period searched, from now on, a month by default.
fn period(op: &Element, now: i64) -> ApiResult<(i64, i64)> {
    let read = |name: &str| -> ApiResult<Option<Moment>> {
        op.child_text(name).map(|v| moment(name, v)).transpose()
    };
    let (start, end) = (read("VisitStart")?, read("VisitEnd")?);
    if let (Some(s), Some(e)) = (start, end) {
        if s.ms() >= e.ms() {
            return Err(ApiError::invalid(
                "INVALID_PERIOD",
                "VisitEnd",
                "VisitEnd must be after VisitStart",
            ));
        }
    }
    let from = start.map_or(now, |s| s.ms().max(now));
    Ok((from, end.map_or(from + 31 * DAY_MS, Moment::ms)))
}

/// The booking channel the operation names (or the client's default).
fn channel(principal: &Principal, op: &Element) -> ApiResult<Channel> {
    let requested = match op.child_text("Channel") {
        None => None,
        Some(c) => Some(Channel::parse(c).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_CHANNEL",
                "Channel",
                format!("unknown booking channel {c:?}"),
            )
        })?),
    };
    principal.booking_channel(requested).map_err(|c| {
        ApiError::forbidden(format!("client {} may not use channel {c}", principal.id))
            .at("Channel")
    })
}

fn read_patient(op: &Element) -> ApiResult<Patient> {
    patient(
        op.child_text("Polis"),
        op.child_text("Birthday"),
        op.child_text("Snils"),
        &PATIENT_FIELDS,
    )
}

async fn get_lpu_list(state: &AppState, op: &Element) -> ApiResult<String> {
    let orgs = state
        .schedules
        .organizations(op.child_text("IdDistrict"), None, 0, 10_000)
        .await?;
    Ok(hub::lpu_list(&orgs))
}

/// Checks the identifiers and answers a stable pseudonymous patient id.
async fn check_patient(state: &AppState, principal: &Principal, op: &Element) -> ApiResult<String> {
    let p = read_patient(op)?;
    let id = state
        .booking
        .identify(reader(principal), &p)
        .await
        .map_err(|e| booking_error(e, &hub_field))?;
    Ok(hub::check_patient(&id))
}

async fn get_speciality_list(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let org = clinic(state, op).await?;
    let channel = channel(principal, op)?;
    let counts = state
        .schedules
        .free_counts(&org, channel, CountBy::Specialty)
        .await?;
    Ok(hub::speciality_list(&counts))
}

async fn get_doctor_list(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let org = clinic(state, op).await?;
    let specialty = required(op, "IdSpesiality")?;
    let channel = channel(principal, op)?;
    let counts: std::collections::HashMap<String, i64> = state
        .schedules
        .free_counts(&org, channel, CountBy::Practitioner(specialty))
        .await?
        .into_iter()
        .collect();
    let doctors = state.schedules.practitioners(Some(&org), 10_000).await?;
    Ok(hub::doctor_list(
        doctors
            .iter()
            .filter(|d| d.specialty_code == specialty)
            .map(|d| (d, counts.get(&d.id).copied().unwrap_or(0))),
    ))
}

/// Free slots of a doctor of a clinic in the period that the channel may take, at most
/// `limit`.
async fn doctor_slots(
    state: &AppState,
    principal: &Principal,
    op: &Element,
    limit: usize,
) -> ApiResult<Vec<crate::model::schedule::Slot>> {
    let org = clinic_oid(op)?;
    let doctor = required(op, "IdDoc")?;
    let (from, to) = period(op, state.schedules.now())?;
    let channel = channel(principal, op)?;
    state
        .schedules
        .practitioner_of(&org, doctor)
        .await
        .map_err(directory_error)?;
    let q = FreeSlots {
        org: Some(org),
        practitioner_id: Some(doctor.to_string()),
        specialty_code: None,
        from: Some(from),
        to: Some(to),
        channel,
        limit,
        // One doctor's month: every slot may be looked at.
        scan: usize::MAX,
    };
    Ok(state.schedules.find_free(&q).await?)
}

async fn get_available_dates(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let slots = doctor_slots(state, principal, op, 10_000).await?;
    let mut days: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for s in &slots {
        *days.entry(from_ms(s.start_at).date_naive()).or_default() += 1;
    }
    Ok(hub::available_dates(&days))
}

async fn get_available_appointments(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let slots = doctor_slots(state, principal, op, 1000).await?;
    Ok(hub::available_appointments(&slots))
}

/// `CheckReferral`: a referral of the client's organizations (as referring clinic or
/// target), for the MIS that books it.
async fn check_referral(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let id = required(op, "IdReferral")?;
    let (r, _) = state
        .referrals
        .get(Caller::of(principal), id)
        .await
        .map_err(|e| referral_api_error(e, &hub_field))?;
    Ok(hub::referral(&r))
}

/// `GetAvaibleAppointmentsByReferral`: free slots of an accepted referral's target open to
/// referrals, in the period (a month from now by default).
async fn get_appointments_by_referral(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let id = required(op, "IdReferral")?;
    let (from, to) = period(op, state.schedules.now())?;
    let slots = state
        .referrals
        .free_slots(Caller::of(principal), id, from, to, 1000, Remote::Refuse)
        .await
        .map_err(|e| referral_api_error(e, &hub_field))?;
    match slots {
        Found::Here(slots) => Ok(hub::appointments_by_referral(&slots)),
        Found::AtPeer(_) => Err(ApiError::internal(
            "a remote referral's slots reached the hub",
        )),
    }
}

/// `SetAppointment` with `IdReferral`: the referral's visit, through the referral channel.
async fn set_referral_appointment(
    state: &AppState,
    principal: &Principal,
    op: &Element,
    referral: &str,
) -> ApiResult<String> {
    if !principal.has_scope(REFERRAL_WRITE) {
        return Err(ApiError::forbidden(format!(
            "client {} may not book referrals (scope {REFERRAL_WRITE})",
            principal.id
        ))
        .at("IdReferral"));
    }
    let who = requester(principal, Some(Channel::Referral.as_str()), "IdReferral")?;
    let slot = required(op, "IdAppointment")?;
    let org = clinic_oid(op)?;
    let (_, a) = state
        .referrals
        .book(who, referral, slot, Some(&org), Remote::Refuse)
        .await
        .map_err(|e| referral_api_error(e, &hub_field))?;
    match a {
        Visit::Here(a) => Ok(hub::set_appointment(&a)),
        Visit::AtPeer(_) => Err(ApiError::internal(
            "a remote referral was booked through the hub",
        )),
    }
}

async fn set_appointment(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    op: &Element,
) -> ApiResult<String> {
    if let Some(referral) = op.child_text("IdReferral") {
        return set_referral_appointment(state, principal, op, referral).await;
    }
    let who = requester(principal, op.child_text("Channel"), "Channel")?;
    let slot = required(op, "IdAppointment")?.to_string();
    let org = clinic(state, op).await?;
    let p = read_patient(op)?;
    let key = op
        .child_text("IdempotencyKey")
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    // The digest covers what the booking depends on, not the envelope's formatting.
    let digest = request_digest(&[
        "SetAppointment",
        &slot,
        org.as_str(),
        op.child_text("Polis").unwrap_or(""),
        op.child_text("Birthday").unwrap_or(""),
        op.child_text("Snils").unwrap_or(""),
        who.channel.as_str(),
    ]);
    let target = Target::Slot(slot);
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state.booking.book_at(who, &org, &target, Some(&p))
        })
        .await
        .map_err(|e| booking_error(e, &hub_field))?;
    Ok(hub::set_appointment(&a))
}

async fn create_claim_for_refusal(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let who = requester(principal, None, "Channel")?;
    let id = required(op, "IdClaim")?;
    let reason = op.child_text("Reason").unwrap_or("REFUSED_BY_PATIENT");
    let a = state
        .booking
        .cancel(who, id, reason)
        .await
        .map_err(|e| booking_error(e, &hub_field))?;
    Ok(hub::claim_for_refusal(&a))
}

async fn get_patient_history(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let who = reader(principal);
    let p = read_patient(op)?;
    let rows = state
        .booking
        .appointments(who, &AppointmentSearch::for_patient(&p, 1000))
        .await
        .map_err(|e| booking_error(e, &hub_field))?;
    Ok(hub::patient_history(&rows))
}
