//! Verification of inbound WS-Security signatures, as other stacks (WSS4J/CXF, .NET, xmlsec)
//! make them: the canonicalization of `SignedInfo` and each `Reference`'s transforms are
//! honoured (exclusive C14N with an `InclusiveNamespaces PrefixList`, Canonical XML 1.0,
//! enveloped-signature; no transforms means Canonical XML 1.0), every `Reference` must
//! verify and one of them must name the envelope's own `Body`.
//!
//! Defences against signature wrapping: one `Header`, one `Body`, one `wsse:Security`, one
//! `ds:Signature` in it with one `SignedInfo`; a referenced ID must be carried by exactly one
//! element (under any of the usual ID attributes); `SignedInfo` is canonicalized from the
//! very element whose structure was checked. Refusals say why ([`VerifyError`]).

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::x509::X509;

use super::super::c14n::{canonicalize, C14nError, Method, Selection, EXC_C14N};
use super::super::dom::{self, Element, Limits};
use super::{algorithm_of, b64, uris, DsigError, NS_DS, NS_WSSE, NS_WSU, X509V3};
use crate::codec::soap::{NS_SOAP11, NS_SOAP12};
use crate::sign::{self, Algorithm, DigestAlgorithm, SignError};

/// The enveloped-signature transform.
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// `KeyIdentifier` value type: the certificate's subject key identifier.
const SKI: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509SubjectKeyIdentifier";
/// `KeyIdentifier` value type: SHA-1 of the certificate DER.
const THUMBPRINT_SHA1: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#ThumbprintSHA1";
/// The `xml:` namespace (`xml:id`).
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Most `Reference`s in one `SignedInfo` (WSS4J signs the Body, a Timestamp and a few
/// headers).
const MAX_REFERENCES: usize = 32;
/// Attributes taken as element IDs by the stacks we meet: (namespace, local name).
const ID_ATTRIBUTES: [(&str, &str); 5] = [
    (NS_WSU, "Id"),
    ("", "Id"),
    ("", "ID"),
    ("", "id"),
    (NS_XML, "id"),
];

/// What a verified envelope was signed with.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// DER of the signer certificate.
    pub certificate_der: Vec<u8>,
}

/// Why an envelope's signature was refused. [`VerifyError::code`] is a stable machine code
/// for a SOAP Fault; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a SOAP envelope, or not well-formed.
    #[error("not a SOAP envelope: {0}")]
    NotSoap(String),
    /// No `wsse:Security` header or no `ds:Signature` in it.
    #[error("the message is not signed: {0}")]
    Unsigned(String),
    /// The signature elements are missing, repeated or unreadable; the message says which.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// An algorithm or form the gateway does not verify (named by its URI).
    #[error("unsupported algorithm or form: {0}")]
    UnsupportedAlgorithm(String),
    /// No `Reference` names the envelope's own `Body`.
    #[error("the signed element is not the envelope Body: {0}")]
    NotBody(String),
    /// A referenced ID is carried by more than one element (a signature-wrapping attempt).
    #[error("the ID {0:?} is carried by more than one element")]
    DuplicateId(String),
    /// The signer certificate is not one of the trusted certificates.
    #[error("the signer certificate is not trusted: {0}")]
    UntrustedCertificate(String),
    /// A referenced element changed after signing (named by its `Reference URI`).
    #[error("digest mismatch for {0}: the signed content was changed")]
    DigestMismatch(String),
    /// The `SignatureValue` does not verify over `SignedInfo` with the signer's key.
    #[error("the signature value does not verify over SignedInfo")]
    BadSignatureValue,
    /// The signed content cannot be canonicalized (for instance a relative namespace URI).
    #[error("cannot canonicalize the signed content: {0}")]
    Canonicalization(#[from] C14nError),
    /// The signer's key cannot be used (key type differs from the `SignatureMethod`, GOST
    /// unavailable, certificate unreadable).
    #[error("cannot use the signer key: {0}")]
    Key(SignError),
}

