//! Operator JSON API under `/api/admin`: the transaction log, the outbox's dead letters and
//! queues, and booking restrictions (the document routes are in `documents`).

use actix_web::web::{self, Data, Path, Query};
use actix_web::HttpResponse;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{Access, Org, Route};
use super::booking::booking_error;
use super::query::{count, moment};
use super::{ApiError, ApiResult, AppState, Principal};
use crate::auth::scopes::{
    BOOKING_ADMIN, JOBS_READ, JOBS_RUN, STATS_READ, TRANSACTIONS_BODIES, TRANSACTIONS_READ,
    TRANSACTIONS_RERUN,
};
use crate::model::booking::Restriction;
use crate::model::schedule::Channel;
use crate::model::time::from_ms;
use crate::route;
use crate::services::booking::NewRestriction;
use crate::services::operations::{RerunError, TransactionFilter, TransactionRecord};
use crate::services::Caller;

/// The operator routes (the document ones are in `documents`), with who may call them.
pub const ROUTES: &[Route] = &[
    route!(GET "/api/admin" "/transactions" => list_transactions, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(GET "/api/admin" "/transactions/{id}" => get_transaction, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(POST "/api/admin" "/transactions/{id}/rerun" => rerun_transaction, Access::Scope(TRANSACTIONS_RERUN, Org::Records)),
    route!(GET "/api/admin" "/outbox" => list_outbox, Access::Scope(TRANSACTIONS_READ, Org::Records)),
    route!(GET "/api/admin" "/restrictions" => list_restrictions, Access::Scope(BOOKING_ADMIN, Org::Records)),
    route!(POST "/api/admin" "/restrictions" => add_restriction, Access::Scope(BOOKING_ADMIN, Org::Named)),
    route!(DELETE "/api/admin" "/restrictions/{id}" => delete_restriction, Access::Scope(BOOKING_ADMIN, Org::Records)),
    route!(GET "/api/admin" "/jobs" => list_jobs, Access::Scope(JOBS_READ, Org::Public)),
    route!(GET "/api/admin" "/stats" => daily_stats, Access::Scope(STATS_READ, Org::Records)),
    route!(GET "/api/admin" "/jobs/{name}/runs" => list_job_runs, Access::Scope(JOBS_READ, Org::Public)),
    route!(POST "/api/admin" "/jobs/{name}/run" => run_job, Access::Scope(JOBS_RUN, Org::Public)),
    route!(GET "/api/admin" "/openapi.json" => super::openapi::serve, Access::Open),
];

/// The daily statistics (`from`, `to`: dates, default today; `metric`), of the client's
/// organizations.
async fn daily_stats(
    state: Data<AppState>,
    principal: Principal,
    params: Result<Query<std::collections::HashMap<String, String>>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    super::query::check_params(
        &p.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        &["from", "to", "metric"],
    )?;
    let date = |k: &str| -> ApiResult<Option<String>> {
        p.get(k)
            .map(|v| {
                chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map(|d| d.to_string())
                    .map_err(|_| {
                        ApiError::invalid(
                            "INVALID_DATE",
                            k,
                            format!("`{k}` must be a date, YYYY-MM-DD"),
                        )
                    })
            })
            .transpose()
    };
    // Days are the jobs' time zone's, as the statistics were computed.
    let tz = state.settings.jobs.tz();
    let today = from_ms(crate::model::time::now_ms())
        .with_timezone(&tz)
        .date_naive()
        .to_string();
    let from = date("from")?.unwrap_or_else(|| today.clone());
    let to = date("to")?.unwrap_or(today);
    if let Some(m) = p.get("metric") {
        if ![
            "bookings",
            "documents",
            "referrals",
            "referral_wait_minutes",
        ]
        .contains(&m.as_str())
        {
            return Err(ApiError::invalid(
                "INVALID_VALUE",
                "metric",
                "`metric` must be bookings, documents, referrals or referral_wait_minutes",
            ));
        }
    }
    let rows = state
        .operations
        .daily_stats(
            Caller::of(&principal),
            &from,
            &to,
            p.get("metric").map(String::as_str),
        )
        .await
        .map_err(|e| ApiError::storage(&e))?;
    Ok(HttpResponse::Ok().json(json!({"from": from, "to": to, "stats": rows})))
}

/// A job run as JSON, times as RFC 3339.
fn run_json(r: &crate::model::job::JobRun) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "tick": from_ms(r.tick_at).to_rfc3339(),
        "manual": r.kind == crate::model::job::RunKind::Manual,
        "kind": r.kind.as_str(),
        "replica": r.replica,
        "started_at": from_ms(r.started_at).to_rfc3339(),
        "ended_at": r.ended_at.map(|t| from_ms(t).to_rfc3339()),
        "outcome": r.outcome.as_str(),
        "examined": r.counts.examined,
        "found": r.counts.found,
        "repaired": r.counts.repaired,
        "error": r.error,
        "details": r.details,
    })
}

