//! FHIR R4 routes under `/fhir`.

use actix_web::web::{self, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState, Principal};
use crate::codec::fhir::FHIR_JSON;
use crate::model::Oid;
use crate::store::organizations::Organization;

/// Registers the FHIR routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metadata", web::get().to(metadata))
        .route("/Organization", web::get().to(search_organizations))
        .route("/Organization/{id}", web::get().to(read_organization))
        .configure(super::documents::fhir_routes)
        .configure(super::fhir_schedule::routes)
        .configure(super::fhir_booking::routes)
        .default_service(web::to(unknown));
}

fn fhir_json(status: actix_web::http::StatusCode, body: &Value) -> HttpResponse {
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

async fn unknown(req: HttpRequest) -> ApiResult<HttpResponse> {
    let kind = req
        .path()
        .trim_start_matches("/fhir/")
        .split('/')
        .next()
        .unwrap_or("");
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
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
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "medgate",
        "kind": "instance",
        "software": {"name": "medgate", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": format!("medgate gateway {}", state.settings.instance), "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}]}],
                "description": "Bearer token issued by the regional operator"
            },
            "resource": [{
                "type": "Organization",
                "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [
                    {"name": "name", "type": "string"},
                    {"name": "_count", "type": "number"}
                ]
            }, {
                "type": "Practitioner",
                "interaction": [{"code": "search-type"}],
                "searchParam": [{"name": "organization", "type": "reference"}]
            }, {
                "type": "Slot",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "practitioner", "type": "reference"},
                    {"name": "schedule", "type": "reference"},
                    {"name": "specialty", "type": "token"},
                    {"name": "start", "type": "date"},
                    {"name": "status", "type": "token"},
                    {"name": "_count", "type": "number"}
                ]
            }, {
                "type": "Schedule",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "actor", "type": "reference"}
                ]
            }, {
                "type": "PractitionerRole",
                "interaction": [{"code": "search-type"}],
                "searchParam": [
                    {"name": "organization", "type": "reference"},
                    {"name": "specialty", "type": "token"},
                    {"name": "practitioner", "type": "reference"}
                ]
            }, {
                "type": "Appointment",
                "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "create"}, {"code": "update"}],
                "searchParam": [
                    {"name": "patient", "type": "reference", "documentation": "with the :identifier modifier (SNILS or OMS policy)"},
                    {"name": "status", "type": "token"},
                    {"name": "slot", "type": "reference"},
                    {"name": "identifier", "type": "token"}
                ],
                "operation": [
                    {"name": "find", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-find"},
                    {"name": "hold", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-hold"},
                    {"name": "book", "definition": "http://ihe.net/fhir/ihe.scheduling/OperationDefinition/appointment-book"},
                    {"name": "reschedule", "definition": "https://medgate.example/fhir/OperationDefinition/appointment-reschedule"}
                ]
            }, {
                "type": "DocumentReference",
                "interaction": [{"code": "create"}, {"code": "read"}]
            }]
        }]
    });
    fhir_json(actix_web::http::StatusCode::OK, &body)
}

/// The FHIR `Organization` of a stored organization.
pub fn organization_resource(o: &Organization) -> Value {
    json!({
        "resourceType": "Organization",
        "id": o.oid,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{}", o.oid)}],
        "active": o.active,
        "name": o.name,
        "alias": [o.short_name],
        "address": [{"text": o.address, "district": o.district}],
    })
}

/// Parses `_count` (1..=1000, default 50) and `_offset` (default 0).
pub fn paging(params: &[(String, String)]) -> ApiResult<(u32, u32)> {
    let mut count = 50;
    let mut offset = 0;
    for (k, v) in params {
        match k.as_str() {
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
            "_offset" => {
                offset = v.parse().map_err(|_| {
                    ApiError::invalid(
                        "INVALID_PARAMETER",
                        "_offset",
                        "`_offset` must be a non-negative integer",
                    )
                })?
            }
            _ => {}
        }
    }
    Ok((count, offset))
}

/// Refuses parameters a search does not know, naming them.
pub fn check_params(params: &[(String, String)], known: &[&str]) -> ApiResult<()> {
    const GENERAL: [&str; 5] = ["_count", "_offset", "_format", "_pretty", "_summary"];
    for (k, _) in params {
        if !known.contains(&k.as_str()) && !GENERAL.contains(&k.as_str()) {
            return Err(ApiError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                crate::codec::fhir::IssueType::NotSupported,
                "UNKNOWN_SEARCH_PARAMETER",
                format!(
                    "search parameter `{k}` is not supported; supported: {}",
                    known.join(", ")
                ),
            )
            .at(k.clone()));
        }
    }
    Ok(())
}

/// A searchset `Bundle` with `self` and `next` links.
pub fn searchset(self_url: &str, next_url: Option<String>, entries: Vec<(String, Value)>) -> Value {
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(n) = next_url {
        links.push(json!({"relation": "next", "url": n}));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries.into_iter().map(|(full_url, r)| json!({
            "fullUrl": full_url, "resource": r, "search": {"mode": "match"}
        })).collect::<Vec<_>>(),
    })
}

fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn search_organizations(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = query_pairs(&req);
    check_params(&params, &["name"])?;
    let (count, offset) = paging(&params)?;
    let name = params
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str());
    let orgs = state
        .store
        .list_organizations(None, name, offset, count + 1)
        .await?;
    let base = base_url(&state, &req);
    let has_more = orgs.len() as u32 > count;
    let page = &orgs[..orgs.len().min(count as usize)];
    let link = |off: u32| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(n) = name {
            q.append_pair("name", n);
        }
        q.append_pair("_count", &count.to_string());
        q.append_pair("_offset", &off.to_string());
        format!("{base}/Organization?{}", q.finish())
    };
    let body = searchset(
        &link(offset),
        has_more.then(|| link(offset + count)),
        page.iter()
            .map(|o| {
                (
                    format!("{base}/Organization/{}", o.oid),
                    organization_resource(o),
                )
            })
            .collect(),
    );
    Ok(fhir_json(actix_web::http::StatusCode::OK, &body))
}

async fn read_organization(
    state: Data<AppState>,
    _principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let oid = Oid::parse_organization(&id).map_err(|e| {
        ApiError::invalid("INVALID_ORGANIZATION_ID", "Organization.id", e.to_string())
    })?;
    let org = state
        .store
        .get_organization(oid.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "ORGANIZATION_NOT_FOUND",
                format!("no organization with OID {oid}"),
            )
            .at("Organization.id")
        })?;
    Ok(fhir_json(
        actix_web::http::StatusCode::OK,
        &organization_resource(&org),
    ))
}
