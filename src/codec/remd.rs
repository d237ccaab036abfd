//! Messages of the registry of electronic medical documents (REMD-style), SOAP 1.2 with
//! WS-Addressing. Both the gateway's adapter and the in-repo simulator use these types, so
//! the two sides cannot drift apart; the contract is written down in `adapters/remd/`.

use base64::Engine;

use super::soap::{self, SoapVersion, NS_WSA};
use super::xml::dom::{escape_text as esc, Element};

/// Namespace of the registry service operations.
pub const NS_SERVICE: &str = "http://egisz.rosminzdrav.ru/iehr/emdr/service/";
/// Namespace of the registry's callbacks to the gateway.
pub const NS_CALLBACK: &str = "http://egisz.rosminzdrav.ru/iehr/emdr/callback/";
/// Namespace of the transport header carrying the client system id.
pub const NS_TRANSPORT: &str = "http://egisz.rosminzdrav.ru";

/// WS-Addressing header values of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    /// `wsa:Action`.
    pub action: String,
    /// `wsa:MessageID` (`urn:uuid:...`).
    pub message_id: String,
    /// `wsa:To`.
    pub to: String,
    /// `wsa:ReplyTo/wsa:Address`, where the asynchronous answer goes.
    pub reply_to: Option<String>,
    /// `wsa:RelatesTo`, on answers.
    pub relates_to: Option<String>,
    /// Client system id carried in the transport header.
    pub client_entity_id: String,
}

impl Addressing {
    /// The header blocks (WS-Addressing and transport header) as XML.
    pub fn header_xml(&self) -> String {
        let mut h = format!(
            r#"<wsa:Action xmlns:wsa="{NS_WSA}">{}</wsa:Action><wsa:MessageID xmlns:wsa="{NS_WSA}">{}</wsa:MessageID><wsa:To xmlns:wsa="{NS_WSA}">{}</wsa:To>"#,
            esc(&self.action),
            esc(&self.message_id),
            esc(&self.to)
        );
        if let Some(r) = &self.reply_to {
            h.push_str(&format!(
                r#"<wsa:ReplyTo xmlns:wsa="{NS_WSA}"><wsa:Address>{}</wsa:Address></wsa:ReplyTo>"#,
                esc(r)
            ));
        }
        if let Some(r) = &self.relates_to {
            h.push_str(&format!(
                r#"<wsa:RelatesTo xmlns:wsa="{NS_WSA}">{}</wsa:RelatesTo>"#,
                esc(r)
            ));
        }
        h.push_str(&format!(
            r#"<tr:transportHeader xmlns:tr="{NS_TRANSPORT}"><tr:authInfo><tr:clientEntityId>{}</tr:clientEntityId></tr:authInfo></tr:transportHeader>"#,
            esc(&self.client_entity_id)
        ));
        h
    }

    /// Headers of an answer to the message `relates_to`, sent by `sender`.
    pub fn reply(relates_to: &str, sender: &str) -> Addressing {
        Addressing {
            action: "response".into(),
            message_id: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
            to: String::new(),
            reply_to: None,
            relates_to: Some(relates_to.to_string()),
            client_entity_id: sender.to_string(),
        }
    }

    /// Reads the addressing headers of a parsed request.
    pub fn from_header(header: Option<&Element>) -> Addressing {
        let wsa = |name: &str| {
            header
                .and_then(|h| h.child_ns(NS_WSA, name))
                .map(|e| e.text.trim().to_string())
        };
        Addressing {
            action: wsa("Action").unwrap_or_default(),
            message_id: wsa("MessageID").unwrap_or_default(),
            to: wsa("To").unwrap_or_default(),
            reply_to: header
                .and_then(|h| h.child_ns(NS_WSA, "ReplyTo"))
                .and_then(|r| r.child_text("Address"))
                .map(str::to_string),
            relates_to: wsa("RelatesTo"),
            client_entity_id: header
                .and_then(|h| h.path(&["transportHeader", "authInfo", "clientEntityId"]))
                .map(|e| e.text.trim().to_string())
                .unwrap_or_default(),
        }
    }

    /// Wraps body XML in a SOAP 1.2 envelope with these headers.
    pub fn envelope(&self, body_xml: &str) -> String {
        soap::envelope(SoapVersion::V12, &self.header_xml(), body_xml)
    }
}

/// A detached signature of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRef {
    /// `organization` or `doctor`.
    pub role: String,
    /// SNILS of the signer (doctors) or empty (organization).
    pub signer_snils: String,
    /// DER of the detached CMS.
    pub cms: Vec<u8>,
    /// SHA-256 of the CMS, hex (the checksum the registry compares).
    pub checksum: String,
}