impl VerifyError {
    /// A stable machine code: `NOT_SOAP`, `UNSIGNED`, `MALFORMED_SIGNATURE`,
    /// `UNSUPPORTED_ALGORITHM`, `BODY_NOT_SIGNED`, `DUPLICATE_ID`, `UNTRUSTED_CERTIFICATE`,
    /// `DIGEST_MISMATCH`, `BAD_SIGNATURE_VALUE`, `CANONICALIZATION_FAILED`, `KEY_UNUSABLE`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::NotSoap(_) => "NOT_SOAP",
            VerifyError::Unsigned(_) => "UNSIGNED",
            VerifyError::Malformed(_) => "MALFORMED_SIGNATURE",
            VerifyError::UnsupportedAlgorithm(_) => "UNSUPPORTED_ALGORITHM",
            VerifyError::NotBody(_) => "BODY_NOT_SIGNED",
            VerifyError::DuplicateId(_) => "DUPLICATE_ID",
            VerifyError::UntrustedCertificate(_) => "UNTRUSTED_CERTIFICATE",
            VerifyError::DigestMismatch(_) => "DIGEST_MISMATCH",
            VerifyError::BadSignatureValue => "BAD_SIGNATURE_VALUE",
            VerifyError::Canonicalization(_) => "CANONICALIZATION_FAILED",
            VerifyError::Key(_) => "KEY_UNUSABLE",
        }
    }
}

impl From<VerifyError> for DsigError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Canonicalization(c) => DsigError::C14n(c),
            VerifyError::Key(k) => DsigError::Sign(k),
            VerifyError::DigestMismatch(_) | VerifyError::BadSignatureValue => {
                DsigError::Sign(SignError::Mismatch)
            }
            other => DsigError::Structure(other.to_string()),
        }
    }
}

/// Verifies a signed envelope made by [`super::sign_envelope`] or another stack, taking the
/// signer certificate the message carries (a `BinarySecurityToken`, `X509Certificate` or
/// `KeyIdentifier`) as is: the caller decides whether the returned certificate is trusted.
pub fn verify_envelope(xml: &[u8], limits: &Limits) -> Result<Verified, DsigError> {
    verify(xml, &Keys::Carried, limits).map_err(DsigError::from)
}

/// Verifies a signed envelope against trusted certificates (DER): the key must be one of
/// theirs, whether the message carries the certificate or names it (issuer and serial,
/// subject key identifier, SHA-1 thumbprint) or says nothing (each trusted certificate is
/// tried). Returns the trusted certificate that verified.
pub fn verify_envelope_trusted<C: AsRef<[u8]>>(
    xml: &[u8],
    trusted: &[C],
    limits: &Limits,
) -> Result<Verified, VerifyError> {
    let certs = trusted
        .iter()
        .map(|der| {
            X509::from_der(der.as_ref())
                .map(|cert| (der.as_ref().to_vec(), cert))
                .map_err(|e| {
                    VerifyError::Key(SignError::KeyMaterial(format!("trusted certificate: {e}")))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify(xml, &Keys::Trusted(certs), limits)
}

/// Where the verification key comes from.
enum Keys {
    /// The certificate the message carries, trusted by the caller afterwards.
    Carried,
    /// One of these certificates (DER and parsed).
    Trusted(Vec<(Vec<u8>, X509)>),
}

/// How the message identifies the signer certificate.
enum KeyRef {
    /// The certificate itself (DER).
    Certificate(Vec<u8>),
    /// `X509IssuerSerial`: the serial number in decimal.
    Serial(String),
    /// Subject key identifier.
    Ski(Vec<u8>),
    /// SHA-1 of the certificate DER.
    Thumbprint(Vec<u8>),
    /// No `KeyInfo`.
    Unnamed,
}

/// A `Reference` ready to check.
struct Reference<'a> {
    uri: &'a str,
    /// The ID attribute `(namespace, local name)` and value naming the element.
    id_attr: (&'static str, &'static str),
    id: &'a str,
    method: Method,
    prefixes: Vec<&'a str>,
    /// Leave out the signature (enveloped-signature over an ancestor of it).
    exclude_signature: bool,
    digest: DigestAlgorithm,
    expected: Vec<u8>,
}

fn children<'a>(el: &'a Element, ns: &str, name: &str) -> Vec<&'a Element> {
    el.children
        .iter()
        .filter(|c| c.ns == ns && c.name == name)
        .collect()
}

/// The one child `ns:name` of `el`.
fn only_child<'a>(el: &'a Element, ns: &str, name: &str) -> Result<&'a Element, VerifyError> {
    match children(el, ns, name).as_slice() {
        [one] => Ok(one),
        [] => Err(VerifyError::Malformed(format!("{} has no {name}", el.name))),
        more => Err(VerifyError::Malformed(format!(
            "{} has {} {name} elements",
            el.name,
            more.len()
        ))),
    }
}

