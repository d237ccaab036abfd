//! Document routes: FHIR `DocumentReference` intake and status for clinics, the registry's
//! callback and file endpoints, and the operator's document API.

use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::{Access, Org, Route};
use super::error::current;
use super::middleware::Operation;
use super::query::{count, organization};
use super::{ApiError, ApiResult, AppState, Principal, Protocol};
use crate::auth::scopes::{DOCUMENTS_READ, DOCUMENTS_RERUN, DOCUMENTS_SUBMIT, REMD_CALLBACK};
use crate::codec::fhir::document::{document_reference, read_submission, ReadError};
use crate::codec::fhir::{IssueType, FHIR_JSON};
use crate::codec::remd::{Addressing, RegisterResult, NS_CALLBACK, NS_SERVICE};
use crate::codec::soap::{self, SoapVersion};
use crate::codec::xml::{dom, dsig};
use crate::model::document::{Document, DocumentStatus, Submission};
use crate::model::remd::ErrorClass;
use crate::model::time::from_ms;
use crate::route;
use crate::services::documents::{DocumentError, DocumentFilter, Field, Rerun};
use crate::services::Caller;

/// The operations of the SOAP document service and who may call them.
pub const SOAP_OPERATIONS: &[(&str, &str, Org)] = &[
    ("SubmitDocument", DOCUMENTS_SUBMIT, Org::Named),
    ("GetDocumentStatus", DOCUMENTS_READ, Org::Records),
];

/// The document routes (FHIR, SOAP, the registry's, the operators'), with who may call them.
pub const ROUTES: &[Route] = &[
    route!(POST "/fhir" "/DocumentReference" => submit_fhir, Access::Scope(DOCUMENTS_SUBMIT, Org::Named)),
    route!(GET "/fhir" "/DocumentReference/{id}" => read_fhir, Access::Scope(DOCUMENTS_READ, Org::Records)),
    route!(POST "/soap" "/documents" => soap_documents, Access::Soap(SOAP_OPERATIONS)),
    route!(POST "/soap" "/remd/callback" => remd_callback, Access::Scope(REMD_CALLBACK, Org::Registry)),
    route!(POST "/soap" "/remd/provider" => remd_provider, Access::Scope(REMD_CALLBACK, Org::Registry)),
    route!(GET "/api/admin" "/documents" => admin_list, Access::Scope(DOCUMENTS_READ, Org::Records)),
    route!(POST "/api/admin" "/documents/rerun" => admin_rerun_set, Access::Scope(DOCUMENTS_RERUN, Org::Records)),
    route!(GET "/api/admin" "/documents/{id}" => admin_show, Access::Scope(DOCUMENTS_READ, Org::Records)),
    route!(POST "/api/admin" "/documents/{id}/rerun" => admin_rerun, Access::Scope(DOCUMENTS_RERUN, Org::Records)),
];

fn fhir_path(field: Field) -> &'static str {
    match field {
        Field::LocalUid => "DocumentReference.masterIdentifier.value",
        Field::Kind => "DocumentReference.type.coding[0]",
        Field::Organization => "DocumentReference.custodian.identifier.value",
        Field::Patient => "DocumentReference.subject.identifier.value",
        Field::Author => "DocumentReference.author[0].identifier.value",
        Field::Content => "DocumentReference.content[0].attachment.data",
        Field::OrgSignature => "DocumentReference.content.where(attachment.title='organization')",
        Field::DoctorSignature => "DocumentReference.content.where(attachment.title='doctor')",
    }
}

fn soap_path(field: Field) -> &'static str {
    match field {
        Field::LocalUid => "SubmitDocument/LocalUid",
        Field::Kind => "SubmitDocument/Kind",
        Field::Organization => "SubmitDocument/Organization",
        Field::Patient => "SubmitDocument/PatientSnils",
        Field::Author => "SubmitDocument/AuthorSnils",
        Field::Content => "SubmitDocument/Document",
        Field::OrgSignature => "SubmitDocument/OrganizationSignature",
        Field::DoctorSignature => "SubmitDocument/DoctorSignature",
    }
}

/// Namespace of the gateway's document service for SOAP-speaking MIS.
pub const DOCUMENTS_NS: &str = "urn:medgate:documents:v1";

/// The SOAP document service.
pub const DOCUMENTS: super::soap::Service = super::soap::Service {
    operations: SOAP_OPERATIONS,
    namespace: DOCUMENTS_NS,
    action_prefix: "urn:medgate:documents:v1/",
    log_name: "documents",
};