/// `registerDocument` request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDocument {
    /// Local document UID (unique forever).
    pub local_uid: String,
    /// Document kind code (book 1522).
    pub kind: String,
    /// Version of book 1522 the kind cites.
    pub kind_version: String,
    /// Organization OID.
    pub organization: String,
    /// Patient SNILS (digits).
    pub patient_snils: String,
    /// Document creation time, RFC 3339.
    pub creation_date_time: String,
    /// GOST R 34.11-2012 (256) digest of the document bytes, hex.
    pub content_digest: String,
    /// Where the registry fetches the document bytes (`getDocumentFile` endpoint).
    pub file_url: String,
    /// Organization and personal signatures.
    pub signatures: Vec<SignatureRef>,
    /// Local UIDs of earlier documents this one relates to.
    pub associations: Vec<String>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RemdFormatError {
    /// Field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn need<'a>(el: &'a Element, name: &str) -> Result<&'a str, RemdFormatError> {
    el.child_text(name).ok_or_else(|| RemdFormatError {
        field: format!("{}/{name}", el.name),
        message: "required".into(),
    })
}

impl RegisterDocument {
    /// The body element.
    pub fn to_xml(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut x = format!(
            r#"<registerDocumentRequest xmlns="{NS_SERVICE}"><localUid>{}</localUid><kind><code>{}</code><version>{}</version></kind><organization>{}</organization><patient><snils>{}</snils></patient><creationDateTime>{}</creationDateTime><contentDigest algorithm="gostr34112012-256">{}</contentDigest><fileUrl>{}</fileUrl><signatures>"#,
            esc(&self.local_uid),
            esc(&self.kind),
            esc(&self.kind_version),
            esc(&self.organization),
            esc(&self.patient_snils),
            esc(&self.creation_date_time),
            esc(&self.content_digest),
            esc(&self.file_url),
        );
        for s in &self.signatures {
            x.push_str(&format!(
                r#"<signature role="{}"><signerSnils>{}</signerSnils><data>{}</data><checksum>{}</checksum></signature>"#,
                esc(&s.role),
                esc(&s.signer_snils),
                b64.encode(&s.cms),
                esc(&s.checksum)
            ));
        }
        x.push_str("</signatures><associations>");
        for a in &self.associations {
            x.push_str(&format!(
                "<association><localUid>{}</localUid></association>",
                esc(a)
            ));
        }
        x.push_str("</associations></registerDocumentRequest>");
        x
    }

