//! SOAP 1.1 / 1.2 envelopes: parsing requests, writing responses and Faults.

use super::xml::dom::{self, escape_text, Element, Limits, XmlError};

/// SOAP 1.1 envelope namespace.
pub const NS_SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const NS_SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing namespace.
pub const NS_WSA: &str = "http://www.w3.org/2005/08/addressing";
/// Namespace of the machine-readable fault detail the gateway adds.
pub const NS_FAULT: &str = "urn:medgate:fault";

/// SOAP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    /// SOAP 1.1 (`text/xml`, `SOAPAction` header).
    V11,
    /// SOAP 1.2 (`application/soap+xml`, `action` parameter).
    V12,
}

impl SoapVersion {
    /// Envelope namespace of this version.
    pub fn namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => NS_SOAP11,
            SoapVersion::V12 => NS_SOAP12,
        }
    }

    /// Content type of messages of this version.
    pub fn content_type(self) -> &'static str {
        match self {
            SoapVersion::V11 => "text/xml; charset=utf-8",
            SoapVersion::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// A parsed SOAP request.
#[derive(Debug, Clone)]
pub struct SoapRequest {
    /// Envelope version.
    pub version: SoapVersion,
    /// The `Header` element, if present.
    pub header: Option<Element>,
    /// The single element inside `Body`: the operation.
    pub operation: Element,
    /// WS-Addressing `Action`, if present.
    pub wsa_action: Option<String>,
    /// WS-Addressing `MessageID`, if present.
    pub wsa_message_id: Option<String>,
}

/// Why a SOAP message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The XML itself was refused.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Well-formed XML that is not a SOAP envelope.
    #[error("not a SOAP envelope: {0}")]
    NotEnvelope(String),
}

/// Parses an envelope and finds its operation element.
pub fn parse_request(input: &[u8], limits: &Limits) -> Result<SoapRequest, SoapError> {
    let root = dom::parse(input, limits)?;
    if root.name != "Envelope" {
        return Err(SoapError::NotEnvelope(format!(
            "root element is <{}>, expected <Envelope>",
            root.name
        )));
    }
    let version = match root.ns.as_str() {
        NS_SOAP11 => SoapVersion::V11,
        NS_SOAP12 => SoapVersion::V12,
        other => {
            return Err(SoapError::NotEnvelope(format!(
                "unknown envelope namespace {other:?}"
            )))
        }
    };
    let ns = version.namespace();
    let mut header = None;
    let mut body = None;
    for child in root.children {
        match (child.ns == ns, child.name.as_str()) {
            (true, "Header") if header.is_none() && body.is_none() => header = Some(child),
            (true, "Body") if body.is_none() => body = Some(child),
            _ => {
                return Err(SoapError::NotEnvelope(format!(
                    "unexpected element <{}> in Envelope",
                    child.name
                )))
            }
        }
    }
    let body = body.ok_or_else(|| SoapError::NotEnvelope("Body is missing".into()))?;
    let mut children = body.children.into_iter();
    let operation = children
        .next()
        .ok_or_else(|| SoapError::NotEnvelope("Body is empty".into()))?;
    if children.next().is_some() {
        return Err(SoapError::NotEnvelope(
            "Body must hold exactly one operation element".into(),
        ));
    }
    let wsa = |name: &str| {
        header
            .as_ref()
            .and_then(|h| h.child_ns(NS_WSA, name))
            .map(|e| e.text.trim().to_string())
    };
    let wsa_action = wsa("Action");
    let wsa_message_id = wsa("MessageID");
    Ok(SoapRequest {
        version,
        header,
        operation,
        wsa_action,
        wsa_message_id,
    })
}

