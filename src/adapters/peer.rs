//! Peer gateways of other regions over their FHIR API with mutual TLS: referrals forwarded
//! as `ServiceRequest`, moves told as `Task`, a referral's slots and booking asked of the
//! gateway holding its target. Every call names the gateways it passed (`X-Medgate-Hops`),
//! carries the trace, is recorded in the transaction log and guarded by the peer's breaker.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::exchange::{exchange, Link, NoAnswer, PartnerFault, Request};
use crate::codec::fhir::fhir_id;
use crate::codec::fhir::referral::{duty_slot_extension, forwarded_request, peer_task};
use crate::config::{FederationSettings, PeerSettings};
use crate::exchange::partners::Partners;
use crate::exchange::txlog::TxLog;
use crate::model::referral::{PeerUpdate, Referral};
use crate::services::federation::{PeerError, PeerGateway, HOPS_HEADER};

struct Peer {
    link: Link,
    base: String,
}

/// The peer gateways this gateway calls.
pub struct PeerClient {
    peers: HashMap<String, Peer>,
}

/// Why a peer's TLS client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("federation.peers `{peer}`: {why}")]
pub struct PeerSetupError {
    peer: String,
    why: String,
}

fn read(path: &str, peer: &str) -> Result<Vec<u8>, PeerSetupError> {
    std::fs::read(path).map_err(|e| PeerSetupError {
        peer: peer.into(),
        why: format!("{path}: {e}"),
    })
}

fn http_client(p: &PeerSettings, timeout: Duration) -> Result<reqwest::Client, PeerSetupError> {
    let fail = |why: String| PeerSetupError {
        peer: p.name.clone(),
        why,
    };
    let mut b = reqwest::Client::builder().timeout(timeout);
    if let (Some(cert), Some(key)) = (&p.client_certificate, &p.client_key) {
        let identity =
            reqwest::Identity::from_pkcs8_pem(&read(cert, &p.name)?, &read(key, &p.name)?)
                .map_err(|e| fail(format!("client certificate: {e}")))?;
        b = b.identity(identity);
    }
    if let Some(ca) = &p.ca {
        let ca = reqwest::Certificate::from_pem(&read(ca, &p.name)?)
            .map_err(|e| fail(format!("ca: {e}")))?;
        // Only the federation's CA vouches for a peer.
        b = b.tls_certs_only([ca]);
    }
    b.build().map_err(|e| fail(e.to_string()))
}

impl PeerClient {
    /// Clients for every configured peer.
    pub fn new(
        settings: &FederationSettings,
        txlog: &TxLog,
        partners: &Partners,
    ) -> Result<PeerClient, PeerSetupError> {
        let timeout = Duration::from_secs(settings.timeout_secs);
        let mut peers = HashMap::new();
        for p in &settings.peers {
            let link = Link {
                http: http_client(p, timeout)?,
                txlog: txlog.clone(),
                timeout,
                partners: partners.clone(),
            };
            let base = format!("{}/fhir", p.base_url.trim_end_matches('/'));
            peers.insert(p.name.clone(), Peer { link, base });
        }
        Ok(PeerClient { peers })
    }

    async fn call(
        &self,
        peer: &str,
        operation: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        hops: u32,
    ) -> Result<Value, PeerError> {
        let p = self
            .peers
            .get(peer)
            .ok_or_else(|| PeerError::Unavailable(format!("no peer gateway named {peer}")))?;
        let url = format!("{}{path}", p.base);
        let partner = format!("peer:{peer}");
        let req = Request {
            adapter: &partner,
            operation: format!("peer.{operation}"),
            method,
            url: &url,
            correlation_id: "",
            headers: vec![
                ("content-type", "application/fhir+json".into()),
                ("accept", "application/fhir+json".into()),
                (HOPS_HEADER, hops.to_string()),
            ],
            body: body.map(|b| b.to_string()).unwrap_or_default(),
        };
        exchange(&p.link, req, answer)
            .await
            .map_err(|e: CallError| e.0)
    }
}

/// A peer's answer: its resource, or its OperationOutcome as a refusal.
fn answer(status: u16, body: &[u8]) -> Result<Value, CallError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(v);
    }
    // Overload, its own faults and the loss of a proxy are the peer's, not the request's.
    if status >= 500 || status == 429 || status == 408 || v.is_null() {
        return Err(CallError(PeerError::Unavailable(format!(
            "peer answered HTTP {status}"
        ))));
    }
    let issue = &v["issue"][0];
    Err(CallError(PeerError::Refused {
        status,
        code: issue["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("PEER_REFUSED")
            .chars()
            .take(64)
            .collect(),
        field: issue["expression"][0]
            .as_str()
            .map(|s| s.chars().take(200).collect()),
        message: issue["details"]["text"]
            .as_str()
            .unwrap_or("refused")
            .chars()
            .take(2000)
            .collect(),
    }))
}

/// A peer call's failure as the exchange sees it.
#[derive(Debug)]
struct CallError(PeerError);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<NoAnswer> for CallError {
    fn from(e: NoAnswer) -> Self {
        CallError(PeerError::Unavailable(e.to_string()))
    }
}

impl PartnerFault for CallError {
    fn is_partner_fault(&self) -> bool {
        matches!(self.0, PeerError::Unavailable(_))
    }
}

impl PeerGateway for PeerClient {
    fn forward<'a>(
        &'a self,
        peer: &'a str,
        referral: &'a Referral,
        duty_slot: Option<&'a str>,
        hops: u32,
    ) -> BoxFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let mut body = forwarded_request(referral);
            if let Some(slot) = duty_slot {
                body["extension"] = json!([duty_slot_extension(slot)]);
            }
            self.call(
                peer,
                "forwardReferral",
                reqwest::Method::POST,
                "/ServiceRequest",
                Some(body),
                hops,
            )
            .await
            .map(|_| ())
        })
    }

    fn update<'a>(
        &'a self,
        peer: &'a str,
        update: &'a PeerUpdate,
        hops: u32,
    ) -> BoxFuture<'a, Result<(), PeerError>> {
        Box::pin(async move {
            let path = format!("/Task/{}", update.referral_id);
            self.call(
                peer,
                "updateReferral",
                reqwest::Method::PUT,
                &path,
                Some(peer_task(update)),
                hops,
            )
            .await
            .map(|_| ())
        })
    }

    fn find<'a>(
        &'a self,
        peer: &'a str,
        query: &'a str,
    ) -> BoxFuture<'a, Result<Value, PeerError>> {
        Box::pin(async move {
            self.call(
                peer,
                "findSlots",
                reqwest::Method::GET,
                &format!("/Appointment/$find?{query}"),
                None,
                1,
            )
            .await
        })
    }

    fn book<'a>(
        &'a self,
        peer: &'a str,
        referral_id: &'a str,
        slot: &'a str,
    ) -> BoxFuture<'a, Result<Value, PeerError>> {
        Box::pin(async move {
            let body = json!({
                "resourceType": "Parameters",
                "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{}", fhir_id(slot))}}],
            });
            self.call(
                peer,
                "bookReferral",
                reqwest::Method::POST,
                &format!("/ServiceRequest/{referral_id}/$book"),
                Some(body),
                1,
            )
            .await
        })
    }
}
