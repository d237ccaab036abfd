//! FHIR R4 referrals: `ServiceRequest` create, read and search, the referral's `Task` read,
//! search and update (the target accepts, rejects or completes; the referring side
//! cancels), and the targets' published acceptance rules.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use super::access::{Access, Org, Route};
use super::booking::{booking_error, patient, requester, PatientFields};
use super::fhir::{base_url, fhir_json, request_link};
use super::query::{check_params, count_param, moment, organization, pairs};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{REFERRAL_PROPOSE, REFERRAL_READ, REFERRAL_WRITE};
use crate::codec::fhir::referral::{
    peer_update, requested_move, rules, service_request, task, DOCUMENT_KIND_SYSTEM,
    DUTY_SLOT_EXTENSION, ICD10_SYSTEM, KIND_SYSTEM, PROFILE_SYSTEM, REFERRAL_DOCUMENT_SYSTEM,
    REFERRAL_SYSTEM, SUPPORTING_DOCUMENT, VIDEO_VISIT,
};
use crate::codec::fhir::{
    gateway_id, searchset, IssueType, FHIR_JSON, POLICY_SYSTEM, SNILS_SYSTEM, URI_SYSTEM,
};
use crate::model::referral::{ReferralKind, ReferralStatus, RuleRefusal, Urgency};
use crate::model::{Icd10, PolicyNumber, Snils};
use crate::route;
use crate::services::federation::HOPS_HEADER;
use crate::services::referrals::{
    Forwarded, NewReferral, ReferralError, ReferralQuery, Remote, Transition, Visit,
};
use crate::services::Caller;

/// The referral routes, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(POST "/fhir" "/ServiceRequest" => create, Access::Scope(REFERRAL_WRITE, Org::Named)),
    route!(GET "/fhir" "/ServiceRequest" => search_requests, Access::Scope(REFERRAL_READ, Org::Records)),
    route!(POST "/fhir" "/ServiceRequest/$propose" => propose, Access::Scope(REFERRAL_PROPOSE, Org::Public)),
    route!(GET "/fhir" "/ServiceRequest/{id}" => read_request, Access::Scope(REFERRAL_READ, Org::Records)),
    route!(POST "/fhir" "/ServiceRequest/{id}/$book" => book, Access::Scope(REFERRAL_WRITE, Org::Records)),
    route!(GET "/fhir" "/Task" => search_tasks, Access::Scope(REFERRAL_READ, Org::Records)),
    route!(GET "/fhir" "/Task/{id}" => read_task, Access::Scope(REFERRAL_READ, Org::Records)),
    route!(PUT "/fhir" "/Task/{id}" => update_task, Access::Scope(REFERRAL_WRITE, Org::Records)),
    route!(GET "" "/api/referrals/rules" => acceptance_rules, Access::Scope(REFERRAL_READ, Org::Public)),
];

/// A service error as an API error, its field named as a path in the resource.
fn referral_error(e: ReferralError, resource: &str) -> ApiError {
    referral_api_error(e, &|f| match f {
        "slot" => "Parameters.parameter[slot]".into(),
        other => format!("{resource}.{other}"),
    })
}

