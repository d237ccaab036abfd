//! Client identity: every request to a protected route resolves to a [`Client`] principal.
//!
//! Today clients come from the configuration with a bearer token stored as its SHA-256.
//! Mutual TLS and per-organization checks on every route build on the same principal.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::config::{ClientSettings, PeerSettings};
use crate::model::organization::Region;
use crate::model::schedule::Channel;
use crate::model::Oid;

/// The scopes a client may hold; every route names the one it needs.
pub mod scopes {
    /// Everything, for any organization (operators).
    pub const ADMIN: &str = "admin";
    /// The directory and schedules: organizations, practitioners, slots, free slots.
    pub const SCHEDULE_READ: &str = "schedule:read";
    /// Appointments and a patient's history.
    pub const APPOINTMENT_READ: &str = "appointment:read";
    /// Hold, book, cancel, reschedule, urgent visits (implies reading appointments).
    pub const APPOINTMENT_WRITE: &str = "appointment:write";
    /// Channel restrictions of the client's organizations.
    pub const BOOKING_ADMIN: &str = "booking:admin";
    /// Submitting documents for the client's organizations.
    pub const DOCUMENTS_SUBMIT: &str = "documents:submit";
    /// Reading documents of the client's organizations and their registration status.
    pub const DOCUMENTS_READ: &str = "documents:read";
    /// Sending refused documents of the client's organizations again.
    pub const DOCUMENTS_RERUN: &str = "documents:rerun";
    /// The transaction log's records (metadata).
    pub const TRANSACTIONS_READ: &str = "transactions:read";
    /// The stored bodies of transaction records (they carry personal data).
    pub const TRANSACTIONS_BODIES: &str = "transactions:bodies";
    /// Sending a failed inbound exchange again, as the client that sent it (implies
    /// reading the log).
    pub const TRANSACTIONS_RERUN: &str = "transactions:rerun";
    /// The registry's callbacks and file fetches.
    pub const REMD_CALLBACK: &str = "remd:callback";
    /// The audit trail of accesses to personal data.
    pub const AUDIT_READ: &str = "audit:read";
    /// Referrals of the client's organizations (as referring or target organization).
    pub const REFERRAL_READ: &str = "referral:read";
    /// Creating referrals and moving them (accept, reject, cancel, complete).
    pub const REFERRAL_WRITE: &str = "referral:write";
    /// Recording a patient's own request for a referral, for the attending doctor to
    /// confirm (citizen-facing channels: the portal, the call centre).
    pub const REFERRAL_PROPOSE: &str = "referral:propose";

    /// The background jobs and their runs (no organization's records).
    pub const JOBS_READ: &str = "jobs:read";
    /// Running a job by hand.
    pub const JOBS_RUN: &str = "jobs:run";
    /// The daily statistics of the client's organizations.
    pub const STATS_READ: &str = "stats:read";
    /// The reference books (NSI) kept: public terminology, no organization's records.
    pub const NSI_READ: &str = "nsi:read";

    /// Taking in citizens' appeals (the portal's complaint service, district chats, call
    /// centres).
    pub const APPEALS_SUBMIT: &str = "appeals:submit";
    /// Appeals routed to the client's organizations, and their statistics.
    pub const APPEALS_READ: &str = "appeals:read";
    /// Answering, rerouting and extending appeals of the client's organizations.
    pub const APPEALS_ANSWER: &str = "appeals:answer";
    /// Sending dead letters of the client's organizations again, once their cause is fixed.
    pub const OUTBOX_RERUN: &str = "outbox:rerun";

    /// Scopes a held scope implies.
    pub fn implied(held: &str) -> &'static [&'static str] {
        match held {
            APPOINTMENT_WRITE => &[APPOINTMENT_READ],
            REFERRAL_WRITE => &[REFERRAL_READ],
            JOBS_RUN => &[JOBS_READ],
            APPEALS_ANSWER => &[APPEALS_READ],
            TRANSACTIONS_RERUN => &[TRANSACTIONS_READ],
            _ => &[],
        }
    }
}

/// An authenticated API client, handed to every handler of a protected route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Stable identifier recorded in the transaction log and audit.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Organizations this client may act for.
    pub organizations: Vec<Oid>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Booking channels the client may use, in order of preference (never empty).
    pub channels: Vec<Channel>,
    /// DER of the certificate the client signs its SOAP requests with, when it must.
    pub message_certificate: Option<Vec<u8>>,
    /// Regions whose every organization the client acts for: a peer gateway's.
    pub regions: Vec<Region>,
}

