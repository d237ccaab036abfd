//! The portal booking hub (HubService-style SOAP 1.1, WSDL in `schemas/hub/`), as regional
//! buses publish it to the citizen portal and call centres: clinics, specialties, doctors,
//! dates and free slots, booking, refusal (cancel) and a patient's history. Names are
//! spelled as the buses spell them (`GetSpesialityList`, `GetAvaibleAppointments`). In
//! answers `IdAppointment` is a slot (as on the buses) and `IdClaim` is a booking.

use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use chrono::NaiveDate;

use super::booking::{booking_error, may_read, patient, request_digest, requester, PatientFields};
use super::soap::{accept, answer, unknown_operation, HUB};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::codec::xml::Element;
use crate::model::schedule::Channels;
use crate::model::Oid;
use crate::services::booking::{Patient, Target};
use crate::store::appointments::{Appointment, AppointmentQuery};
use crate::store::schedules::SlotQuery;

/// The WSDL, with `HUB_ADDRESS` standing for the endpoint URL.
const WSDL: &str = include_str!("../../schemas/hub/HubService.wsdl");

const PATIENT_FIELDS: PatientFields = PatientFields {
    policy: "Polis",
    birth_date: "Birthday",
    snils: "Snils",
};

/// Names of the specialties the simulated region uses (reference book 1066); others are
/// shown by code.
fn specialty_name(code: &str) -> String {
    match code {
        "27" => "Therapist".into(),
        "49" => "General practitioner".into(),
        "76" => "Cardiologist".into(),
        "39" => "Neurologist".into(),
        "93" => "Ophthalmologist".into(),
        "20" => "Surgeon".into(),
        other => format!("Specialty {other}"),
    }
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    crate::codec::xml::dom::escape_text(s)
}

fn hub_field(f: &str) -> String {
    match f {
        "slot" => "IdAppointment".into(),
        "channel" => "Channel".into(),
        "appointment" => "IdClaim".into(),
        "patient" => "Polis".into(),
        "patient.birthDate" => "Birthday".into(),
        other => other.into(),
    }
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
        "CheckPatient" => check_patient(op),
        "GetSpesialityList" => get_speciality_list(&state, &principal, op).await,
        "GetDoctorList" => get_doctor_list(&state, &principal, op).await,
        "GetAvailableDates" => get_available_dates(&state, &principal, op).await,
        "GetAvaibleAppointments" => get_available_appointments(&state, &principal, op).await,
        "SetAppointment" => set_appointment(&state, &principal, &req, op).await,
        "CreateClaimForRefusal" => create_claim_for_refusal(&state, &principal, op).await,
        "GetPatientHistory" => get_patient_history(&state, &principal, op).await,
        other => Err(unknown_operation(other)),
    };
    answer(version, result)
}

fn required<'a>(op: &'a Element, name: &str) -> ApiResult<&'a str> {
    op.child_text(name).ok_or_else(|| ApiError::required(name))
}

/// `IdLPU`: an FRMO OID of an organization the gateway knows.
async fn clinic(state: &AppState, op: &Element) -> ApiResult<String> {
    let raw = required(op, "IdLPU")?;
    let oid = Oid::parse_organization(raw)
        .map_err(|e| ApiError::invalid("INVALID_ORGANIZATION", "IdLPU", e.to_string()))?;
    if state.store.get_organization(oid.as_str()).await?.is_none() {
        return Err(ApiError::not_found(
            "UNKNOWN_ORGANIZATION",
            format!("organization {oid} is not known to the gateway"),
        )
        .at("IdLPU"));
    }
    Ok(oid.to_string())
}

