//! Keys held by the gateway: loaded from PEM or PKCS#12 files named in the configuration.

use std::collections::HashMap;
use std::sync::Arc;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;

use super::{init_crypto, Algorithm, SignError, Signer};
use crate::config::{KeyRole, KeySettings};

/// A private key and its certificate in this process.
pub struct LocalSigner {
    key: PKey<Private>,
    cert: X509,
    algorithm: Algorithm,
}

impl std::fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSigner")
            .field("algorithm", &self.algorithm)
            .field("subject", &format!("{:?}", self.cert.subject_name()))
            .finish()
    }
}

fn read(path: &str) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|e| SignError::KeyFile {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

impl LocalSigner {
    /// From a PEM private key (optionally encrypted) and a PEM certificate.
    pub fn from_pem(
        key_pem: &[u8],
        cert_pem: &[u8],
        passphrase: Option<&str>,
    ) -> Result<LocalSigner, SignError> {
        init_crypto();
        let key = match passphrase {
            Some(p) => PKey::private_key_from_pem_passphrase(key_pem, p.as_bytes()),
            None => PKey::private_key_from_pem(key_pem),
        }
        .map_err(|e| SignError::KeyMaterial(format!("private key: {e}")))?;
        let cert = X509::from_pem(cert_pem)
            .map_err(|e| SignError::KeyMaterial(format!("certificate: {e}")))?;
        Self::new(key, cert)
    }

    /// From PKCS#12 bytes and their passphrase.
    pub fn from_pkcs12(der: &[u8], passphrase: &str) -> Result<LocalSigner, SignError> {
        init_crypto();
        let p12 = openssl::pkcs12::Pkcs12::from_der(der)
            .map_err(|e| SignError::KeyMaterial(format!("PKCS#12: {e}")))?;
        let parsed = p12.parse2(passphrase).map_err(|_| {
            SignError::KeyMaterial("PKCS#12: wrong passphrase or damaged file".into())
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
        let algorithm = match key.id() {
            Id::RSA => Algorithm::Rsa,
            Id::EC => Algorithm::EcdsaP256,
            other => match other.as_raw() {
                // NID_id_GostR3410_2012_256 / _512
                979 => Algorithm::Gost2012_256,
                980 => Algorithm::Gost2012_512,
                n => return Err(SignError::Unsupported(format!("key type NID {n}"))),
            },
        };
        if cert
            .public_key()
            .map(|p| !p.public_eq(&key))
            .unwrap_or(true)
        {
            return Err(SignError::KeyMaterial(
                "certificate does not belong to the private key".into(),
            ));
        }
        Ok(LocalSigner {
            key,
            cert,
            algorithm,
        })
    }
}

impl Signer for LocalSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn certificate_der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap_or_default()
    }

    fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let md = self.algorithm.digest().message_digest()?;
        let e = |e: openssl::error::ErrorStack| SignError::Signing(e.to_string());
        let mut signer = openssl::sign::Signer::new(md, &self.key).map_err(e)?;
        let sig = signer.sign_oneshot_to_vec(data).map_err(e)?;
        if self.algorithm != Algorithm::EcdsaP256 {
            return Ok(sig);
        }
        let parsed = openssl::ecdsa::EcdsaSig::from_der(&sig).map_err(e)?;
        let mut raw = parsed.r().to_vec_padded(32).map_err(e)?;
        raw.extend(parsed.s().to_vec_padded(32).map_err(e)?);
        Ok(raw)
    }

    fn sign_detached_cms(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let flags = CMSOptions::DETACHED | CMSOptions::BINARY | CMSOptions::NOSMIMECAP;
        let cms = CmsContentInfo::sign(Some(&self.cert), Some(&self.key), None, Some(data), flags)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        cms.to_der().map_err(|e| SignError::Signing(e.to_string()))
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