impl Client {
    /// True when the client holds `scope`, a scope that implies it, or `admin`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == scope || s == scopes::ADMIN || scopes::implied(s).contains(&scope))
    }

    /// True for operators, who see every organization's records.
    pub fn is_operator(&self) -> bool {
        self.scopes.iter().any(|s| s == scopes::ADMIN)
    }

    /// The channel a booking request uses: the one it names (if the client may use it) or
    /// the client's default.
    pub fn booking_channel(&self, requested: Option<Channel>) -> Result<Channel, Channel> {
        match requested {
            None => Ok(self.channels.first().copied().unwrap_or(Channel::Internet)),
            Some(c) if self.channels.contains(&c) => Ok(c),
            Some(c) => Err(c),
        }
    }

    /// True when the client may act for the organization (admins may act for any).
    pub fn may_act_for(&self, org: &Oid) -> bool {
        self.has_scope("admin")
            || self.organizations.iter().any(|o| o == org)
            || Region::of(org).is_some_and(|r| self.regions.contains(&r))
    }

    /// True for a peer gateway (it acts for whole regions).
    pub fn is_peer(&self) -> bool {
        !self.regions.is_empty()
    }
}

/// A client's request-rate limiter.
type Limiter = governor::DefaultDirectRateLimiter;

/// Clients known to this gateway, looked up by token hash, with their rate limiters.
#[derive(Clone, Default)]
pub struct ClientRegistry {
    by_id: Arc<HashMap<String, Arc<Client>>>,
    by_hash: Arc<HashMap<[u8; 32], Arc<Client>>>,
    by_fingerprint: Arc<HashMap<[u8; 32], Arc<Client>>>,
    by_subject: Arc<HashMap<String, Arc<Client>>>,
    limits: Arc<HashMap<String, Limiter>>,
}

impl std::fmt::Debug for ClientRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRegistry")
            .field("clients", &self.by_hash.len())
            .field("rate_limited", &self.limits.len())
            .finish()
    }
}

/// Why a request could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials: send `Authorization: Bearer <token>` or a client certificate")]
    Missing,
    /// A header that is not a bearer token.
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    /// A token no client owns.
    #[error("unknown or revoked token")]
    Unknown,
    /// A client certificate no client is configured with.
    #[error("the client certificate `{0}` belongs to no client")]
    UnknownCertificate(String),
}

/// The certificate a client presented on its TLS connection, verified against the client
/// CA during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// SHA-256 of its DER.
    pub sha256: [u8; 32],
    /// Its subject, RFC 2253.
    pub subject: String,
}