pub(super) fn to_api(e: DocumentError) -> ApiError {
    to_api_with(e, fhir_path)
}

fn to_api_with(e: DocumentError, path_of: fn(Field) -> &'static str) -> ApiError {
    match e {
        DocumentError::Invalid {
            code,
            field,
            path,
            message,
        } => {
            let at = match path {
                Some(p) => format!("{} ({p})", path_of(field)),
                None => path_of(field).to_string(),
            };
            let status = if code == "METADATA_MISMATCH"
                || code.starts_with("CDA_")
                || code.starts_with("INVALID_DICTIONARY")
                || code.starts_with("INVALID_ELEMENT")
            {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, IssueType::Invalid, code, message).at(at)
        }
        e @ DocumentError::Forbidden(_) => ApiError::forbidden(e.to_string()),
        DocumentError::NotFound(uid) => ApiError::not_found(
            "DOCUMENT_NOT_FOUND",
            format!("no document with local UID {uid}"),
        )
        .at(path_of(Field::LocalUid)),
        e @ DocumentError::NotRerunnable(_) => ApiError::conflict("NOT_RERUNNABLE", e.to_string()),
        DocumentError::Duplicate(uid) => ApiError::new(
            StatusCode::CONFLICT,
            IssueType::Duplicate,
            "NOT_UNIQUE_PROVIDED_ID",
            format!("a different document was already accepted with local UID {uid}"),
        )
        .at("DocumentReference.masterIdentifier.value"),
        DocumentError::NotConfigured => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::NotSupported,
            "REGISTRATION_NOT_CONFIGURED",
            "document registration is not configured on this gateway",
        ),
        DocumentError::Store(e) => ApiError::from(e),
        DocumentError::Signing(crate::sign::SignError::Remote(e)) => {
            tracing::warn!(error = %e, "signing service unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueType::Transient,
                "SIGNER_UNAVAILABLE",
                "the signing service holding this organization's keys is unavailable; nothing was stored, retry later",
            )
        }
        DocumentError::Signing(e) => ApiError::internal(format!("gateway signing: {e}")),
    }
}

async fn submit_fhir(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> ApiResult<HttpResponse> {
    req.extensions_mut()
        .insert(Operation("fhir.DocumentReference.create".into()));
    let submission = read_submission(&body).map_err(|e| match e {
        ReadError::Missing(path) => ApiError::required(path),
        ReadError::Malformed { path, message } => ApiError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "INVALID_JSON",
            message,
        )
        .at(path),
        ReadError::Invalid {
            code,
            path,
            message,
        } => ApiError::invalid(code, path, message),
    })?;
    let (doc, new) = state
        .documents
        .submit(&principal, submission)
        .await
        .map_err(to_api)?;
    let base = super::fhir::base_url(&state, &req);
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status)
        .content_type(FHIR_JSON)
        .insert_header(("location", format!("{base}/DocumentReference/{}", doc.id)))
        .body(document_reference(&doc, &base).to_string()))
}

async fn read_fhir(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let doc = state
        .documents
        .document(Caller::of(&principal), &id)
        .await
        .map_err(|e| to_api_with(e, |_| "DocumentReference.id"))?;
    let base = super::fhir::base_url(&state, &req);
    Ok(HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(document_reference(&doc, &base).to_string()))
}

fn soap12_fault(err: &ApiError) -> HttpResponse {
    let rid = current().map(|c| c.request_id).unwrap_or_default();
    err.render(Protocol::Soap(SoapVersion::V12), &rid)
}

fn soap12_reply(relates_to: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(SoapVersion::V12.content_type())
        .body(Addressing::reply(relates_to, "medgate").envelope(body))
}

/// Parses the registry's SOAP 1.2 message, expecting `operation`.
fn registry_request(
    state: &AppState,
    body: &[u8],
    operation: &str,
) -> Result<soap::SoapRequest, Box<HttpResponse>> {
    // The budget of every SOAP request: under the default one a 2 MB envelope of 100,000
    // elements took some 50 MB while parsed.
    let limits = super::soap::request_limits(state);
    let parsed = soap::parse_request(body, &limits).map_err(|e| {
        Box::new(soap12_fault(&ApiError::malformed(
            "MALFORMED_XML",
            e.to_string(),
        )))
    })?;
    if parsed.operation.name != operation {
        return Err(Box::new(soap12_fault(&ApiError::invalid(
            "UNKNOWN_OPERATION",
            parsed.operation.name.clone(),
            format!("expected {operation}"),
        ))));
    }
    Ok(parsed)
}

