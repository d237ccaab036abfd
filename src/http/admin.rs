//! Operator JSON API under `/api/admin`: the transaction log.

use actix_web::web::{self, Data, Path, Query};
use actix_web::HttpResponse;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState, Principal};
use crate::store::transactions::{TransactionFilter, TransactionRecord};

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/transactions", web::get().to(list_transactions))
        .route("/transactions/{id}", web::get().to(get_transaction))
        .route("/restrictions", web::get().to(list_restrictions))
        .route("/restrictions", web::post().to(add_restriction))
        .route("/restrictions/{id}", web::delete().to(delete_restriction))
        .configure(super::documents::admin_routes);
}

/// Refuses a client without `scope` (or `admin`) with 403 naming the scope.
pub fn require(principal: &Principal, scope: &str) -> ApiResult<()> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "client `{}` lacks the scope `{scope}`",
            principal.id
        )))
    }
}

/// Query parameters of the transaction list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    operation: Option<String>,
    protocol: Option<String>,
    client: Option<String>,
    correlation_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_time(field: &str, raw: &str) -> ApiResult<i64> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(
                "INVALID_TIME",
                field,
                format!("`{field}` must be RFC 3339 (2026-11-22T10:00:00Z) or epoch milliseconds"),
            )
        })
}

async fn list_transactions(
    state: Data<AppState>,
    principal: Principal,
    params: Result<Query<ListParams>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    require(&principal, "transactions:read")?;
    let Query(p) = params.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    const STATUSES: [&str; 4] = ["ok", "client-error", "server-error", "failed"];
    if let Some(s) = &p.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "INVALID_STATUS",
                "status",
                format!("`status` must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let limit = match &p.limit {
        None => 100,
        Some(l) => match l.parse::<u32>() {
            Ok(n @ 1..=1000) => n,
            _ => {
                return Err(ApiError::invalid(
                    "INVALID_LIMIT",
                    "limit",
                    "`limit` must be an integer from 1 to 1000",
                ))
            }
        },
    };
    let filter = TransactionFilter {
        status: p.status.clone(),
        operation: p.operation.clone(),
        protocol: p.protocol.clone(),
        client_id: p.client.clone(),
        correlation_id: p.correlation_id.clone(),
        from: p
            .from
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?,
        to: p.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        before_id: p.cursor.clone(),
    };
    state.txlog.flush().await;
    let items = state.store.list_transactions(&filter, limit).await?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|r| r.id.clone()))
        .flatten();
    let next = next_cursor.as_ref().map(|c| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &p.status),
            ("operation", &p.operation),
            ("protocol", &p.protocol),
            ("client", &p.client),
            ("correlation_id", &p.correlation_id),
            ("from", &p.from),
            ("to", &p.to),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        q.append_pair("limit", &limit.to_string());
        q.append_pair("cursor", c);
        format!("/api/admin/transactions?{}", q.finish())
    });
    Ok(HttpResponse::Ok().json(json!({
        "items": items.iter().map(summary).collect::<Vec<_>>(),
        "count": items.len(),
        "next_cursor": next_cursor,
        "next": next,
    })))
}

async fn get_transaction(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    require(&principal, "transactions:read")?;
    state.txlog.flush().await;
    let record = state.store.get_transaction(&id).await?.ok_or_else(|| {
        ApiError::not_found(
            "TRANSACTION_NOT_FOUND",
            format!("no transaction with id {id}"),
        )
        .at("id")
    })?;
    let mut v = summary(&record);
    v["request_body"] = body_json(record.request_body.as_deref());
    v["response_body"] = body_json(record.response_body.as_deref());
    Ok(HttpResponse::Ok().json(v))
}

fn summary(r: &TransactionRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["started_at"] = json!(crate::store::from_ms(r.started_at).to_rfc3339());
    v["expires_at"] = json!(crate::store::from_ms(r.expires_at).to_rfc3339());
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
struct NewRestriction {
    organization: String,
    channels: Vec<String>,
    from: String,
    to: String,
    reason: String,
}

/// Scope needed to manage booking restrictions.
const RESTRICTIONS_SCOPE: &str = "booking:admin";

fn restriction_time(field: &str, v: &str) -> ApiResult<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or_default());
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(
                "INVALID_DATE",
                field,
                format!("`{field}` must be a date (YYYY-MM-DD) or an RFC 3339 time, got {v:?}"),
            )
        })
}

async fn add_restriction(
    state: Data<AppState>,
    principal: Principal,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    require(&principal, RESTRICTIONS_SCOPE)?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let r: NewRestriction = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::invalid("INVALID_JSON", e.path().to_string(), e.inner().to_string())
    })?;
    let org = crate::model::Oid::parse_organization(&r.organization)
        .map_err(|e| ApiError::invalid("INVALID_ORGANIZATION", "organization", e.to_string()))?;
    if state.store.get_organization(org.as_str()).await?.is_none() {
        return Err(ApiError::not_found(
            "UNKNOWN_ORGANIZATION",
            format!("organization {org} is not known to the gateway"),
        )
        .at("organization"));
    }
    let mut mask = 0;
    for (i, c) in r.channels.iter().enumerate() {
        let ch = crate::model::schedule::Channel::parse(c)
            .filter(|c| crate::services::booking::RESTRICTABLE.contains(*c))
            .ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_CHANNEL",
                    format!("channels[{i}]"),
                    format!("only internet and kiosk booking can be restricted, got {c:?}"),
                )
            })?;
        mask |= ch.bit();
    }
    if mask == 0 {
        return Err(ApiError::required("channels"));
    }
    let (from_at, to_at) = (
        restriction_time("from", &r.from)?,
        restriction_time("to", &r.to)?,
    );
    if from_at >= to_at {
        return Err(ApiError::invalid(
            "INVALID_PERIOD",
            "to",
            "`to` must be after `from`",
        ));
    }
    if r.reason.trim().is_empty() {
        return Err(ApiError::required("reason"));
    }
    let restriction = crate::store::appointments::Restriction {
        id: uuid::Uuid::now_v7().to_string(),
        org_oid: org.to_string(),
        channels: mask,
        from_at,
        to_at,
        reason: r.reason.trim().to_string(),
    };
    state.store.add_restriction(&restriction).await?;
    Ok(HttpResponse::Created().json(restriction_json(&restriction)))
}

fn restriction_json(r: &crate::store::appointments::Restriction) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "organization": r.org_oid,
        "channels": crate::model::schedule::Channels(r.channels).iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "from": crate::store::from_ms(r.from_at).to_rfc3339(),
        "to": crate::store::from_ms(r.to_at).to_rfc3339(),
        "reason": r.reason,
    })
}

async fn list_restrictions(
    state: Data<AppState>,
    principal: Principal,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> ApiResult<HttpResponse> {
    require(&principal, RESTRICTIONS_SCOPE)?;
    let rows = state
        .store
        .restrictions(query.get("organization").map(String::as_str))
        .await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(restriction_json).collect::<Vec<_>>()))
}

async fn delete_restriction(
    state: Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    require(&principal, RESTRICTIONS_SCOPE)?;
    if state.store.delete_restriction(&id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(
            "UNKNOWN_RESTRICTION",
            format!("no restriction {id}"),
        ))
    }
}
