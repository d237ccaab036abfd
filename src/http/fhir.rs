//! FHIR R4 routes under `/fhir`: the CapabilityStatement, `Organization` and `Location`,
//! and what every FHIR handler shares (base URL, JSON answers, links).

use actix_web::http::StatusCode;
use actix_web::web::{Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use super::access::{Access, Org, Route};
use super::query::{check_params, count_param, first, organization, pairs};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{AUDIT_READ, SCHEDULE_READ};
use crate::codec::fhir::audit::audit_event;
use crate::codec::fhir::capability::capability_statement;
use crate::codec::fhir::directory::{location, organization as organization_resource};
use crate::codec::fhir::{searchset, FHIR_JSON};
use crate::codec::fhir::{POLICY_SYSTEM, SNILS_SYSTEM};
use crate::model::organization::Organization;
use crate::route;
use crate::services::operations::AuditQuery;

/// The directory's FHIR routes and the CapabilityStatement, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/fhir" "/metadata" => metadata, Access::Open),
    route!(GET "/fhir" "/Organization" => search_organizations, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/Organization/{id}" => read_organization, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/Location" => search_locations, Access::Scope(SCHEDULE_READ, Org::Public)),
    route!(GET "/fhir" "/Location/{id}" => read_location, Access::Scope(SCHEDULE_READ, Org::Public)),
];

/// A FHIR JSON answer.
pub fn fhir_json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .body(serde_json::to_vec(body).unwrap_or_default())
}

/// Base URL for links the gateway emits.
pub fn base_url(state: &AppState, req: &HttpRequest) -> String {
    match &state.settings.http.public_url {
        Some(u) => format!("{}/fhir", u.trim_end_matches('/')),
        None => {
            let info = req.connection_info();
            format!("{}://{}/fhir", info.scheme(), info.host())
        }
    }
}

/// The `self` link of a search as the client sent it: `base/path` with its query string.
pub fn request_link(base: &str, path: &str, req: &HttpRequest) -> String {
    match req.query_string() {
        "" => format!("{base}/{path}"),
        q => format!("{base}/{path}?{q}"),
    }
}

/// A link to `base/path` with the given parameters (paging links, and the `self` link of
/// an operation whose criteria came in a body).
pub fn self_link(base: &str, path: &str, params: &[(String, String)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        format!("{base}/{path}")
    } else {
        format!("{base}/{path}?{q}")
    }
}

/// Any other request under `/fhir`: an OperationOutcome naming what is not supported.
pub async fn unknown(req: HttpRequest) -> ApiResult<HttpResponse> {
    let kind = req
        .path()
        .trim_start_matches("/fhir/")
        .split('/')
        .next()
        .unwrap_or("");
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        crate::codec::fhir::IssueType::NotSupported,
        "UNSUPPORTED_RESOURCE",
        format!(
            "{} /fhir/{kind} is not supported by this server; see /fhir/metadata",
            req.method()
        ),
    ))
}

async fn metadata(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let base = base_url(&state, &req);
    let body = capability_statement(&base, &state.settings.instance);
    fhir_json(StatusCode::OK, &body)
}

/// A page of organizations (`name`, `_count`, `_offset`) as `resource_type` entries built
/// by `build`, with offset `next` links.
async fn search_directory(
    state: &AppState,
    req: &HttpRequest,
    resource_type: &str,
    build: fn(&Organization) -> Value,
) -> ApiResult<HttpResponse> {
    let params = pairs(req);
    let known: &[&str] = if resource_type == "Location" {
        &["name", "organization"]
    } else {
        &["name"]
    };
    check_params(&params, known)?;
    let count = count_param(&params, "_count", 50, 1000)?;
    let offset = match first(&params, "_offset") {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            ApiError::invalid(
                "INVALID_PARAMETER",
                "_offset",
                "`_offset` must be a non-negative integer",
            )
        })?,
    };
    let name = first(&params, "name");
    let base = base_url(state, req);
    let link = |off: u32| {
        let mut q: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "_count" && k != "_offset")
            .cloned()
            .collect();
        q.push(("_count".into(), count.to_string()));
        q.push(("_offset".into(), off.to_string()));
        self_link(&base, resource_type, &q)
    };
    let orgs = match first(&params, "organization") {
        // One organization runs one place of care.
        Some(v) => {
            let oid = organization("organization", v)?;
            state
                .schedules
                .known_organization(&oid)
                .await
                .map(|o| vec![o])
                .or_else(|e| match e {
                    crate::services::schedules::ScheduleError::UnknownOrganization(_) => {
                        Ok(Vec::new())
                    }
                    other => Err(other),
                })?
        }
        None => {
            state
                .schedules
                .organizations(None, name, offset, count + 1)
                .await?
        }
    };
    let has_more = orgs.len() as u32 > count;
    let page = &orgs[..orgs.len().min(count as usize)];
    let body = searchset(
        &link(offset),
        has_more.then(|| link(offset + count)),
        page.iter()
            .map(|o| (format!("{base}/{resource_type}/{}", o.oid), build(o)))
            .collect(),
    );
    Ok(fhir_json(StatusCode::OK, &body))
}

