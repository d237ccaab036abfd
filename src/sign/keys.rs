//! Keys held by the gateway: loaded from PEM or PKCS#12 files named in the configuration.

use std::collections::HashMap;
use std::sync::Arc;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Ref, X509};

use super::{first_error, init_crypto, mentions_gost, Algorithm, SignError, Signer};
use crate::config::{KeyRole, KeySettings};

/// A private key and its certificate held in this process.
pub struct LocalSigner {
    key: PKey<Private>,
    cert: X509,
    cert_der: Vec<u8>,
    algorithm: Algorithm,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("algorithm", &self.algorithm)
            .field("subject", &format!("{:?}", self.cert.subject_name()))
            .finish_non_exhaustive()
    }
}

fn read(path: &str) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|e| SignError::KeyFile {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// PKCS#8 `ENCRYPTED PRIVATE KEY` or a legacy `Proc-Type: 4,ENCRYPTED` PEM.
fn is_encrypted_pem(pem: &[u8]) -> bool {
    contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(pem, b"4,ENCRYPTED")
}

impl LocalSigner {
    /// From a PEM private key (PKCS#8 or traditional, encrypted when `passphrase` is given)
    /// and the PEM certificate of that key. Never prompts on a terminal.
    pub fn from_pem(
        key_pem: &[u8],
        cert_pem: &[u8],
        passphrase: Option<&str>,
    ) -> Result<LocalSigner, SignError> {
        let crypto = init_crypto();
        let cert = X509::from_pem(cert_pem)
            .map_err(|e| SignError::KeyMaterial(format!("certificate: {}", first_error(&e))))?;
        let key = match passphrase {
            Some(p) => PKey::private_key_from_pem_passphrase(key_pem, p.as_bytes()),
            // A callback that gives no passphrase: OpenSSL's default would prompt on the tty.
            None => PKey::private_key_from_pem_callback(key_pem, |_| Ok(0)),
        };
        let key = key.map_err(|e| {
            let gost = cert.to_der().is_ok_and(|der| mentions_gost(&der));
            if gost && !crypto.gost_available {
                SignError::GostUnavailable
            } else if is_encrypted_pem(key_pem) {
                SignError::WrongPassphrase("the private key".into())
            } else {
                SignError::KeyMaterial(format!("private key: {}", first_error(&e)))
            }
        })?;
        Self::new(key, cert)
    }

    /// From PKCS#12 bytes (`.p12`, `.pfx`) and their passphrase.
    pub fn from_pkcs12(der: &[u8], passphrase: &str) -> Result<LocalSigner, SignError> {
        let crypto = init_crypto();
        let p12 = openssl::pkcs12::Pkcs12::from_der(der)
            .map_err(|e| SignError::KeyMaterial(format!("PKCS#12: {}", first_error(&e))))?;
        let parsed = p12.parse2(passphrase).map_err(|e| {
            if has_reason(&e, "mac verify failure") {
                SignError::WrongPassphrase("the PKCS#12 file".into())
            } else if !crypto.gost_available {
                SignError::KeyMaterial(format!(
                    "PKCS#12: {} (GOST keys need libengine-gost-openssl)",
                    first_error(&e)
                ))
            } else {
                SignError::KeyMaterial(format!("PKCS#12: {}", first_error(&e)))
            }
        })?;
        match (parsed.pkey, parsed.cert) {
            (Some(k), Some(c)) => Self::new(k, c),
            _ => Err(SignError::KeyMaterial(
                "PKCS#12 lacks a key or a certificate".into(),
            )),
        }
    }

    /// From the files named by a key entry of the configuration.
    pub fn from_settings(k: &KeySettings) -> Result<LocalSigner, SignError> {
        let pass = k.passphrase.as_ref().map(|p| p.expose());
        match (&k.certificate, &k.private_key, &k.pkcs12) {
            (Some(cert), Some(key), None) => Self::from_pem(&read(key)?, &read(cert)?, pass),
            (None, None, Some(p12)) => Self::from_pkcs12(&read(p12)?, pass.unwrap_or("")),
            _ => Err(SignError::KeyMaterial(
                "give certificate + private_key, or pkcs12".into(),
            )),
        }
    }

    fn new(key: PKey<Private>, cert: X509) -> Result<LocalSigner, SignError> {
        let algorithm = Algorithm::of_key(&key)?;
        if algorithm.is_gost() && !init_crypto().gost_available {
            return Err(SignError::GostUnavailable);
        }
        if !cert.public_key().is_ok_and(|p| p.public_eq(&key)) {
            return Err(SignError::KeyMaterial(
                "certificate does not belong to the private key".into(),
            ));
        }
        let cert_der = cert
            .to_der()
            .map_err(|e| SignError::KeyMaterial(format!("certificate: {}", first_error(&e))))?;
        Ok(LocalSigner {
            key,
            cert,
            cert_der,
            algorithm,
        })
    }

    /// The signer certificate.
    pub fn certificate(&self) -> &X509Ref {
        &self.cert
    }
}

fn has_reason(e: &ErrorStack, reason: &str) -> bool {
    e.errors().iter().any(|x| x.reason() == Some(reason))
}

fn signing_error(e: ErrorStack) -> SignError {
    SignError::Signing(first_error(&e))
}

impl Signer for LocalSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn certificate_der(&self) -> Vec<u8> {
        self.cert_der.clone()
    }

    fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let md = self.algorithm.digest().message_digest()?;
        let mut signer = openssl::sign::Signer::new(md, &self.key).map_err(signing_error)?;
        let sig = signer.sign_oneshot_to_vec(data).map_err(signing_error)?;
        if self.algorithm != Algorithm::EcdsaP256 {
            return Ok(sig);
        }
        // XMLDSig wants r||s, each left-padded to the 32-byte order size, not DER.
        let parsed = openssl::ecdsa::EcdsaSig::from_der(&sig).map_err(signing_error)?;
        let mut raw = parsed.r().to_vec_padded(32).map_err(signing_error)?;
        raw.extend(parsed.s().to_vec_padded(32).map_err(signing_error)?);
        Ok(raw)
    }

    fn sign_detached_cms(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let digest = super::digest(self.algorithm.digest(), data)?;
        self.sign_detached_cms_digested(data, &digest)
    }

    fn sign_detached_cms_digested(
        &self,
        _data: &[u8],
        digest: &[u8],
    ) -> Result<Vec<u8>, SignError> {
        // Signed attributes contentType, messageDigest and signingTime, as CMS_sign makes
        // them; the digest is the key's: Streebog-256/512 for GOST, SHA-256 for ECDSA P-256
        // and RSA. No S/MIME capabilities list.
        let md = self.algorithm.digest().message_digest()?;
        let cms = super::ffi::cms_sign_prehashed(&self.cert, &self.key, md, digest)
            .map_err(signing_error)?;
        cms.to_der().map_err(signing_error)
    }

    fn is_local(&self) -> bool {
        true
    }
}

