//! FHIR R4 read side of schedules: `Slot` search (organization, practitioner, specialty,
//! start range, status, `_count` with keyset `next` links) and `Practitioner`.

use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};

use super::fhir::{base_url, check_params, searchset};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::codec::fhir::FHIR_JSON;
use crate::model::schedule::Channels;
use crate::model::Oid;
use crate::store::schedules::{Practitioner, SlotQuery, SlotRow};

/// Extension carrying the booking channels a slot accepts.
pub const CHANNEL_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/booking-channel";
/// Code system of specialties (Ministry reference book 1066).
pub const SPECIALTY_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1066";

/// Registers the routes (under `/fhir`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/Slot", web::get().to(search_slots))
        .route("/Practitioner", web::get().to(search_practitioners));
}

/// FHIR ids allow `[A-Za-z0-9.-]`: the stored `source:id` becomes `source.id`.
pub fn fhir_id(id: &str) -> String {
    id.replacen(':', ".", 1)
}

/// The inverse of [`fhir_id`].
pub fn store_id(fhir: &str) -> String {
    fhir.replacen('.', ":", 1)
}

/// A `Slot` as serialized: typed, so a page of slots is written straight to JSON without
/// building a `serde_json::Value` tree (slot search is the hottest read path).
#[derive(serde::Serialize)]
struct SlotOut<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    id: String,
    extension: Vec<CodeExtension>,
    specialty: [Concept<'a>; 1],
    schedule: Reference,
    status: &'static str,
    start: String,
    end: String,
}

#[derive(serde::Serialize)]
struct CodeExtension {
    url: &'static str,
    #[serde(rename = "valueCode")]
    value_code: &'static str,
}

#[derive(serde::Serialize)]
struct Concept<'a> {
    coding: [Coding<'a>; 1],
}

#[derive(serde::Serialize)]
struct Coding<'a> {
    system: &'static str,
    code: &'a str,
}

#[derive(serde::Serialize)]
struct Reference {
    reference: String,
}

#[derive(serde::Serialize)]
struct Link<'a> {
    relation: &'static str,
    url: &'a str,
}

#[derive(serde::Serialize)]
struct Entry<'a> {
    #[serde(rename = "fullUrl")]
    full_url: String,
    resource: SlotOut<'a>,
    search: Mode,
}

#[derive(serde::Serialize)]
struct Mode {
    mode: &'static str,
}

#[derive(serde::Serialize)]
struct SlotBundle<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    link: Vec<Link<'a>>,
    entry: Vec<Entry<'a>>,
}

fn slot_resource(s: &SlotRow) -> SlotOut<'_> {
    let status = match s.status.as_str() {
        "free" => "free",
        "busy" => "busy",
        _ => "busy-unavailable",
    };
    let t = |ms: i64| crate::store::from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    SlotOut {
        resource_type: "Slot",
        id: fhir_id(&s.id),
        extension: Channels(s.channels)
            .iter()
            .map(|c| CodeExtension {
                url: CHANNEL_EXTENSION,
                value_code: c.as_str(),
            })
            .collect(),
        specialty: [Concept {
            coding: [Coding {
                system: SPECIALTY_SYSTEM,
                code: &s.specialty_code,
            }],
        }],
        schedule: Reference {
            reference: format!("Schedule/{}", fhir_id(&s.practitioner_id)),
        },
        status,
        start: t(s.start_at),
        end: t(s.end_at),
    }
}

fn practitioner_resource(p: &Practitioner) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": fhir_id(&p.id),
        "identifier": [{"system": format!("urn:medgate:{}:practitioner", p.source), "value": p.external_id}],
        "active": true,
        "name": [{"family": p.family, "given": [p.given]}],
        "qualification": [{"code": {"coding": [{"system": SPECIALTY_SYSTEM, "code": p.specialty_code, "version": p.specialty_version}]}}],
    })
}

/// Parses a FHIR date or dateTime with an optional prefix into (prefix, epoch ms).
fn parse_start(raw: &str) -> ApiResult<(&str, i64)> {
    let (prefix, value) = match raw.get(..2) {
        Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &raw[2..]),
        _ => ("eq", raw),
    };
    let ms = if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
    } else {
        chrono::DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    let ms = ms.ok_or_else(|| {
        ApiError::invalid(
            "INVALID_PARAMETER",
            "start",
            format!("`start` must be a date (2026-11-23) or dateTime with an optional ge/gt/le/lt prefix, got {raw:?}"),
        )
    })?;
    Ok((prefix, ms))
}

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
    let (start, id) = text.split_once('|').ok_or_else(bad)?;
    Ok((start.parse().map_err(|_| bad())?, id.to_string()))
}