fn job_error(e: crate::services::operations::JobError) -> ApiError {
    match e {
        crate::services::operations::JobError::Unknown(name) => {
            ApiError::not_found("JOB_NOT_FOUND", format!("no job named {name}")).at("name")
        }
        crate::services::operations::JobError::Store(e) => ApiError::storage(&e),
    }
}

/// Every background job: how it runs and its latest run.
async fn list_jobs(state: Data<AppState>) -> ApiResult<HttpResponse> {
    let jobs = state
        .operations
        .jobs()
        .await
        .map_err(|e| ApiError::storage(&e))?;
    Ok(HttpResponse::Ok().json(json!({
        "jobs": jobs.iter().map(|(info, last)| json!({
            "name": info.name,
            "mode": info.mode,
            "cron": info.cron,
            "time_zone": state.settings.jobs.time_zone,
            "last_run": last.as_ref().map(run_json),
        })).collect::<Vec<_>>(),
    })))
}

/// A job's runs, newest first (`limit`, at most 1,000).
async fn list_job_runs(
    state: Data<AppState>,
    name: Path<String>,
    params: Result<Query<std::collections::HashMap<String, String>>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    super::query::check_params(
        &p.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        &["limit"],
    )?;
    let limit = page_limit(p.get("limit").map(String::as_str))?;
    let runs = state
        .operations
        .job_runs(&name, limit)
        .await
        .map_err(job_error)?;
    Ok(HttpResponse::Ok().json(json!({"runs": runs.iter().map(run_json).collect::<Vec<_>>()})))
}

/// Runs a job now, by hand; answers its run.
async fn run_job(state: Data<AppState>, name: Path<String>) -> ApiResult<HttpResponse> {
    let run = state
        .operations
        .run_job(&name, &|_| {})
        .await
        .map_err(job_error)?;
    Ok(HttpResponse::Ok().json(run_json(&run)))
}

/// Query parameters of the transaction list (and of the dashboard's search).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub(super) status: Option<String>,
    pub(super) operation: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) client: Option<String>,
    pub(super) correlation_id: Option<String>,
    pub(super) trace_id: Option<String>,
    pub(super) direction: Option<String>,
    pub(super) rerun_of: Option<String>,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) limit: Option<String>,
    pub(super) cursor: Option<String>,
}

impl ListParams {
    /// The parameters as given, each once (an HTML form sends empty fields: left out).
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("status", &self.status),
            ("operation", &self.operation),
            ("protocol", &self.protocol),
            ("client", &self.client),
            ("correlation_id", &self.correlation_id),
            ("trace_id", &self.trace_id),
            ("direction", &self.direction),
            ("rerun_of", &self.rerun_of),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (k, v)))
        .collect()
    }

    /// The filter and page size they ask for; a bad value named.
    pub fn filter(&self) -> ApiResult<(TransactionFilter, u32)> {
        let mut f = TransactionFilter {
            before_id: self.cursor.clone().filter(|c| !c.is_empty()),
            ..TransactionFilter::default()
        };
        for (k, v) in self.pairs() {
            let v = v.to_string();
            match k {
                "status" => {
                    status_in(&v, &["ok", "client-error", "server-error", "failed"])?;
                    f.status = Some(v);
                }
                "direction" => {
                    if !matches!(v.as_str(), "inbound" | "outbound") {
                        return Err(ApiError::invalid(
                            "INVALID_DIRECTION",
                            "direction",
                            "`direction` must be inbound or outbound",
                        ));
                    }
                    f.direction = Some(v);
                }
                "operation" => f.operation = Some(v),
                "protocol" => f.protocol = Some(v),
                "client" => f.client_id = Some(v),
                "correlation_id" => f.correlation_id = Some(v),
                "trace_id" => f.trace_id = Some(v),
                "rerun_of" => f.rerun_of = Some(v),
                "from" => f.from = Some(parse_time("from", &v)?),
                _ => f.to = Some(parse_time("to", &v)?),
            }
        }
        let limit = page_limit(self.limit.as_deref().filter(|l| !l.is_empty()))?;
        Ok((f, limit))
    }

    /// The query of the page after `cursor`, the same filter.
    pub fn next(&self, limit: u32, cursor: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs() {
            q.append_pair(k, v);
        }
        q.append_pair("limit", &limit.to_string());
        q.append_pair("cursor", cursor);
        q.finish()
    }
}

