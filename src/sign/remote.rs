//! A [`Signer`] whose key lives in an external signing service (a certified token or HSM
//! behind HTTP). Contract: `POST {url}/keys/{key_id}/sign` with
//! `{"data": base64, "format": "cms-detached"}` and a bearer token answers
//! `{"signature": base64 DER CMS, "algorithm": "..."}`; `GET {url}/keys/{key_id}` answers
//! `{"certificate": base64 DER, "algorithm": "..."}`. Written down in `adapters/signer/`.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::{Algorithm, SignError, Signer};
use crate::config::RemoteKeySettings;

/// A key held by a signing service.
pub struct RemoteSigner {
    settings: RemoteKeySettings,
    algorithm: Algorithm,
    certificate: Vec<u8>,
    client: OnceLock<reqwest::blocking::Client>,
}

#[derive(Deserialize)]
struct KeyInfo {
    certificate: String,
    algorithm: Algorithm,
}

#[derive(Deserialize)]
struct Signed {
    signature: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl RemoteSigner {
    /// Asks the service for the key's certificate and algorithm. Blocking: call it off the
    /// async runtime (`spawn_blocking`) or at start-up.
    pub fn connect(settings: &RemoteKeySettings) -> Result<RemoteSigner, SignError> {
        let signer = RemoteSigner {
            settings: settings.clone(),
            algorithm: Algorithm::Rsa,
            certificate: Vec::new(),
            client: OnceLock::new(),
        };
        let info: KeyInfo = signer
            .client()?
            .get(format!(
                "{}/keys/{}",
                settings.url.trim_end_matches('/'),
                settings.key_id
            ))
            .bearer_auth(settings.token.expose())
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .map_err(|e| SignError::Remote(e.to_string()))?;
        let certificate = b64()
            .decode(info.certificate.as_bytes())
            .map_err(|e| SignError::Remote(format!("certificate is not base64: {e}")))?;
        Ok(RemoteSigner {
            algorithm: info.algorithm,
            certificate,
            ..signer
        })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, SignError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(self.settings.timeout_secs))
            .build()
            .map_err(|e| SignError::Remote(e.to_string()))?;
        Ok(self.client.get_or_init(|| c))
    }
}

impl Signer for RemoteSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn certificate_der(&self) -> Vec<u8> {
        self.certificate.clone()
    }

    fn sign_detached_cms(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.request(data, "cms-detached")
    }

    fn sign_raw(&self, data: &[u8]) -> Result<Vec<u8>, SignError> {
        self.request(data, "raw")
    }
}

impl RemoteSigner {
    fn request(&self, data: &[u8], format: &str) -> Result<Vec<u8>, SignError> {
        let url = format!(
            "{}/keys/{}/sign",
            self.settings.url.trim_end_matches('/'),
            self.settings.key_id
        );
        let signed: Signed = self
            .client()?
            .post(url)
            .bearer_auth(self.settings.token.expose())
            .json(&serde_json::json!({"data": b64().encode(data), "format": format}))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .map_err(|e| SignError::Remote(e.to_string()))?;
        b64()
            .decode(signed.signature.as_bytes())
            .map_err(|e| SignError::Remote(format!("signature is not base64: {e}")))
    }
}
