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
