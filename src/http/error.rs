//! The HTTP error model: one error type, rendered as the route's protocol expects.
//!
//! FHIR routes answer `OperationOutcome`, SOAP routes a SOAP 1.1/1.2 Fault, the dashboard's
//! pages asked for by a browser a page saying what went wrong, everything else a small JSON
//! problem document. Every error carries a stable machine code and a human
//! message naming the field at fault; internal causes are logged, never returned.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::codec::fhir::{IssueType, OperationOutcome, FHIR_JSON};
use crate::codec::soap::{self, Fault, FaultSide, SoapVersion};
use crate::services::schedules::ScheduleError;
use crate::services::StoreError;

/// Which protocol a route speaks; decides how errors are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/fhir/...`
    Fhir,
    /// `/soap/...`
    Soap(SoapVersion),
    /// `/api/...` (admin and operations JSON API)
    Api,
    /// Health, readiness, metrics: no authentication.
    Open,
    /// The dashboard (`/admin`) asked for by a browser (`Accept: text/html`).
    Page,
}

impl Protocol {
    /// Classifies a request by path and content type.
    pub fn of(path: &str, content_type: Option<&str>) -> Protocol {
        if path == "/fhir" || path.starts_with("/fhir/") {
            Protocol::Fhir
        } else if path == "/soap" || path.starts_with("/soap/") {
            let v12 = content_type.is_some_and(|c| c.starts_with("application/soap+xml"));
            Protocol::Soap(if v12 {
                SoapVersion::V12
            } else {
                SoapVersion::V11
            })
        } else if path.starts_with("/api/") {
            Protocol::Api
        } else {
            Protocol::Open
        }
    }

    /// Name recorded in the transaction log and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Fhir => "fhir",
            Protocol::Soap(_) => "soap",
            Protocol::Api => "api",
            Protocol::Open => "open",
            Protocol::Page => "page",
        }
    }
}

/// Per-request context visible to error rendering and logging.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Request id (echoed in `X-Request-Id`).
    pub request_id: String,
    /// Protocol of the route.
    pub protocol: Protocol,
}

tokio::task_local! {
    /// The context of the request being served by the current task.
    pub static REQUEST: RequestContext;
}