/// A service error as an API error; `field_of` turns the service's field names
/// (`supportingInfo[1]`, `status`, `slot`, ...) into the protocol's.
pub(super) fn referral_api_error(e: ReferralError, field_of: &dyn Fn(&str) -> String) -> ApiError {
    use ReferralError as E;
    // The booking's own refusal (slot taken, not a referral slot, elsewhere), as booked.
    let e = match e {
        E::Booking(b) => return booking_error(b, field_of),
        // A document submitted with the referral, refused as its intake refuses it.
        E::Document { index, error } => {
            let mut api = super::documents::to_api(error);
            api.field = Some(format!(
                "{}{}",
                field_of(&format!("supportingInfo[{index}]")),
                api.field
                    .as_deref()
                    .map(|f| format!(".{}", f.trim_start_matches("DocumentReference.")))
                    .unwrap_or_default()
            ));
            return api;
        }
        other => other,
    };
    let (status, issue) = match &e {
        E::NotFound => (StatusCode::NOT_FOUND, IssueType::NotFound),
        E::Patient(_) => (StatusCode::BAD_REQUEST, IssueType::Required),
        E::NotYourOrganization(_) | E::WrongSide { .. } => {
            (StatusCode::FORBIDDEN, IssueType::Forbidden)
        }
        E::UnknownOrganization(_) | E::UnknownDocument { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, IssueType::NotFound)
        }
        E::DocumentOfAnotherPatient { .. }
        | E::Refused(_)
        | E::NoSuitableTarget { .. }
        | E::ReasonRequired
        | E::ConclusionRequired
        | E::VideoWithoutAcceptance
        | E::TargetMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, IssueType::BusinessRule),
        E::Validity => (StatusCode::BAD_REQUEST, IssueType::Value),
        E::UnknownCode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, IssueType::Invalid),
        E::NotAllowed { .. } | E::Expired | E::Changed => {
            (StatusCode::CONFLICT, IssueType::Conflict)
        }
        E::Store(inner) => return ApiError::storage(inner),
        E::Booking(_) | E::Document { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, IssueType::BusinessRule)
        }
        E::PeerRefused {
            status,
            code,
            field,
            message,
            region,
        } => {
            // The peer's refusal as it gave it: its status, code and field are the API's own.
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let issue = match status.as_u16() {
                404 => IssueType::NotFound,
                409 => IssueType::Conflict,
                403 => IssueType::Forbidden,
                400 => IssueType::Value,
                _ => IssueType::BusinessRule,
            };
            let mut api = ApiError::new(
                status,
                issue,
                peer_code(code),
                format!("the gateway of region {region}: {message}"),
            );
            api.field = field.clone();
            return api;
        }
        E::PeerUnavailable(_) => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                e.code(),
                e.to_string(),
            );
            api.retry_after = Some(30);
            return api;
        }
        E::Unreachable(_)
        | E::DutySlot { .. }
        | E::InAnotherRegion(_)
        | E::ProposalTarget
        | E::ProposalDocuments => (StatusCode::UNPROCESSABLE_ENTITY, IssueType::BusinessRule),
        E::HopLimit(_) => (StatusCode::LOOP_DETECTED, IssueType::BusinessRule),
    };
    let field = e.field().map(|f| field_of(&f));
    let mut api = ApiError::new(status, issue, e.code(), e.to_string());
    // Each missing document is named, so the doctor knows what to attach.
    if let E::Refused(RuleRefusal::MissingDocuments(docs)) = &e {
        api.message = format!(
            "{}; attach them as supportingInfo (DocumentReference of a registered document)",
            docs.iter()
                .map(|d| format!("missing {} (kind {})", d.name, d.kind))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    api.field = field;
    api
}

/// A peer's code as one of the API's own (the codes of referrals and bookings), or
/// `PEER_REFUSED` for one this gateway does not know.
fn peer_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "NOT_FOUND",
        "PATIENT_NOT_IDENTIFIED",
        "NOT_YOUR_ORGANIZATION",
        "UNKNOWN_ORGANIZATION",
        "MISSING_DOCUMENTS",
        "DIAGNOSIS_NOT_ACCEPTED",
        "NOT_ACCEPTED",
        "NO_SUITABLE_TARGET",
        "INVALID_VALIDITY",
        "INVALID_TRANSITION",
        "WRONG_SIDE",
        "REFERRAL_EXPIRED",
        "CONFLICT",
        "HOP_LIMIT",
        "REGION_UNREACHABLE",
        "DUTY_SLOT_UNAVAILABLE",
        "SLOT_TAKEN",
        "SLOT_NOT_FOUND",
        "CHANNEL_NOT_ALLOWED",
        "UNKNOWN_SLOT",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("PEER_REFUSED")
}

/// Gateways a peer's request passed already (`X-Medgate-Hops`); 0 for anyone else's.
fn hops(req: &HttpRequest, principal: &Principal) -> ApiResult<u32> {
    if !principal.is_peer() {
        return Ok(0);
    }
    match req.headers().get(HOPS_HEADER).map(|v| v.to_str()) {
        None => Ok(1),
        Some(Ok(v)) => v.trim().parse::<u32>().map_err(|_| {
            ApiError::malformed("INVALID_HEADER", "X-Medgate-Hops must be a number").at(HOPS_HEADER)
        }),
        Some(Err(_)) => Err(ApiError::malformed(
            "INVALID_HEADER",
            "X-Medgate-Hops must be a number",
        )
        .at(HOPS_HEADER)),
    }
}