async fn remd_callback(
    state: Data<AppState>,
    _principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    req.extensions_mut()
        .insert(Operation("remd.registerDocumentResult".into()));
    // With the registry's certificates configured, only its signed verdicts count.
    if !state.callback_trust.is_empty() {
        if let Err(e) = dsig::verify_envelope_trusted(
            &body,
            state.callback_trust.as_slice(),
            &super::soap::request_limits(&state),
        ) {
            tracing::warn!(code = e.code(), error = %e, "registry callback refused");
            return soap12_fault(&ApiError::signature(&e));
        }
    }
    let parsed = match registry_request(&state, &body, "registerDocumentResult") {
        Ok(p) if p.operation.ns == NS_CALLBACK => p,
        Ok(p) => {
            return soap12_fault(&ApiError::invalid(
                "WRONG_NAMESPACE",
                "registerDocumentResult",
                format!(
                    "expected namespace {NS_CALLBACK}, found {:?}",
                    p.operation.ns
                ),
            ))
        }
        Err(fault) => return *fault,
    };
    let result = match RegisterResult::from_element(&parsed.operation) {
        Ok(r) => r,
        Err(e) => {
            return soap12_fault(&ApiError::invalid(
                "INVALID_RESULT",
                e.field.clone(),
                e.to_string(),
            ))
        }
    };
    let addressing = Addressing::from_header(parsed.header.as_ref());
    match state.documents.apply_result(&result).await {
        Ok(_) => soap12_reply(
            &addressing.message_id,
            &format!(
                r#"<registerDocumentResultResponse xmlns="{NS_CALLBACK}"><status>accepted</status></registerDocumentResultResponse>"#
            ),
        ),
        Err(e) => soap12_fault(&to_api(e)),
    }
}

