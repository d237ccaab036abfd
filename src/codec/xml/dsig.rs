//! XMLDSig in WS-Security. Outbound: an enveloped signature in `wsse:Security` over the
//! `Body` (exclusive C14N), the signer certificate as a `BinarySecurityToken`. Inbound
//! ([`verify_envelope_trusted`], [`verify_envelope`]): signatures made by this gateway or by
//! other stacks, checked against trusted certificates or the certificate the message
//! carries, with defences against signature wrapping.
//!
//! Algorithm URIs: GOST R 34.10-2012 with GOST R 34.11-2012 as the CryptoPro XML security
//! URIs (`urn:ietf:params:xml:ns:cpxmlsec:algorithms:...`), RSA and ECDSA with SHA-256 as
//! in RFC 6931.

mod verify;

use base64::Engine;

pub use super::c14n::{C14N_10, EXC_C14N};
pub use verify::{
    verify_envelope, verify_envelope_trusted, Verified, VerifyError, ENVELOPED_SIGNATURE,
};

use super::c14n::{canonicalize, C14nError, Selection};
use super::dom::Limits;
use crate::codec::soap::SoapVersion;
use crate::sign::{self, Algorithm, SignError, Signer};

/// XMLDSig namespace.
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// WS-Security extension namespace.
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security utility namespace (`wsu:Id`).
pub const NS_WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::codec::soap::{NS_SOAP11, NS_SOAP12};
    use crate::sign::LocalSigner;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

    fn signer(name: &str) -> LocalSigner {
        LocalSigner::from_pem(
            &std::fs::read(format!("{KEYS}/{name}.key.pem")).unwrap(),
            &std::fs::read(format!("{KEYS}/{name}.cert.pem")).unwrap(),
            None,
        )
        .unwrap()
    }

    fn cert_der(name: &str) -> Vec<u8> {
        signer(name).certificate_der()
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
            let trusted = [s.certificate_der()];
            let v = verify_envelope_trusted(signed.as_bytes(), &trusted, &limits)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v.certificate_der, trusted[0]);
            let tampered = signed.replace("u-1", "u-2");
            assert!(
                verify_envelope(tampered.as_bytes(), &limits).is_err(),
                "{name}"
            );
            assert!(
                matches!(
                    verify_envelope_trusted(tampered.as_bytes(), &trusted, &limits),
                    Err(VerifyError::DigestMismatch(_))
                ),
                "{name}"
            );
            assert!(
                matches!(
                    verify_envelope_trusted(signed.as_bytes(), &[cert_der("other-ec")], &limits),
                    Err(VerifyError::UntrustedCertificate(_))
                ),
                "{name}"
            );
        }
    }

    /// xmlsec1 (libxmlsec, an independent implementation) verifies RSA and ECDSA envelopes;
    /// Debian's build has no GOST, which is checked by our own verifier above.
    #[test]
    fn xmlsec1_verifies_rsa_and_ecdsa() {
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
                let out = Command::new("xmlsec1")
                    .args([
                        "--verify",
                        "--pubkey-cert-pem",
                        &format!("{KEYS}/{name}.cert.pem"),
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
        let trusted = [cert_der("org-ec")];
        // Move the signed body into the header and put a forged body in its place.
        let forged = signed
            .replace(
                r#"<soap:Body wsu:Id="body-1">"#,
                r#"<soap:Header><x wsu:Id="body-1"><m:registerDocumentRequest xmlns:m="urn:m"><m:localUid>u-1</m:localUid></m:registerDocumentRequest></x></soap:Header><soap:Body wsu:Id="other">"#,
            )
            .replacen("u-1", "u-evil", 2);
        assert!(matches!(
            verify_envelope(forged.as_bytes(), &limits),
            Err(DsigError::Structure(_))
        ));
        let moved = signed.replace(
            r#"<soap:Body wsu:Id="body-1">"#,
            r#"<soap:Body wsu:Id="other">"#,
        );
        assert!(matches!(
            verify_envelope_trusted(moved.as_bytes(), &trusted, &limits),
            Err(VerifyError::Malformed(_))
        ));
        let elsewhere = signed
            .replace(
                r#"<soap:Body wsu:Id="body-1">"#,
                r#"<soap:Body wsu:Id="other">"#,
            )
            .replace("<soap:Header>", r#"<soap:Header><x wsu:Id="body-1"/>"#);
        assert!(matches!(
            verify_envelope_trusted(elsewhere.as_bytes(), &trusted, &limits),
            Err(VerifyError::NotBody(_))
        ));
        let dup = signed.replace("<soap:Header>", r#"<soap:Header><x wsu:Id="body-1"/>"#);
        assert!(verify_envelope(dup.as_bytes(), &limits).is_err());
        // Another kind of ID attribute with the same value is a second target all the same.
        let dup_other_attr = signed.replace("<soap:Header>", r#"<soap:Header><x Id="body-1"/>"#);
        assert!(matches!(
            verify_envelope_trusted(dup_other_attr.as_bytes(), &trusted, &limits),
            Err(VerifyError::DuplicateId(id)) if id == "body-1"
        ));
        let two_bodies = signed.replace("</soap:Envelope>", "<soap:Body/></soap:Envelope>");
        assert!(matches!(
            verify_envelope_trusted(two_bodies.as_bytes(), &trusted, &limits),
            Err(VerifyError::Malformed(_))
        ));
        let two_signatures = signed.replace(
            "</wsse:Security>",
            r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></wsse:Security>"#,
        );
        assert!(matches!(
            verify_envelope_trusted(two_signatures.as_bytes(), &trusted, &limits),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_unsigned_envelopes() {
        let limits = Limits::default();
        let trusted = [cert_der("org-rsa")];
        for (xml, detail) in [
            (
                format!(
                    r#"<s:Envelope xmlns:s="{NS_SOAP11}"><s:Body>{BODY}</s:Body></s:Envelope>"#
                ),
                "no SOAP Header",
            ),
            (
                format!(
                    r#"<s:Envelope xmlns:s="{NS_SOAP11}"><s:Header/><s:Body>{BODY}</s:Body></s:Envelope>"#
                ),
                "no wsse:Security header",
            ),
            (
                format!(
                    r#"<s:Envelope xmlns:s="{NS_SOAP11}"><s:Header><wsse:Security xmlns:wsse="{NS_WSSE}"/></s:Header><s:Body>{BODY}</s:Body></s:Envelope>"#
                ),
                "wsse:Security holds no ds:Signature",
            ),
        ] {
            match verify_envelope_trusted(xml.as_bytes(), &trusted, &limits) {
                Err(e @ VerifyError::Unsigned(_)) => {
                    assert!(e.to_string().contains(detail), "{e}");
                    assert_eq!(e.code(), "UNSIGNED");
                }
                other => panic!("{detail}: {other:?}"),
            }
        }
        assert!(matches!(
            verify_envelope_trusted(b"<a/>", &trusted, &limits),
            Err(VerifyError::NotSoap(_))
        ));
    }

    /// Base64 of a PEM certificate's DER, as a `BinarySecurityToken` carries it.
    fn cert_b64(name: &str) -> String {
        b64().encode(cert_der(name))
    }

    /// Signs `template` with xmlsec1 (`--id-attr:Id` registers `Id` attributes, in any
    /// namespace, on the named elements), as another stack would.
    fn xmlsec_sign(template: &str, key: &str, id_elements: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("template.xml");
        let output = dir.path().join("signed.xml");
        std::fs::write(&input, template).unwrap();
        let mut cmd = Command::new("xmlsec1");
        cmd.arg("--sign")
            .arg("--privkey-pem")
            .arg(format!("{KEYS}/{key}.key.pem,{KEYS}/{key}.cert.pem"));
        for el in id_elements {
            cmd.args(["--id-attr:Id", el]);
        }
        let out = cmd
            .arg("--output")
            .arg(&output)
            .arg(&input)
            .output()
            .expect("xmlsec1 is installed by tests/run.sh");
        assert!(
            out.status.success(),
            "xmlsec1 --sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(Path::new(&output)).unwrap()
    }

    /// As WSS4J/CXF write it: exclusive C14N with an `InclusiveNamespaces PrefixList` on the
    /// canonicalization method and on the transform, a `BinarySecurityToken` referenced from
    /// `KeyInfo`, indentation. The body uses `m` only inside an attribute value, so only the
    /// prefix list makes the namespace part of the digest.
    fn wss4j_like() -> String {
        let cert = cert_b64("org-rsa");
        format!(
            r##"<soapenv:Envelope xmlns:soapenv="{NS_SOAP11}" xmlns:m="urn:m" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <soapenv:Header>
    <wsse:Security xmlns:wsse="{NS_WSSE}" xmlns:wsu="{NS_WSU}" soapenv:mustUnderstand="1">
      <wsse:BinarySecurityToken EncodingType="{BASE64}" ValueType="{X509V3}" wsu:Id="X509-1">{cert}</wsse:BinarySecurityToken>
      <ds:Signature xmlns:ds="{NS_DS}" Id="SIG-1">
        <ds:SignedInfo>
          <ds:CanonicalizationMethod Algorithm="{EXC_C14N}">
            <ec:InclusiveNamespaces xmlns:ec="{EXC_C14N}" PrefixList="m soapenv"/>
          </ds:CanonicalizationMethod>
          <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
          <ds:Reference URI="#id-1">
            <ds:Transforms>
              <ds:Transform Algorithm="{EXC_C14N}">
                <ec:InclusiveNamespaces xmlns:ec="{EXC_C14N}" PrefixList="m xsi"/>
              </ds:Transform>
            </ds:Transforms>
            <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
            <ds:DigestValue/>
          </ds:Reference>
        </ds:SignedInfo>
        <ds:SignatureValue/>
        <ds:KeyInfo Id="KI-1">
          <wsse:SecurityTokenReference wsu:Id="STR-1">
            <wsse:Reference URI="#X509-1" ValueType="{X509V3}"/>
          </wsse:SecurityTokenReference>
        </ds:KeyInfo>
      </ds:Signature>
    </wsse:Security>
  </soapenv:Header>
  <soapenv:Body xmlns:wsu="{NS_WSU}" wsu:Id="id-1">
    <m:registerDocumentRequest><m:localUid xsi:type="m:Uid">u-1</m:localUid></m:registerDocumentRequest>
  </soapenv:Body>
</soapenv:Envelope>
"##
        )
    }

    /// A Reference without Transforms (so Canonical XML 1.0 of the Body: every namespace in
    /// scope and the envelope's `xml:lang`), the certificate in `X509Data`, ECDSA.
    fn no_transforms() -> String {
        format!(
            r##"<?xml version="1.0" encoding="UTF-8"?>
<S:Envelope xmlns:S="{NS_SOAP11}" xmlns:wsu="{NS_WSU}" xmlns:unused="urn:unused" xml:lang="ru">
<S:Header><wsse:Security xmlns:wsse="{NS_WSSE}"><Signature xmlns="{NS_DS}"><SignedInfo><CanonicalizationMethod Algorithm="{EXC_C14N}"/><SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"/><Reference URI="#b"><DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference></SignedInfo><SignatureValue/><KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo></Signature></wsse:Security></S:Header>
<S:Body wsu:Id="b"><m:registerDocumentRequest xmlns:m="urn:m"><m:localUid>u-1</m:localUid></m:registerDocumentRequest></S:Body>
</S:Envelope>
"##
        )
    }

    /// Canonical XML 1.0 for SignedInfo and the references, enveloped-signature first, a
    /// second reference to a Timestamp, the key named by issuer and serial, SOAP 1.2.
    fn inclusive() -> String {
        let cert = openssl::x509::X509::from_der(&cert_der("org-rsa")).unwrap();
        let serial = cert.serial_number().to_bn().unwrap().to_dec_str().unwrap();
        let transforms = format!(
            r#"<ds:Transforms><ds:Transform Algorithm="{ENVELOPED_SIGNATURE}"/><ds:Transform Algorithm="{C14N_10}"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/>"#
        );
        format!(
            r##"<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsse="{NS_WSSE}" xmlns:wsu="{NS_WSU}" xml:lang="ru">
 <env:Header>
  <wsse:Security>
   <wsu:Timestamp wsu:Id="TS-1"><wsu:Created>2024-06-11T10:00:00Z</wsu:Created></wsu:Timestamp>
   <ds:Signature xmlns:ds="{NS_DS}">
    <ds:SignedInfo>
     <ds:CanonicalizationMethod Algorithm="{C14N_10}"/>
     <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
     <ds:Reference URI="#TS-1">{transforms}</ds:Reference>
     <ds:Reference URI="#BODY">{transforms}</ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue/>
    <ds:KeyInfo><wsse:SecurityTokenReference><ds:X509Data><ds:X509IssuerSerial><ds:X509IssuerName>CN=Test</ds:X509IssuerName><ds:X509SerialNumber>{serial}</ds:X509SerialNumber></ds:X509IssuerSerial></ds:X509Data></wsse:SecurityTokenReference></ds:KeyInfo>
   </ds:Signature>
  </wsse:Security>
 </env:Header>
 <env:Body wsu:Id="BODY"><m:registerDocumentRequest xmlns:m="urn:m"><m:localUid>u-1</m:localUid></m:registerDocumentRequest></env:Body>
</env:Envelope>
"##
        )
    }

    fn expect(
        xml: &str,
        trusted: &[Vec<u8>],
        what: &str,
        check: impl FnOnce(&VerifyError) -> bool,
    ) {
        match verify_envelope_trusted(xml.as_bytes(), trusted, &Limits::default()) {
            Err(e) if check(&e) => {}
            other => panic!("{what}: {:?}", other.map(|v| v.algorithm)),
        }
    }

    #[test]
    fn verifies_wss4j_style_exclusive_with_prefix_lists() {
        let signed = xmlsec_sign(&wss4j_like(), "org-rsa", &["Body"]);
        let trusted = vec![cert_der("org-rsa")];
        let limits = Limits::default();
        let v = verify_envelope_trusted(signed.as_bytes(), &trusted, &limits).unwrap();
        assert_eq!(v.algorithm, Algorithm::Rsa);
        verify_envelope(signed.as_bytes(), &limits).unwrap();
        // Only the prefix list brings m into the digest: its value is signed content.
        expect(
            &signed.replace("m:Uid", "m:Other"),
            &trusted,
            "body changed",
            |e| matches!(e, VerifyError::DigestMismatch(uri) if uri == "#id-1"),
        );
        expect(
            &signed.replace(r#"PrefixList="m xsi""#, r#"PrefixList="xsi""#),
            &trusted,
            "transform prefix list changed",
            |e| matches!(e, VerifyError::BadSignatureValue),
        );
        let digest = signed
            .split("<ds:DigestValue>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap();
        expect(
            &signed.replace(digest, &b64().encode([0u8; 32])),
            &trusted,
            "digest value changed",
            |e| matches!(e, VerifyError::BadSignatureValue),
        );
        expect(
            &signed.replace("<ds:SignatureValue>", "<ds:SignatureValue>AAAA"),
            &trusted,
            "signature value changed",
            |e| matches!(e, VerifyError::BadSignatureValue),
        );
        expect(&signed, &[cert_der("org-ec")], "untrusted signer", |e| {
            matches!(e, VerifyError::UntrustedCertificate(_))
        });
        let start = signed.find("<ds:Signature ").unwrap();
        let end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        let unsigned = format!("{}{}", &signed[..start], &signed[end..]);
        expect(&unsigned, &trusted, "signature removed", |e| {
            matches!(e, VerifyError::Unsigned(_))
        });
        expect(
            &signed.replace(r##"URI="#id-1""##, r##"URI="#X509-1""##),
            &trusted,
            "reference to the token",
            |e| matches!(e, VerifyError::NotBody(_)),
        );
        expect(
            &signed.replace("xmldsig-more#rsa-sha256", "xmldsig#rsa-sha1"),
            &trusted,
            "SHA-1",
            |e| matches!(e, VerifyError::UnsupportedAlgorithm(m) if m.contains("rsa-sha1")),
        );
        expect(
            &signed.replace(
                "<soapenv:Header>",
                &format!(r#"<soapenv:Header><m:x xmlns:wsu="{NS_WSU}" wsu:Id="id-1"/>"#),
            ),
            &trusted,
            "second element with the ID",
            |e| matches!(e, VerifyError::DuplicateId(_)),
        );
    }

    #[test]
    fn verifies_a_reference_without_transforms_as_inclusive_c14n() {
        let signed = xmlsec_sign(&no_transforms(), "org-ec", &["Body"]);
        let trusted = vec![cert_der("org-ec")];
        let limits = Limits::default();
        let v = verify_envelope_trusted(signed.as_bytes(), &trusted, &limits).unwrap();
        assert_eq!(v.algorithm, Algorithm::EcdsaP256);
        verify_envelope(signed.as_bytes(), &limits).unwrap();
        // Comments are not part of a bare #id reference.
        verify_envelope_trusted(
            signed
                .replace("<m:localUid>", "<m:localUid><!-- note -->")
                .as_bytes(),
            &trusted,
            &limits,
        )
        .unwrap();
        // Inclusive C14N: an unused namespace and xml:lang in scope are signed content.
        for (from, to) in [
            (
                r#"xmlns:unused="urn:unused""#,
                r#"xmlns:unused="urn:other""#,
            ),
            (r#"xml:lang="ru""#, r#"xml:lang="en""#),
            ("u-1", "u-2"),
        ] {
            expect(
                &signed.replace(from, to),
                &trusted,
                from,
                |e| matches!(e, VerifyError::DigestMismatch(uri) if uri == "#b"),
            );
        }
        expect(&signed, &[cert_der("doctor-ec")], "untrusted", |e| {
            matches!(e, VerifyError::UntrustedCertificate(_))
        });
        // KeyInfo is not signed: without it every trusted certificate is tried; a thumbprint
        // picks one.
        let start = signed.find("<KeyInfo>").unwrap();
        let end = signed.find("</KeyInfo>").unwrap() + "</KeyInfo>".len();
        let without_key_info = format!("{}{}", &signed[..start], &signed[end..]);
        let both = vec![cert_der("org-rsa"), cert_der("org-ec")];
        let v = verify_envelope_trusted(without_key_info.as_bytes(), &both, &limits).unwrap();
        assert_eq!(v.certificate_der, both[1]);
        expect(
            &without_key_info,
            &[cert_der("other-ec")],
            "wrong key",
            |e| matches!(e, VerifyError::BadSignatureValue),
        );
        let thumbprint =
            openssl::hash::hash(openssl::hash::MessageDigest::sha1(), &cert_der("org-ec")).unwrap();
        let by_thumbprint = format!(
            r#"{}<KeyInfo><wsse:SecurityTokenReference><wsse:KeyIdentifier ValueType="http://docs.oasis-open.org/wss/oasis-wss-soap-message-security-1.1#ThumbprintSHA1">{}</wsse:KeyIdentifier></wsse:SecurityTokenReference></KeyInfo>{}"#,
            &signed[..start],
            b64().encode(thumbprint),
            &signed[end..]
        );
        let v = verify_envelope_trusted(by_thumbprint.as_bytes(), &both, &limits).unwrap();
        assert_eq!(v.certificate_der, both[1]);
        expect(&by_thumbprint, &both[..1], "thumbprint of another", |e| {
            matches!(e, VerifyError::UntrustedCertificate(_))
        });
        expect(&signed, &[cert_der("org-rsa")], "other key type", |e| {
            matches!(e, VerifyError::UntrustedCertificate(_))
        });
    }

    #[test]
    fn verifies_inclusive_c14n_with_several_references() {
        let signed = xmlsec_sign(&inclusive(), "org-rsa", &["Body", "Timestamp"]);
        let trusted = vec![cert_der("org-ec"), cert_der("org-rsa")];
        let limits = Limits::default();
        let v = verify_envelope_trusted(signed.as_bytes(), &trusted, &limits).unwrap();
        assert_eq!(v.certificate_der, trusted[1]);
        // The message names the key only by serial: it cannot verify without trust.
        assert!(matches!(
            verify_envelope(signed.as_bytes(), &limits),
            Err(DsigError::Structure(_))
        ));
        expect(
            &signed.replace("2024-06-11T10:00:00Z", "2030-01-01T00:00:00Z"),
            &trusted,
            "timestamp changed",
            |e| matches!(e, VerifyError::DigestMismatch(uri) if uri == "#TS-1"),
        );
        expect(
            &signed.replace("u-1", "u-2"),
            &trusted,
            "body changed",
            |e| matches!(e, VerifyError::DigestMismatch(uri) if uri == "#BODY"),
        );
        // SignedInfo inherits xml:lang under Canonical XML 1.0.
        expect(
            &signed.replace(r#"xml:lang="ru""#, r#"xml:lang="en""#),
            &trusted,
            "xml:lang changed",
            |e| matches!(e, VerifyError::BadSignatureValue),
        );
        let serial = openssl::x509::X509::from_der(&cert_der("org-rsa"))
            .unwrap()
            .serial_number()
            .to_bn()
            .unwrap()
            .to_dec_str()
            .unwrap()
            .to_string();
        expect(
            &signed.replace(&serial, "12345"),
            &trusted,
            "unknown serial",
            |e| matches!(e, VerifyError::UntrustedCertificate(m) if m.contains("12345")),
        );
        expect(
            &signed.replace(C14N_10, "http://www.w3.org/2006/12/xml-c14n11"),
            &trusted,
            "C14N 1.1",
            |e| matches!(e, VerifyError::UnsupportedAlgorithm(_)),
        );
        // Every reference must verify, not only the Body's.
        expect(
            &signed.replace(r##"URI="#TS-1""##, r##"URI="#nowhere""##),
            &trusted,
            "dangling reference",
            |e| matches!(e, VerifyError::Malformed(_)),
        );
    }

    #[test]
    fn error_codes_are_stable() {
        let cases = [
            (VerifyError::Unsigned(String::new()), "UNSIGNED"),
            (
                VerifyError::UntrustedCertificate(String::new()),
                "UNTRUSTED_CERTIFICATE",
            ),
            (
                VerifyError::DigestMismatch(String::new()),
                "DIGEST_MISMATCH",
            ),
            (VerifyError::BadSignatureValue, "BAD_SIGNATURE_VALUE"),
            (VerifyError::NotBody(String::new()), "BODY_NOT_SIGNED"),
            (
                VerifyError::UnsupportedAlgorithm(String::new()),
                "UNSUPPORTED_ALGORITHM",
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }
}