fn json_body(body: &[u8], what: &str) -> ApiResult<Value> {
    ApiError::check_json(body, what)?;
    serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed("INVALID_JSON", format!("the body is not JSON: {e}")).at(what)
    })
}

fn text<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The first coding of `system` in a CodeableConcept list or concept at `path`.
fn coding<'a>(v: &'a Value, path: &str, system: &str) -> Option<&'a str> {
    let node = v.pointer(path)?;
    let concepts: Vec<&Value> = match node.as_array() {
        Some(list) => list.iter().collect(),
        None => vec![node],
    };
    concepts
        .into_iter()
        .flat_map(|c| c["coding"].as_array().into_iter().flatten())
        .find(|c| c["system"].as_str() == Some(system))
        .and_then(|c| c["code"].as_str())
}

/// A contained resource by local reference (`#id`).
fn contained<'a>(v: &'a Value, reference: Option<&str>) -> Option<&'a Value> {
    let id = reference?.strip_prefix('#')?;
    v["contained"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_str() == Some(id))
}

fn identifier<'a>(ids: &'a Value, system: &str) -> Option<&'a str> {
    ids.as_array()?
        .iter()
        .find(|i| i["system"].as_str() == Some(system))
        .and_then(|i| i["value"].as_str())
}

/// An organization named by reference (`Organization/<oid>`) or by URI identifier.
fn org_of(r: &Value, field: &str) -> ApiResult<Option<crate::model::Oid>> {
    let raw = r["reference"].as_str().map(str::to_string).or_else(|| {
        (r["identifier"]["system"].as_str() == Some(URI_SYSTEM))
            .then(|| r["identifier"]["value"].as_str())
            .flatten()
            .map(|v| v.trim_start_matches("urn:oid:").to_string())
    });
    raw.map(|raw| organization(field, &raw)).transpose()
}

/// Reads a `ServiceRequest` into a new referral, naming the field of any fault.
fn new_referral(v: &Value, now_ms: i64, from_peer: bool, intent: &str) -> ApiResult<NewReferral> {
    if v["resourceType"].as_str() != Some("ServiceRequest") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected a ServiceRequest",
        ));
    }
    if let Some(got) = text(v, "/intent").filter(|i| *i != intent) {
        return Err(ApiError::invalid(
            "INVALID_VALUE",
            "ServiceRequest.intent",
            format!("expected intent {intent:?} here, got {got:?}"),
        ));
    }
    let subject = contained(v, v["subject"]["reference"].as_str())
        .ok_or_else(|| ApiError::required("ServiceRequest.subject"))?;
    let patient = patient(
        identifier(&subject["identifier"], POLICY_SYSTEM),
        subject["birthDate"].as_str(),
        identifier(&subject["identifier"], SNILS_SYSTEM),
        &PatientFields {
            policy: "ServiceRequest.contained[Patient].identifier[policy]",
            birth_date: "ServiceRequest.contained[Patient].birthDate",
            snils: "ServiceRequest.contained[Patient].identifier[snils]",
        },
    )?;
    let role = contained(v, v["requester"]["reference"].as_str())
        .ok_or_else(|| ApiError::required("ServiceRequest.requester"))?;
    let requester_snils = text(role, "/practitioner/identifier/value")
        .ok_or_else(|| {
            ApiError::required("ServiceRequest.contained[PractitionerRole].practitioner.identifier")
        })
        .and_then(|s| {
            Snils::parse(s).map_err(|e| {
                ApiError::invalid(
                    "INVALID_SNILS",
                    "ServiceRequest.contained[PractitionerRole].practitioner.identifier",
                    e.to_string(),
                )
            })
        })?;
    let requester_org = org_of(
        &role["organization"],
        "ServiceRequest.contained[PractitionerRole].organization",
    )?
    .ok_or_else(|| ApiError::required("ServiceRequest.contained[PractitionerRole].organization"))?;
    let target_org = match v["performer"].as_array().and_then(|p| p.first()) {
        Some(p) => org_of(p, "ServiceRequest.performer[0]")?,
        None => None,
    };
    let diagnosis = coding(v, "/reasonCode", ICD10_SYSTEM)
        .ok_or_else(|| ApiError::required("ServiceRequest.reasonCode"))
        .and_then(|c| {
            Icd10::parse(c).map_err(|e| {
                ApiError::invalid("INVALID_ICD10", "ServiceRequest.reasonCode", e.to_string())
            })
        })?;
    let kind = match coding(v, "/category", KIND_SYSTEM) {
        None => ReferralKind::Consultation,
        Some(k) => ReferralKind::parse(k).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_VALUE",
                "ServiceRequest.category",
                format!("kind must be consultation, diagnostic, hospitalization or teleconsultation, got {k:?}"),
            )
        })?,
    };
    let urgency = match text(v, "/priority") {
        None => Urgency::Routine,
        Some(p) => Urgency::from_fhir(p).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_VALUE",
                "ServiceRequest.priority",
                format!("priority must be routine, urgent, asap or stat, got {p:?}"),
            )
        })?,
    };
    let profile = coding(v, "/code", PROFILE_SYSTEM)
        .ok_or_else(|| ApiError::required("ServiceRequest.code"))?
        .to_string();
    let valid_days = match text(v, "/occurrencePeriod/end") {
        None => None,
        Some(end) => {
            let end = moment("ServiceRequest.occurrencePeriod.end", end)?.end_ms();
            let days = (end - now_ms).div_euclid(crate::model::time::DAY_MS);
            Some(u32::try_from(days).unwrap_or(0))
        }
    };
    let (documents, submitted, forwarded) = if from_peer {
        let (documents, forwarded) = forwarded_parts(v)?;
        (documents, Vec::new(), Some(forwarded))
    } else {
        let (documents, submitted) = supporting_documents(v)?;
        (documents, submitted, None)
    };
    Ok(NewReferral {
        patient,
        diagnosis,
        reason: text(v, "/reasonCode/0/text")
            .unwrap_or("")
            .chars()
            .take(2000)
            .collect(),
        requester_org,
        requester_snils,
        profile,
        target_org,
        urgency,
        kind,
        valid_days,
        documents,
        submitted,
        forwarded,
        duty_slot: duty_slot(v)?,
    })
}