fn pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
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
    let mut count = 50u32;
    for (k, v) in &params {
        match k.as_str() {
            "organization" => {
                let raw = v.trim_start_matches("Organization/");
                let oid = Oid::parse_organization(raw).map_err(|e| {
                    ApiError::invalid("INVALID_PARAMETER", "organization", e.to_string())
                })?;
                q.org_oid = Some(oid.to_string());
            }
            "practitioner" | "schedule" => {
                let raw = v
                    .trim_start_matches("Practitioner/")
                    .trim_start_matches("Schedule/");
                q.practitioner_id = Some(store_id(raw));
            }
            "specialty" => q.specialty_code = Some(v.rsplit('|').next().unwrap_or(v).to_string()),
            "status" => {
                let stored = match v.as_str() {
                    "free" => "free",
                    "busy" => "busy",
                    "busy-unavailable" => "withdrawn",
                    other => {
                        return Err(ApiError::invalid(
                            "INVALID_PARAMETER",
                            "status",
                            format!(
                                "`status` must be free, busy or busy-unavailable, got {other:?}"
                            ),
                        ))
                    }
                };
                q.status = Some(stored.into());
            }
            "start" => {
                let (prefix, ms) = parse_start(v)?;
                match prefix {
                    "ge" | "eq" => q.start_from = Some(q.start_from.map_or(ms, |x: i64| x.max(ms))),
                    "gt" => q.start_from = Some(ms + 1),
                    "lt" => q.start_to = Some(ms),
                    _ => q.start_to = Some(ms + 1),
                }
                if prefix == "eq" && v.len() == 10 {
                    q.start_to = Some(ms + 86_400_000);
                }
            }
            "_cursor" => q.after = Some(cursor_decode(v)?),
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
    if let (Some(a), Some(b)) = (q.start_from, q.start_to) {
        if a >= b {
            return Err(ApiError::invalid(
                "INVALID_PARAMETER",
                "start",
                "the `start` range is empty (lower bound not before upper bound)",
            ));
        }
    }
    let rows = state.store.search_slots(&q, count + 1).await?;
    let base = base_url(&state, &req);
    let more = rows.len() as u32 > count;
    let page = &rows[..rows.len().min(count as usize)];
    let self_url = format!("{base}/Slot?{}", req.query_string());
    let next = more.then(|| {
        let last = &page[page.len() - 1];
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params.iter().filter(|(k, _)| k != "_cursor") {
            s.append_pair(k, v);
        }
        s.append_pair("_cursor", &cursor_encode(last.start_at, &last.id));
        format!("{base}/Slot?{}", s.finish())
    });
    let mut link = vec![Link {
        relation: "self",
        url: &self_url,
    }];
    if let Some(n) = &next {
        link.push(Link {
            relation: "next",
            url: n,
        });
    }
    let bundle = SlotBundle {
        resource_type: "Bundle",
        kind: "searchset",
        link,
        entry: page
            .iter()
            .map(|s| Entry {
                full_url: format!("{base}/Slot/{}", fhir_id(&s.id)),
                resource: slot_resource(s),
                search: Mode { mode: "match" },
            })
            .collect(),
    };
    let body = serde_json::to_vec(&bundle).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(FHIR_JSON).body(body))
}

async fn search_practitioners(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let params = pairs(&req);
    check_params(&params, &["organization"])?;
    let org = match params.iter().find(|(k, _)| k == "organization") {
        Some((_, v)) => Some(
            Oid::parse_organization(v.trim_start_matches("Organization/"))
                .map_err(|e| ApiError::invalid("INVALID_PARAMETER", "organization", e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let rows = state.store.list_practitioners(org.as_deref(), 1000).await?;
    let base = base_url(&state, &req);
    let entries = rows
        .iter()
        .map(|p| {
            (
                format!("{base}/Practitioner/{}", fhir_id(&p.id)),
                practitioner_resource(p),
            )
        })
        .collect();
    let self_url = format!("{base}/Practitioner?{}", req.query_string());
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(searchset(&self_url, None, entries).to_string()))
}
