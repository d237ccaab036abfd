//! Reruns of recorded inbound exchanges: the stored request goes once more through the
//! gateway's own application, in process (middleware, access rules, handlers, transaction
//! log), as the client that sent it; its new record names the record it re-ran.

use std::sync::Arc;

use actix_service::{IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::AppConfig;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::web::{Bytes, Data};
use actix_web::HttpMessage;

use super::{ApiError, AppState};
use crate::auth::Client;
use crate::services::operations::Replay;

/// Marks a request as the rerun of a record, made by this process: the client it acts as
/// and the ids of its own record and of the one re-run. Only set in process, so a request
/// from the wire can never carry it.
#[derive(Debug, Clone)]
pub struct ReplayAs {
    /// The client that sent the original request.
    pub client: Arc<Client>,
    /// The id the rerun's record gets.
    pub record_id: String,
    /// The record re-run.
    pub rerun_of: String,
}

/// What a rerun came to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rerun {
    /// The rerun's own transaction record.
    pub id: String,
    /// The record it re-ran.
    pub rerun_of: String,
    /// The HTTP status the gateway answered the rerun with.
    pub http_status: u16,
    /// `ok`, `client-error` or `server-error`, as the log classes it.
    pub status: &'static str,
}

/// Sends `replay` through the gateway's application once, as its client.
pub async fn run(state: Data<AppState>, replay: Replay) -> Result<Rerun, ApiError> {
    let app = super::app(state, Data::new(super::access_rules()));
    let service = app
        .into_factory()
        .new_service(AppConfig::default())
        .await
        .map_err(|()| ApiError::internal("the application for a rerun could not be built"))?;
    let mut req =
        actix_http::Request::with_payload(actix_http::Payload::from(Bytes::from(replay.body)));
    let head = req.head_mut();
    head.method = replay
        .method
        .parse()
        .map_err(|_| ApiError::internal("the recorded method is not an HTTP method"))?;
    head.uri = replay
        .path
        .parse()
        .map_err(|_| ApiError::internal("the recorded path is not a URI path"))?;
    for (name, value) in [
        ("content-type", replay.content_type),
        ("soapaction", replay.soap_action),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            head.headers.insert(HeaderName::from_static(name), v);
        }
    }
    let record_id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(ReplayAs {
        client: replay.client,
        record_id: record_id.clone(),
        rerun_of: replay.of.clone(),
    });
    let res = service
        .call(req)
        .await
        .map_err(|e| ApiError::internal(format!("the rerun failed: {e}")))?;
    let class = res
        .response()
        .extensions()
        .get::<super::error::ErrorInfo>()
        .map_or(res.status(), |i| i.status);
    Ok(Rerun {
        id: record_id,
        rerun_of: replay.of,
        http_status: res.status().as_u16(),
        status: super::middleware::status_class(class),
    })
}
