//! Documents as FHIR R4 `DocumentReference`: a submission read from one (the CDA and its
//! detached signatures as attachments), and a stored document's metadata, registration state
//! and the registry's answer written as one (not the bytes).

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{SNILS_SYSTEM, URI_SYSTEM};
use crate::model::document::{Document, DocumentStatus, Submission};
use crate::model::time::from_ms;

/// Code system of document kinds (Ministry reference book 1522).
pub const KIND_SYSTEM: &str = "urn:oid:1.2.643.5.1.13.13.11.1522";
/// Extension with the registration state.
pub const REGISTRATION_STATUS_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/registration-status";
/// Extension with the registry's last error.
pub const REGISTRATION_ERROR_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/registration-error";

/// The `DocumentReference` of a document; its attachment URL is under `base`.
pub fn document_reference(d: &Document, base: &str) -> Value {
    let mut identifiers =
        vec![json!({"system": URI_SYSTEM, "value": format!("urn:uuid:{}", d.id)})];
    if let Some(e) = &d.emdr_id {
        identifiers.push(json!({"system": "urn:medgate:remd:emdrId", "value": e}));
    }
    let mut v = json!({
        "resourceType": "DocumentReference",
        "id": d.id,
        "meta": {"lastUpdated": from_ms(d.updated_at).to_rfc3339()},
        "extension": [{
            "url": REGISTRATION_STATUS_EXTENSION,
            "valueCode": d.status.as_str()
        }],
        "masterIdentifier": {"system": URI_SYSTEM, "value": format!("urn:uuid:{}", d.id)},
        "identifier": identifiers,
        "status": "current",
        "docStatus": if d.status == DocumentStatus::Registered { "final" } else { "preliminary" },
        "type": {"coding": [{"system": KIND_SYSTEM, "version": d.kind_version, "code": d.kind_code}]},
        "subject": {"identifier": {"system": SNILS_SYSTEM, "value": d.patient.digits()}},
        "date": from_ms(d.created_at).to_rfc3339(),
        "author": [{"identifier": {"system": SNILS_SYSTEM, "value": d.author.digits()}}],
        "custodian": {"reference": format!("Organization/{}", d.org), "identifier": {"system": URI_SYSTEM, "value": format!("urn:oid:{}", d.org)}},
        "content": [{"attachment": {"contentType": d.content_type, "size": d.content.len(), "url": format!("{base}/DocumentReference/{}", d.id)}}],
    });
    if let (Some(class), Some(codes)) = (&d.error_class, &d.error_codes) {
        if let Some(a) = v["extension"].as_array_mut() {
            a.push(json!({"url": REGISTRATION_ERROR_EXTENSION, "extension": [
                {"url": "class", "valueCode": class.as_str()},
                {"url": "codes", "valueString": codes},
                {"url": "message", "valueString": d.error_message.clone().unwrap_or_default()}
            ]}));
        }
    }
    v
}

/// Why a `DocumentReference` could not be read; paths are FHIRPath-like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A required element is missing.
    #[error("required field `{0}` is missing")]
    Missing(String),
    /// The JSON does not have the resource's shape.
    #[error("{path}: {message}")]
    Malformed {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
    /// An element holds a value that cannot be.
    #[error("{path}: {message}")]
    Invalid {
        /// Machine code.
        code: &'static str,
        /// Where.
        path: String,
        /// What.
        message: String,
    },
}