fn algorithm_attr(el: &Element) -> Result<&str, VerifyError> {
    el.attr("Algorithm")
        .ok_or_else(|| VerifyError::Malformed(format!("{} lacks @Algorithm", el.name)))
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    b64()
        .decode(text.split_ascii_whitespace().collect::<String>())
        .map_err(|e| VerifyError::Malformed(format!("{what}: {e}")))
}

/// A canonicalization method URI and its `InclusiveNamespaces PrefixList` (exclusive only).
fn c14n_method(el: &Element) -> Result<Option<(Method, Vec<&str>)>, VerifyError> {
    let Some((method, _with_comments)) = Method::from_uri(algorithm_attr(el)?) else {
        return Ok(None);
    };
    let prefixes = match (method, el.child_ns(EXC_C14N, "InclusiveNamespaces")) {
        (Method::Exclusive, Some(inc)) => inc
            .attr("PrefixList")
            .unwrap_or("")
            .split_ascii_whitespace()
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some((method, prefixes)))
}

fn digest_of(uri: &str) -> Option<DigestAlgorithm> {
    [
        Algorithm::Gost2012_256,
        Algorithm::Gost2012_512,
        Algorithm::EcdsaP256,
        Algorithm::Rsa,
    ]
    .into_iter()
    .find(|a| uris(*a).1 == uri)
    .map(Algorithm::digest)
}

/// Every element carrying `id` under one of [`ID_ATTRIBUTES`], with the attribute.
fn find_id<'a>(
    el: &'a Element,
    id: &str,
    found: &mut Vec<(&'a Element, (&'static str, &'static str))>,
) {
    if let Some(attr) = ID_ATTRIBUTES.into_iter().find(|(ns, local)| {
        el.attrs
            .iter()
            .any(|(a, n, v)| a == ns && n == local && v == id)
    }) {
        found.push((el, attr));
    }
    for c in &el.children {
        find_id(c, id, found);
    }
}

fn count_signatures(el: &Element) -> usize {
    usize::from(el.ns == NS_DS && el.name == "Signature")
        + el.children.iter().map(count_signatures).sum::<usize>()
}

