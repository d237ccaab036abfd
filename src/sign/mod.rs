//! Signatures and digests: GOST R 34.10-2012 (256/512) through OpenSSL's `gost` engine,
//! ECDSA P-256 and RSA-2048; detached CMS (one signer, certificate included, signing time);
//! GOST R 34.11-2012 (Streebog) and SHA-256 digests.
//!
//! The gateway loads the GOST engine itself at start-up ([`init_crypto`]); without the engine
//! RSA and ECDSA still work and GOST operations fail with [`SignError::GostUnavailable`].

mod ffi;
mod keys;
mod remote;

pub use keys::{KeyRing, LocalSigner};
pub use remote::RemoteSigner;

use std::sync::OnceLock;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::x509::X509;

/// Signing and verification failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A key or certificate file could not be read.
    #[error("cannot read {path}: {reason}")]
    KeyFile {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// Key material could not be decoded (wrong passphrase, wrong format).
    #[error("cannot load key material: {0}")]
    KeyMaterial(String),
    /// The key's algorithm is not one the gateway signs with.
    #[error("unsupported key algorithm: {0}")]
    Unsupported(String),
    /// A GOST operation without the gost engine.
    #[error("GOST algorithms are unavailable: install libengine-gost-openssl")]
    GostUnavailable,
    /// Not a DER CMS SignedData.
    #[error("malformed CMS signature: {0}")]
    MalformedCms(String),
    /// More than one SignerInfo in a container.
    #[error("the signature container holds {0} signers; exactly one is allowed")]
    MultipleSigners(usize),
    /// The signer certificate is not included.
    #[error("the signer certificate is not included in the signature")]
    NoSignerCertificate,
    /// The signing-time attribute is missing.
    #[error("the signature has no signing-time attribute")]
    NoSigningTime,
    /// The signature does not verify over the data.
    #[error("the signature does not match the document bytes")]
    Mismatch,
    /// The signer certificate does not chain to a trusted authority.
    #[error("the signer certificate is not trusted: {0}")]
    Untrusted(String),
    /// The external signing service failed or is unreachable.
    #[error("signing service: {0}")]
    Remote(String),
    /// Signing failed inside OpenSSL.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What [`init_crypto`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoInfo {
    /// GOST R 34.10/34.11-2012 usable in this process.
    pub gost_available: bool,
}

static CRYPTO: OnceLock<CryptoInfo> = OnceLock::new();

/// Initializes OpenSSL and loads the gost engine (idempotent, thread-safe).
pub fn init_crypto() -> CryptoInfo {
    *CRYPTO.get_or_init(|| {
        openssl::init();
        if MessageDigest::from_name("md_gost12_256").is_none() {
            ffi::load_gost_engine();
        }
        CryptoInfo {
            gost_available: MessageDigest::from_name("md_gost12_256").is_some(),
        }
    })
}

/// Digest algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// GOST R 34.11-2012, 256 bits.
    Streebog256,
    /// GOST R 34.11-2012, 512 bits.
    Streebog512,
    /// SHA-256.
    Sha256,
}

impl DigestAlgorithm {
    fn message_digest(self) -> Result<MessageDigest, SignError> {
        init_crypto();
        match self {
            DigestAlgorithm::Sha256 => Ok(MessageDigest::sha256()),
            DigestAlgorithm::Streebog256 => {
                MessageDigest::from_name("md_gost12_256").ok_or(SignError::GostUnavailable)
            }
            DigestAlgorithm::Streebog512 => {
                MessageDigest::from_name("md_gost12_512").ok_or(SignError::GostUnavailable)
            }
        }
    }
}

/// Digest of `data`.
pub fn digest(alg: DigestAlgorithm, data: &[u8]) -> Result<Vec<u8>, SignError> {
    let md = alg.message_digest()?;
    openssl::hash::hash(md, data)
        .map(|d| d.to_vec())
        .map_err(|e| SignError::Signing(e.to_string()))
}

/// Signature algorithms the gateway holds keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// GOST R 34.10-2012, 256-bit key.
    Gost2012_256,
    /// GOST R 34.10-2012, 512-bit key.
    Gost2012_512,
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rsa,
}

/// Anything that makes detached CMS signatures: a local key, or later a remote signing
/// service holding keys in a certified token.
pub trait Signer: Send + Sync {
    /// Algorithm of the key.
    fn algorithm(&self) -> Algorithm;
    /// DER of the signer certificate.
    fn certificate_der(&self) -> Vec<u8>;
    /// Detached CMS (DER) over `data`, signer certificate included, signing time present.
    fn sign_detached_cms(&self, data: &[u8]) -> Result<Vec<u8>, SignError>;
    /// A raw signature over `data` as XMLDSig carries it in `SignatureValue`: RSA PKCS#1 v1.5
    /// with SHA-256, ECDSA as r||s (32 + 32 bytes), GOST as the engine produces it.
    fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>, SignError>;
}