/// Wraps body content (already serialized XML) in an envelope.
pub fn envelope(version: SoapVersion, header_xml: &str, body_xml: &str) -> String {
    let ns = version.namespace();
    let mut out = String::with_capacity(body_xml.len() + header_xml.len() + 160);
    out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    out.push_str(&format!(r#"<soap:Envelope xmlns:soap="{ns}">"#));
    if !header_xml.is_empty() {
        out.push_str("<soap:Header>");
        out.push_str(header_xml);
        out.push_str("</soap:Header>");
    }
    out.push_str("<soap:Body>");
    out.push_str(body_xml);
    out.push_str("</soap:Body></soap:Envelope>");
    out
}

/// Who caused a fault: the sender (bad request) or the receiver (our side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSide {
    /// The request was wrong (`Client` / `Sender`).
    Sender,
    /// The gateway or a system behind it failed (`Server` / `Receiver`).
    Receiver,
}

/// The content of a SOAP Fault.
#[derive(Debug, Clone)]
pub struct Fault<'a> {
    /// Sender or receiver.
    pub side: FaultSide,
    /// Stable machine code, e.g. `INVALID_POLICY_NUMBER`.
    pub code: &'a str,
    /// Human message.
    pub message: &'a str,
    /// The field at fault, if one.
    pub field: Option<&'a str>,
    /// Request id to quote to support.
    pub request_id: &'a str,
}

/// Serializes a Fault envelope of the given version.
pub fn fault(version: SoapVersion, f: &Fault<'_>) -> String {
    let detail = format!(
        r#"<mg:error xmlns:mg="{NS_FAULT}"><mg:code>{}</mg:code>{}<mg:message>{}</mg:message><mg:requestId>{}</mg:requestId></mg:error>"#,
        escape_text(f.code),
        f.field
            .map(|x| format!("<mg:field>{}</mg:field>", escape_text(x)))
            .unwrap_or_default(),
        escape_text(f.message),
        escape_text(f.request_id),
    );
    let body = match version {
        SoapVersion::V11 => format!(
            "<soap:Fault><faultcode>soap:{}</faultcode><faultstring>{}</faultstring><detail>{detail}</detail></soap:Fault>",
            match f.side {
                FaultSide::Sender => "Client",
                FaultSide::Receiver => "Server",
            },
            escape_text(f.message)
        ),
        SoapVersion::V12 => format!(
            r#"<soap:Fault><soap:Code><soap:Value>soap:{}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang="en">{}</soap:Text></soap:Reason><soap:Detail>{detail}</soap:Detail></soap:Fault>"#,
            match f.side {
                FaultSide::Sender => "Sender",
                FaultSide::Receiver => "Receiver",
            },
            escape_text(f.message)
        ),
    };
    envelope(version, "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_soap11_and_writes_fault() {
        let req = br#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="http://tempuri.org/"><soap:Header/><soap:Body><t:GetLPUList><t:IdDistrict>1</t:IdDistrict></t:GetLPUList></soap:Body></soap:Envelope>"#;
        let r = parse_request(req, &Limits::default()).unwrap();
        assert_eq!(r.version, SoapVersion::V11);
        assert_eq!(r.operation.name, "GetLPUList");
        assert_eq!(r.operation.child_text("IdDistrict"), Some("1"));
        let f = fault(
            SoapVersion::V11,
            &Fault {
                side: FaultSide::Sender,
                code: "X",
                message: "a < b",
                field: Some("f"),
                request_id: "r",
            },
        );
        let parsed = dom::parse(f.as_bytes(), &Limits::default()).unwrap();
        let fault_el = parsed.path(&["Body", "Fault"]).unwrap();
        assert_eq!(fault_el.child_text("faultstring"), Some("a < b"));
        assert_eq!(
            fault_el.path(&["detail", "error", "code"]).unwrap().text,
            "X"
        );
    }

    #[test]
    fn refuses_non_envelopes() {
        assert!(matches!(
            parse_request(b"<a/>", &Limits::default()),
            Err(SoapError::NotEnvelope(_))
        ));
        let empty = br#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>"#;
        assert!(matches!(
            parse_request(empty, &Limits::default()),
            Err(SoapError::NotEnvelope(_))
        ));
    }
}