/// The current request's context, if inside one.
pub fn current() -> Option<RequestContext> {
    REQUEST.try_with(Clone::clone).ok()
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// FHIR issue type (also guides SOAP fault side).
    pub issue: IssueType,
    /// Stable machine code, e.g. `INVALID_SNILS`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// The field at fault (FHIRPath for FHIR, element path for SOAP, parameter name).
    pub field: Option<String>,
    /// Seconds after which a retry makes sense (`Retry-After`), for transient refusals.
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ApiError {
    /// A general constructor.
    pub fn new(
        status: StatusCode,
        issue: IssueType,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            issue,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 503: shed under overload; retry in a second.
    pub fn overloaded(shed: &super::admission::Shed) -> Self {
        let message = match shed {
            super::admission::Shed::Busy => {
                "the gateway is at capacity; nothing was done, retry shortly"
            }
            super::admission::Shed::Recording => {
                "the gateway's transaction log is behind; nothing was done, retry shortly"
            }
        };
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            "OVERLOADED",
            message,
        )
        .retry_after(1)
    }

    /// Tells the client when to try again (`Retry-After`, seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Names the field at fault.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: an invalid value in a named field.
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Value, code, message).at(field)
    }

    /// 400: a required field is missing.
    pub fn required(field: impl Into<String>) -> Self {
        let field = field.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            IssueType::Required,
            "REQUIRED_FIELD_MISSING",
            format!("required field `{field}` is missing"),
        )
        .at(field)
    }

    /// 400: the message as a whole cannot be read.
    pub fn malformed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, IssueType::Invalid, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, IssueType::NotFound, code, message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            IssueType::Login,
            "UNAUTHORIZED",
            message,
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "FORBIDDEN",
            message,
        )
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, IssueType::Conflict, code, message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooCostly,
            "PAYLOAD_TOO_LARGE",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 400: a JSON body with more structure than any request needs, or a NUL in a string,
    /// refused before parsing.
    pub fn json_too_complex(e: crate::codec::json::JsonLimitError, field: &str) -> Self {
        let issue = match e {
            crate::codec::json::JsonLimitError::Nul { .. } => IssueType::Invalid,
            _ => IssueType::TooCostly,
        };
        Self::new(StatusCode::BAD_REQUEST, issue, e.code(), e.to_string()).at(field.to_string())
    }

    /// Checks a JSON body's structure against the default limits before it is parsed.
    pub fn check_json(body: &[u8], field: &str) -> Result<(), Self> {
        crate::codec::json::check(body, &crate::codec::json::JsonLimits::default())
            .map_err(|e| Self::json_too_complex(e, field))
    }

    /// 429: the client is over its request rate; it may try again after `wait`.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            IssueType::Throttled,
            "RATE_LIMITED",
            format!(
                "too many requests from this client; retry after {} ms",
                wait.as_millis().max(1)
            ),
        )
    }

    /// 403: a SOAP message whose WS-Security signature is missing or does not verify.
    pub fn signature(e: &crate::codec::xml::dsig::VerifyError) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            e.code(),
            format!("the message signature is not accepted: {e}"),
        )
        .at("Envelope/Header/wsse:Security")
    }

    /// 500: logs the cause with the request id and returns a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueType::Exception,
            "INTERNAL_ERROR",
            "internal error; quote the request id to support",
        )
    }

    /// Renders for a protocol; the response carries an [`ErrorInfo`] extension for the log.
    pub fn render(&self, protocol: Protocol, request_id: &str) -> HttpResponse {
        let mut res = self.render_body(protocol, request_id);
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(secs),
            );
        }
        res.extensions_mut().insert(ErrorInfo {
            status: self.status,
            code: self.code,
        });
        res
    }

    fn render_body(&self, protocol: Protocol, request_id: &str) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        match protocol {
            Protocol::Fhir => {
                let body = OperationOutcome::error(
                    self.issue,
                    self.code,
                    &self.message,
                    self.field.as_deref(),
                    request_id,
                );
                builder
                    .content_type(FHIR_JSON)
                    .body(serde_json::to_vec(&body).unwrap_or_default())
            }
            Protocol::Soap(version) => {
                let side = if self.status.is_server_error() {
                    FaultSide::Receiver
                } else {
                    FaultSide::Sender
                };
                let body = soap::fault(
                    version,
                    &Fault {
                        side,
                        code: self.code,
                        message: &self.message,
                        field: self.field.as_deref(),
                        request_id,
                    },
                );
                // SOAP 1.1 over HTTP answers every fault with 500; 1.2 keeps 4xx for senders.
                // What HTTP refuses before any SOAP is read (credentials, a method or path
                // not served, a body too large or too slow) keeps its status.
                let http = matches!(self.status.as_u16(), 401 | 405 | 408 | 413)
                    || self.code == "NO_SUCH_ROUTE";
                let status = match version {
                    SoapVersion::V11 if !http => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => self.status,
                };
                HttpResponse::build(status)
                    .content_type(version.content_type())
                    .body(body)
            }
            Protocol::Page => {
                let esc = crate::codec::xml::dom::escape_text;
                let field = self.field.as_deref().map_or(String::new(), |f| {
                    format!(", field <code>{}</code>", esc(f))
                });
                builder
                    .content_type("text/html; charset=utf-8")
                    .insert_header(("content-security-policy", "default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'"))
                    .insert_header(("cache-control", "no-store"))
                    .body(format!(
                        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{status} · medgate</title><link rel="stylesheet" href="/admin/assets/dashboard.css"></head><body><header><b>medgate</b><nav><a href="/admin">Back to the dashboard</a></nav></header><main><h1>{status}</h1><p class="error">{message}</p><p>Code <code>{code}</code>{field}; request <code>{rid}</code>.</p></main></body></html>"#,
                        status = esc(self.status.canonical_reason().unwrap_or("Error")),
                        message = esc(&self.message),
                        code = self.code,
                        rid = esc(request_id),
                    ))
            }
            Protocol::Api | Protocol::Open => builder.json(json!({
                "error": self.code,
                "message": self.message,
                "field": self.field,
                "request_id": request_id,
            })),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let ctx = current().unwrap_or(RequestContext {
            request_id: String::new(),
            protocol: Protocol::Api,
        });
        self.render(ctx.protocol, &ctx.request_id)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::storage(&e)
    }
}

impl ApiError {
    /// A storage failure: a database that cannot be used right now is a 503 the client may
    /// retry (nothing was written); anything else is an internal error.
    pub fn storage(e: &StoreError) -> Self {
        if e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "DATABASE_UNAVAILABLE",
                "the gateway's database is unavailable right now; nothing was changed, retry later",
            )
            .retry_after(5)
        } else {
            ApiError::internal(e)
        }
    }
}

/// The class and code of an error answer, attached to its response.
#[derive(Debug, Clone, Copy)]
pub struct ErrorInfo {
    /// The status the error stands for (a SOAP 1.1 fault is sent as 500 whatever it is).
    pub status: StatusCode,
    /// Machine code.
    pub code: &'static str,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Store(s) => ApiError::storage(&s),
            ScheduleError::UnknownOrganization(_) => {
                ApiError::not_found("UNKNOWN_ORGANIZATION", e.to_string()).at("organization")
            }
            ScheduleError::UnknownPractitioner { .. } => {
                ApiError::not_found("UNKNOWN_DOCTOR", e.to_string()).at("practitioner")
            }
        }
    }
}
