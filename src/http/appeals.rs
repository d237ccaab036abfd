//! Citizens' appeals at the edge: FHIR `Communication` intake, read and search, the
//! `$answer`, `$reroute` and `$extend` operations, the SOAP service of the portal's
//! complaint system (`SubmitComplaint`, `AnswerComplaint`), and the statistics per district
//! or organization as JSON or CSV.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use super::access::{Access, Org, Route};
use super::fhir::{base_url, fhir_json, request_link};
use super::query::{check_params, count_param, moment, organization, pairs};
use super::soap::{accept, answer, unknown_operation, Service};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{APPEALS_ANSWER, APPEALS_READ, APPEALS_SUBMIT};
use crate::codec::fhir::appeal::{
    communication, CHANNEL_ID_SYSTEM, CHANNEL_SYSTEM, DISTRICT_EXTENSION, KIND_SYSTEM, TOPIC_SYSTEM,
};
use crate::codec::fhir::{searchset, POLICY_SYSTEM, SNILS_SYSTEM};
use crate::codec::xml::dom::{escape_text as esc, Element};
use crate::model::appeal::{AppealChannel, AppealKind, AppealStatus, AppealTopic};
use crate::model::{PolicyNumber, Snils};
use crate::route;
use crate::services::appeals::AppealQuery;
use crate::services::appeals::{stats_csv, AppealError, GroupBy, NewAppeal};
use crate::services::Caller;

/// Namespace of the appeals SOAP service.
pub const APPEALS_NS: &str = "urn:medgate:appeals:v1";
/// Prefix of its SOAPActions.
pub const APPEALS_ACTION: &str = "urn:medgate:appeals:v1/";

/// The SOAP operations with their scopes.
pub const OPERATIONS: &[(&str, &str, Org)] = &[
    ("SubmitComplaint", APPEALS_SUBMIT, Org::Public),
    ("AnswerComplaint", APPEALS_ANSWER, Org::Records),
];

const SERVICE: Service = Service {
    operations: OPERATIONS,
    namespace: APPEALS_NS,
    action_prefix: APPEALS_ACTION,
    log_name: "appeals",
};

/// The appeal routes, with who may call them.
pub const ROUTES: &[Route] = &[
    route!(POST "/fhir" "/Communication" => submit, Access::Scope(APPEALS_SUBMIT, Org::Public)),
    route!(GET "/fhir" "/Communication" => search, Access::Scope(APPEALS_READ, Org::Records)),
    route!(GET "/fhir" "/Communication/{id}" => read, Access::Scope(APPEALS_READ, Org::Records)),
    route!(POST "/fhir" "/Communication/{id}/$answer" => answer_fhir, Access::Scope(APPEALS_ANSWER, Org::Records)),
    route!(POST "/fhir" "/Communication/{id}/$reroute" => reroute, Access::Scope(APPEALS_ANSWER, Org::Records)),
    route!(POST "/fhir" "/Communication/{id}/$extend" => extend, Access::Scope(APPEALS_ANSWER, Org::Records)),
    route!(POST "/soap" "/appeals" => soap, Access::Soap(OPERATIONS)),
    route!(GET "/soap" "/appeals" => wsdl, Access::Open),
    route!(GET "/api/admin" "/appeals/stats" => stats, Access::Scope(APPEALS_READ, Org::Records)),
];

/// A service error as an API error; `field_of` names the service's field in the protocol.
fn appeal_error(e: AppealError, field_of: &dyn Fn(&str) -> String) -> ApiError {
    match e {
        AppealError::NotFound => ApiError::not_found("APPEAL_NOT_FOUND", "no such appeal"),
        AppealError::Invalid { field, message } => {
            ApiError::invalid("INVALID_APPEAL", field_of(field), message)
        }
        AppealError::NotYourOrganization(org) => {
            ApiError::forbidden(format!("the client does not act for organization {org}"))
        }
        AppealError::Conflict(status, why) => {
            ApiError::conflict("APPEAL_STATE", format!("the appeal is {status}: {why}"))
        }
        AppealError::Store(e) => ApiError::storage(&e),
    }
}

/// A service error as an API error, its field by the service's name (forms of the dashboard).
pub(super) fn to_api(e: AppealError) -> ApiError {
    appeal_error(e, &|f| f.to_string())
}

