//! Port: the peer gateways of other regions, as the referrals service sees them. A referral
//! to another region's organization lives in every gateway on its way with one id; each
//! copy tells the copies it is linked to of its moves, and the gateway of the target's
//! region is the one that books, expires and escalates.

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::config::FederationSettings;
use crate::model::organization::Region;
pub use crate::model::referral::PeerUpdate;
use crate::model::referral::Referral;
use crate::model::Oid;

/// Outbox destination of referrals and their moves on their way to peer gateways.
pub const PEER_DESTINATION: &str = "peer";
/// Outbox kind: a referral to forward.
pub const FORWARD: &str = "forward-referral";
/// Outbox kind: a move to tell a linked peer.
pub const UPDATE: &str = "referral-update";
/// The header counting the gateways a request passed.
pub const HOPS_HEADER: &str = "x-medgate-hops";
/// Gateways a request may pass through: a request that went through more is refused (a
/// routing loop, or a chain nobody agreed to).
pub const MAX_HOPS: u32 = 2;

/// Why a peer gateway did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// It answered and refused (its rules, its referral's state): asking again cannot help.
    #[error("{message}")]
    Refused {
        /// Its HTTP status.
        status: u16,
        /// Its machine code.
        code: String,
        /// The field it named, if any.
        field: Option<String>,
        /// What it said.
        message: String,
    },
    /// No usable answer (down, timed out, its own fault): a later attempt may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Where peer gateways are reached.
pub trait PeerGateway: Send + Sync {
    /// Forwards a referral to `peer` (with the duty slot to book it in, when it took that
    /// path); the request has passed `hops` gateways already.
    fn forward<'a>(
        &'a self,
        peer: &'a str,
        referral: &'a Referral,
        duty_slot: Option<&'a str>,
        hops: u32,
    ) -> BoxFuture<'a, Result<(), PeerError>>;
    /// Tells `peer` of a move of a referral it holds a copy of.
    fn update<'a>(
        &'a self,
        peer: &'a str,
        update: &'a PeerUpdate,
        hops: u32,
    ) -> BoxFuture<'a, Result<(), PeerError>>;
    /// The peer's answer to a free-slot search (`Appointment/$find` with `query`, for a
    /// referral it holds the target of or an organization of its regions): its searchset.
    fn find<'a>(&'a self, peer: &'a str, query: &'a str)
        -> BoxFuture<'a, Result<Value, PeerError>>;
    /// Books a referral's visit at the peer holding its target: the peer's Appointment.
    fn book<'a>(
        &'a self,
        peer: &'a str,
        referral_id: &'a str,
        slot: &'a str,
    ) -> BoxFuture<'a, Result<Value, PeerError>>;
}

/// Where an organization's referrals go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// It is this gateway's (this region's, or named without a region).
    Local,
    /// Through this peer gateway.
    Peer {
        /// The peer's name.
        name: String,
        /// The organization's region.
        region: Region,
    },
    /// Another region's, and no peer reaches that region.
    Unreachable(Region),
}

/// This gateway's place in the federation: its region and which peer reaches which region.
#[derive(Debug, Clone)]
pub struct Federation {
    region: Region,
    routes: Vec<(Region, String)>,
    retries: Vec<u64>,
    timeout_secs: u64,
}

impl Federation {
    /// From validated settings; `None` when the region does not parse.
    pub fn from_settings(s: &FederationSettings) -> Option<Federation> {
        Some(Federation {
            region: Region::parse(&s.region)?,
            routes: s
                .peers
                .iter()
                .flat_map(|p| {
                    p.regions
                        .iter()
                        .filter_map(|r| Region::parse(r))
                        .map(|r| (r, p.name.clone()))
                })
                .collect(),
            retries: s.retry_schedule_secs.clone(),
            timeout_secs: s.timeout_secs,
        })
    }

    /// The region this gateway serves.
    pub fn region(&self) -> Region {
        self.region
    }

    /// How long a forward queued with a new referral waits before the outbox sends it: the
    /// time the forward tried at once may take (it completes the queued one).
    pub fn forward_grace_ms(&self) -> i64 {
        i64::try_from(self.timeout_secs.saturating_add(5)).unwrap_or(i64::MAX / 1000) * 1000
    }

    /// Delays between attempts to deliver to a peer.
    pub fn retries(&self) -> &[u64] {
        &self.retries
    }

    /// Where referrals to `org` go.
    pub fn route(&self, org: &Oid) -> Route {
        match Region::of(org) {
            None => Route::Local,
            Some(r) if r == self.region => Route::Local,
            Some(r) => match self.routes.iter().find(|(region, _)| *region == r) {
                Some((_, name)) => Route::Peer {
                    name: name.clone(),
                    region: r,
                },
                None => Route::Unreachable(r),
            },
        }
    }

    /// True when `org` is this gateway's (its notices are this region's to send).
    pub fn is_local(&self, org: &Oid) -> bool {
        self.route(org) == Route::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientCertificate, PeerSettings};

    #[test]
    fn organizations_route_by_their_region() {
        let f = Federation::from_settings(&FederationSettings {
            region: "78".into(),
            timeout_secs: 5,
            retry_schedule_secs: vec![1],
            listen: None,
            peers: vec![PeerSettings {
                name: "msk".into(),
                regions: vec!["77".into(), "50".into()],
                base_url: "https://127.0.0.1:1".into(),
                client_certificate: None,
                client_key: None,
                ca: None,
                certificate: ClientCertificate {
                    sha256: None,
                    subject: Some("CN=msk".into()),
                },
            }],
        })
        .unwrap();
        let org = |s: &str| Oid::parse(s).unwrap();
        assert_eq!(f.route(&org("1.2.643.5.1.13.13.12.2.78.1")), Route::Local);
        assert_eq!(f.route(&org("1.2.643.5.1.13.13.12.1.1")), Route::Local);
        assert_eq!(
            f.route(&org("1.2.643.5.1.13.13.12.1.50.3")),
            Route::Peer {
                name: "msk".into(),
                region: Region::parse("50").unwrap()
            }
        );
        assert_eq!(
            f.route(&org("1.2.643.5.1.13.13.12.1.47.3")),
            Route::Unreachable(Region::parse("47").unwrap())
        );
    }
}
