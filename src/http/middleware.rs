//! The gateway middleware wrapped around every route.
//!
//! In order: request id in and out, a tracing span carrying it, the body size limit (413),
//! client authentication for protected protocols (401), panic containment (no request ever
//! ends without an answer), metrics, and the transaction log record.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut, Data};
use actix_web::{Error, HttpMessage};
use futures_util::{FutureExt, StreamExt};
use tracing::Instrument;

use super::access::{Access, AccessRules};
use super::error::{ApiError, Protocol, RequestContext, REQUEST};
use super::AppState;
use crate::auth::AuthError;
use crate::config::BodyPolicy;
use crate::exchange::txlog::TransactionRecord;

/// Request id header, accepted from the client and always returned.
pub const REQUEST_ID: &str = "x-request-id";
/// Correlation id header, propagated across hops.
pub const CORRELATION_ID: &str = "x-correlation-id";

fn header_id(req: &ServiceRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
}

/// The middleware function; install with `actix_web::middleware::from_fn(gateway)`.
pub async fn gateway(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let started_at = crate::model::time::now_ms();
    let state = req
        .app_data::<Data<AppState>>()
        .cloned()
        .expect("AppState is registered by the app factory");
    let request_id =
        header_id(&req, REQUEST_ID).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let correlation_id = header_id(&req, CORRELATION_ID).unwrap_or_else(|| request_id.clone());
    // A caller's trace is continued; a request without one (or a malformed one) starts one.
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::context::Trace::continue_from)
        .unwrap_or_else(crate::context::Trace::root);
    let trace_id = trace.trace_id.clone();
    let (span_id, parent_span_id) = (trace.span_id.clone(), trace.parent_id.clone());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let protocol = match Protocol::of(req.path(), content_type.as_deref()) {
        // A browser on the dashboard is answered pages, errors too.
        Protocol::Open
            if (req.path() == "/admin" || req.path().starts_with("/admin/"))
                && req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("text/html")) =>
        {
            Protocol::Page
        }
        p => p,
    };
    // A rerun of a recorded exchange, sent in process by `replay` (never from the wire).
    let replay = req.extensions().get::<super::replay::ReplayAs>().cloned();
    let soap_action_header = req
        .headers()
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let method = req.method().to_string();
    let path = req.path().to_string();
    let ctx = RequestContext {
        request_id: request_id.clone(),
        protocol,
    };
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        trace_id = %trace_id,
        method = %method,
        path = %path,
        client = tracing::field::Empty
    );

    let work = async move {
        let limit = state.settings.http.max_body_bytes;
        let mut fin = Finish {
            decision: state.txlog.decide(&path),
            request_id,
            correlation_id,
            trace_id,
            span_id,
            parent_span_id,
            protocol,
            method,
            path,
            started,
            started_at,
            client_id: None,
            request_body: Bytes::new(),
            error: None,
            content_type,
            soap_action: soap_action_header,
            rerun: replay
                .as_ref()
                .map(|r| (r.record_id.clone(), r.rerun_of.clone())),
        };

        // The route's access rule, before anything of the body is read.
        let rules = req
            .app_data::<Data<AccessRules>>()
            .cloned()
            .unwrap_or_default();
        let rule = match req.match_pattern() {
            None => None,
            Some(pattern) => match rules.rule(req.method(), &pattern) {
                Some(rule) => Some(rule),
                None => {
                    let err = method_not_allowed(req.method(), &pattern, &rules);
                    let mut res = err.render(protocol, &fin.request_id);
                    let allow: Vec<String> = rules
                        .methods(&pattern)
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                        res.headers_mut().insert(actix_web::http::header::ALLOW, v);
                    }
                    fin.error = Some(err.code.to_string());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
            },
        };
        if let Some(rule) = rule.filter(|r| *r != Access::Open) {
            let header = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let peer = req.conn_data::<crate::auth::PeerCertificate>();
            // A dashboard session's cookie, when no other credentials come.
            let cookie = match (header, peer) {
                (None, None) => req
                    .cookie(super::dashboard::SESSION_COOKIE)
                    .map(|c| c.value().to_string()),
                _ => None,
            };
            let session = match cookie {
                None => None,
                Some(id) => match state.sessions.resolve(&id).await {
                    Ok(s) => s,
                    Err(e) => {
                        let err = ApiError::storage(&e);
                        let res = err.render(protocol, &fin.request_id);
                        fin.error = Some(err.code.to_string());
                        return Ok(finish(&state, req.into_parts().0, res, fin).await);
                    }
                },
            };
            let authenticated = match (session, replay) {
                (_, Some(r)) => Ok(r.client),
                (Some(s), None) => {
                    req.extensions_mut()
                        .insert(super::dashboard::SessionCsrf(s.csrf));
                    Ok(s.client)
                }
                (None, None) => state.clients.authenticate(header, peer),
            };
            let client = match authenticated {
                Ok(client) => client,
                // A page of the dashboard sends a browser without a session to the login
                // (a script, which does not ask for HTML, gets the 401 as anywhere else).
                Err(_)
                    if req.method() == actix_web::http::Method::GET
                        && protocol == Protocol::Page =>
                {
                    let res = actix_web::HttpResponse::SeeOther()
                        .insert_header((actix_web::http::header::LOCATION, "/admin/login"))
                        .finish();
                    fin.error = Some("UNAUTHORIZED".into());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
                Err(e) => {
                    let err = ApiError::unauthorized(e.to_string());
                    let mut res = err.render(protocol, &fin.request_id);
                    if e != AuthError::Unknown || protocol == Protocol::Fhir {
                        res.headers_mut().insert(
                            actix_web::http::header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer realm=\"medgate\""),
                        );
                    }
                    fin.error = Some("UNAUTHORIZED".into());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
            };
            fin.client_id = Some(client.id.clone());
            tracing::Span::current().record("client", client.id.as_str());
            if let Some(scope) = rule.scope(soap_action(&req).as_deref()) {
                if !client.has_scope(scope) {
                    let err = ApiError::forbidden(format!(
                        "client `{}` lacks the scope `{scope}`",
                        client.id
                    ));
                    let res = err.render(protocol, &fin.request_id);
                    fin.error = Some(err.code.to_string());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
            }
            if let Err(wait) = state.clients.check_rate(&client.id) {
                let err = ApiError::too_many_requests(wait);
                let mut res = err.render(protocol, &fin.request_id);
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    res.headers_mut()
                        .insert(actix_web::http::header::RETRY_AFTER, v);
                }
                fin.error = Some(err.code.to_string());
                return Ok(finish(&state, req.into_parts().0, res, fin).await);
            }
            req.extensions_mut().insert(client);
        }

        // Admission: a bounded number of requests at work; beyond it a request waits a
        // bounded time, then is shed with 503 and Retry-After (never a reset connection).
        let _permit = match rule.filter(|r| *r != Access::Open) {
            None => None,
            Some(_) => match state.admission.enter(state.txlog.saturated()).await {
                Ok(permit) => Some(permit),
                Err(shed) => {
                    state.metrics.shed.with_label_values(&[shed.reason()]).inc();
                    let err = ApiError::overloaded(&shed);
                    let res = err.render(protocol, &fin.request_id);
                    fin.error = Some(err.code.to_string());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
            },
        };

        // No parameter or identifier holds a NUL, and PostgreSQL text cannot: refused here.
        if req.path().contains("%00") || req.query_string().contains("%00") {
            let err = ApiError::malformed(
                "INVALID_CHARACTER",
                "the request URL holds a NUL character (%00)",
            );
            let res = err.render(protocol, &fin.request_id);
            fin.error = Some(err.code.to_string());
            return Ok(finish(&state, req.into_parts().0, res, fin).await);
        }

        // Read the body under the size limit (only for routes the gateway serves); it is
        // put back for the handler.
        if rule.is_some() {
            let deadline = std::time::Duration::from_secs(state.settings.http.body_timeout_secs);
            match read_body(&mut req, limit, deadline).await {
                Ok(b) => fin.request_body = b,
                Err(e) => {
                    let res = e.render(protocol, &fin.request_id);
                    fin.error = Some(e.code.to_string());
                    return Ok(finish(&state, req.into_parts().0, res, fin).await);
                }
            }
            req.set_payload(actix_http::Payload::from(fin.request_body.clone()));
        }

        let outcome = AssertUnwindSafe(next.call(req)).catch_unwind().await;
        let (http_req, res) = match outcome {
            Ok(Ok(res)) => {
                let (r, res) = res.into_parts();
                fin.error = res.error().map(|e| e.to_string());
                (r, res)
            }
            Ok(Err(e)) => {
                fin.error = Some(e.to_string());
                (detached_request(&fin.method, &fin.path), e.error_response())
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let err = ApiError::internal(format!("handler panicked: {what}"));
                fin.error = Some("panic".into());
                (
                    detached_request(&fin.method, &fin.path),
                    err.render(protocol, &fin.request_id),
                )
            }
        };
        Ok(finish(&state, http_req, res, fin).await)
    };
    let rid = ctx.request_id.clone();
    let work = crate::context::with_trace(trace, REQUEST.scope(ctx, work.instrument(span)));
    crate::context::with_request_id(rid, work).await
}

/// A stand-in request for answering after the real one was consumed by a failed handler
/// (the router needs sole ownership of the request, so it cannot be cloned beforehand).
fn detached_request(method: &str, path: &str) -> actix_web::HttpRequest {
    actix_web::test::TestRequest::default()
        .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap_or_default())
        .uri(path)
        .to_http_request()
}