/// The gateway's signers by role and owner (organization OID or doctor SNILS digits).
#[derive(Clone, Default)]
pub struct KeyRing {
    signers: Arc<HashMap<(KeyRole, String), Arc<dyn Signer>>>,
}

impl KeyRing {
    /// Loads every configured key; the first unreadable key is an error naming it.
    ///
    /// Keys held by a signing service are looked up there (blocking HTTP): call from
    /// start-up code or `spawn_blocking`.
    pub fn load(keys: &[KeySettings]) -> Result<KeyRing, String> {
        let mut map: HashMap<(KeyRole, String), Arc<dyn Signer>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let signer: Arc<dyn Signer> = match &k.remote {
                Some(r) => Arc::new(
                    super::RemoteSigner::connect(r)
                        .map_err(|e| format!("signing.keys[{i}]: {e}"))?,
                ),
                None => Arc::new(
                    LocalSigner::from_settings(k).map_err(|e| format!("signing.keys[{i}]: {e}"))?,
                ),
            };
            map.insert((k.role, owner_key(k.role, &k.owner)), signer);
        }
        Ok(KeyRing {
            signers: Arc::new(map),
        })
    }

    /// The signer for an owner, if the gateway holds one.
    pub fn get(&self, role: KeyRole, owner: &str) -> Option<Arc<dyn Signer>> {
        self.signers.get(&(role, owner_key(role, owner))).cloned()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.signers.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }
}

fn owner_key(role: KeyRole, owner: &str) -> String {
    match role {
        KeyRole::Doctor => owner.chars().filter(char::is_ascii_digit).collect(),
        KeyRole::Organization => owner.trim().to_string(),
    }
}