fn fhir_field(f: &str) -> String {
    match f {
        "identifier" => "Communication.identifier".into(),
        "district" => format!("Communication.extension[{DISTRICT_EXTENSION}]"),
        "text" => "Communication.payload[0].contentString".into(),
        "contact" => "Communication.contained[Patient].telecom[0].value".into(),
        "sent" => "Communication.sent".into(),
        "answer" => "Communication.payload[0].contentString".into(),
        other => format!("Parameters.parameter[{other}]"),
    }
}

fn json_body(body: &[u8], what: &str) -> ApiResult<Value> {
    ApiError::check_json(body, what)?;
    serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed("INVALID_JSON", format!("the body is not JSON: {e}")).at(what)
    })
}

/// The code of `system` among a list of CodeableConcepts.
fn coded<'a>(concepts: &'a Value, system: &str) -> Option<&'a str> {
    concepts.as_array()?.iter().find_map(|c| {
        c["coding"].as_array()?.iter().find_map(|x| {
            (x["system"].as_str() == Some(system))
                .then(|| x["code"].as_str())
                .flatten()
        })
    })
}

/// A FHIR `Communication` as a new appeal; the error names the element.
fn new_appeal(v: &Value) -> ApiResult<NewAppeal> {
    if v["resourceType"].as_str() != Some("Communication") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected a Communication",
        ));
    }
    let channel_code = coded(&v["medium"], CHANNEL_SYSTEM)
        .ok_or_else(|| ApiError::required(format!("Communication.medium[{CHANNEL_SYSTEM}]")))?;
    let channel = AppealChannel::parse(channel_code).ok_or_else(|| {
        ApiError::invalid(
            "INVALID_CODE",
            "Communication.medium",
            format!("unknown channel {channel_code:?} (portal-complaint, district-chat, phone, in-person)"),
        )
    })?;
    let topic_code = coded(&v["category"], TOPIC_SYSTEM)
        .ok_or_else(|| ApiError::required(format!("Communication.category[{TOPIC_SYSTEM}]")))?;
    let topic = AppealTopic::parse(topic_code).ok_or_else(|| {
        ApiError::invalid(
            "INVALID_CODE",
            "Communication.category",
            format!("unknown topic {topic_code:?}"),
        )
    })?;
    let kind = coded(&v["category"], KIND_SYSTEM)
        .map(|k| {
            AppealKind::parse(k).ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_CODE",
                    "Communication.category",
                    format!("unknown kind {k:?} (refusal, complaint, general, chat)"),
                )
            })
        })
        .transpose()?;
    let external_id = v["identifier"]
        .as_array()
        .and_then(|ids| {
            ids.iter().find(|i| {
                i["system"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(CHANNEL_ID_SYSTEM))
            })
        })
        .and_then(|i| i["value"].as_str())
        .ok_or_else(|| {
            ApiError::required(format!("Communication.identifier[{CHANNEL_ID_SYSTEM}]"))
        })?;
    let district = v["extension"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|x| x["url"].as_str() == Some(DISTRICT_EXTENSION))
        })
        .and_then(|x| x["valueString"].as_str())
        .ok_or_else(|| {
            ApiError::required(format!("Communication.extension[{DISTRICT_EXTENSION}]"))
        })?;
    let org = match v["recipient"].as_array().and_then(|r| r.first()) {
        None => None,
        Some(r) => {
            let raw = r["identifier"]["value"]
                .as_str()
                .or_else(|| r["reference"].as_str())
                .ok_or_else(|| ApiError::required("Communication.recipient[0].identifier"))?;
            Some(organization(
                "Communication.recipient[0]",
                raw.trim_start_matches("urn:oid:"),
            )?)
        }
    };
    let text = v["payload"]
        .as_array()
        .and_then(|p| p.first())
        .and_then(|p| p["contentString"].as_str())
        .ok_or_else(|| ApiError::required("Communication.payload[0].contentString"))?;
    let citizen = v["contained"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["resourceType"] == "Patient"))
        .ok_or_else(|| ApiError::required("Communication.contained[Patient]"))?;
    let contact = citizen["telecom"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["value"].as_str())
        .ok_or_else(|| ApiError::required("Communication.contained[Patient].telecom[0].value"))?;
    let id_of = |system: &str| {
        citizen["identifier"].as_array().and_then(|ids| {
            ids.iter()
                .find(|i| i["system"].as_str() == Some(system))
                .and_then(|i| i["value"].as_str())
        })
    };
    let snils = id_of(SNILS_SYSTEM)
        .map(|s| {
            Snils::parse(s).map_err(|e| {
                ApiError::invalid(
                    "INVALID_SNILS",
                    "Communication.contained[Patient].identifier[snils]",
                    e.to_string(),
                )
            })
        })
        .transpose()?;
    let policy = id_of(POLICY_SYSTEM)
        .map(|s| {
            PolicyNumber::parse(s).map_err(|e| {
                ApiError::invalid(
                    "INVALID_POLICY",
                    "Communication.contained[Patient].identifier[policy]",
                    e.to_string(),
                )
            })
        })
        .transpose()?;
    let received_at = v["sent"]
        .as_str()
        .map(|s| moment("Communication.sent", s).map(|m| m.ms()))
        .transpose()?;
    Ok(NewAppeal {
        channel,
        external_id: external_id.to_string(),
        kind,
        district: district.to_string(),
        org,
        topic,
        text: text.to_string(),
        contact: contact.to_string(),
        snils,
        policy,
        received_at,
    })
}