/// The slot of the target's duty schedule a referral asks to be booked in, if any.
fn duty_slot(v: &Value) -> ApiResult<Option<String>> {
    let Some(ext) = v["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(DUTY_SLOT_EXTENSION))
    else {
        return Ok(None);
    };
    ext["valueReference"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Slot/"))
        .map(|s| Some(gateway_id(s)))
        .ok_or_else(|| {
            ApiError::invalid(
                "INVALID_REFERENCE",
                "ServiceRequest.extension[duty-slot].valueReference",
                "expected Slot/<id> of a slot of the target's duty schedule",
            )
        })
}

/// The ids of the documents attached as `supportingInfo` references.
/// New documents submitted with a referral, with their places among its documents.
type Submitted = Vec<(usize, crate::model::document::Submission)>;

/// The documents attached as `supportingInfo`: references `DocumentReference/<id>` to
/// documents the gateway registered, or references `#<id>` to new ones contained in the
/// request (each a `DocumentReference` as `POST /fhir/DocumentReference` takes it), to be
/// submitted first; the latter's places are left empty in the list.
fn supporting_documents(v: &Value) -> ApiResult<(Vec<String>, Submitted)> {
    let mut documents = Vec::new();
    let mut submitted = Vec::new();
    for (i, s) in v["supportingInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(doc) = contained(v, s["reference"].as_str()) {
            submitted.push((i, contained_submission(doc, i)?));
            documents.push(String::new());
            continue;
        }
        let id = s["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("DocumentReference/"))
            .ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_REFERENCE",
                    format!("ServiceRequest.supportingInfo[{i}]"),
                    "expected DocumentReference/<id> of a document registered through the gateway, or #<id> of a new one contained in the request",
                )
            })?;
        documents.push(id.to_string());
    }
    Ok((documents, submitted))
}