impl Algorithm {
    /// The digest a raw signature of this algorithm uses.
    pub fn digest(self) -> DigestAlgorithm {
        match self {
            Algorithm::Gost2012_256 => DigestAlgorithm::Streebog256,
            Algorithm::Gost2012_512 => DigestAlgorithm::Streebog512,
            Algorithm::EcdsaP256 | Algorithm::Rsa => DigestAlgorithm::Sha256,
        }
    }
}

/// Verifies a raw signature (the inverse of [`Signer::sign_raw`]) with the public key of a
/// DER certificate.
pub fn verify_raw(
    alg: Algorithm,
    certificate_der: &[u8],
    data: &[u8],
    signature: &[u8],
) -> Result<(), SignError> {
    init_crypto();
    let cert = X509::from_der(certificate_der)
        .map_err(|e| SignError::KeyMaterial(format!("certificate: {e}")))?;
    let key = cert
        .public_key()
        .map_err(|e| SignError::KeyMaterial(e.to_string()))?;
    let der;
    let sig = if alg == Algorithm::EcdsaP256 {
        if signature.len() != 64 {
            return Err(SignError::Mismatch);
        }
        let r = openssl::bn::BigNum::from_slice(&signature[..32])
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let s = openssl::bn::BigNum::from_slice(&signature[32..])
            .map_err(|e| SignError::Signing(e.to_string()))?;
        der = openssl::ecdsa::EcdsaSig::from_private_components(r, s)
            .and_then(|x| x.to_der())
            .map_err(|e| SignError::Signing(e.to_string()))?;
        der.as_slice()
    } else {
        signature
    };
    let md = alg.digest().message_digest()?;
    let mut v =
        openssl::sign::Verifier::new(md, &key).map_err(|e| SignError::Signing(e.to_string()))?;
    match v.verify_oneshot(sig, data) {
        Ok(true) => Ok(()),
        _ => Err(SignError::Mismatch),
    }
}

/// Facts of a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Signer certificate subject, one line.
    pub subject: String,
    /// Certificate serial, hex.
    pub serial: String,
    /// SNILS in the certificate subject (personal certificates).
    pub snils: Option<String>,
    /// OGRN in the certificate subject (organization certificates).
    pub ogrn: Option<String>,
    /// The signing-time attribute, epoch seconds.
    pub signing_time: i64,
}

/// Verifies a detached CMS over `data`: exactly one signer, its certificate included, a
/// signing time present, and the signature valid. Certificate chains are checked against
/// `trust` when given; without it only the signature itself is checked.
pub fn verify_detached_cms(
    data: &[u8],
    cms_der: &[u8],
    trust: Option<&openssl::x509::store::X509StoreRef>,
) -> Result<VerifiedSignature, SignError> {
    init_crypto();
    let mut cms =
        CmsContentInfo::from_der(cms_der).map_err(|e| SignError::MalformedCms(first_error(&e)))?;
    let signers = ffi::signer_count(&cms);
    match signers {
        None => return Err(SignError::MalformedCms("not a SignedData".into())),
        Some(0) => return Err(SignError::MalformedCms("no SignerInfo".into())),
        Some(1) => {}
        Some(n) => return Err(SignError::MultipleSigners(n)),
    }
    if ffi::certificate_count(&cms) == 0 {
        return Err(SignError::NoSignerCertificate);
    }
    let signing_time = ffi::signing_time(&cms).ok_or(SignError::NoSigningTime)?;
    let mut flags = CMSOptions::BINARY;
    if trust.is_none() {
        flags |= CMSOptions::NO_SIGNER_CERT_VERIFY;
    }
    cms.verify(None, trust, Some(data), None, flags)
        .map_err(|e| {
            let text = first_error(&e);
            if text.contains("signer certificate not found") {
                SignError::NoSignerCertificate
            } else if e.to_string().contains("certificate verify error") {
                let reason = e.to_string();
                SignError::Untrusted(reason.rsplit(':').next().unwrap_or("").trim().to_string())
            } else {
                SignError::Mismatch
            }
        })?;
    let cert = ffi::first_signer(&cms).ok_or(SignError::NoSignerCertificate)?;
    Ok(describe(&cert, signing_time))
}

fn describe(cert: &X509, signing_time: i64) -> VerifiedSignature {
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
        snils: entry(Nid::from_raw(ffi::NID_SNILS)),
        ogrn: entry(Nid::from_raw(ffi::NID_OGRN)),
        signing_time,
    }
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .map(|x| x.reason().unwrap_or("unknown").to_string())
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests;