fn verify(xml: &[u8], keys: &Keys, limits: &Limits) -> Result<Verified, VerifyError> {
    let root = dom::parse(xml, limits).map_err(|e| VerifyError::NotSoap(e.to_string()))?;
    let soap_ns = match root.ns.as_str() {
        NS_SOAP11 | NS_SOAP12 if root.name == "Envelope" => root.ns.as_str(),
        _ => {
            return Err(VerifyError::NotSoap(
                "the root is not a SOAP Envelope".into(),
            ))
        }
    };
    let header = match children(&root, soap_ns, "Header").as_slice() {
        [] => return Err(VerifyError::Unsigned("no SOAP Header".into())),
        [one] => *one,
        _ => return Err(VerifyError::Malformed("more than one SOAP Header".into())),
    };
    let body = only_child(&root, soap_ns, "Body")?;
    let security = match children(header, NS_WSSE, "Security").as_slice() {
        [] => return Err(VerifyError::Unsigned("no wsse:Security header".into())),
        [one] => *one,
        _ => {
            return Err(VerifyError::Malformed(
                "more than one wsse:Security header".into(),
            ))
        }
    };
    let signature = match children(security, NS_DS, "Signature").as_slice() {
        [] => {
            return Err(VerifyError::Unsigned(
                "wsse:Security holds no ds:Signature".into(),
            ))
        }
        [one] => *one,
        more => {
            return Err(VerifyError::Malformed(format!(
                "wsse:Security holds {} ds:Signature elements",
                more.len()
            )))
        }
    };
    let signed_info = only_child(signature, NS_DS, "SignedInfo")?;
    let c14n_el = only_child(signed_info, NS_DS, "CanonicalizationMethod")?;
    let info_uri = algorithm_attr(c14n_el)?;
    let (info_method, info_prefixes) = match c14n_method(c14n_el)? {
        // Comments inside SignedInfo would be signed: refused rather than dropped.
        Some(m) if !info_uri.ends_with("#WithComments") => m,
        _ => {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "CanonicalizationMethod {info_uri}"
            )))
        }
    };
    let sig_uri = algorithm_attr(only_child(signed_info, NS_DS, "SignatureMethod")?)?;
    let alg = algorithm_of(sig_uri)
        .ok_or_else(|| VerifyError::UnsupportedAlgorithm(format!("SignatureMethod {sig_uri}")))?;
    let reference_els = children(signed_info, NS_DS, "Reference");
    if reference_els.is_empty() {
        return Err(VerifyError::Malformed("SignedInfo has no Reference".into()));
    }
    // Each reference costs a pass over the whole message.
    if reference_els.len() > MAX_REFERENCES {
        return Err(VerifyError::Malformed(format!(
            "{} references (at most {MAX_REFERENCES})",
            reference_els.len()
        )));
    }
    let mut references = Vec::with_capacity(reference_els.len());
    let mut body_signed = false;
    let mut named = Vec::new();
    for r in reference_els {
        let uri = r
            .attr("URI")
            .ok_or_else(|| VerifyError::Malformed("a Reference lacks @URI".into()))?;
        let id = uri
            .strip_prefix('#')
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                VerifyError::UnsupportedAlgorithm(format!(
                    "Reference URI {uri:?} (only same-document #id references)"
                ))
            })?;
        let mut found = Vec::new();
        find_id(&root, id, &mut found);
        let (target, id_attr) = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(VerifyError::Malformed(format!(
                    "no element has the ID {id:?}"
                )))
            }
            _ => return Err(VerifyError::DuplicateId(id.to_string())),
        };
        if std::ptr::eq(target, body) {
            body_signed = true;
        } else {
            named.push(format!("{uri} names {}", target.name));
        }
        let (method, prefixes, enveloped) = transforms(r)?;
        // The signature lives in the header: only an ancestor of it can envelop it.
        let exclude_signature = enveloped
            && [&root, header, security]
                .iter()
                .any(|a| std::ptr::eq(*a, target));
        if exclude_signature && count_signatures(target) != 1 {
            return Err(VerifyError::UnsupportedAlgorithm(
                "enveloped-signature over an element holding several signatures".into(),
            ));
        }
        let digest_uri = algorithm_attr(only_child(r, NS_DS, "DigestMethod")?)?;
        let digest = digest_of(digest_uri).ok_or_else(|| {
            VerifyError::UnsupportedAlgorithm(format!("DigestMethod {digest_uri}"))
        })?;
        let expected = decode(&only_child(r, NS_DS, "DigestValue")?.text, "DigestValue")?;
        references.push(Reference {
            uri,
            id_attr,
            id,
            method,
            prefixes,
            exclude_signature,
            digest,
            expected,
        });
    }
    // Wrapping defence: whatever else is signed, the envelope's own Body must be.
    if !body_signed {
        return Err(VerifyError::NotBody(if named.is_empty() {
            "no Reference".into()
        } else {
            named.join("; ")
        }));
    }
    let value = decode(
        &only_child(signature, NS_DS, "SignatureValue")?.text,
        "SignatureValue",
    )?;
    let candidates = signer_candidates(&key_ref(signature, security)?, keys)?;
    let path = [
        (soap_ns, "Envelope"),
        (soap_ns, "Header"),
        (NS_WSSE, "Security"),
        (NS_DS, "Signature"),
        (NS_DS, "SignedInfo"),
    ];
    let canonical_info = canonicalize(
        xml,
        &Selection {
            method: info_method,
            path: Some(&path),
            inclusive_prefixes: &info_prefixes,
            ..Selection::default()
        },
        limits,
    )?;
    // The signature first: a changed SignedInfo is told apart from changed content.
    let certificate_der = verify_signature(alg, &candidates, &canonical_info, &value)?;
    for r in &references {
        let canonical = canonicalize(
            xml,
            &Selection {
                method: r.method,
                id: Some((r.id_attr, r.id)),
                exclude: r.exclude_signature.then_some((NS_DS, "Signature")),
                inclusive_prefixes: &r.prefixes,
                ..Selection::default()
            },
            limits,
        )
        .map_err(|e| match e {
            C14nError::Ambiguous(_) => VerifyError::DuplicateId(r.id.to_string()),
            other => VerifyError::Canonicalization(other),
        })?;
        if sign::digest(r.digest, &canonical).map_err(VerifyError::Key)? != r.expected {
            return Err(VerifyError::DigestMismatch(r.uri.to_string()));
        }
    }
    Ok(Verified {
        algorithm: alg,
        certificate_der,
    })
}

