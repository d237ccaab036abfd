//! The rules of the domain. Each service declares the ports it needs as traits (clinic
//! booking, schedule source, registry, notifier, signing keys), takes them at construction
//! and reads time from an injected clock; services never import adapters or the HTTP edge.

pub mod appeals;
pub mod booking;
pub mod documents;
pub mod federation;
pub mod mis;
pub mod notify;
pub mod nsi;
pub mod operations;
pub mod reconcile;
pub mod referrals;
pub mod registry;
pub mod schedule_sync;
pub mod schedules;
pub mod sessions;

pub use crate::store::StoreError;

use crate::auth::Client;
use crate::model::Oid;

/// Who calls a service: the API client, whether it is an operator (who sees every
/// organization's records), and the organizations it acts for.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// API client id.
    pub client_id: &'a str,
    /// Operators (`admin`) act for every organization.
    pub operator: bool,
    /// The organizations the client acts for.
    pub organizations: &'a [Oid],
    /// The regions whose every organization the client acts for (a peer gateway).
    pub regions: &'a [crate::model::organization::Region],
}

/// A new audit event of `caller`'s access: successful until refused, its record and
/// patient filled in by whoever knows them; the request id comes from the context.
pub fn audit_event(
    caller: Caller<'_>,
    action: crate::model::audit::AuditAction,
    entity: crate::model::audit::AuditEntity,
    now: i64,
) -> crate::model::audit::AuditEvent {
    crate::model::audit::AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        at: now,
        request_id: crate::context::request_id().unwrap_or_default(),
        client_id: caller.client_id.to_string(),
        org: None,
        action,
        entity,
        entity_id: None,
        snils: None,
        policy: None,
        success: true,
        detail: String::new(),
    }
}

impl<'a> Caller<'a> {
    /// The caller behind an authenticated client.
    pub fn of(client: &'a Client) -> Caller<'a> {
        Caller {
            client_id: &client.id,
            operator: client.is_operator(),
            organizations: &client.organizations,
            regions: &client.regions,
        }
    }

    /// True when the caller may see and change records of `org`.
    pub fn acts_for(&self, org: &Oid) -> bool {
        self.operator
            || self.organizations.contains(org)
            || crate::model::organization::Region::of(org)
                .is_some_and(|r| self.regions.contains(&r))
    }

    /// The peer gateway making the call, if it is one.
    pub fn peer(&self) -> Option<&'a str> {
        (!self.regions.is_empty()).then_some(self.client_id)
    }

    /// The organizations whose records a listing may show: `None` for all (operators).
    pub fn scope(&self) -> Option<&'a [Oid]> {
        (!self.operator).then_some(self.organizations)
    }
}
