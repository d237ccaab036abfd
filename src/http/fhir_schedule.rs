//! FHIR R4 read side of schedules: `Slot` search (organization, practitioner, specialty,
//! start range, status, `_count` with keyset `next` links), `Practitioner`,
//! `PractitionerRole` and `Schedule`.

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;

use super::access::{Access, Org, Route};
use super::fhir::{base_url, fhir_json, request_link, self_link};
use super::query::{check_params, count, first, moment, organization, pairs};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::SCHEDULE_READ;
use crate::codec::fhir::directory::{
    practitioner, practitioner_role, schedule, slot_searchset, slot_status_of,
};
use crate::codec::fhir::{gateway_id, searchset, FHIR_JSON};
use crate::model::schedule::Practitioner;
use crate::model::time::Moment;
use crate::route;
use crate::services::schedules::SlotQuery;

/// The schedule reads, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/fhir" "/Slot" => search_slots, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/Practitioner" => search_practitioners, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/PractitionerRole" => search_roles, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/Schedule" => search_schedules, Access::Scope(SCHEDULE_READ, Org::Public)),
];

fn cursor_encode(start: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start}|{id}"))
}

fn cursor_decode(raw: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::invalid(
            "INVALID_PARAMETER",
            "_cursor",
            "`_cursor` must be a value from a `next` link",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    // What it decodes to is the client's: no NUL reaches the store.
    if text.contains('\0') {
        return Err(bad());
    }
    let (start, id) = text.split_once('|').ok_or_else(bad)?;
    Ok((start.parse().map_err(|_| bad())?, id.to_string()))
}

/// A `start` search value: a date or instant with an optional `ge`/`gt`/`le`/`lt`/`eq`
/// prefix, narrowing `q`'s start range.
fn start_range(raw: &str, q: &mut SlotQuery) -> ApiResult<()> {
    let (prefix, value) = match raw.get(..2) {
        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &raw[2..]),
        _ => ("eq", raw),
    };
    let m = moment("start", value).map_err(|_| {
        ApiError::invalid(
            "INVALID_PARAMETER",
            "start",
            format!("`start` must be a date (2026-11-23) or dateTime with an optional ge/gt/le/lt prefix, got {raw:?}"),
        )
    })?;
    let ms = m.ms();
    match prefix {
        "ge" => q.start_from = Some(q.start_from.map_or(ms, |x| x.max(ms))),
        "gt" => q.start_from = Some(ms + 1),
        "lt" => q.start_to = Some(ms),
        "le" => q.start_to = Some(ms + 1),
        _ => {
            q.start_from = Some(q.start_from.map_or(ms, |x| x.max(ms)));
            // `eq` a day means the whole day.
            if let Moment::Day(_) = m {
                q.start_to = Some(m.end_ms());
            }
        }
    }
    Ok(())
}

async fn search_slots(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(
        &params,
        &[
            "organization",
            "practitioner",
            "specialty",
            "start",
            "status",
            "schedule",
            "_cursor",
        ],
    )?;
    let mut q = SlotQuery::default();
    let mut limit = 50u32;
    for (k, v) in &params {
        match k.as_str() {
            "organization" => q.org = Some(organization(k, v)?),
            "practitioner" | "schedule" => {
                let raw = v
                    .trim_start_matches("Practitioner/")
                    .trim_start_matches("Schedule/");
                q.practitioner_id = Some(gateway_id(raw));
            }
            "specialty" => q.specialty_code = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "status" => {
                q.status = Some(slot_status_of(v).ok_or_else(|| {
                    ApiError::invalid(
                        "INVALID_PARAMETER",
                        "status",
                        format!("`status` must be free, busy or busy-unavailable, got {v:?}"),
                    )
                })?)
            }
            "start" => start_range(v, &mut q)?,
            "_cursor" => q.after = Some(cursor_decode(v)?),
            "_count" => limit = count(k, v, 1000)?,
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (q.start_from, q.start_to) {
        if a >= b {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                "start",
                "the `start` range is empty (lower bound not before upper bound)",
            ));
        }
    }
    let rows = state.schedules.slots(&q, limit + 1).await?;
    let base = base_url(&state, &req);
    let more = rows.len() as u32 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let self_url = request_link(&base, "Slot", &req);
    let next = more.then(|| {
        let last = &page[page.len() - 1];
        let mut p: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "_cursor")
            .cloned()
            .collect();
        p.push(("_cursor".into(), cursor_encode(last.start_at, &last.id)));
        self_link(&base, "Slot", &p)
    });
    let body =
        slot_searchset(&base, &self_url, next.as_deref(), page).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(FHIR_JSON).body(body))
}

/// Practitioners of the search's `organization` (or all) narrowed by `keep`, as entries
/// of `resource_type` built by `build`.
async fn practitioner_search(
    state: &AppState,
    req: &HttpRequest,
    known: &[&str],
    resource_type: &str,
    keep: impl Fn(&Practitioner, &[(String, String)]) -> bool,
    build: fn(&Practitioner) -> serde_json::Value,
) -> ApiResult<HttpResponse> {
    let params = pairs(req);
    check_params(&params, known)?;
    let org = first(&params, "organization")
        .map(|v| organization("organization", v))
        .transpose()?;
    let mut rows = state.schedules.practitioners(org.as_ref(), 1000).await?;
    rows.retain(|p| keep(p, &params));
    let base = base_url(state, req);
    let entries = rows
        .iter()
        .map(|p| {
            (
                format!(
                    "{base}/{resource_type}/{}",
                    crate::codec::fhir::fhir_id(&p.id)
                ),
                build(p),
            )
        })
        .collect();
    let body = searchset(&request_link(&base, resource_type, req), None, entries);
    Ok(fhir_json(StatusCode::OK, &body))
}

/// The practitioner id a reference names, `Practitioner/<id>` or bare.
fn practitioner_id(v: &str) -> String {
    gateway_id(v.trim_start_matches("Practitioner/"))
}

async fn search_practitioners(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    practitioner_search(
        &state,
        &req,
        &["organization"],
        "Practitioner",
        |_, _| true,
        practitioner,
    )
    .await
}

/// `PractitionerRole`: a practitioner's specialty at an organization.
async fn search_roles(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    practitioner_search(
        &state,
        &req,
        &["organization", "specialty", "practitioner"],
        "PractitionerRole",
        |p, params| {
            params.iter().all(|(k, v)| match k.as_str() {
                "specialty" => p.specialty_code == v.rsplit('|').next().unwrap_or(v),
                "practitioner" => p.id == practitioner_id(v),
                _ => true,
            })
        },
        practitioner_role,
    )
    .await
}

/// `Schedule`: one per practitioner (the practitioner's bookable time).
async fn search_schedules(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    practitioner_search(
        &state,
        &req,
        &["organization", "actor"],
        "Schedule",
        |p, params| {
            params.iter().all(|(k, v)| match k.as_str() {
                // An actor is the practitioner or the place of care (the organization).
                "actor" if v.starts_with("Location/") => {
                    p.org.as_str() == v.trim_start_matches("Location/")
                }
                "actor" => p.id == practitioner_id(v),
                _ => true,
            })
        },
        schedule,
    )
    .await
}