/// The SOAP action a request names: the `SOAPAction` header (SOAP 1.1) or the `action`
/// parameter of its content type (SOAP 1.2).
fn soap_action(req: &ServiceRequest) -> Option<String> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    header("soapaction")
        .map(|v| v.trim().trim_matches('"').to_string())
        .or_else(|| {
            header("content-type")?
                .split(';')
                .find_map(|p| p.trim().strip_prefix("action="))
                .map(|a| a.trim_matches('"').to_string())
        })
}

/// A known path asked with a method it does not serve: 405 with the methods it does.
fn method_not_allowed(
    method: &actix_web::http::Method,
    pattern: &str,
    rules: &AccessRules,
) -> ApiError {
    let allowed: Vec<String> = rules
        .methods(pattern)
        .iter()
        .map(ToString::to_string)
        .collect();
    ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        crate::codec::fhir::IssueType::NotSupported,
        "METHOD_NOT_ALLOWED",
        format!(
            "{method} is not served on {pattern}; allowed: {}",
            allowed.join(", ")
        ),
    )
}

async fn read_body(
    req: &mut ServiceRequest,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut payload = req.take_payload();
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::malformed(
                    "BODY_READ_FAILED",
                    format!("could not read the request body: {e}"),
                )
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    // actix bounds the time to the end of the head, not of the body: a body that stalls
    // (a Content-Length never met) would hold its request open for ever.
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                actix_web::http::StatusCode::REQUEST_TIMEOUT,
                crate::codec::fhir::IssueType::Timeout,
                "BODY_TIMEOUT",
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            ))
        })
}