/// A Reference's transforms: the canonicalization (Canonical XML 1.0 when none is named, as
/// XMLDSig converts a node-set to octets), its prefix list, and enveloped-signature.
fn transforms(reference: &Element) -> Result<(Method, Vec<&str>, bool), VerifyError> {
    let mut enveloped = false;
    let mut c14n: Option<(Method, Vec<&str>)> = None;
    let list = match children(reference, NS_DS, "Transforms").as_slice() {
        [] => return Ok((Method::Inclusive, Vec::new(), false)),
        [one] => *one,
        _ => {
            return Err(VerifyError::Malformed(
                "a Reference has more than one Transforms".into(),
            ))
        }
    };
    for t in children(list, NS_DS, "Transform") {
        let uri = algorithm_attr(t)?;
        if c14n.is_some() {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "Transform {uri} after canonicalization"
            )));
        }
        if uri == ENVELOPED_SIGNATURE {
            enveloped = true;
        } else if let Some(m) = c14n_method(t)? {
            // #WithComments keeps nothing more: a bare #id reference drops comments.
            c14n = Some(m);
        } else {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "Transform {uri}"
            )));
        }
    }
    let (method, prefixes) = c14n.unwrap_or((Method::Inclusive, Vec::new()));
    Ok((method, prefixes, enveloped))
}

/// How `KeyInfo` names the signer certificate.
fn key_ref(signature: &Element, security: &Element) -> Result<KeyRef, VerifyError> {
    let Some(key_info) = signature.child_ns(NS_DS, "KeyInfo") else {
        return Ok(KeyRef::Unnamed);
    };
    if let Some(str_el) = key_info.child_ns(NS_WSSE, "SecurityTokenReference") {
        if let Some(r) = str_el.child_ns(NS_WSSE, "Reference") {
            let id = r
                .attr("URI")
                .and_then(|u| u.strip_prefix('#'))
                .ok_or_else(|| {
                    VerifyError::UnsupportedAlgorithm(
                        "a SecurityTokenReference outside the message".into(),
                    )
                })?;
            let token = security
                .children
                .iter()
                .find(|c| {
                    c.ns == NS_WSSE
                        && c.name == "BinarySecurityToken"
                        && c.attr_ns(NS_WSU, "Id") == Some(id)
                })
                .ok_or_else(|| {
                    VerifyError::Malformed(format!(
                        "no BinarySecurityToken {id:?} in wsse:Security"
                    ))
                })?;
            if let Some(kind) = token.attr("ValueType").filter(|v| *v != X509V3) {
                return Err(VerifyError::UnsupportedAlgorithm(format!(
                    "BinarySecurityToken ValueType {kind}"
                )));
            }
            return Ok(KeyRef::Certificate(decode(
                &token.text,
                "BinarySecurityToken",
            )?));
        }
        if let Some(k) = str_el.child_ns(NS_WSSE, "KeyIdentifier") {
            let bytes = decode(&k.text, "KeyIdentifier")?;
            return match k.attr("ValueType").unwrap_or("") {
                X509V3 => Ok(KeyRef::Certificate(bytes)),
                SKI => Ok(KeyRef::Ski(bytes)),
                THUMBPRINT_SHA1 => Ok(KeyRef::Thumbprint(bytes)),
                other => Err(VerifyError::UnsupportedAlgorithm(format!(
                    "KeyIdentifier ValueType {other:?}"
                ))),
            };
        }
        if let Some(data) = str_el.child_ns(NS_DS, "X509Data") {
            return x509_data(data);
        }
        return Err(VerifyError::UnsupportedAlgorithm(
            "a SecurityTokenReference of an unknown form".into(),
        ));
    }
    if let Some(data) = key_info.child_ns(NS_DS, "X509Data") {
        return x509_data(data);
    }
    Err(VerifyError::UnsupportedAlgorithm(
        "KeyInfo without a certificate, token reference or X509Data".into(),
    ))
}