#[derive(Deserialize)]
struct Identifier {
    value: Option<String>,
}
#[derive(Deserialize)]
struct Reference {
    identifier: Option<Identifier>,
}
#[derive(Deserialize)]
struct Coding {
    system: Option<String>,
    version: Option<String>,
    code: Option<String>,
}
#[derive(Deserialize)]
struct CodeableConcept {
    coding: Option<Vec<Coding>>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attachment {
    content_type: Option<String>,
    data: Option<String>,
    title: Option<String>,
}
#[derive(Deserialize)]
struct Content {
    attachment: Attachment,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentReferenceIn {
    resource_type: String,
    master_identifier: Option<Identifier>,
    #[serde(rename = "type")]
    kind: Option<CodeableConcept>,
    subject: Option<Reference>,
    author: Option<Vec<Reference>>,
    custodian: Option<Reference>,
    content: Option<Vec<Content>>,
}

fn missing(path: &str) -> ReadError {
    ReadError::Missing(path.to_string())
}

fn ident(r: Option<Reference>, path: &str) -> Result<String, ReadError> {
    r.and_then(|r| r.identifier)
        .and_then(|i| i.value)
        .map(|v| v.trim_start_matches("urn:oid:").to_string())
        .ok_or_else(|| missing(path))
}

/// Reads a submission from a `DocumentReference`: the document is the one attachment that
/// is not a signature; signatures are `application/pkcs7-signature` attachments titled
/// `organization` or `doctor`.
pub fn read_submission(body: &[u8]) -> Result<Submission, ReadError> {
    crate::codec::json::check(body, &crate::codec::json::JsonLimits::default()).map_err(|e| {
        ReadError::Invalid {
            code: e.code(),
            path: "DocumentReference".into(),
            message: e.to_string(),
        }
    })?;
    // The common case parses once without path tracking; a bad body is parsed again with
    // it, so the error names the element.
    let d: DocumentReferenceIn = match serde_json::from_slice(body) {
        Ok(d) => d,
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = e.path().to_string();
                ReadError::Malformed {
                    path: if path == "." {
                        "DocumentReference".to_string()
                    } else {
                        format!("DocumentReference.{path}")
                    },
                    message: e.inner().to_string(),
                }
            })?
        }
    };
    if d.resource_type != "DocumentReference" {
        return Err(ReadError::Invalid {
            code: "WRONG_RESOURCE_TYPE",
            path: "resourceType".into(),
            message: format!("expected DocumentReference, got {}", d.resource_type),
        });
    }
    let local_uid = d
        .master_identifier
        .and_then(|m| m.value)
        .ok_or_else(|| missing("DocumentReference.masterIdentifier.value"))?;
    let coding = d
        .kind
        .and_then(|k| k.coding)
        .and_then(|c| {
            c.into_iter()
                .find(|c| c.system.as_deref() == Some(KIND_SYSTEM))
        })
        .ok_or_else(|| {
            missing(
                "DocumentReference.type.coding.where(system='urn:oid:1.2.643.5.1.13.13.11.1522')",
            )
        })?;
    let kind_code = coding
        .code
        .ok_or_else(|| missing("DocumentReference.type.coding[0].code"))?;
    let kind_version = coding
        .version
        .ok_or_else(|| missing("DocumentReference.type.coding[0].version"))?;
    let patient_snils = ident(d.subject, "DocumentReference.subject.identifier.value")?;
    let author_snils = ident(
        d.author.and_then(|a| a.into_iter().next()),
        "DocumentReference.author[0].identifier.value",
    )?;
    let org_oid = ident(d.custodian, "DocumentReference.custodian.identifier.value")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut doc: Option<(Vec<u8>, String)> = None;
    let (mut org_signature, mut doctor_signature) = (None, None);
    for (i, c) in d.content.unwrap_or_default().into_iter().enumerate() {
        let path = format!("DocumentReference.content[{i}].attachment.data");
        let data = c.attachment.data.ok_or_else(|| missing(&path))?;
        let bytes = b64
            .decode(data.as_bytes())
            .map_err(|e| ReadError::Invalid {
                code: "INVALID_BASE64",
                path: path.clone(),
                message: format!("not base64: {e}"),
            })?;
        let ct = c.attachment.content_type.unwrap_or_default();
        if ct == "application/pkcs7-signature" {
            match c.attachment.title.as_deref() {
                Some("organization") => org_signature = Some(bytes),
                Some("doctor") => doctor_signature = Some(bytes),
                _ => {
                    return Err(ReadError::Invalid {
                        code: "UNKNOWN_SIGNATURE_ROLE",
                        path: format!("DocumentReference.content[{i}].attachment.title"),
                        message:
                            "a signature attachment's title must be `organization` or `doctor`"
                                .into(),
                    })
                }
            }
        } else if doc.is_none() {
            let ct = if ct.is_empty() {
                "application/xml".into()
            } else {
                ct
            };
            doc = Some((bytes, ct));
        } else {
            return Err(ReadError::Invalid {
                code: "TOO_MANY_DOCUMENTS",
                path: format!("DocumentReference.content[{i}]"),
                message: "exactly one document attachment is allowed".into(),
            });
        }
    }
    let (content, content_type) =
        doc.ok_or_else(|| missing("DocumentReference.content[0].attachment.data"))?;
    Ok(Submission {
        local_uid,
        kind_code,
        kind_version,
        org_oid,
        patient_snils,
        author_snils,
        content,
        content_type,
        org_signature,
        doctor_signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_names_what_is_missing_or_wrong() {
        let doc = |content: Value| {
            json!({"resourceType": "DocumentReference",
                "masterIdentifier": {"value": "urn:uuid:6f1c9a52-3d0e-4b8a-9b1e-2f5d7c8e9a01"},
                "type": {"coding": [{"system": KIND_SYSTEM, "version": "5.12", "code": "4"}]},
                "subject": {"identifier": {"value": "12345678964"}},
                "author": [{"identifier": {"value": "11223344595"}}],
                "custodian": {"identifier": {"value": "urn:oid:1.2.643.5.1.13.13.12.2.77.7001"}},
                "content": content})
            .to_string()
        };
        let ok = read_submission(
            doc(json!([{"attachment": {"data": "PGEvPg=="}},
                {"attachment": {"contentType": "application/pkcs7-signature", "title": "doctor", "data": "AAE="}}]))
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (
                ok.content.as_slice(),
                ok.content_type.as_str(),
                ok.org_oid.as_str()
            ),
            (
                &b"<a/>"[..],
                "application/xml",
                "1.2.643.5.1.13.13.12.2.77.7001"
            )
        );
        assert_eq!(
            (ok.org_signature, ok.doctor_signature),
            (None, Some(vec![0, 1]))
        );
        assert_eq!(
            read_submission(doc(json!([])).as_bytes()).unwrap_err(),
            missing("DocumentReference.content[0].attachment.data")
        );
        let bad = read_submission(doc(json!([{"attachment": {"data": "%%"}}])).as_bytes());
        assert!(matches!(
            bad,
            Err(ReadError::Invalid {
                code: "INVALID_BASE64",
                ..
            })
        ));
        let bad = read_submission(br#"{"resourceType": "DocumentReference", "content": 7}"#);
        assert!(
            matches!(bad, Err(ReadError::Malformed { ref path, .. }) if path == "DocumentReference.content"),
            "{bad:?}"
        );
    }
}