impl ClientRegistry {
    /// Builds the registry from validated settings: the clients and the peer gateways
    /// (known by their certificates, acting for their regions); entries with a bad hash are
    /// skipped; a client's signing certificate that cannot be read is an error.
    pub fn from_settings(
        clients: &[ClientSettings],
        peers: &[PeerSettings],
    ) -> Result<ClientRegistry, String> {
        let mut map = HashMap::new();
        let mut by_id = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        let mut by_subject = HashMap::new();
        for c in clients {
            let message_certificate = c
                .signing_certificate
                .as_deref()
                .map(|path| {
                    crate::sign::certificate_der(path)
                        .map_err(|e| format!("clients `{}`.signing_certificate: {e}", c.id))
                })
                .transpose()?;
            let organizations = c
                .organizations
                .iter()
                .filter_map(|o| Oid::parse(o).ok())
                .collect();
            let client = Arc::new(Client {
                id: c.id.clone(),
                name: if c.name.is_empty() {
                    c.id.clone()
                } else {
                    c.name.clone()
                },
                organizations,
                regions: Vec::new(),
                scopes: c.scopes.clone(),
                message_certificate: message_certificate.clone(),
                channels: {
                    let listed: Vec<Channel> = c
                        .channels
                        .iter()
                        .filter_map(|x| Channel::parse(x))
                        .collect();
                    if listed.is_empty() {
                        let mut all = vec![Channel::Internet];
                        all.extend(Channel::ALL.into_iter().filter(|x| *x != Channel::Internet));
                        all
                    } else {
                        listed
                    }
                },
            });
            by_id.insert(client.id.clone(), client.clone());
            let token = hex::decode(c.token_sha256.expose()).ok();
            if let Some(hash) = token.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) {
                map.insert(hash, client.clone());
            }
            if let Some(cert) = &c.certificate {
                if let Some(fp) = cert.fingerprint() {
                    by_fingerprint.insert(fp, client.clone());
                }
                if let Some(subject) = &cert.subject {
                    by_subject.insert(subject.trim().to_string(), client.clone());
                }
            }
        }
        for p in peers {
            let peer = Arc::new(Client {
                id: p.name.clone(),
                name: format!("peer gateway {}", p.name),
                organizations: Vec::new(),
                regions: p.regions.iter().filter_map(|r| Region::parse(r)).collect(),
                // What the federation's FHIR API asks of a peer: referrals and their visits.
                scopes: [
                    scopes::REFERRAL_WRITE,
                    scopes::APPOINTMENT_WRITE,
                    scopes::SCHEDULE_READ,
                ]
                .map(str::to_string)
                .to_vec(),
                channels: vec![Channel::Referral],
                message_certificate: None,
            });
            by_id.insert(peer.id.clone(), peer.clone());
            if let Some(fp) = p.certificate.fingerprint() {
                by_fingerprint.insert(fp, peer.clone());
            }
            if let Some(subject) = &p.certificate.subject {
                by_subject.insert(subject.trim().to_string(), peer);
            }
        }
        let limits = clients
            .iter()
            .filter_map(|c| {
                let r = c.rate?;
                let quota = governor::Quota::per_second(NonZeroU32::new(r.per_second)?)
                    .allow_burst(NonZeroU32::new(r.burst)?);
                Some((c.id.clone(), governor::RateLimiter::direct(quota)))
            })
            .collect();
        Ok(ClientRegistry {
            by_id: Arc::new(by_id),
            by_hash: Arc::new(map),
            by_fingerprint: Arc::new(by_fingerprint),
            by_subject: Arc::new(by_subject),
            limits: Arc::new(limits),
        })
    }

    /// The client configured as `id` (a rerun acts as the client that sent the request).
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.by_id.get(id).cloned()
    }

    /// Counts one request of `client` against its rate; `Err` says how long to wait when
    /// the client is over it.
    pub fn check_rate(&self, client: &str) -> Result<(), std::time::Duration> {
        let Some(limiter) = self.limits.get(client) else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Resolves a request's credentials to a client: its `Authorization` header when it
    /// sends one, else the certificate its connection presented.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        certificate: Option<&PeerCertificate>,
    ) -> Result<Arc<Client>, AuthError> {
        let Some(header) = header else {
            let cert = certificate.ok_or(AuthError::Missing)?;
            return self
                .by_fingerprint
                .get(&cert.sha256)
                .or_else(|| self.by_subject.get(&cert.subject))
                .cloned()
                .ok_or_else(|| AuthError::UnknownCertificate(cert.subject.clone()));
        };
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let hash = token_hash(token.trim());
        // The map lookup is on a hash of the token, so timing reveals nothing about tokens.
        self.by_hash.get(&hash).cloned().ok_or(AuthError::Unknown)
    }
}

/// SHA-256 of a token, the form in which tokens are configured.
pub fn token_hash(token: &str) -> [u8; 32] {
    let digest = openssl::sha::sha256(token.as_bytes());
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn bearer_tokens_resolve() {
        let reg = ClientRegistry::from_settings(
            &[ClientSettings {
                id: "portal".into(),
                name: String::new(),
                token_sha256: Secret::new(hex::encode(token_hash("s3cret"))),
                organizations: vec!["1.2.643.5.1.13.13.12.1.1".into()],
                scopes: vec!["schedule:read".into()],
                channels: Vec::new(),
                rate: None,
                signing_certificate: None,
                certificate: None,
            }],
            &[],
        )
        .unwrap();
        let c = reg.authenticate(Some("Bearer s3cret"), None).unwrap();
        assert_eq!(c.id, "portal");
        assert!(c.has_scope("schedule:read"));
        assert!(!c.has_scope("admin"));
        assert_eq!(reg.authenticate(None, None), Err(AuthError::Missing));
        assert_eq!(
            reg.authenticate(Some("Basic x"), None),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            reg.authenticate(Some("Bearer nope"), None),
            Err(AuthError::Unknown)
        );
    }
}
