//! XMLDSig in WS-Security for the gateway's outbound SOAP: an enveloped signature in
//! `wsse:Security` over the `Body` (exclusive C14N), the signer certificate as a
//! `BinarySecurityToken`; and verification of such envelopes with defences against
//! signature wrapping (the signed element must be the envelope's own `Body`, its ID unique,
//! exactly one `Signature`, one `Reference`).
//!
//! Algorithm URIs: GOST R 34.10-2012 with GOST R 34.11-2012 as the CryptoPro XML security
//! URIs (`urn:ietf:params:xml:ns:cpxmlsec:algorithms:...`), RSA and ECDSA with SHA-256 as
//! in RFC 6931.

use base64::Engine;

use super::c14n::{canonicalize, C14nError, Selection};
use super::dom::{self, Element, Limits};
use crate::codec::soap::{SoapVersion, NS_SOAP11, NS_SOAP12};
use crate::sign::{self, Algorithm, SignError, Signer};

/// XMLDSig namespace.
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// WS-Security extension namespace.
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu:Id`).
pub const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// Exclusive C14N without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const X509V3: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
const BASE64: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// Signature and digest URIs of an algorithm.
pub fn uris(alg: Algorithm) -> (&'static str, &'static str) {
    match alg {
        Algorithm::Gost2012_256 => (
            "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34102012-gostr34112012-256",
            "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34112012-256",
        ),
        Algorithm::Gost2012_512 => (
            "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34102012-gostr34112012-512",
            "urn:ietf:params:xml:ns:cpxmlsec:algorithms:gostr34112012-512",
        ),
        Algorithm::EcdsaP256 => (
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
        ),
        Algorithm::Rsa => (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
        ),
    }
}

fn algorithm_of(signature_uri: &str) -> Option<Algorithm> {
    [
        Algorithm::Gost2012_256,
        Algorithm::Gost2012_512,
        Algorithm::EcdsaP256,
        Algorithm::Rsa,
    ]
    .into_iter()
    .find(|a| uris(*a).0 == signature_uri)
}

/// Signing or verification failures.
#[derive(Debug, thiserror::Error)]
pub enum DsigError {
    /// Canonicalization failed (also: ambiguous or missing referenced element).
    #[error(transparent)]
    C14n(#[from] C14nError),
    /// The key failed to sign, or a signature or digest does not verify.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The envelope does not have the expected structure; the message says what.
    #[error("signed envelope structure: {0}")]
    Structure(String),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

const BODY_ID: &str = "body-1";
const TOKEN_ID: &str = "x509-1";

fn envelope(version: SoapVersion, header_xml: &str, security_xml: &str, body_xml: &str) -> String {
    let ns = version.namespace();
    format!(
        r#"<soap:Envelope xmlns:soap="{ns}" xmlns:wsu="{NS_WSU}"><soap:Header>{header_xml}<wsse:Security xmlns:wsse="{NS_WSSE}">{security_xml}</wsse:Security></soap:Header><soap:Body wsu:Id="{BODY_ID}">{body_xml}</soap:Body></soap:Envelope>"#
    )
}

/// Builds a signed SOAP envelope: `header_xml` and `body_xml` are serialized XML fragments
/// with their own namespace declarations.
pub fn sign_envelope(
    version: SoapVersion,
    header_xml: &str,
    body_xml: &str,
    signer: &dyn Signer,
    limits: &Limits,
) -> Result<String, DsigError> {
    let alg = signer.algorithm();
    let (sig_uri, digest_uri) = uris(alg);
    let token = format!(
        r#"<wsse:BinarySecurityToken EncodingType="{BASE64}" ValueType="{X509V3}" wsu:Id="{TOKEN_ID}">{}</wsse:BinarySecurityToken>"#,
        b64().encode(signer.certificate_der())
    );
    let unsigned = envelope(version, header_xml, &token, body_xml);
    let body = canonicalize(
        unsigned.as_bytes(),
        &Selection {
            id: Some(((NS_WSU, "Id"), BODY_ID)),
            ..Selection::default()
        },
        limits,
    )?;
    let digest = sign::digest(alg.digest(), &body)?;
    let signed_info = format!(
        r##"<ds:SignedInfo xmlns:ds="{NS_DS}"><ds:CanonicalizationMethod Algorithm="{EXC_C14N}"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm="{sig_uri}"></ds:SignatureMethod><ds:Reference URI="#{BODY_ID}"><ds:Transforms><ds:Transform Algorithm="{EXC_C14N}"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="{digest_uri}"></ds:DigestMethod><ds:DigestValue>{}</ds:DigestValue></ds:Reference></ds:SignedInfo>"##,
        b64().encode(digest)
    );
    // SignedInfo declares its only prefix itself, so its exclusive C14N is the same alone
    // as inside the envelope.
    let canonical = canonicalize(signed_info.as_bytes(), &Selection::default(), limits)?;
    let value = signer.sign_raw(&canonical)?;
    let signature = format!(
        r##"<ds:Signature xmlns:ds="{NS_DS}">{}<ds:SignatureValue>{}</ds:SignatureValue><ds:KeyInfo><wsse:SecurityTokenReference><wsse:Reference URI="#{TOKEN_ID}" ValueType="{X509V3}"></wsse:Reference></wsse:SecurityTokenReference></ds:KeyInfo></ds:Signature>"##,
        signed_info,
        b64().encode(value)
    );
    Ok(envelope(
        version,
        header_xml,
        &format!("{token}{signature}"),
        body_xml,
    ))
}

/// What a verified envelope was signed with.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// DER of the signer certificate.
    pub certificate_der: Vec<u8>,
}

fn child<'a>(el: &'a Element, ns: &str, name: &str) -> Result<&'a Element, DsigError> {
    el.child_ns(ns, name)
        .ok_or_else(|| DsigError::Structure(format!("{} has no {name}", el.name)))
}

fn attr<'a>(el: &'a Element, name: &str) -> Result<&'a str, DsigError> {
    el.attr(name)
        .ok_or_else(|| DsigError::Structure(format!("{} lacks @{name}", el.name)))
}

/// Verifies a signed envelope made by [`sign_envelope`] or a peer following the same
/// profile. The caller decides whether the returned certificate is trusted.
pub fn verify_envelope(xml: &[u8], limits: &Limits) -> Result<Verified, DsigError> {
    let root = dom::parse(xml, limits).map_err(|e| DsigError::Structure(e.to_string()))?;
    let soap_ns = match root.ns.as_str() {
        NS_SOAP11 | NS_SOAP12 if root.name == "Envelope" => root.ns.clone(),
        _ => return Err(DsigError::Structure("not a SOAP envelope".into())),
    };
    let header = child(&root, &soap_ns, "Header")?;
    let body = child(&root, &soap_ns, "Body")?;
    let security = child(header, NS_WSSE, "Security")?;
    let signatures: Vec<&Element> = security
        .children
        .iter()
        .filter(|c| c.ns == NS_DS && c.name == "Signature")
        .collect();
    if signatures.len() != 1 {
        return Err(DsigError::Structure(format!(
            "expected one Signature, found {}",
            signatures.len()
        )));
    }
    let signature = signatures[0];
    let signed_info = child(signature, NS_DS, "SignedInfo")?;
    if attr(
        child(signed_info, NS_DS, "CanonicalizationMethod")?,
        "Algorithm",
    )? != EXC_C14N
    {
        return Err(DsigError::Structure(
            "CanonicalizationMethod must be exclusive C14N".into(),
        ));
    }
    let sig_uri = attr(child(signed_info, NS_DS, "SignatureMethod")?, "Algorithm")?;
    let alg = algorithm_of(sig_uri)
        .ok_or_else(|| DsigError::Structure(format!("unsupported SignatureMethod {sig_uri}")))?;
    let references: Vec<&Element> = signed_info
        .children
        .iter()
        .filter(|c| c.ns == NS_DS && c.name == "Reference")
        .collect();
    if references.len() != 1 {
        return Err(DsigError::Structure(format!(
            "expected one Reference, found {}",
            references.len()
        )));
    }
    let reference = references[0];
    let id = attr(reference, "URI")?
        .strip_prefix('#')
        .ok_or_else(|| DsigError::Structure("Reference URI must be a same-document #id".into()))?;
    // Wrapping defence: the reference must name the envelope's own Body.
    if body.attr_ns(NS_WSU, "Id") != Some(id) {
        return Err(DsigError::Structure(
            "the signed element is not the envelope Body".into(),
        ));
    }
    if let Some(transforms) = reference.child_ns(NS_DS, "Transforms") {
        for t in &transforms.children {
            if t.attr("Algorithm") != Some(EXC_C14N) {
                return Err(DsigError::Structure(
                    "only the exclusive C14N transform is accepted".into(),
                ));
            }
        }
    }
    if attr(child(reference, NS_DS, "DigestMethod")?, "Algorithm")? != uris(alg).1 {
        return Err(DsigError::Structure(
            "DigestMethod does not match SignatureMethod".into(),
        ));
    }
    let expected = b64()
        .decode(child(reference, NS_DS, "DigestValue")?.text.trim())
        .map_err(|e| DsigError::Structure(format!("DigestValue: {e}")))?;
    let canonical_body = canonicalize(
        xml,
        &Selection {
            id: Some(((NS_WSU, "Id"), id)),
            ..Selection::default()
        },
        limits,
    )?;
    if sign::digest(alg.digest(), &canonical_body)? != expected {
        return Err(DsigError::Sign(SignError::Mismatch));
    }
    let token_ref = signature
        .path(&["KeyInfo", "SecurityTokenReference", "Reference"])
        .and_then(|r| r.attr("URI"))
        .and_then(|u| u.strip_prefix('#'))
        .ok_or_else(|| {
            DsigError::Structure("KeyInfo must reference a BinarySecurityToken".into())
        })?;
    let token = security
        .children
        .iter()
        .find(|c| c.name == "BinarySecurityToken" && c.attr_ns(NS_WSU, "Id") == Some(token_ref))
        .ok_or_else(|| DsigError::Structure(format!("no BinarySecurityToken {token_ref}")))?;
    let certificate_der = b64()
        .decode(token.text.split_ascii_whitespace().collect::<String>())
        .map_err(|e| DsigError::Structure(format!("BinarySecurityToken: {e}")))?;
    let canonical_info = canonicalize(
        xml,
        &Selection {
            element: Some((NS_DS, "SignedInfo")),
            ..Selection::default()
        },
        limits,
    )?;
    let value = b64()
        .decode(
            child(signature, NS_DS, "SignatureValue")?
                .text
                .split_ascii_whitespace()
                .collect::<String>(),
        )
        .map_err(|e| DsigError::Structure(format!("SignatureValue: {e}")))?;
    sign::verify_raw(alg, &certificate_der, &canonical_info, &value)?;
    Ok(Verified {
        algorithm: alg,
        certificate_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::LocalSigner;

    fn signer(name: &str) -> LocalSigner {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
        LocalSigner::from_pem(
            &std::fs::read(format!("{dir}/{name}.key.pem")).unwrap(),
            &std::fs::read(format!("{dir}/{name}.cert.pem")).unwrap(),
            None,
        )
        .unwrap()
    }

    const BODY: &str = r#"<m:registerDocumentRequest xmlns:m="urn:m"><m:localUid>u-1</m:localUid></m:registerDocumentRequest>"#;

    #[test]
    fn sign_and_verify_every_algorithm() {
        let limits = Limits::default();
        for name in ["org-gost256", "org-gost512", "org-ec", "org-rsa"] {
            let s = signer(name);
            let signed = sign_envelope(SoapVersion::V12, "", BODY, &s, &limits).unwrap();
            let v = verify_envelope(signed.as_bytes(), &limits)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.algorithm, s.algorithm());
            let tampered = signed.replace("u-1", "u-2");
            assert!(
                verify_envelope(tampered.as_bytes(), &limits).is_err(),
                "{name}"
            );
        }
    }

    /// xmlsec1 (libxmlsec, an independent implementation) verifies RSA and ECDSA envelopes;
    /// Debian's build has no GOST, which is checked by our own verifier above.
    #[test]
    fn xmlsec1_verifies_rsa_and_ecdsa() {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
        let dir = tempfile::tempdir().unwrap();
        for name in ["org-rsa", "org-ec"] {
            let signed = sign_envelope(
                SoapVersion::V12,
                "",
                BODY,
                &signer(name),
                &Limits::default(),
            )
            .unwrap();
            for (file, content, ok) in [
                ("good.xml", signed.clone(), true),
                ("bad.xml", signed.replace("u-1", "u-2"), false),
            ] {
                let path = dir.path().join(file);
                std::fs::write(&path, content).unwrap();
                let out = std::process::Command::new("xmlsec1")
                    .args([
                        "--verify",
                        "--pubkey-cert-pem",
                        &format!("{keys}/{name}.cert.pem"),
                        "--id-attr:Id",
                        "Body",
                    ])
                    .arg(&path)
                    .output()
                    .expect("xmlsec1 is installed by tests/run.sh");
                assert_eq!(
                    out.status.success(),
                    ok,
                    "{name} {file}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    #[test]
    fn refuses_wrapping() {
        let limits = Limits::default();
        let signed = sign_envelope(SoapVersion::V11, "", BODY, &signer("org-ec"), &limits).unwrap();
        // Move the signed body into the header and put a forged body in its place.
        let forged = signed
            .replace(
                r#"<soap:Body wsu:Id="body-1">"#,
                r#"<soap:Body wsu:Id="other">"#,
            )
            .replace("u-1", "u-evil");
        assert!(matches!(
            verify_envelope(forged.as_bytes(), &limits),
            Err(DsigError::Structure(_))
        ));
        let dup = signed.replace("<soap:Header>", r#"<soap:Header><x wsu:Id="body-1"/>"#);
        assert!(verify_envelope(dup.as_bytes(), &limits).is_err());
    }
}