/// `VisitStart`/`VisitEnd`: dates (or dateTimes) bounding a search, as epoch ms.
fn period(op: &Element) -> ApiResult<(i64, i64)> {
    let read = |name: &str| -> ApiResult<Option<i64>> {
        let Some(v) = op.child_text(name) else {
            return Ok(None);
        };
        if let Ok(d) = NaiveDate::parse_from_str(v.get(..10).unwrap_or(v), "%Y-%m-%d") {
            if v.len() == 10 {
                return Ok(d
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_millis()));
            }
        }
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.timestamp_millis()))
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
                    .map(|t| Some(t.and_utc().timestamp_millis()))
            })
            .map_err(|_| {
                ApiError::invalid(
                    "INVALID_DATE",
                    name,
                    format!("{name} must be a date (YYYY-MM-DD) or dateTime, got {v:?}"),
                )
            })
    };
    let now = crate::store::now_ms();
    let start = read("VisitStart")?.unwrap_or(now).max(now);
    let end = read("VisitEnd")?.unwrap_or(start + 31 * 86_400_000);
    if let (Some(s), Some(e)) = (read("VisitStart")?, read("VisitEnd")?) {
        if s >= e {
            return Err(ApiError::invalid(
                "INVALID_PERIOD",
                "VisitEnd",
                "VisitEnd must be after VisitStart",
            ));
        }
    }
    Ok((start, end))
}

fn channel_bit(principal: &Principal, op: &Element) -> ApiResult<i32> {
    let channel = principal
        .booking_channel(match op.child_text("Channel") {
            None => None,
            Some(c) => Some(crate::model::schedule::Channel::parse(c).ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_CHANNEL",
                    "Channel",
                    format!("unknown booking channel {c:?}"),
                )
            })?),
        })
        .map_err(|c| {
            ApiError::forbidden(format!("client {} may not use channel {c}", principal.id))
                .at("Channel")
        })?;
    Ok(channel.bit())
}

fn read_patient(op: &Element) -> ApiResult<Patient> {
    patient(
        op.child_text("Polis"),
        op.child_text("Birthday"),
        op.child_text("Snils"),
        &PATIENT_FIELDS,
    )
}