fn x509_data(data: &Element) -> Result<KeyRef, VerifyError> {
    // The first certificate is the signer's; others would be its chain.
    if let Some(cert) = data.child_ns(NS_DS, "X509Certificate") {
        return Ok(KeyRef::Certificate(decode(&cert.text, "X509Certificate")?));
    }
    if let Some(serial) = data
        .child_ns(NS_DS, "X509IssuerSerial")
        .and_then(|s| s.child_ns(NS_DS, "X509SerialNumber"))
    {
        return Ok(KeyRef::Serial(serial.text.trim().to_string()));
    }
    if let Some(ski) = data.child_ns(NS_DS, "X509SKI") {
        return Ok(KeyRef::Ski(decode(&ski.text, "X509SKI")?));
    }
    Err(VerifyError::UnsupportedAlgorithm(
        "X509Data without X509Certificate, X509IssuerSerial or X509SKI".into(),
    ))
}

/// The certificates (DER) the signature may be checked with.
fn signer_candidates(key: &KeyRef, keys: &Keys) -> Result<Vec<Vec<u8>>, VerifyError> {
    let trusted = match keys {
        Keys::Carried => {
            return match key {
                KeyRef::Certificate(der) => Ok(vec![der.clone()]),
                _ => Err(VerifyError::Malformed(
                    "KeyInfo names a certificate the message does not carry".into(),
                )),
            }
        }
        Keys::Trusted(certs) => certs,
    };
    let matches = |cert: &X509, der: &[u8]| match key {
        KeyRef::Certificate(carried) => carried == der,
        // Only picks the certificate to try: the signature decides.
        KeyRef::Serial(serial) => cert
            .serial_number()
            .to_bn()
            .and_then(|n| n.to_dec_str().map(|s| s.to_string()))
            .is_ok_and(|s| s == *serial),
        KeyRef::Ski(ski) => cert
            .subject_key_id()
            .is_some_and(|id| id.as_slice() == ski.as_slice()),
        KeyRef::Thumbprint(sha1) => cert
            .digest(MessageDigest::sha1())
            .is_ok_and(|d| d.as_ref() == sha1.as_slice()),
        KeyRef::Unnamed => true,
    };
    let found: Vec<Vec<u8>> = trusted
        .iter()
        .filter(|(der, cert)| matches(cert, der))
        .map(|(der, _)| der.clone())
        .collect();
    if found.is_empty() {
        return Err(VerifyError::UntrustedCertificate(match key {
            KeyRef::Certificate(der) => format!("{} is not a trusted certificate", describe(der)),
            KeyRef::Serial(serial) => format!("no trusted certificate has serial number {serial}"),
            KeyRef::Ski(_) => "no trusted certificate has that subject key identifier".into(),
            KeyRef::Thumbprint(_) => "no trusted certificate has that thumbprint".into(),
            KeyRef::Unnamed => "no certificate is trusted".into(),
        }));
    }
    Ok(found)
}

/// A certificate by its serial number, for messages (a personal subject names a SNILS).
fn describe(der: &[u8]) -> String {
    X509::from_der(der)
        .and_then(|cert| cert.serial_number().to_bn())
        .and_then(|n| n.to_hex_str().map(|s| s.to_string()))
        .map(|serial| format!("the certificate with serial number {serial} (hex)"))
        .unwrap_or_else(|_| "the carried certificate (unreadable)".into())
}

/// Checks the signature with each candidate; returns the one that verifies.
fn verify_signature(
    alg: Algorithm,
    candidates: &[Vec<u8>],
    signed_info: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    let mut mismatch = false;
    let mut other = None;
    for der in candidates {
        match sign::verify_raw(alg, der, signed_info, value) {
            Ok(()) => return Ok(der.clone()),
            Err(SignError::Mismatch) => mismatch = true,
            Err(e) => {
                other.get_or_insert(e);
            }
        }
    }
    // A key that could have signed but did not outweighs keys of another type.
    Err(match other {
        Some(e) if !mismatch => VerifyError::Key(e),
        _ => VerifyError::BadSignatureValue,
    })
}