struct Finish {
    request_id: String,
    correlation_id: String,
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    protocol: Protocol,
    method: String,
    path: String,
    started: Instant,
    started_at: i64,
    client_id: Option<String>,
    decision: crate::exchange::txlog::RouteDecision,
    request_body: Bytes,
    error: Option<String>,
    content_type: Option<String>,
    soap_action: Option<String>,
    rerun: Option<(String, String)>,
}

async fn finish(
    state: &AppState,
    req: actix_web::HttpRequest,
    res: actix_web::HttpResponse,
    f: Finish,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let info = res.extensions().get::<super::error::ErrorInfo>().copied();
    let class = info.map_or(status, |i| i.status);
    let error = f.error.or_else(|| info.map(|i| i.code.to_string()));
    let (mut res, response_body) = if f.decision.bodies == BodyPolicy::Full {
        let (res, body) = res.into_parts();
        let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
        (res.set_body(BoxBody::new(bytes.clone())), Some(bytes))
    } else {
        (res, None)
    };
    let response_bytes = match &response_body {
        Some(b) => b.len() as i64,
        None => match res.body().size() {
            actix_web::body::BodySize::Sized(n) => n as i64,
            _ => -1,
        },
    };
    if let Ok(v) = HeaderValue::from_str(&f.request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let elapsed = f.started.elapsed();
    state.metrics.observe(
        &f.method,
        &route,
        status.as_u16(),
        class.as_u16(),
        elapsed.as_secs_f64(),
    );
    // By what the answer stands for: a SOAP 1.1 Client fault is sent as 500 yet is no failure.
    if class.is_server_error() {
        tracing::warn!(status = status.as_u16(), route = %route, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), route = %route, "request served");
    }

    // The dashboard's requests are not exchanges (and its login form carries a password).
    if f.decision.bodies != BodyPolicy::None
        && !matches!(f.protocol, Protocol::Open | Protocol::Page)
    {
        // An unknown SOAP operation is named by the client: clipped like the error, so the
        // index on it can hold the row (one row too wide loses the writer's whole batch).
        let operation = req
            .extensions()
            .get::<Operation>()
            .map(|o| o.0.chars().take(200).collect())
            .unwrap_or_else(|| format!("{} {route}", f.method));
        let max = state.txlog.max_body();
        let (request_body, response_body, truncated) = match response_body {
            Some(resp) if f.decision.bodies == BodyPolicy::Full => {
                let (a, t1) = crate::exchange::txlog::clip_body(&f.request_body, max);
                let (b, t2) = crate::exchange::txlog::clip_body(&resp, max);
                (Some(a), Some(b), t1 || t2)
            }
            _ => (None, None, false),
        };
        let status_text = status_class(class);
        let (id, rerun_of) = match f.rerun {
            Some((id, of)) => (id, Some(of)),
            None => (uuid::Uuid::now_v7().to_string(), None),
        };
        state
            .txlog
            .record(TransactionRecord {
                id,
                correlation_id: f.correlation_id,
                request_id: f.request_id,
                client_id: f.client_id,
                direction: "inbound".into(),
                protocol: f.protocol.name().into(),
                operation,
                method: f.method,
                target: f.path,
                status: status_text.into(),
                http_status: Some(i32::from(status.as_u16())),
                error: error.map(|e| e.chars().take(500).collect()),
                started_at: f.started_at,
                duration_us: elapsed.as_micros() as i64,
                request_bytes: f.request_body.len() as i64,
                response_bytes,
                body_policy: match f.decision.bodies {
                    BodyPolicy::Full => "full",
                    _ => "metadata-only",
                }
                .into(),
                request_body,
                response_body,
                truncated,
                rerun_of,
                expires_at: f.started_at + i64::from(f.decision.retention_days) * 86_400_000,
                trace_id: Some(f.trace_id),
                content_type: f.content_type.map(|c| c.chars().take(200).collect()),
                soap_action: f.soap_action.map(|a| a.chars().take(200).collect()),
                span_id: Some(f.span_id),
                parent_span_id: f.parent_span_id,
            })
            .await;
    }
    ServiceResponse::new(req, res)
}

/// How the transaction log classes an answer by the status it stands for: `ok`,
/// `client-error` or `server-error`.
pub fn status_class(class: actix_web::http::StatusCode) -> &'static str {
    if class.is_success() || class.is_redirection() || class.is_informational() {
        "ok"
    } else if class.is_client_error() {
        "client-error"
    } else {
        "server-error"
    }
}

/// The business operation of a request (e.g. a SOAP method), set by handlers for the log.
#[derive(Debug, Clone)]
pub struct Operation(pub String);
