//! What the FHIR and SOAP booking edges share: who books (scope and channel), patient
//! identifiers read from the wire, and booking errors as API errors.

use actix_web::http::StatusCode;
use chrono::Datelike;

use super::{ApiError, ApiResult, Principal};
use crate::auth::scopes::APPOINTMENT_WRITE;
use crate::codec::fhir::IssueType;
use crate::model::booking::Patient;
use crate::model::schedule::Channel;
use crate::model::{PolicyNumber, Snils};
use crate::services::booking::{BookingError, Requester};
use crate::services::Caller;

/// The requester of a booking operation (the route's rule checked the scope): `channel`
/// (a wire name) must be one the client may use; none means the client's default. `field`
/// names the channel field in the caller's protocol.
pub fn requester<'a>(
    p: &'a Principal,
    channel: Option<&str>,
    field: &str,
) -> ApiResult<Requester<'a>> {
    let requested = match channel.map(str::trim).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(Channel::parse(c).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_CHANNEL",
                field,
                format!("unknown booking channel {c:?}; use registry, phone, kiosk, internet, doctor or referral"),
            )
        })?),
    };
    let channel = p.booking_channel(requested).map_err(|c| {
        ApiError::forbidden(format!("client {} may not book through channel {c}", p.id))
            .at(field.to_string())
    })?;
    Ok(Requester {
        caller: Caller::of(p),
        channel,
    })
}

/// The reader of appointments (the route's rule checked the scope).
pub fn reader(p: &Principal) -> Requester<'_> {
    Requester {
        caller: Caller::of(p),
        channel: p.booking_channel(None).unwrap_or(Channel::Internet),
    }
}

/// The channel free slots are searched for: the requested one if the client may book
/// through it, else the client's default; a reader without booking rights sees the
/// internet channel's slots.
pub fn search_channel(p: &Principal, requested: Option<&str>, field: &str) -> ApiResult<Channel> {
    if !p.has_scope(APPOINTMENT_WRITE) {
        // Reading free slots needs no write scope; the channel still filters.
        return Ok(Channel::Internet);
    }
    requester(p, requested, field).map(|r| r.channel)
}

fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|v| !v.is_empty())
}

/// Field names of the patient identifiers in a protocol.
pub struct PatientFields {
    /// Policy number field.
    pub policy: &'static str,
    /// Birth date field.
    pub birth_date: &'static str,
    /// SNILS field.
    pub snils: &'static str,
}

/// Reads patient identifiers, naming the field of any malformed value.
pub fn patient(
    policy: Option<&str>,
    birth_date: Option<&str>,
    snils: Option<&str>,
    fields: &PatientFields,
) -> ApiResult<Patient> {
    let policy = present(policy)
        .map(|v| {
            PolicyNumber::parse(v)
                .map_err(|e| ApiError::invalid("INVALID_POLICY", fields.policy, e.to_string()))
        })
        .transpose()?;
    let snils = present(snils)
        .map(|v| {
            Snils::parse(v)
                .map_err(|e| ApiError::invalid("INVALID_SNILS", fields.snils, e.to_string()))
        })
        .transpose()?;
    let birth_date = present(birth_date)
        .map(|v| {
            let d = chrono::NaiveDate::parse_from_str(v.get(..10).unwrap_or(v), "%Y-%m-%d")
                .map_err(|_| {
                    ApiError::invalid(
                        "INVALID_DATE",
                        fields.birth_date,
                        format!("birth date must be YYYY-MM-DD, got {v:?}"),
                    )
                })?;
            if d > chrono::Utc::now().date_naive() || d.year_ce().1 < 1900 {
                return Err(ApiError::invalid(
                    "INVALID_DATE",
                    fields.birth_date,
                    format!("birth date {d} is not plausible"),
                ));
            }
            Ok(d)
        })
        .transpose()?;
    let p = Patient {
        policy,
        birth_date,
        snils,
    };
    p.check().map_err(|e| {
        booking_error(BookingError::from(e), &|f| match f {
            "patient.birthDate" => fields.birth_date.to_string(),
            _ => fields.policy.to_string(),
        })
    })?;
    Ok(p)
}

/// A booking error as an API error; `field_of` turns the service's field name (`slot`,
/// `channel`, `patient`, `patient.birthDate`, `appointment`, ...) into the protocol's path.
pub fn booking_error(e: BookingError, field_of: &dyn Fn(&str) -> String) -> ApiError {
    let code = e.code();
    let field = e.field().map(|f| field_of(&f));
    let (status, issue) = match &e {
        BookingError::UnknownSlot(_)
        | BookingError::UnknownAppointment(_)
        | BookingError::UnknownRestriction(_)
        | BookingError::Directory(_) => (StatusCode::NOT_FOUND, IssueType::NotFound),
        BookingError::SlotTaken(_)
        | BookingError::WrongState { .. }
        | BookingError::KeyInProgress(_)
        | BookingError::HoldExpired(_) => (StatusCode::CONFLICT, IssueType::Conflict),
        BookingError::KeyMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, IssueType::Duplicate),
        BookingError::SlotWithdrawn(_)
        | BookingError::SlotInPast(_)
        | BookingError::ChannelNotAllowed { .. }
        | BookingError::ChannelRestricted { .. }
        | BookingError::MisRefused { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, IssueType::BusinessRule)
        }
        BookingError::NotYourOrganization(_) => (StatusCode::FORBIDDEN, IssueType::Forbidden),
        BookingError::Patient(_)
        | BookingError::Invalid {
            code: "REQUIRED_FIELD_MISSING",
            ..
        } => (StatusCode::BAD_REQUEST, IssueType::Required),
        BookingError::Invalid { .. }
        | BookingError::SlotElsewhere { .. }
        | BookingError::NotRestrictable { .. }
        | BookingError::SearchTooBroad => (StatusCode::BAD_REQUEST, IssueType::Value),
        BookingError::MisUnavailable(_) => (StatusCode::GATEWAY_TIMEOUT, IssueType::Timeout),
        BookingError::NoMis(_) => (StatusCode::SERVICE_UNAVAILABLE, IssueType::Transient),
        BookingError::SlotReleasePending(_) => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                code,
                e.to_string(),
            );
            api.field = field;
            return api.retry_after(2);
        }
        BookingError::Store(inner) => return ApiError::storage(inner),
    };
    let mut api = ApiError::new(status, issue, code, e.to_string());
    api.field = field;
    api
}

/// A digest of a create request, to recognize replays of an idempotency key.
pub fn request_digest(parts: &[&str]) -> String {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    hex::encode(h.finish())
}