/// A `status` filter must name one of `allowed`.
fn status_in(status: &str, allowed: &[&str]) -> ApiResult<()> {
    if allowed.contains(&status) {
        return Ok(());
    }
    Err(ApiError::invalid(
        "INVALID_STATUS",
        "status",
        format!("`status` must be one of {}", allowed.join(", ")),
    ))
}

/// A list's `limit`: 100 when absent, at most 1,000.
fn page_limit(raw: Option<&str>) -> ApiResult<u32> {
    raw.map_or(Ok(100), |l| count("limit", l, 1000))
}

/// A time filter: epoch milliseconds, or a date or instant.
fn parse_time(field: &str, raw: &str) -> ApiResult<i64> {
    match raw.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => moment(field, raw).map(|m| m.ms()).map_err(|_| {
            ApiError::invalid(
                "INVALID_TIME",
                field,
                format!("`{field}` must be RFC 3339 (2026-11-22T10:00:00Z), a date or epoch milliseconds"),
            )
        }),
    }
}

async fn list_transactions(
    state: Data<AppState>,
    principal: Principal,
    params: Result<Query<ListParams>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let (filter, limit) = p.filter()?;
    let items = state
        .operations
        .transactions(Caller::of(&principal), &filter, limit)
        .await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|r| r.id.clone()))
        .flatten();
    let next = next_cursor
        .as_ref()
        .map(|c| format!("/api/admin/transactions?{}", p.next(limit, c)));
    Ok(HttpResponse::Ok().json(json!({
        "items": items.iter().map(summary).collect::<Vec<_>>(),
        "count": items.len(),
        "next_cursor": next_cursor,
        "next": next,
    })))
}

/// Sends a failed inbound exchange once more through the gateway, as the client that sent
/// it: 200 with the rerun's record, its HTTP status and class; 409 naming why a record is
/// not one to rerun.
async fn rerun_transaction(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let rerun = rerun_one(&state, &principal, &id).await?;
    Ok(HttpResponse::Ok().json(rerun))
}

/// The rerun of record `id` (the JSON route's and the dashboard's).
pub(super) async fn rerun_one(
    state: &Data<AppState>,
    principal: &Principal,
    id: &str,
) -> ApiResult<super::replay::Rerun> {
    let replay = state
        .operations
        .rerun_transaction(Caller::of(principal), id, &state.clients)
        .await
        .map_err(|e| match e {
            RerunError::NotFound => ApiError::not_found(
                "TRANSACTION_NOT_FOUND",
                format!("no transaction with id {id}"),
            )
            .at("id"),
            RerunError::Refused { code, why } => ApiError::conflict(code, why).at("id"),
            RerunError::Store(e) => ApiError::storage(&e),
        })?;
    let of = replay.of.clone();
    let rerun = super::replay::run(state.clone(), replay).await;
    state
        .operations
        .rerun_done(&of)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    rerun
}

