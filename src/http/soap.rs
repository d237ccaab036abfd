//! SOAP services under `/soap`: routes and what every published SOAP service shares
//! (bounded parsing, SOAPAction check, answers and Faults).

use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::error::current;
use super::middleware::Operation;
use super::{ApiError, AppState};
use crate::codec::soap::{self, SoapError, SoapRequest, SoapVersion};
use crate::codec::xml::Limits;

/// Target namespace of the hub service.
pub const HUB_NS: &str = "http://tempuri.org/";
/// Prefix of every hub SOAPAction.
pub const HUB_ACTION: &str = "http://tempuri.org/IHubService/";

fn soap_action(req: &HttpRequest, parsed: &SoapRequest) -> Option<String> {
    match parsed.version {
        SoapVersion::V11 => req
            .headers()
            .get("soapaction")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().trim_matches('"').to_string()),
        SoapVersion::V12 => req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| {
                ct.split(';')
                    .filter_map(|p| p.trim().strip_prefix("action="))
                    .map(|a| a.trim_matches('"').to_string())
                    .next()
            })
            .or_else(|| parsed.wsa_action.clone()),
    }
}

fn fault(version: SoapVersion, err: &ApiError) -> HttpResponse {
    let rid = current().map(|c| c.request_id).unwrap_or_default();
    err.render(super::Protocol::Soap(version), &rid)
}

fn xml_error(e: SoapError) -> ApiError {
    match e {
        SoapError::Xml(x) => ApiError::malformed("MALFORMED_XML", x.to_string()),
        SoapError::NotEnvelope(m) => ApiError::malformed("NOT_SOAP_ENVELOPE", m),
    }
}

/// A SOAP service the gateway publishes: its namespace, SOAPAction prefix, log name and the
/// scope of each operation.
pub struct Service {
    /// Operations with the scope each needs (checked again on the parsed operation, for a
    /// request whose SOAPAction did not name it before the body was read).
    pub operations: &'static [(&'static str, &'static str, super::access::Org)],
    /// Target namespace of the operation elements.
    pub namespace: &'static str,
    /// SOAPAction = prefix + operation name.
    pub action_prefix: &'static str,
    /// Prefix of the operation name in the transaction log, e.g. `hub`.
    pub log_name: &'static str,
}

/// The parse budget of every inbound SOAP request. Requests are small envelopes (a document
/// travels as one base64 text): a tight element and depth budget bounds the memory a hostile
/// one can take while parsed.
pub fn request_limits(state: &AppState) -> Limits {
    Limits {
        max_bytes: state.settings.http.max_body_bytes,
        max_depth: 32,
        max_elements: 20_000,
        ..Limits::default()
    }
}

/// Parses a request to `service`: bounded envelope, SOAPAction matching the operation,
/// operation in the service namespace. A refusal is the Fault to answer.
pub fn accept(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    service: &Service,
) -> Result<SoapRequest, Box<HttpResponse>> {
    let default_version = match super::error::current().map(|c| c.protocol) {
        Some(super::Protocol::Soap(v)) => v,
        _ => SoapVersion::V11,
    };
    let limits = request_limits(state);
    let parsed = soap::parse_request(body, &limits)
        .map_err(|e| Box::new(fault(default_version, &xml_error(e))))?;
    let version = parsed.version;
    let op = parsed.operation.name.clone();
    req.extensions_mut()
        .insert(Operation(format!("{}.{op}", service.log_name)));
    let expected = format!("{}{op}", service.action_prefix);
    match soap_action(req, &parsed) {
        Some(a) if a == expected => {}
        Some(a) => {
            return Err(Box::new(fault(
                version,
                &ApiError::invalid(
                    "SOAP_ACTION_MISMATCH",
                    "SOAPAction",
                    format!("SOAPAction {a:?} does not match the body operation {op}; expected {expected:?}"),
                ),
            )))
        }
        None => return Err(Box::new(fault(version, &ApiError::required("SOAPAction")))),
    }
    let scope = service
        .operations
        .iter()
        .find(|(name, _, _)| *name == op)
        .map(|(_, scope, _)| *scope);
    let client = req
        .extensions()
        .get::<std::sync::Arc<crate::auth::Client>>()
        .cloned();
    if let (Some(scope), Some(client)) = (scope, &client) {
        if !client.has_scope(scope) {
            let err =
                ApiError::forbidden(format!("client `{}` lacks the scope `{scope}`", client.id));
            return Err(Box::new(fault(version, &err)));
        }
    }
    // A client configured to sign has every SOAP request verified against its certificate.
    if let Some(cert) = client.as_ref().and_then(|c| c.message_certificate.as_ref()) {
        if let Err(e) = crate::codec::xml::dsig::verify_envelope_trusted(body, &[cert], &limits) {
            return Err(Box::new(fault(version, &ApiError::signature(&e))));
        }
    }
    if parsed.operation.ns != service.namespace {
        return Err(Box::new(fault(
            version,
            &ApiError::invalid(
                "WRONG_NAMESPACE",
                op.clone(),
                format!(
                    "operation element must be in namespace {}, found {:?}",
                    service.namespace, parsed.operation.ns
                ),
            ),
        )));
    }
    Ok(parsed)
}

/// The portal booking hub.
pub const HUB: Service = Service {
    operations: super::hub::OPERATIONS,
    namespace: HUB_NS,
    action_prefix: HUB_ACTION,
    log_name: "hub",
};

/// An answer envelope for an operation result, or a Fault.
pub fn answer(version: SoapVersion, result: Result<String, ApiError>) -> HttpResponse {
    match result {
        Ok(body_xml) => HttpResponse::Ok()
            .content_type(version.content_type())
            .body(soap::envelope(version, "", &body_xml)),
        Err(e) => fault(version, &e),
    }
}

/// The unknown-operation Fault.
pub fn unknown_operation(op: &str) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::BAD_REQUEST,
        crate::codec::fhir::IssueType::NotSupported,
        "UNKNOWN_OPERATION",
        format!("operation {op} is not offered by this service"),
    )
    .at(op.to_string())
}
