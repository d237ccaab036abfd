//! Client of the registry of electronic medical documents (REMD-style SOAP 1.2): the
//! documents service's [`Registry`].

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::codec::remd::{
    read_errors, Addressing, RegisterDocument, RegistryError, RegistryItem, NS_SERVICE,
};
use crate::codec::soap;
use crate::codec::xml::{dom, Limits};
use crate::exchange::partners::Partners;
use crate::exchange::txlog::TxLog;
use crate::services::registry::{ItemStatus, Registry, RegistryCallError as RemdCallError};

impl From<super::exchange::NoAnswer> for RemdCallError {
    fn from(e: super::exchange::NoAnswer) -> Self {
        match e {
            super::exchange::NoAnswer::Timeout(d) => RemdCallError::Timeout(d),
            super::exchange::NoAnswer::Transport(m) => RemdCallError::Transport(m),
            e @ super::exchange::NoAnswer::CircuitOpen(_) => {
                RemdCallError::Transport(e.to_string())
            }
        }
    }
}

impl super::exchange::PartnerFault for RemdCallError {
    fn is_partner_fault(&self) -> bool {
        match self {
            RemdCallError::Timeout(_)
            | RemdCallError::Transport(_)
            | RemdCallError::Malformed(_) => true,
            // The registry's own trouble (internal errors, overload), not its verdict on a
            // document.
            RemdCallError::Refused(errors) => {
                crate::model::remd::classify_all(errors.iter().map(|e| e.code.as_str()))
                    == crate::model::remd::ErrorClass::Retryable
            }
        }
    }
}

/// A configured registry client.
#[derive(Clone)]
pub struct RemdClient {
    link: super::exchange::Link,
    url: String,
    client_entity_id: String,
    callback_url: String,
    message_signer: Option<std::sync::Arc<dyn crate::sign::Signer>>,
}

impl RemdClient {
    /// Builds a client for the registry at `url`.
    pub fn new(
        url: &str,
        client_entity_id: &str,
        callback_url: &str,
        timeout: Duration,
        txlog: TxLog,
    ) -> RemdClient {
        let mut link = super::exchange::Link::new(timeout, txlog, Partners::default());
        link.http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_default();
        RemdClient {
            link,
            url: url.to_string(),
            client_entity_id: client_entity_id.to_string(),
            callback_url: callback_url.to_string(),
            message_signer: None,
        }
    }

    /// The same client reporting to the gateway's shared breakers.
    pub fn with_partners(mut self, partners: Partners) -> RemdClient {
        self.link.partners = partners;
        self
    }

    /// Signs every outbound message with this key (XMLDSig, WS-Security).
    pub fn with_message_signer(mut self, signer: std::sync::Arc<dyn crate::sign::Signer>) -> Self {
        self.message_signer = Some(signer);
        self
    }

    fn addressing(&self, action: &str, message_id: &str) -> Addressing {
        Addressing {
            action: action.to_string(),
            message_id: message_id.to_string(),
            to: self.url.clone(),
            reply_to: Some(self.callback_url.clone()),
            relates_to: None,
            client_entity_id: self.client_entity_id.clone(),
        }
    }

    async fn call(
        &self,
        action: &str,
        message_id: &str,
        correlation_id: &str,
        body: String,
    ) -> Result<dom::Element, RemdCallError> {
        let addressing = self.addressing(action, message_id);
        let envelope = match &self.message_signer {
            None => addressing.envelope(&body),
            Some(signer) => {
                let signer = signer.clone();
                let header = addressing.header_xml();
                tokio::task::spawn_blocking(move || {
                    crate::codec::xml::dsig::sign_envelope(
                        crate::codec::soap::SoapVersion::V12,
                        &header,
                        &body,
                        signer.as_ref(),
                        &Limits::default(),
                    )
                })
                .await
                .map_err(|e| RemdCallError::Transport(format!("signing task: {e}")))?
                .map_err(|e| {
                    RemdCallError::Refused(vec![RegistryError {
                        code: "MESSAGE_SIGNATURE_INVALID".into(),
                        message: format!("could not sign the message: {e}"),
                    }])
                })?
            }
        };
        let limits = Limits {
            max_bytes: 4 * 1024 * 1024,
            ..Limits::default()
        };
        let request = super::exchange::Request {
            method: reqwest::Method::POST,
            adapter: "remd",
            operation: format!("remd.{action}"),
            url: &self.url,
            correlation_id,
            headers: vec![(
                "content-type",
                format!("application/soap+xml; charset=utf-8; action=\"{action}\""),
            )],
            body: envelope,
        };
        super::exchange::exchange(
            &self.link,
            request,
            |status, bytes| match soap::parse_request(bytes, &limits) {
                Err(e) => Err(RemdCallError::Malformed(format!("HTTP {status}: {e}"))),
                Ok(p) if p.operation.name == "Fault" => {
                    let detail = p
                        .operation
                        .child("Detail")
                        .or_else(|| p.operation.child("detail"));
                    let mut errors = detail.map(read_errors).unwrap_or_default();
                    if errors.is_empty() {
                        errors.push(RegistryError {
                            code: "INTERNAL_ERROR".into(),
                            message: format!("fault without error items (HTTP {status})"),
                        });
                    }
                    Err(RemdCallError::Refused(errors))
                }
                Ok(p) => Ok(p.operation),
            },
        )
        .await
    }

    /// Sends `registerDocument`; `Ok` means the registry acknowledged receipt.
    pub async fn register(
        &self,
        request: &RegisterDocument,
        message_id: &str,
    ) -> Result<(), RemdCallError> {
        let el = self
            .call(
                "registerDocument",
                message_id,
                &request.local_uid,
                request.to_xml(),
            )
            .await?;
        match el.child_text("status") {
            Some("success") | Some("accepted") => Ok(()),
            other => Err(RemdCallError::Malformed(format!(
                "unexpected acknowledgement status {other:?}"
            ))),
        }
    }

    /// Asks the registry about a document by local UID.
    pub async fn get_registry_item(&self, local_uid: &str) -> Result<ItemStatus, RemdCallError> {
        let body = format!(
            r#"<getRegistryItemRequest xmlns="{NS_SERVICE}"><localUid>{}</localUid></getRegistryItemRequest>"#,
            dom::escape_text(local_uid)
        );
        let message_id = format!("urn:uuid:{}", uuid::Uuid::now_v7());
        let el = self
            .call("getRegistryItem", &message_id, local_uid, body)
            .await?;
        Ok(match el.child_text("status") {
            Some("registered") => match RegistryItem::from_parent(&el) {
                Some(item) => ItemStatus::Registered(item),
                None => {
                    return Err(RemdCallError::Malformed(
                        "registered without registryItem".into(),
                    ))
                }
            },
            Some("in-progress") => ItemStatus::InProgress,
            _ => ItemStatus::NotFound,
        })
    }
}

impl Registry for RemdClient {
    fn register<'a>(
        &'a self,
        request: &'a RegisterDocument,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RemdCallError>> {
        Box::pin(RemdClient::register(self, request, message_id))
    }

    fn registry_item<'a>(
        &'a self,
        local_uid: &'a str,
    ) -> BoxFuture<'a, Result<ItemStatus, RemdCallError>> {
        Box::pin(self.get_registry_item(local_uid))
    }
}