async fn submit(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let new = new_appeal(&json_body(&body, "Communication")?)?;
    let (a, created) = state
        .appeals
        .submit(Caller::of(&principal), new)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    let base = base_url(&state, &req);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut res = fhir_json(status, &communication(&a, &[], now()));
    if let Ok(v) = format!("{base}/Communication/{}", a.id).parse() {
        res.headers_mut()
            .insert(actix_web::http::header::LOCATION, v);
    }
    Ok(res)
}

fn now() -> i64 {
    crate::model::time::now_ms()
}

async fn read(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let (a, events) = state
        .appeals
        .get(Caller::of(&principal), &id)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    Ok(fhir_json(
        StatusCode::OK,
        &communication(&a, &events, now()),
    ))
}

const SEARCH_PARAMS: &[&str] = &["status", "district", "overdue", "sent", "recipient"];

async fn search(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, SEARCH_PARAMS)?;
    let mut q = AppealQuery::default();
    for (k, v) in &params {
        match k.as_str() {
            "status" => {
                q.status = Some(match v.as_str() {
                    "in-progress" => AppealStatus::Open,
                    "completed" => AppealStatus::Answered,
                    other => AppealStatus::parse(other).ok_or_else(|| {
                        ApiError::invalid(
                            "INVALID_PARAMETER",
                            "status",
                            "`status` is in-progress, completed, unrouted, open or answered",
                        )
                    })?,
                })
            }
            "district" => q.district = Some(v.clone()),
            "overdue" => match v.as_str() {
                "true" => q.overdue_at = Some(now()),
                "false" => {}
                _ => {
                    return Err(ApiError::invalid(
                        "INVALID_PARAMETER",
                        "overdue",
                        "`overdue` is true or false",
                    ))
                }
            },
            "sent" => {
                let (prefix, raw) = match v.get(..2) {
                    Some(p @ ("ge" | "lt")) => (p, &v[2..]),
                    _ => ("eq", v.as_str()),
                };
                let m = moment("sent", raw)?;
                match prefix {
                    "ge" => q.from = Some(m.ms()),
                    "lt" => q.to = Some(m.ms()),
                    _ => {
                        q.from = Some(m.ms());
                        q.to = Some(m.end_ms());
                    }
                }
            }
            "recipient" => q.orgs = Some(vec![organization("recipient", v)?]),
            _ => {}
        }
    }
    let limit = count_param(&params, "_count", 50, 1000)?;
    let found = state
        .appeals
        .search(Caller::of(&principal), q, limit)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    let base = base_url(&state, &req);
    let now = now();
    let entries = found
        .iter()
        .map(|a| {
            (
                format!("{base}/Communication/{}", a.id),
                communication(a, &[], now),
            )
        })
        .collect();
    let body = searchset(&request_link(&base, "Communication", &req), None, entries);
    Ok(fhir_json(StatusCode::OK, &body))
}

/// A named string parameter of a `Parameters` body.
fn parameter<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["parameter"].as_array()?.iter().find_map(|p| {
        (p["name"].as_str() == Some(name))
            .then(|| {
                p["valueString"]
                    .as_str()
                    .or_else(|| p["valueReference"]["reference"].as_str())
            })
            .flatten()
    })
}