async fn search_organizations(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    search_directory(&state, &req, "Organization", organization_resource).await
}

async fn search_locations(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    search_directory(&state, &req, "Location", location).await
}

/// The organization behind a directory read, or the resource's not-found.
async fn directory_entry(
    state: &AppState,
    id: &str,
    resource_type: &str,
) -> ApiResult<Organization> {
    let field = format!("{resource_type}.id");
    let oid = crate::model::Oid::parse_organization(id).map_err(|e| {
        let code = if resource_type == "Location" {
            "INVALID_LOCATION_ID"
        } else {
            "INVALID_ORGANIZATION_ID"
        };
        ApiError::invalid(code, field.clone(), e.to_string())
    })?;
    match state.schedules.known_organization(&oid).await {
        Ok(o) => Ok(o),
        Err(crate::services::schedules::ScheduleError::UnknownOrganization(_)) => {
            let code = if resource_type == "Location" {
                "LOCATION_NOT_FOUND"
            } else {
                "ORGANIZATION_NOT_FOUND"
            };
            Err(ApiError::not_found(code, format!("no {resource_type} with OID {oid}")).at(field))
        }
        Err(e) => Err(e.into()),
    }
}

async fn read_organization(
    state: Data<AppState>,
    _principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let org = directory_entry(&state, &id, "Organization").await?;
    Ok(fhir_json(StatusCode::OK, &organization_resource(&org)))
}

async fn read_location(
    state: Data<AppState>,
    _principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let org = directory_entry(&state, &id, "Location").await?;
    Ok(fhir_json(StatusCode::OK, &location(&org)))
}

/// The audit trail, for operators and auditors.
pub const AUDIT_ROUTES: &[Route] =
    &[route!(GET "/fhir" "/AuditEvent" => search_audit, Access::Scope(AUDIT_READ, Org::Records))];

/// `AuditEvent` search: `patient:identifier` (SNILS or OMS policy, `system|value`),
/// `agent` (client id), `date` (`ge`/`lt` prefixes), `_count`.
async fn search_audit(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["patient:identifier", "agent", "date", "request"])?;
    let mut q = AuditQuery::default();
    for (k, v) in &params {
        match k.as_str() {
            "patient:identifier" => {
                let (system, value) = v.split_once('|').ok_or_else(|| {
                    ApiError::invalid("INVALID_PARAMETER", k.clone(), "expected system|value")
                })?;
                match system {
                    SNILS_SYSTEM => {
                        q.snils = Some(crate::model::Snils::parse(value).map_err(|e| {
                            ApiError::invalid("INVALID_SNILS", k.clone(), e.to_string())
                        })?)
                    }
                    POLICY_SYSTEM => {
                        q.policy = Some(crate::model::PolicyNumber::parse(value).map_err(|e| {
                            ApiError::invalid("INVALID_POLICY", k.clone(), e.to_string())
                        })?)
                    }
                    other => {
                        return Err(ApiError::invalid(
                            "INVALID_PARAMETER",
                            k.clone(),
                            format!("identifier system {other:?} is not supported; use {SNILS_SYSTEM} or {POLICY_SYSTEM}"),
                        ))
                    }
                }
            }
            "agent" => q.client_id = Some(v.clone()),
            "request" => q.request_id = Some(v.clone()),
            "date" => {
                let (prefix, value) = match v.get(..2) {
                    Some(p @ ("ge" | "lt")) => (p, &v[2..]),
                    _ => ("ge", v.as_str()),
                };
                let ms = super::query::moment("date", value)?.ms();
                if prefix == "lt" {
                    q.to = Some(ms);
                } else {
                    q.from = Some(ms);
                }
            }
            _ => {}
        }
    }
    let limit = count_param(&params, "_count", 100, 1000)?;
    let rows = state
        .operations
        .audit_events(crate::services::Caller::of(&principal), &q, limit)
        .await?;
    let base = base_url(&state, &req);
    let body = searchset(
        &request_link(&base, "AuditEvent", &req),
        None,
        rows.iter()
            .map(|e| (format!("{base}/AuditEvent/{}", e.id), audit_event(e)))
            .collect(),
    );
    Ok(fhir_json(StatusCode::OK, &body))
}
