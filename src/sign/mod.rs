//! Signatures and digests: GOST R 34.10-2012 (256/512) through OpenSSL's `gost` engine,
//! ECDSA P-256 and RSA (2048 bits or more); detached CMS (one signer, certificate included,
//! signing time); GOST R 34.11-2012 (Streebog) and SHA-256 digests.
//!
//! The gateway loads the GOST engine itself at start-up ([`init_crypto`]); without the engine
//! RSA and ECDSA still work and GOST operations fail with [`SignError::GostUnavailable`].
//! Signing is CPU-bound and synchronous: async callers use `spawn_blocking`.

mod ffi;
mod keys;
mod remote;
mod verify;

pub use keys::{KeyRing, LocalSigner};
pub use remote::RemoteSigner;
pub use verify::{verify_detached_cms, verify_raw, VerifiedSignature};

use std::fmt;
use std::sync::OnceLock;

use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};

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
    /// Key material could not be decoded (wrong format, damaged, key and certificate differ).
    #[error("cannot load key material: {0}")]
    KeyMaterial(String),
    /// The private key or PKCS#12 file is encrypted and the passphrase is wrong or missing.
    #[error("wrong or missing passphrase for {0}")]
    WrongPassphrase(String),
    /// The key's algorithm is not one the gateway signs or verifies with.
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
    /// GOST R 34.10/34.11-2012 keys, signatures and digests usable in this process.
    pub gost_available: bool,
    /// The libcrypto in use, e.g. `OpenSSL 3.0.19 27 Jan 2026`.
    pub openssl_version: &'static str,
}

static CRYPTO: OnceLock<CryptoInfo> = OnceLock::new();

/// Initializes OpenSSL and loads the `gost` engine (idempotent, thread-safe, cheap after the
/// first call). Every function of this module calls it; call it at start-up to log the result.
///
/// Without `libengine-gost-openssl` this still succeeds with `gost_available: false`: RSA and
/// ECDSA work, GOST operations answer [`SignError::GostUnavailable`].
pub fn init_crypto() -> CryptoInfo {
    *CRYPTO.get_or_init(|| {
        openssl::init();
        // Already usable when OPENSSL_CONF loads the engine; otherwise load it ourselves.
        let mut gost_available = gost_usable();
        if !gost_available {
            match ffi::load_gost_engine() {
                Ok(()) => {
                    gost_available = gost_usable();
                    if !gost_available {
                        tracing::warn!("gost engine loaded but GOST keys or digests are missing");
                    }
                }
                Err(error) => tracing::warn!(
                    %error,
                    "GOST signatures unavailable (install libengine-gost-openssl)"
                ),
            }
        }
        CryptoInfo {
            gost_available,
            openssl_version: openssl::version::version(),
        }
    })
}

fn gost_usable() -> bool {
    MessageDigest::from_name("md_gost12_256").is_some()
        && MessageDigest::from_name("md_gost12_512").is_some()
        && ffi::engine_key_type_available(ffi::NID_GOST2012_256)
        && ffi::engine_key_type_available(ffi::NID_GOST2012_512)
}

/// True when DER bytes carry a TC26 GOST R 34.10/34.11-2012 object identifier
/// (`1.2.643.7.1.*`): tells "GOST without the engine" apart from other decoding failures.
fn mentions_gost(der: &[u8]) -> bool {
    const TC26_ALGORITHMS: [u8; 5] = [0x2a, 0x85, 0x03, 0x07, 0x01];
    der.windows(TC26_ALGORITHMS.len())
        .any(|w| w == TC26_ALGORITHMS)
}

/// Digest algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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

/// Signature algorithms the gateway signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// GOST R 34.10-2012, 256-bit key, with Streebog-256 (`gost2012-256`).
    Gost2012_256,
    /// GOST R 34.10-2012, 512-bit key, with Streebog-512 (`gost2012-512`).
    Gost2012_512,
    /// ECDSA on P-256 with SHA-256 (`ecdsa-p256`).
    EcdsaP256,
    /// RSA PKCS#1 v1.5 with SHA-256, keys of 2048 bits or more (`rsa`).
    Rsa,
}