async fn answer_fhir(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = json_body(&body, "Communication")?;
    // The answer as a Communication (its payload) or as Parameters (`answer`).
    let text = match v["resourceType"].as_str() {
        Some("Communication") => v["payload"]
            .as_array()
            .and_then(|p| p.first())
            .and_then(|p| p["contentString"].as_str())
            .ok_or_else(|| ApiError::required("Communication.payload[0].contentString"))?,
        Some("Parameters") => parameter(&v, "answer")
            .ok_or_else(|| ApiError::required("Parameters.parameter[answer]"))?,
        _ => {
            return Err(ApiError::invalid(
                "WRONG_RESOURCE_TYPE",
                "resourceType",
                "expected a Communication or Parameters",
            ))
        }
    };
    let a = state
        .appeals
        .answer(Caller::of(&principal), &id, text)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    Ok(fhir_json(StatusCode::OK, &communication(&a, &[], now())))
}

fn parameters(body: &[u8]) -> ApiResult<Value> {
    let v = json_body(body, "Parameters")?;
    if v["resourceType"].as_str() != Some("Parameters") {
        return Err(ApiError::invalid(
            "WRONG_RESOURCE_TYPE",
            "resourceType",
            "expected Parameters",
        ));
    }
    Ok(v)
}

async fn reroute(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = parameters(&body)?;
    let raw = parameter(&v, "organization")
        .ok_or_else(|| ApiError::required("Parameters.parameter[organization]"))?;
    let to = organization(
        "Parameters.parameter[organization]",
        raw.trim_start_matches("urn:oid:"),
    )?;
    let reason = parameter(&v, "reason").unwrap_or_default();
    let a = state
        .appeals
        .reroute(Caller::of(&principal), &id, &to, reason)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    Ok(fhir_json(StatusCode::OK, &communication(&a, &[], now())))
}

async fn extend(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    let v = parameters(&body)?;
    let reason = parameter(&v, "reason").unwrap_or_default();
    let a = state
        .appeals
        .extend(Caller::of(&principal), &id, reason)
        .await
        .map_err(|e| appeal_error(e, &fhir_field))?;
    Ok(fhir_json(StatusCode::OK, &communication(&a, &[], now())))
}

/// `GET /api/admin/appeals/stats?from=&to=&by=district|organization&format=json|csv`.
async fn stats(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["from", "to", "by", "format"])?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let from = get("from")
        .ok_or_else(|| ApiError::required("from"))
        .and_then(|v| moment("from", v))?;
    let to = get("to")
        .ok_or_else(|| ApiError::required("to"))
        .and_then(|v| moment("to", v))?;
    let by = match get("by").unwrap_or("district") {
        "district" => GroupBy::District,
        "organization" => GroupBy::Organization,
        _ => {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                "by",
                "`by` is district or organization",
            ))
        }
    };
    let rows = state
        .appeals
        .statistics(Caller::of(&principal), from.ms(), to.end_ms(), by)
        .await
        .map_err(|e| appeal_error(e, &|f| f.to_string()))?;
    match get("format").unwrap_or("json") {
        "json" => Ok(HttpResponse::Ok().json(serde_json::json!({
            "from": crate::model::time::from_ms(from.ms()).to_rfc3339(),
            "to": crate::model::time::from_ms(to.end_ms()).to_rfc3339(),
            "by": if by == GroupBy::District { "district" } else { "organization" },
            "rows": rows,
        }))),
        "csv" => Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "content-disposition",
                "attachment; filename=\"appeals.csv\"",
            ))
            .body(stats_csv(&rows, by))),
        _ => Err(ApiError::invalid(
            "INVALID_PARAMETER",
            "format",
            "`format` is json or csv",
        )),
    }
}

const WSDL: &str = include_str!("../../schemas/appeals/AppealService.wsdl");

async fn wsdl(state: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let address = match &state.settings.http.public_url {
        Some(u) => format!("{}/soap/appeals", u.trim_end_matches('/')),
        None => {
            let info = req.connection_info();
            format!("{}://{}/soap/appeals", info.scheme(), info.host())
        }
    };
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body(WSDL.replace("APPEALS_ADDRESS", &esc(&address)))
}