/// A new document contained in a referral, read as `POST /fhir/DocumentReference` reads
/// one; a fault is named inside `supportingInfo[i]`.
fn contained_submission(doc: &Value, i: usize) -> ApiResult<crate::model::document::Submission> {
    use crate::codec::fhir::document::{read_submission, ReadError};
    let at = |path: &str| {
        format!(
            "ServiceRequest.supportingInfo[{i}].{}",
            path.trim_start_matches("DocumentReference.")
        )
    };
    let bytes = serde_json::to_vec(doc).map_err(|e| ApiError::internal(e.to_string()))?;
    read_submission(&bytes).map_err(|e| match e {
        ReadError::Missing(path) => ApiError::required(at(&path)),
        ReadError::Malformed { path, message } => {
            ApiError::malformed("INVALID_JSON", message).at(at(&path))
        }
        ReadError::Invalid {
            code,
            path,
            message,
        } => ApiError::invalid(code, at(&path), message),
    })
}

/// The parts of a peer gateway's forwarded `ServiceRequest` that a new one lacks: its id
/// (identifier `urn:medgate:referral`), its end of validity, and its documents as contained
/// `DocumentReference`s with their kinds (the documents stay in the referring region).
fn forwarded_parts(v: &Value) -> ApiResult<(Vec<String>, Forwarded)> {
    let id = identifier(&v["identifier"], REFERRAL_SYSTEM)
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(|| ApiError::required("ServiceRequest.identifier[urn:medgate:referral]"))?;
    let end = text(v, "/occurrencePeriod/end")
        .ok_or_else(|| ApiError::required("ServiceRequest.occurrencePeriod.end"))?;
    let valid_until = moment("ServiceRequest.occurrencePeriod.end", end)?.ms();
    let mut documents = Vec::new();
    let mut kinds = Vec::new();
    for (i, s) in v["supportingInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("ServiceRequest.supportingInfo[{i}]");
        let doc = contained(v, s["reference"].as_str())
            .filter(|d| d["resourceType"].as_str() == Some("DocumentReference"))
            .ok_or_else(|| ApiError::required(field.clone()))?;
        let kind = coding(doc, "/type", DOCUMENT_KIND_SYSTEM)
            .ok_or_else(|| ApiError::required(format!("{field}.type")))?;
        let doc_id = identifier(&doc["identifier"], REFERRAL_DOCUMENT_SYSTEM)
            .ok_or_else(|| ApiError::required(format!("{field}.identifier")))?;
        documents.push(doc_id.to_string());
        kinds.push(kind.to_string());
    }
    let forwarded = Forwarded {
        id: id.to_string(),
        valid_until,
        document_kinds: kinds,
        hops: 0,
    };
    Ok((documents, forwarded))
}

async fn create(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = json_body(&body, "ServiceRequest")?;
    let hops = hops(&req, &principal)?;
    let mut new = new_referral(
        &v,
        crate::model::time::now_ms(),
        principal.is_peer(),
        "order",
    )?;
    if let Some(f) = new.forwarded.as_mut() {
        f.hops = hops;
    }
    let r = if new.submitted.is_empty() {
        state.referrals.create(Caller::of(&principal), new).await
    } else {
        // New documents come with it: the client submits them (its scope for that).
        if !principal.has_scope(crate::auth::scopes::DOCUMENTS_SUBMIT) {
            return Err(ApiError::forbidden(format!(
                "client {} may not submit documents (scope documents:submit); attach registered ones by reference",
                principal.id
            ))
            .at("ServiceRequest.supportingInfo"));
        }
        state
            .referrals
            .create_submitting(&state.documents, &principal, new)
            .await
    }
    .map_err(|e| referral_error(e, "ServiceRequest"))?;
    Ok(created(&state, &req, &r))
}

/// `201 Created` with the new referral's `ServiceRequest` and its location.
fn created(
    state: &AppState,
    req: &HttpRequest,
    r: &crate::model::referral::Referral,
) -> HttpResponse {
    let base = base_url(state, req);
    HttpResponse::build(StatusCode::CREATED)
        .content_type(FHIR_JSON)
        .insert_header(("location", format!("{base}/ServiceRequest/{}", r.id)))
        .body(service_request(r).to_string())
}

/// `$propose`: a patient's own request for a referral, through a citizen-facing channel
/// (`intent` `proposal`; the requester is the patient's attending doctor and organization,
/// the performer the organization asked for); it waits for the attending doctor.
async fn propose(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = json_body(&body, "ServiceRequest")?;
    let new = new_referral(&v, crate::model::time::now_ms(), false, "proposal")?;
    let r = state
        .referrals
        .propose(Caller::of(&principal), new)
        .await
        .map_err(|e| referral_error(e, "ServiceRequest"))?;
    Ok(created(&state, &req, &r))
}