async fn remd_provider(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    req.extensions_mut()
        .insert(Operation("remd.getDocumentFile".into()));
    let parsed = match registry_request(&state, &body, "getDocumentFileRequest") {
        Ok(p) => p,
        Err(fault) => return *fault,
    };
    let Some(uid) = parsed.operation.child_text("localUid") else {
        return soap12_fault(&ApiError::required("localUid"));
    };
    let doc = match state
        .documents
        .registry_file(Caller::of(&principal), uid)
        .await
    {
        Ok(d) => d,
        Err(e) => return soap12_fault(&to_api_with(e, |_| "localUid")),
    };
    let addressing = Addressing::from_header(parsed.header.as_ref());
    soap12_reply(
        &addressing.message_id,
        &format!(
            r#"<getDocumentFileResponse xmlns="{NS_SERVICE}"><localUid>{}</localUid><contentType>{}</contentType><content>{}</content><digest algorithm="gostr34112012-256">{}</digest><digest algorithm="sha256">{}</digest></getDocumentFileResponse>"#,
            dom::escape_text(&doc.id),
            dom::escape_text(&doc.content_type),
            base64::engine::general_purpose::STANDARD.encode(&doc.content),
            doc.streebog256,
            doc.sha256
        ),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFilter {
    status: Option<String>,
    org: Option<String>,
    kind: Option<String>,
    error_class: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl AdminFilter {
    /// The filter, each value checked and named.
    fn parse(&self) -> ApiResult<DocumentFilter> {
        Ok(DocumentFilter {
            status: self
                .status
                .as_deref()
                .map(|s| {
                    DocumentStatus::parse(s).ok_or_else(|| {
                        ApiError::invalid(
                            "INVALID_STATUS",
                            "status",
                            "`status` must be queued, sent, registered, rejected or dead-lettered",
                        )
                    })
                })
                .transpose()?,
            org: self
                .org
                .as_deref()
                .map(|o| organization("org", o))
                .transpose()?,
            orgs: None,
            kind_code: self.kind.clone(),
            error_class: self
                .error_class
                .as_deref()
                .map(|c| {
                    ErrorClass::parse(c).ok_or_else(|| {
                        ApiError::invalid(
                            "INVALID_ERROR_CLASS",
                            "error_class",
                            "`error_class` must be retryable, data, gateway or unknown",
                        )
                    })
                })
                .transpose()?,
            after_id: self.cursor.clone(),
        })
    }

    /// The limit, clamped to 1..=1000 (a filtered rerun takes what it can).
    fn limit_clamped(&self, default: u32) -> u32 {
        self.limit
            .as_deref()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .unwrap_or(default)
            .clamp(1, 1000)
    }

    fn limit(&self, default: u32) -> ApiResult<u32> {
        self.limit
            .as_deref()
            .map_or(Ok(default), |l| count("limit", l, 1000))
    }
}

fn summary(d: &Document) -> Value {
    json!({
        "id": d.id,
        "status": d.status.as_str(),
        "organization": d.org.as_str(),
        "kind": {"code": d.kind_code, "version": d.kind_version},
        "emdr_id": d.emdr_id,
        "registered_at": d.registered_at.map(|t| from_ms(t).to_rfc3339()),
        "error": d.error_class.map(|c| json!({"class": c.as_str(), "codes": d.error_codes, "message": d.error_message, "to_be_fixed_by": c.who_fixes()})),
        "signed_by_gateway": d.signed_by_gateway,
        "digests": {"sha256": d.sha256, "gost3411_2012_256": d.streebog256},
        "submitted_by": d.submitted_by,
        "created_at": from_ms(d.created_at).to_rfc3339(),
        "updated_at": from_ms(d.updated_at).to_rfc3339(),
    })
}

pub(super) fn admin_error(e: DocumentError) -> ApiError {
    to_api_with(e, |_| "id")
}

async fn admin_list(
    state: Data<AppState>,
    principal: Principal,
    q: Result<Query<AdminFilter>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(f) = q.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let limit = f.limit(100)?;
    let items = state
        .documents
        .documents(Caller::of(&principal), &f.parse()?, limit)
        .await
        .map_err(admin_error)?;
    let next_cursor = (items.len() as u32 == limit)
        .then(|| items.last().map(|d| d.id.clone()))
        .flatten();
    let totals = state
        .documents
        .counts(Caller::of(&principal))
        .await
        .map_err(admin_error)?;
    Ok(HttpResponse::Ok().json(json!({
        "items": items.iter().map(summary).collect::<Vec<_>>(),
        "count": items.len(),
        "next_cursor": next_cursor,
        "totals": totals.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    })))
}

async fn admin_show(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    let doc = state
        .documents
        .document(Caller::of(&principal), &id)
        .await
        .map_err(admin_error)?;
    let (events, deliveries) = state
        .documents
        .history(Caller::of(&principal), &id)
        .await
        .map_err(admin_error)?;
    let mut v = summary(&doc);
    v["history"] = json!(events
        .iter()
        .map(|e| json!({"at": from_ms(e.at).to_rfc3339(), "status": e.status, "detail": e.detail}))
        .collect::<Vec<_>>());
    v["deliveries"] = json!(deliveries);
    Ok(HttpResponse::Ok().json(v))
}

/// Reruns one document: 202 when this request queued it, 409 when another rerun already
/// did or the document is not rejected or dead-lettered.
async fn admin_rerun(
    state: Data<AppState>,
    principal: Principal,
    id: Path<String>,
) -> ApiResult<HttpResponse> {
    match state
        .documents
        .rerun(Caller::of(&principal), &id)
        .await
        .map_err(admin_error)?
    {
        Rerun::Queued => Ok(HttpResponse::Accepted()
            .json(json!({"id": *id, "status": "queued", "rerun_by": principal.id}))),
        Rerun::AlreadyQueued => Err(ApiError::conflict(
            "ALREADY_QUEUED",
            format!("document {id} is already queued for registration; nothing more was queued"),
        )),
    }
}

async fn admin_rerun_set(
    state: Data<AppState>,
    principal: Principal,
    q: Result<Query<AdminFilter>, actix_web::Error>,
) -> ApiResult<HttpResponse> {
    let Query(f) = q.map_err(|e| ApiError::malformed("INVALID_QUERY", e.to_string()))?;
    let filter = f.parse()?;
    if filter.status.is_none() {
        return Err(ApiError::invalid(
            "INVALID_STATUS",
            "status",
            "a filtered rerun needs status=rejected or status=dead-lettered",
        ));
    }
    let ids = state
        .documents
        .rerun_matching(Caller::of(&principal), &filter, f.limit_clamped(1000))
        .await
        .map_err(|e| match e {
            DocumentError::NotRerunnable(_) => ApiError::invalid(
                "INVALID_STATUS",
                "status",
                "a filtered rerun needs status=rejected or status=dead-lettered",
            ),
            other => admin_error(other),
        })?;
    Ok(HttpResponse::Accepted().json(json!({"requeued": ids.len(), "ids": ids})))
}

async fn soap_documents(
    state: Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let parsed = match super::soap::accept(&state, &req, &body, &DOCUMENTS) {
        Ok(p) => p,
        Err(f) => return *f,
    };
    let op = &parsed.operation;
    let result = match op.name.as_str() {
        "SubmitDocument" => soap_submit(&state, &principal, op).await,
        "GetDocumentStatus" => soap_status(&state, &principal, op).await,
        other => Err(super::soap::unknown_operation(other)),
    };
    super::soap::answer(parsed.version, result)
}

fn soap_text(op: &dom::Element, name: &str) -> ApiResult<String> {
    op.child_text(name)
        .map(str::to_string)
        .ok_or_else(|| ApiError::required(format!("{}/{name}", op.name)))
}

fn soap_base64(op: &dom::Element, name: &str) -> ApiResult<Option<Vec<u8>>> {
    match op.child_text(name) {
        None => Ok(None),
        Some(t) => {
            let compact: String = t.split_ascii_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map(Some)
                .map_err(|e| {
                    ApiError::invalid(
                        "INVALID_BASE64",
                        format!("{}/{name}", op.name),
                        format!("not base64: {e}"),
                    )
                })
        }
    }
}

async fn soap_submit(
    state: &AppState,
    principal: &Principal,
    op: &dom::Element,
) -> ApiResult<String> {
    let kind = op
        .child("Kind")
        .ok_or_else(|| ApiError::required("SubmitDocument/Kind"))?;
    let content = soap_base64(op, "Document")?
        .ok_or_else(|| ApiError::required("SubmitDocument/Document"))?;
    let submission = Submission {
        local_uid: soap_text(op, "LocalUid")?,
        kind_code: kind
            .attr("code")
            .map(str::to_string)
            .ok_or_else(|| ApiError::required("SubmitDocument/Kind/@code"))?,
        kind_version: kind
            .attr("version")
            .map(str::to_string)
            .ok_or_else(|| ApiError::required("SubmitDocument/Kind/@version"))?,
        org_oid: soap_text(op, "Organization")?,
        patient_snils: soap_text(op, "PatientSnils")?,
        author_snils: soap_text(op, "AuthorSnils")?,
        content_type: op
            .child("Document")
            .and_then(|d| d.attr("contentType"))
            .unwrap_or("application/x-hl7-cda+xml")
            .to_string(),
        content,
        org_signature: soap_base64(op, "OrganizationSignature")?,
        doctor_signature: soap_base64(op, "DoctorSignature")?,
    };
    let (doc, new) = state
        .documents
        .submit(principal, submission)
        .await
        .map_err(|e| to_api_with(e, soap_path))?;
    Ok(format!(
        r#"<SubmitDocumentResponse xmlns="{DOCUMENTS_NS}"><LocalUid>{}</LocalUid><Status>{}</Status><Replay>{}</Replay><Sha256>{}</Sha256><Gost3411Digest>{}</Gost3411Digest></SubmitDocumentResponse>"#,
        doc.id,
        doc.status.as_str(),
        !new,
        doc.sha256,
        doc.streebog256
    ))
}

async fn soap_status(
    state: &AppState,
    principal: &Principal,
    op: &dom::Element,
) -> ApiResult<String> {
    let uid = soap_text(op, "LocalUid")?;
    let doc = state
        .documents
        .document(Caller::of(principal), &uid)
        .await
        .map_err(|e| to_api_with(e, |_| "GetDocumentStatus/LocalUid"))?;
    let opt = |name: &str, v: &Option<String>| {
        v.as_ref()
            .map(|x| format!("<{name}>{}</{name}>", dom::escape_text(x)))
            .unwrap_or_default()
    };
    Ok(format!(
        r#"<GetDocumentStatusResponse xmlns="{DOCUMENTS_NS}"><LocalUid>{}</LocalUid><Status>{}</Status>{}{}{}{}</GetDocumentStatusResponse>"#,
        doc.id,
        doc.status.as_str(),
        opt("EmdrId", &doc.emdr_id),
        opt(
            "ErrorClass",
            &doc.error_class.map(|c| c.as_str().to_string())
        ),
        opt("ErrorCodes", &doc.error_codes),
        opt("ErrorMessage", &doc.error_message),
    ))
}