async fn soap(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let parsed = match accept(&state, &req, &body, &SERVICE) {
        Ok(p) => p,
        Err(f) => return *f,
    };
    let op = &parsed.operation;
    let result = match op.name.as_str() {
        "SubmitComplaint" => submit_complaint(&state, &principal, op).await,
        "AnswerComplaint" => answer_complaint(&state, &principal, op).await,
        other => Err(unknown_operation(other)),
    };
    answer(parsed.version, result)
}

fn soap_field(f: &str) -> String {
    match f {
        "identifier" => "SubmitComplaint/ComplaintId".into(),
        "district" => "SubmitComplaint/District".into(),
        "text" => "SubmitComplaint/Text".into(),
        "contact" => "SubmitComplaint/Contact".into(),
        "sent" => "SubmitComplaint/Received".into(),
        "answer" => "AnswerComplaint/Text".into(),
        other => other.to_string(),
    }
}

/// `SubmitComplaint`: the portal's pre-trial complaint, as its service sends it.
async fn submit_complaint(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> Result<String, ApiError> {
    let text_of = |name: &str| op.child_text(name).map(str::trim).filter(|t| !t.is_empty());
    let need = |name: &str| {
        text_of(name).ok_or_else(|| ApiError::required(format!("SubmitComplaint/{name}")))
    };
    let complaint_id = need("ComplaintId")?;
    let kind = match text_of("Kind") {
        None => None,
        Some(k) => Some(AppealKind::parse(k).ok_or_else(|| {
            ApiError::invalid(
                "INVALID_CODE",
                "SubmitComplaint/Kind",
                format!("unknown kind {k:?} (refusal, complaint, general)"),
            )
        })?),
    };
    let topic_code = need("Topic")?;
    let topic = AppealTopic::parse(topic_code).ok_or_else(|| {
        ApiError::invalid(
            "INVALID_CODE",
            "SubmitComplaint/Topic",
            format!("unknown topic {topic_code:?}"),
        )
    })?;
    let org = text_of("OrgOid")
        .map(|o| organization("SubmitComplaint/OrgOid", o))
        .transpose()?;
    let snils = text_of("Snils")
        .map(|s| {
            Snils::parse(s).map_err(|e| {
                ApiError::invalid("INVALID_SNILS", "SubmitComplaint/Snils", e.to_string())
            })
        })
        .transpose()?;
    let policy = text_of("Policy")
        .map(|s| {
            PolicyNumber::parse(s).map_err(|e| {
                ApiError::invalid("INVALID_POLICY", "SubmitComplaint/Policy", e.to_string())
            })
        })
        .transpose()?;
    let received_at = text_of("Received")
        .map(|s| moment("SubmitComplaint/Received", s).map(|m| m.ms()))
        .transpose()?;
    let new = NewAppeal {
        channel: AppealChannel::PortalComplaint,
        external_id: complaint_id.to_string(),
        kind,
        district: need("District")?.to_string(),
        org,
        topic,
        text: need("Text")?.to_string(),
        contact: need("Contact")?.to_string(),
        snils,
        policy,
        received_at,
    };
    let (a, created) = state
        .appeals
        .submit(Caller::of(principal), new)
        .await
        .map_err(|e| appeal_error(e, &soap_field))?;
    Ok(format!(
        r#"<SubmitComplaintResponse xmlns="{APPEALS_NS}"><AppealId>{}</AppealId><Created>{created}</Created><Status>{}</Status><Due>{}</Due></SubmitComplaintResponse>"#,
        esc(&a.id),
        a.status,
        crate::model::time::from_ms(a.due_at).to_rfc3339()
    ))
}

/// `AnswerComplaint`: the responsible clinic's answer, through SOAP.
async fn answer_complaint(
    state: &AppState,
    principal: &Principal,
    op: &Element,
) -> Result<String, ApiError> {
    let id = op
        .child_text("AppealId")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::required("AnswerComplaint/AppealId"))?;
    let text = op.child_text("Text").unwrap_or_default();
    let a = state
        .appeals
        .answer(Caller::of(principal), id, text)
        .await
        .map_err(|e| appeal_error(e, &soap_field))?;
    let on_time = a.answer.as_ref().is_some_and(|x| x.at <= a.due_at);
    Ok(format!(
        r#"<AnswerComplaintResponse xmlns="{APPEALS_NS}"><AppealId>{}</AppealId><Status>{}</Status><OnTime>{on_time}</OnTime></AnswerComplaintResponse>"#,
        esc(&a.id),
        a.status
    ))
}