fn time(ms: i64) -> String {
    crate::store::from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn get_lpu_list(state: &AppState, op: &Element) -> ApiResult<String> {
    let district = op.child_text("IdDistrict");
    let orgs = state
        .store
        .list_organizations(district, None, 0, 10_000)
        .await?;
    let mut out = String::from(
        r#"<GetLPUListResponse xmlns="http://tempuri.org/"><GetLPUListResult><ListLPU>"#,
    );
    for o in &orgs {
        out.push_str(&format!(
            "<Clinic><IdLPU>{}</IdLPU><LPUFullName>{}</LPUFullName><LPUShortName>{}</LPUShortName><District>{}</District><Address>{}</Address></Clinic>",
            esc(&o.oid), esc(&o.name), esc(&o.short_name), esc(&o.district), esc(&o.address)
        ));
    }
    out.push_str("</ListLPU><Success>true</Success></GetLPUListResult></GetLPUListResponse>");
    Ok(out)
}

/// Checks the identifiers and answers a stable pseudonymous patient id (no lookup in a
/// population register: the gateway has none; the MIS decides on booking).
fn check_patient(op: &Element) -> ApiResult<String> {
    let p = read_patient(op)?;
    let key = match (&p.snils, &p.policy) {
        (Some(s), _) => s.digits(),
        (None, Some(policy)) => format!(
            "{}|{}",
            policy.digits(),
            p.birth_date.map(|d| d.to_string()).unwrap_or_default()
        ),
        (None, None) => String::new(),
    };
    let id = &request_digest(&["patient", &key])[..16];
    Ok(format!(
        r#"<CheckPatientResponse xmlns="http://tempuri.org/"><CheckPatientResult><IdPat>{id}</IdPat><Success>true</Success></CheckPatientResult></CheckPatientResponse>"#
    ))
}

async fn get_speciality_list(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let org = clinic(state, op).await?;
    let bit = channel_bit(principal, op)?;
    let counts = state
        .store
        .free_slot_counts(&org, crate::store::now_ms(), bit, false, None)
        .await?;
    let mut out = String::from(
        r#"<GetSpesialityListResponse xmlns="http://tempuri.org/"><GetSpesialityListResult><ListSpesiality>"#,
    );
    for (code, n) in counts {
        out.push_str(&format!(
            "<Spesiality><IdSpesiality>{}</IdSpesiality><NameSpesiality>{}</NameSpesiality><CountFreeTicket>{n}</CountFreeTicket></Spesiality>",
            esc(&code),
            esc(&specialty_name(&code))
        ));
    }
    out.push_str("</ListSpesiality><Success>true</Success></GetSpesialityListResult></GetSpesialityListResponse>");
    Ok(out)
}

async fn get_doctor_list(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let org = clinic(state, op).await?;
    let specialty = required(op, "IdSpesiality")?;
    let bit = channel_bit(principal, op)?;
    let counts: std::collections::HashMap<String, i64> = state
        .store
        .free_slot_counts(&org, crate::store::now_ms(), bit, true, Some(specialty))
        .await?
        .into_iter()
        .collect();
    let doctors = state.store.list_practitioners(Some(&org), 10_000).await?;
    let mut out = String::from(
        r#"<GetDoctorListResponse xmlns="http://tempuri.org/"><GetDoctorListResult><ListDoctor>"#,
    );
    for d in doctors.iter().filter(|d| d.specialty_code == specialty) {
        out.push_str(&format!(
            "<Doctor><IdDoc>{}</IdDoc><Name>{} {}</Name><Room>{}</Room><CountFreeTicket>{}</CountFreeTicket></Doctor>",
            esc(&d.id),
            esc(&d.family),
            esc(&d.given),
            esc(&d.room),
            counts.get(&d.id).copied().unwrap_or(0)
        ));
    }
    out.push_str(
        "</ListDoctor><Success>true</Success></GetDoctorListResult></GetDoctorListResponse>",
    );
    Ok(out)
}

/// Free slots of a doctor of a clinic in the period that the channel may take, at most
/// `limit`.
async fn doctor_slots(
    state: &AppState,
    principal: &Principal,
    op: &Element,
    limit: usize,
) -> ApiResult<Vec<crate::store::schedules::SlotRow>> {
    let raw = required(op, "IdLPU")?;
    let org = Oid::parse_organization(raw)
        .map_err(|e| ApiError::invalid("INVALID_ORGANIZATION", "IdLPU", e.to_string()))?
        .to_string();
    let doctor = required(op, "IdDoc")?;
    let (from, to) = period(op)?;
    let bit = channel_bit(principal, op)?;
    // A doctor of the clinic vouches for the clinic; otherwise say which one is unknown.
    let known = state
        .store
        .get_practitioner(doctor)
        .await?
        .is_some_and(|p| p.org_oid == org);
    if !known {
        clinic(state, op).await?;
        return Err(ApiError::not_found(
            "UNKNOWN_DOCTOR",
            format!("clinic {org} has no doctor {doctor}"),
        )
        .at("IdDoc"));
    }
    let mut q = SlotQuery {
        org_oid: Some(org),
        practitioner_id: Some(doctor.to_string()),
        status: Some("free".into()),
        start_from: Some(from),
        start_to: Some(to),
        ..SlotQuery::default()
    };
    let mut out = Vec::new();
    while out.len() < limit {
        let page = state.store.search_slots(&q, 1000).await?;
        let Some(last) = page.last() else { break };
        q.after = Some((last.start_at, last.id.clone()));
        let done = page.len() < 1000;
        out.extend(
            page.into_iter()
                .filter(|s| Channels(s.channels).0 & bit != 0),
        );
        if done {
            break;
        }
    }
    out.truncate(limit);
    Ok(out)
}

async fn get_available_dates(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let slots = doctor_slots(state, principal, op, 10_000).await?;
    let mut days: std::collections::BTreeMap<NaiveDate, usize> = Default::default();
    for s in &slots {
        *days
            .entry(crate::store::from_ms(s.start_at).date_naive())
            .or_default() += 1;
    }
    let mut out = String::from(
        r#"<GetAvailableDatesResponse xmlns="http://tempuri.org/"><GetAvailableDatesResult><ListDate>"#,
    );
    for (day, n) in days {
        out.push_str(&format!(
            "<AvailableDate><Date>{day}</Date><CountFreeTicket>{n}</CountFreeTicket></AvailableDate>"
        ));
    }
    out.push_str(
        "</ListDate><Success>true</Success></GetAvailableDatesResult></GetAvailableDatesResponse>",
    );
    Ok(out)
}

async fn get_available_appointments(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    let slots = doctor_slots(state, principal, op, 1000).await?;
    let mut out = String::from(
        r#"<GetAvaibleAppointmentsResponse xmlns="http://tempuri.org/"><GetAvaibleAppointmentsResult><ListAppointments>"#,
    );
    for s in &slots {
        out.push_str(&format!(
            "<Appointment><IdAppointment>{}</IdAppointment><VisitStart>{}</VisitStart><VisitEnd>{}</VisitEnd></Appointment>",
            esc(&s.id),
            time(s.start_at),
            time(s.end_at)
        ));
    }
    out.push_str("</ListAppointments><Success>true</Success></GetAvaibleAppointmentsResult></GetAvaibleAppointmentsResponse>");
    Ok(out)
}

fn claim(a: &Appointment) -> String {
    format!(
        "<IdClaim>{}</IdClaim><IdAppointment>{}</IdAppointment><IdLPU>{}</IdLPU><IdDoc>{}</IdDoc><VisitStart>{}</VisitStart><Status>{}</Status>",
        esc(&a.id),
        esc(&a.slot_id),
        esc(&a.org_oid),
        esc(&a.practitioner_id),
        time(a.start_at),
        esc(&a.status)
    )
}

async fn set_appointment(
    state: &AppState,
    principal: &Principal,
    req: &HttpRequest,
    op: &Element,
) -> ApiResult<String> {
    let who = requester(principal, op.child_text("Channel"), "Channel")?;
    let slot = required(op, "IdAppointment")?.to_string();
    let org = clinic(state, op).await?;
    let p = read_patient(op)?;
    if let Some(s) = state.store.slot(&slot).await? {
        if s.org_oid != org {
            return Err(ApiError::invalid(
                "SLOT_OF_ANOTHER_CLINIC",
                "IdAppointment",
                format!("slot {slot} belongs to {}, not to IdLPU {org}", s.org_oid),
            ));
        }
    }
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
        &org,
        op.child_text("Polis").unwrap_or(""),
        op.child_text("Birthday").unwrap_or(""),
        op.child_text("Snils").unwrap_or(""),
        who.channel.as_str(),
    ]);
    let target = Target::Slot(slot.clone());
    let a = state
        .booking
        .idempotent(&principal.id, key.as_deref(), &digest, || {
            state.booking.book(who, &target, Some(&p))
        })
        .await
        .map_err(|e| booking_error(e, &hub_field))?;
    Ok(format!(
        r#"<SetAppointmentResponse xmlns="http://tempuri.org/"><SetAppointmentResult>{}<Success>true</Success></SetAppointmentResult></SetAppointmentResponse>"#,
        claim(&a)
    ))
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
    Ok(format!(
        r#"<CreateClaimForRefusalResponse xmlns="http://tempuri.org/"><CreateClaimForRefusalResult>{}<Success>true</Success></CreateClaimForRefusalResult></CreateClaimForRefusalResponse>"#,
        claim(&a)
    ))
}

async fn get_patient_history(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> ApiResult<String> {
    may_read(principal)?;
    let p = read_patient(op)?;
    let q = AppointmentQuery {
        policy: p.policy.as_ref().map(|x| x.digits().to_string()),
        snils: if p.policy.is_none() {
            p.snils.as_ref().map(|x| x.digits())
        } else {
            None
        },
        ..AppointmentQuery::default()
    };
    let mut rows = state.store.search_appointments(&q, 1000).await?;
    if let (Some(_), Some(birth)) = (&p.policy, p.birth_date) {
        let b = birth.to_string();
        rows.retain(|a| a.patient_birth.as_deref() == Some(b.as_str()));
    }
    if !principal.has_scope("admin") {
        rows.retain(|a| a.client_id == principal.id);
    }
    let mut out = String::from(
        r#"<GetPatientHistoryResponse xmlns="http://tempuri.org/"><GetPatientHistoryResult><ListHistoryVisit>"#,
    );
    for a in &rows {
        out.push_str(&format!("<HistoryVisit>{}</HistoryVisit>", claim(a)));
    }
    out.push_str("</ListHistoryVisit><Success>true</Success></GetPatientHistoryResult></GetPatientHistoryResponse>");
    Ok(out)
}
