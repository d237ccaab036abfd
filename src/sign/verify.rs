//! Verification: detached CMS as the registry demands it, and raw XMLDSig signature values.

use openssl::bn::BigNum;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::x509::store::X509StoreRef;
use openssl::x509::{X509Ref, X509};

use super::{ffi, first_error, init_crypto, mentions_gost, Algorithm, SignError};

/// Facts of a verified detached CMS signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Signer certificate subject, one line (`C=RU, O=..., CN=..., SNILS=...`).
    pub subject: String,
    /// Certificate serial number, upper-case hex.
    pub serial: String,
    /// Algorithm of the signer's key.
    pub algorithm: Algorithm,
    /// SNILS (1.2.643.100.3) in the certificate subject (personal certificates).
    pub snils: Option<String>,
    /// OGRN (1.2.643.100.1) in the certificate subject (organization certificates).
    pub ogrn: Option<String>,
    /// The signing-time attribute, seconds since the Unix epoch (see [`Self::signed_at`]).
    pub signing_time: i64,
}

impl VerifiedSignature {
    /// The signing-time attribute as a UTC date-time.
    pub fn signed_at(&self) -> chrono::DateTime<chrono::Utc> {
        // The value came from an ASN.1 time (years 0-9999), always within chrono's range.
        chrono::DateTime::from_timestamp(self.signing_time, 0).unwrap_or_default()
    }
}

/// Verifies a detached CMS over `data`: exactly one SignerInfo, its certificate included, a
/// signing-time signed attribute present, and the signature valid over `data` (message digest
/// and signature over the signed attributes). With `trust` the signer certificate must also
/// chain to it (else [`SignError::Untrusted`]); without it the certificate is taken as is
/// (`CMS_NO_SIGNER_CERT_VERIFY`), for self-signed test certificates and for callers that check
/// the certificate elsewhere.
pub fn verify_detached_cms(
    data: &[u8],
    cms_der: &[u8],
    trust: Option<&X509StoreRef>,
) -> Result<VerifiedSignature, SignError> {
    let crypto = init_crypto();
    let mut cms =
        CmsContentInfo::from_der(cms_der).map_err(|e| SignError::MalformedCms(first_error(&e)))?;
    match ffi::signer_count(&cms) {
        None => return Err(SignError::MalformedCms("not a SignedData".into())),
        Some(0) => return Err(SignError::MalformedCms("no SignerInfo".into())),
        Some(1) => {}
        Some(n) => return Err(SignError::MultipleSigners(n)),
    }
    if ffi::certificate_count(&cms) == 0 {
        return Err(SignError::NoSignerCertificate);
    }
    let signing_time = ffi::signing_time(&cms)
        .filter(|t| chrono::DateTime::from_timestamp(*t, 0).is_some())
        .ok_or(SignError::NoSigningTime)?;
    if !crypto.gost_available && mentions_gost(cms_der) {
        return Err(SignError::GostUnavailable);
    }
    let mut flags = CMSOptions::BINARY;
    if trust.is_none() {
        flags |= CMSOptions::NO_SIGNER_CERT_VERIFY;
    }
    cms.verify(None, trust, Some(data), None, flags)
        .map_err(|e| verification_error(&e))?;
    let cert = ffi::first_signer(&cms).ok_or(SignError::NoSignerCertificate)?;
    let key = cert
        .public_key()
        .map_err(|e| SignError::Unsupported(first_error(&e)))?;
    let algorithm = Algorithm::of_key(&key)?;
    Ok(describe(&cert, algorithm, signing_time))
}

/// Sorts a `CMS_verify` failure: signer certificate missing, chain not trusted, or (all the
/// digest and signature failures) a mismatch.
fn verification_error(e: &ErrorStack) -> SignError {
    let reasons: Vec<&str> = e.errors().iter().filter_map(|x| x.reason()).collect();
    if reasons.contains(&"signer certificate not found") {
        SignError::NoSignerCertificate
    } else if reasons.contains(&"certificate verify error") {
        let detail = e
            .errors()
            .iter()
            .find_map(|x| x.data())
            .map(|d| d.trim_start_matches("Verify error:").trim().to_string())
            .unwrap_or_else(|| "certificate verify error".into());
        SignError::Untrusted(detail)
    } else if reasons.contains(&"unknown digest algorithm")
        || reasons.contains(&"unsupported algorithm")
    {
        SignError::Unsupported(reasons.join("; "))
    } else {
        SignError::Mismatch
    }
}

fn describe(cert: &X509Ref, algorithm: Algorithm, signing_time: i64) -> VerifiedSignature {
    let name = cert.subject_name();
    let entry = |nid: Nid| {
        name.entries_by_nid(nid)
            .next()
            .and_then(|e| e.data().to_string().ok())
    };
    let subject = name
        .entries()
        .map(|e| {
            format!(
                "{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    VerifiedSignature {
        subject,
        serial: cert
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default(),
        algorithm,
        snils: entry(Nid::from_raw(ffi::NID_SNILS)),
        ogrn: entry(Nid::from_raw(ffi::NID_OGRN)),
        signing_time,
    }
}

/// Verifies a raw signature (the inverse of [`super::Signer::sign_raw`]) with the public key
/// of a DER certificate: `Ok(())` when valid, [`SignError::Mismatch`] when not, another error
/// when the certificate is unusable or its key is not of algorithm `alg`.
pub fn verify_raw(
    alg: Algorithm,
    certificate_der: &[u8],
    data: &[u8],
    signature: &[u8],
) -> Result<(), SignError> {
    let crypto = init_crypto();
    if alg.is_gost() && !crypto.gost_available {
        return Err(SignError::GostUnavailable);
    }
    let cert = X509::from_der(certificate_der)
        .map_err(|e| SignError::KeyMaterial(format!("certificate: {}", first_error(&e))))?;
    let key = cert
        .public_key()
        .map_err(|e| SignError::Unsupported(first_error(&e)))?;
    let actual = Algorithm::of_key(&key)?;
    if actual != alg {
        return Err(SignError::Unsupported(format!(
            "the certificate holds a {actual} key, the signature claims {alg}"
        )));
    }
    let der;
    let sig = if alg == Algorithm::EcdsaP256 {
        der = ecdsa_raw_to_der(signature).ok_or(SignError::Mismatch)?;
        der.as_slice()
    } else {
        signature
    };
    let md = alg.digest().message_digest()?;
    let mut verifier =
        openssl::sign::Verifier::new(md, &key).map_err(|e| SignError::Signing(first_error(&e)))?;
    match verifier.verify_oneshot(sig, data) {
        Ok(true) => Ok(()),
        // A malformed signature is reported as an error by some algorithms, `false` by others.
        Ok(false) | Err(_) => Err(SignError::Mismatch),
    }
}

/// r||s (32 + 32 bytes) to the DER `ECDSA-Sig-Value` OpenSSL verifies.
fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let r = BigNum::from_slice(r).ok()?;
    let s = BigNum::from_slice(s).ok()?;
    EcdsaSig::from_private_components(r, s)
        .and_then(|sig| sig.to_der())
        .ok()
}