impl Algorithm {
    /// The digest this algorithm signs with (raw signatures and CMS alike).
    pub fn digest(self) -> DigestAlgorithm {
        match self {
            Algorithm::Gost2012_256 => DigestAlgorithm::Streebog256,
            Algorithm::Gost2012_512 => DigestAlgorithm::Streebog512,
            Algorithm::EcdsaP256 | Algorithm::Rsa => DigestAlgorithm::Sha256,
        }
    }

    /// The stable name, as serde writes it: `gost2012-256`, `gost2012-512`, `ecdsa-p256`, `rsa`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Gost2012_256 => "gost2012-256",
            Algorithm::Gost2012_512 => "gost2012-512",
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Rsa => "rsa",
        }
    }

    /// True for the GOST algorithms (which need the gost engine).
    pub fn is_gost(self) -> bool {
        matches!(self, Algorithm::Gost2012_256 | Algorithm::Gost2012_512)
    }

    /// The algorithm of a key, or [`SignError::Unsupported`] for other key types, curves
    /// and RSA keys shorter than 2048 bits.
    fn of_key<T: HasPublic>(key: &PKeyRef<T>) -> Result<Algorithm, SignError> {
        match key.id() {
            Id::RSA if key.bits() >= 2048 => Ok(Algorithm::Rsa),
            Id::RSA => Err(SignError::Unsupported(format!(
                "RSA-{} (2048 bits or more required)",
                key.bits()
            ))),
            Id::EC => {
                let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
                match curve {
                    Some(Nid::X9_62_PRIME256V1) => Ok(Algorithm::EcdsaP256),
                    Some(n) => Err(SignError::Unsupported(format!(
                        "ECDSA on {} (P-256 required)",
                        n.short_name().unwrap_or("an unknown curve")
                    ))),
                    None => Err(SignError::Unsupported(
                        "ECDSA on explicit curve parameters".into(),
                    )),
                }
            }
            other => match other.as_raw() {
                ffi::NID_GOST2012_256 => Ok(Algorithm::Gost2012_256),
                ffi::NID_GOST2012_512 => Ok(Algorithm::Gost2012_512),
                n => Err(SignError::Unsupported(
                    Nid::from_raw(n)
                        .long_name()
                        .map(str::to_string)
                        .unwrap_or_else(|_| format!("key type NID {n}")),
                )),
            },
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Anything that signs with one key: a local key ([`LocalSigner`]) or a signing service
/// holding keys in a certified token ([`RemoteSigner`]). Calls block (CPU or network): async
/// callers use `spawn_blocking`.
pub trait Signer: Send + Sync {
    /// Algorithm of the key.
    fn algorithm(&self) -> Algorithm;
    /// DER of the signer certificate.
    fn certificate_der(&self) -> Vec<u8>;
    /// Detached CMS (DER) over `data`: one signer, signer certificate included, signing time
    /// present, digest per [`Algorithm::digest`].
    fn sign_detached_cms(&self, data: &[u8]) -> Result<Vec<u8>, SignError>;
    /// [`Signer::sign_detached_cms`] for a caller that already holds `digest`, the content's
    /// digest per [`Algorithm::digest`]: a local key signs it without hashing the content
    /// again; others sign the content.
    fn sign_detached_cms_digested(&self, data: &[u8], digest: &[u8]) -> Result<Vec<u8>, SignError> {
        let _ = digest;
        self.sign_detached_cms(data)
    }
    /// True when signing is local CPU work of well under a millisecond, false when it waits
    /// on something else (a signing service over the network).
    fn is_local(&self) -> bool {
        false
    }
    /// A raw signature over `data` as XMLDSig carries it in `SignatureValue`: RSA PKCS#1 v1.5
    /// with SHA-256, ECDSA as r||s (32 + 32 bytes), GOST as the engine produces it.
    fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>, SignError>;
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .map(|x| x.reason().unwrap_or("unknown").to_string())
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests;

/// The DER of the (first) certificate in a PEM file.
pub fn certificate_der(path: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    openssl::x509::X509::from_pem(&pem)
        .and_then(|c| c.to_der())
        .map_err(|e| format!("{path} is not a PEM certificate: {e}"))
}