    /// Reads the body element.
    pub fn from_element(el: &Element) -> Result<RegisterDocument, RemdFormatError> {
        let kind = el.child("kind").ok_or_else(|| RemdFormatError {
            field: "kind".into(),
            message: "required".into(),
        })?;
        let mut signatures = Vec::new();
        for s in el
            .child("signatures")
            .map(|s| s.children_named("signature").collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let data = need(s, "data")?;
            let cms = base64::engine::general_purpose::STANDARD
                .decode(data.as_bytes())
                .map_err(|e| RemdFormatError {
                    field: "signature/data".into(),
                    message: format!("not base64: {e}"),
                })?;
            signatures.push(SignatureRef {
                role: s.attr("role").unwrap_or("").to_string(),
                signer_snils: s.child_text("signerSnils").unwrap_or("").to_string(),
                cms,
                checksum: need(s, "checksum")?.to_string(),
            });
        }
        Ok(RegisterDocument {
            local_uid: need(el, "localUid")?.to_string(),
            kind: need(kind, "code")?.to_string(),
            kind_version: need(kind, "version")?.to_string(),
            organization: need(el, "organization")?.to_string(),
            patient_snils: el
                .path(&["patient", "snils"])
                .map(|e| e.text.trim().to_string())
                .unwrap_or_default(),
            creation_date_time: need(el, "creationDateTime")?.to_string(),
            content_digest: need(el, "contentDigest")?.to_string(),
            file_url: need(el, "fileUrl")?.to_string(),
            signatures,
            associations: el
                .child("associations")
                .map(|a| {
                    a.children_named("association")
                        .filter_map(|x| x.child_text("localUid").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// An error item of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// Machine code, e.g. `DIGEST_MISMATCH`.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// Serializes error items.
pub fn errors_xml(errors: &[RegistryError]) -> String {
    let mut x = String::from("<errors>");
    for e in errors {
        x.push_str(&format!(
            "<item><code>{}</code><message>{}</message></item>",
            esc(&e.code),
            esc(&e.message)
        ));
    }
    x.push_str("</errors>");
    x
}

/// Reads error items under an element (`errors/item`).
pub fn read_errors(el: &Element) -> Vec<RegistryError> {
    el.child("errors")
        .map(|e| {
            e.children_named("item")
                .map(|i| RegistryError {
                    code: i.child_text("code").unwrap_or("UNKNOWN").to_string(),
                    message: i.child_text("message").unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A registered document as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryItem {
    /// Registry number, e.g. `16.62.23.09.000014523`.
    pub emdr_id: String,
    /// Local UID.
    pub local_uid: String,
    /// Registration time, RFC 3339.
    pub registration_date_time: String,
    /// GOST R 34.11-2012 (256) digest of the registered document, hex, when the registry
    /// tells it (`getRegistryItem` does): what a duplicate answer is checked against.
    pub content_digest: Option<String>,
}

impl RegistryItem {
    /// The `registryItem` element.
    pub fn to_xml(&self) -> String {
        let digest = self.content_digest.as_deref().map_or(String::new(), |d| {
            format!(
                r#"<contentDigest algorithm="gostr34112012-256">{}</contentDigest>"#,
                esc(d)
            )
        });
        format!(
            "<registryItem><emdrId>{}</emdrId><localUid>{}</localUid><registrationDateTime>{}</registrationDateTime>{digest}</registryItem>",
            esc(&self.emdr_id),
            esc(&self.local_uid),
            esc(&self.registration_date_time)
        )
    }

    /// Reads a `registryItem` child of `el`, if present.
    pub fn from_parent(el: &Element) -> Option<RegistryItem> {
        let i = el.child("registryItem")?;
        Some(RegistryItem {
            emdr_id: i.child_text("emdrId")?.to_string(),
            local_uid: i.child_text("localUid").unwrap_or("").to_string(),
            registration_date_time: i
                .child_text("registrationDateTime")
                .unwrap_or("")
                .to_string(),
            content_digest: i.child_text("contentDigest").map(str::to_string),
        })
    }
}

/// The asynchronous verdict `registerDocumentResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterResult {
    /// MessageID of the `registerDocument` request it answers.
    pub relates_to_message: String,
    /// `success` or `error`.
    pub status: String,
    /// The registered item on success.
    pub item: Option<RegistryItem>,
    /// Errors on failure.
    pub errors: Vec<RegistryError>,
}

impl RegisterResult {
    /// The body element.
    pub fn to_xml(&self) -> String {
        format!(
            r#"<registerDocumentResult xmlns="{NS_CALLBACK}"><relatesToMessage>{}</relatesToMessage><status>{}</status>{}{}</registerDocumentResult>"#,
            esc(&self.relates_to_message),
            esc(&self.status),
            self.item
                .as_ref()
                .map(RegistryItem::to_xml)
                .unwrap_or_default(),
            if self.errors.is_empty() {
                String::new()
            } else {
                errors_xml(&self.errors)
            }
        )
    }

    /// Reads the body element.
    pub fn from_element(el: &Element) -> Result<RegisterResult, RemdFormatError> {
        Ok(RegisterResult {
            relates_to_message: need(el, "relatesToMessage")?.to_string(),
            status: need(el, "status")?.to_string(),
            item: RegistryItem::from_parent(el),
            errors: read_errors(el),
        })
    }
}

/// SHA-256 of bytes as lower-case hex (signature checksums).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::xml::{dom, Limits};

    #[test]
    fn register_request_roundtrips() {
        let r = RegisterDocument {
            local_uid: "a1b2".into(),
            kind: "4".into(),
            kind_version: "5.12".into(),
            organization: "1.2.643.5.1.13.13.12.2.77.7001".into(),
            patient_snils: "11223344595".into(),
            creation_date_time: "2026-11-22T10:00:00Z".into(),
            content_digest: "00ff".into(),
            file_url: "http://127.0.0.1:1/soap/remd/provider".into(),
            signatures: vec![SignatureRef {
                role: "organization".into(),
                signer_snils: String::new(),
                cms: vec![1, 2, 3],
                checksum: sha256_hex(&[1, 2, 3]),
            }],
            associations: vec!["prev".into()],
        };
        let a = Addressing {
            action: "registerDocument".into(),
            message_id: "urn:uuid:1".into(),
            to: "http://x".into(),
            reply_to: Some("http://cb".into()),
            relates_to: None,
            client_entity_id: "gw".into(),
        };
        let env = a.envelope(&r.to_xml());
        let parsed = soap::parse_request(env.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(Addressing::from_header(parsed.header.as_ref()), a);
        assert_eq!(
            RegisterDocument::from_element(&parsed.operation).unwrap(),
            r
        );
        let res = RegisterResult {
            relates_to_message: "urn:uuid:1".into(),
            status: "error".into(),
            item: None,
            errors: vec![RegistryError {
                code: "DIGEST_MISMATCH".into(),
                message: "x < y".into(),
            }],
        };
        let el = dom::parse(res.to_xml().as_bytes(), &Limits::default()).unwrap();
        assert_eq!(RegisterResult::from_element(&el).unwrap(), res);
    }
}