/// Books the visit of an accepted referral: `Parameters` with `slot` (a reference to a
/// slot of the target that takes the referral channel); answers the Appointment.
async fn book(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = json_body(&body, "Parameters")?;
    let slot = v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some("slot"))
        .and_then(|p| p["valueReference"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("Slot/"))
        .ok_or_else(|| ApiError::required("Parameters.parameter[slot].valueReference"))?;
    let who = requester(&principal, Some("referral"), "Parameters.parameter[slot]")?;
    let (_, visit) = state
        .referrals
        .book(who, &id, &gateway_id(slot), None, Remote::Ask)
        .await
        .map_err(|e| referral_error(e, "ServiceRequest"))?;
    match visit {
        Visit::Here(a) => Ok(super::fhir_booking::respond(
            &state,
            &req,
            StatusCode::CREATED,
            &a,
        )),
        // Booked at the gateway holding the target: its Appointment as it answered.
        Visit::AtPeer(a) => Ok(fhir_json(StatusCode::CREATED, &a)),
    }
}

async fn read_request(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let (r, _) = state
        .referrals
        .get(Caller::of(&principal), &id)
        .await
        .map_err(|e| referral_error(e, "ServiceRequest"))?;
    Ok(fhir_json(StatusCode::OK, &service_request(&r)))
}

async fn read_task(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let (r, events) = state
        .referrals
        .get(Caller::of(&principal), &id)
        .await
        .map_err(|e| referral_error(e, "Task"))?;
    Ok(fhir_json(StatusCode::OK, &task(&r, &events)))
}

/// A move asked for by a `Task`: its status, statusReason and output.
async fn update_task(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = json_body(&body, "Task")?;
    if v["resourceType"].as_str() != Some("Task") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected a Task",
        ));
    }
    if principal.is_peer() {
        let update = peer_update(&id, &v)
            .map_err(|(field, why)| ApiError::invalid("INVALID_VALUE", field, why))?;
        let r = state
            .referrals
            .mirror(Caller::of(&principal), update)
            .await
            .map_err(|e| referral_error(e, "Task"))?;
        let events = state
            .referrals
            .events(&r.id)
            .await
            .map_err(|e| referral_error(e, "Task"))?;
        return Ok(fhir_json(StatusCode::OK, &task(&r, &events)));
    }
    let status = text(&v, "/status").ok_or_else(|| ApiError::required("Task.status"))?;
    let to = requested_move(status).ok_or_else(|| {
        ApiError::invalid(
            "INVALID_TRANSITION",
            "Task.status",
            format!("a referral's Task may be set requested (confirming a patient's request), accepted, rejected, cancelled or completed, not {status:?}"),
        )
    })?;
    let conclusion = v["output"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["valueReference"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("DocumentReference/"))
        .map(str::to_string);
    let video_url = match v["input"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["type"]["text"].as_str() == Some(VIDEO_VISIT))
    {
        None => None,
        Some(i) => {
            const FIELD: &str = "Task.input[video-visit].valueUrl";
            let raw = i["valueUrl"]
                .as_str()
                .ok_or_else(|| ApiError::required(FIELD))?;
            match url::Url::parse(raw) {
                Ok(u) if u.scheme() == "https" && raw.len() <= 2000 => Some(u.to_string()),
                _ => {
                    return Err(ApiError::invalid(
                        "INVALID_URL",
                        FIELD,
                        "the video-visit link must be an absolute https URL",
                    ))
                }
            }
        }
    };
    // Documents the attending doctor attaches when confirming a patient's request.
    let mut documents = Vec::new();
    for (i, input) in v["input"].as_array().into_iter().flatten().enumerate() {
        if input["type"]["text"].as_str() != Some(SUPPORTING_DOCUMENT) {
            continue;
        }
        let id = input["valueReference"]["reference"]
            .as_str()
            .and_then(|r| r.strip_prefix("DocumentReference/"))
            .ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_REFERENCE",
                    format!("Task.input[{i}].valueReference"),
                    "expected DocumentReference/<id> of a document registered through the gateway",
                )
            })?;
        documents.push(id.to_string());
    }
    let transition = Transition {
        documents,
        video_url,
        to,
        reason: text(&v, "/statusReason/text").map(|s| s.chars().take(2000).collect()),
        conclusion,
    };
    let r = state
        .referrals
        .transition(Caller::of(&principal), &id, transition)
        .await
        .map_err(|e| referral_error(e, "Task"))?;
    // The move was audited; its history is part of the answer, not another access.
    let events = state
        .referrals
        .events(&r.id)
        .await
        .map_err(|e| referral_error(e, "Task"))?;
    Ok(fhir_json(StatusCode::OK, &task(&r, &events)))
}