/// Query parameters of the outbox list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxParams {
    status: Option<String>,
    destination: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Outbox items in a status (default `dead`: the dead letters, each with why it was given
/// up and how many attempts it had), newest first.
async fn list_outbox(
    state: Data<AppState>,
    principal: Principal,
    params: Result<Query<OutboxParams>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let status = p.status.as_deref().unwrap_or("dead");
    status_in(status, &["dead", "pending", "inflight", "done"])?;
    let limit = page_limit(p.limit.as_deref())?;
    let items = state
        .operations
        .outbox(
            Caller::of(&principal),
            status,
            p.destination.as_deref(),
            p.cursor.as_deref(),
            limit,
        )
        .await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
            v["created_at"] = json!(from_ms(i.created_at).to_rfc3339());
            v["updated_at"] = json!(from_ms(i.updated_at).to_rfc3339());
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "items": items,
        "count": items.len(),
        "next_cursor": next_cursor,
    })))
}

async fn get_transaction(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let record = state
        .operations
        .transaction(
            Caller::of(&principal),
            &id,
            principal.has_scope(TRANSACTIONS_BODIES),
        )
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "TRANSACTION_NOT_FOUND",
                format!("no transaction with id {id}"),
            )
            .at("id")
        })?;
    let mut v = summary(&record);
    // Bodies carry patients' identifiers: only for clients trusted with them.
    if principal.has_scope(TRANSACTIONS_BODIES) {
        v["request_body"] = body_json(record.request_body.as_deref());
        v["response_body"] = body_json(record.response_body.as_deref());
    } else {
        v["bodies"] = json!(format!(
            "withheld: reading bodies needs the scope {TRANSACTIONS_BODIES}"
        ));
    }
    Ok(HttpResponse::Ok().json(v))
}

fn summary(r: &TransactionRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["started_at"] = json!(from_ms(r.started_at).to_rfc3339());
    v["expires_at"] = json!(from_ms(r.expires_at).to_rfc3339());
    v
}

fn body_json(body: Option<&[u8]>) -> Value {
    match body {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!({"encoding": "utf-8", "content": s}),
            Err(_) => json!({
                "encoding": "base64",
                "content": base64::engine::general_purpose::STANDARD.encode(b)
            }),
        },
    }
}

/// A new booking restriction, as posted.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestrictionIn {
    organization: String,
    channels: Vec<String>,
    from: String,
    to: String,
    reason: String,
}

fn restriction_field(f: &str) -> String {
    f.to_string()
}

async fn add_restriction(
    state: Data<AppState>,
    principal: Principal,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    ApiError::check_json(&body, "restriction")?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let r: RestrictionIn = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::invalid("INVALID_JSON", e.path().to_string(), e.inner().to_string())
    })?;
    let org = crate::model::Oid::parse_organization(&r.organization)
        .map_err(|e| ApiError::invalid("INVALID_ORGANIZATION", "organization", e.to_string()))?;
    let channels = r
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Channel::parse(c).ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_CHANNEL",
                    format!("channels[{i}]"),
                    format!(
                        "unknown channel {c:?}; only internet and kiosk booking can be restricted"
                    ),
                )
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let restriction = NewRestriction {
        org,
        channels,
        from_at: moment("from", &r.from)?.ms(),
        to_at: moment("to", &r.to)?.ms(),
        reason: r.reason,
    };
    let created = state
        .booking
        .add_restriction(Caller::of(&principal), restriction)
        .await
        .map_err(|e| booking_error(e, &restriction_field))?;
    Ok(HttpResponse::Created().json(restriction_json(&created)))
}

fn restriction_json(r: &Restriction) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "organization": r.org.as_str(),
        "channels": r.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "from": from_ms(r.from_at).to_rfc3339(),
        "to": from_ms(r.to_at).to_rfc3339(),
        "reason": r.reason,
    })
}

async fn list_restrictions(
    state: Data<AppState>,
    principal: Principal,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    let org = query
        .get("organization")
        .map(|o| super::query::organization("organization", o))
        .transpose()?;
    let rows = state
        .booking
        .restrictions(Caller::of(&principal), org.as_ref())
        .await
        .map_err(|e| booking_error(e, &restriction_field))?;
    Ok(HttpResponse::Ok().json(rows.iter().map(restriction_json).collect::<Vec<_>>()))
}

async fn delete_restriction(
    state: Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    state
        .booking
        .delete_restriction(Caller::of(&principal), &id)
        .await
        .map_err(|e| booking_error(e, &restriction_field))?;
    Ok(HttpResponse::NoContent().finish())
}