/// The search parameters both resources share, read into a store query.
fn referral_query(params: &[(String, String)], owner: &str) -> ApiResult<ReferralQuery> {
    let mut q = ReferralQuery::default();
    for (k, v) in params {
        match k.as_str() {
            "patient:identifier" | "patient" => {
                let (system, value) = v.split_once('|').ok_or_else(|| {
                    ApiError::invalid("INVALID_PARAMETER", k.clone(), "expected system|value")
                })?;
                match system {
                    POLICY_SYSTEM => {
                        q.patient_policy = Some(
                            PolicyNumber::parse(value)
                                .map_err(|e| ApiError::invalid("INVALID_POLICY", k.clone(), e.to_string()))?,
                        )
                    }
                    SNILS_SYSTEM => {
                        q.patient_snils = Some(
                            Snils::parse(value)
                                .map_err(|e| ApiError::invalid("INVALID_SNILS", k.clone(), e.to_string()))?,
                        )
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
            "requester" => q.requester = Some(organization(k, v)?),
            "escalated" => {
                q.escalated = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::invalid(
                            "INVALID_PARAMETER",
                            k.clone(),
                            "escalated must be true or false",
                        ))
                    }
                }
            }
            name if name == owner => q.target = Some(organization(k, v)?),
            "business-status" | "status" => {
                q.status = Some(ReferralStatus::parse(v).ok_or_else(|| {
                    ApiError::invalid(
                        "INVALID_PARAMETER",
                        k.clone(),
                        format!("expected one of requested, accepted, rejected, booked, completed, cancelled, expired; got {v:?}"),
                    )
                })?)
            }
            "authored" | "date" => {
                let (prefix, raw) = match v.get(..2) {
                    Some(p @ ("ge" | "gt" | "le" | "lt")) => (p, &v[2..]),
                    _ => ("eq", v.as_str()),
                };
                let m = moment(k, raw)?;
                match prefix {
                    "ge" | "gt" => q.from = Some(m.ms()),
                    "le" | "lt" => q.to = Some(m.end_ms()),
                    _ => {
                        q.from = Some(m.ms());
                        q.to = Some(m.end_ms());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(q)
}

const SEARCH_PARAMS: &[&str] = &[
    "patient",
    "patient:identifier",
    "requester",
    "status",
    "business-status",
    "authored",
    "date",
    "escalated",
    "_count",
];

async fn search_requests(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    search(state, principal, req, "ServiceRequest", "performer").await
}

async fn search_tasks(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    search(state, principal, req, "Task", "owner").await
}

async fn search(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    resource: &'static str,
    owner: &'static str,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    let mut known = SEARCH_PARAMS.to_vec();
    known.push(owner);
    check_params(&params, &known)?;
    let query = referral_query(&params, owner)?;
    let limit = count_param(&params, "_count", 50, 1000)?;
    let caller = Caller::of(&principal);
    let found = state
        .referrals
        .search(caller, query, limit)
        .await
        .map_err(|e| referral_error(e, resource))?;
    let base = base_url(&state, &req);
    let mut entries = Vec::with_capacity(found.len());
    for r in &found {
        let body = if resource == "Task" {
            let events = state
                .referrals
                .events(&r.id)
                .await
                .map_err(|e| referral_error(e, resource))?;
            task(r, &events)
        } else {
            service_request(r)
        };
        entries.push((format!("{base}/{resource}/{}", r.id), body));
    }
    let body = searchset(&request_link(&base, resource, &req), None, entries);
    Ok(fhir_json(StatusCode::OK, &body))
}

async fn acceptance_rules(state: Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["organization"])?;
    let org = params
        .iter()
        .find(|(k, _)| k == "organization")
        .map(|(k, v)| organization(k, v))
        .transpose()?;
    Ok(HttpResponse::Ok().json(rules(&state.referrals.rules(org.as_ref()))))
}
