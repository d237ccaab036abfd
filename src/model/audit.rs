//! The audit trail of accesses to personal data: who (client, organization) did what
//! (action on an entity) to whose data (the patient), with what outcome, when, in which
//! request.

use std::fmt;

use super::booking::Patient;
use super::{Oid, PolicyNumber, Snils};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A record was created.
    Create,
    /// A record was read.
    Read,
    /// A record was changed (cancelled, rescheduled, sent again).
    Update,
    /// Records were searched.
    Search,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 4] = [
        AuditAction::Create,
        AuditAction::Read,
        AuditAction::Update,
        AuditAction::Search,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Read => "read",
            AuditAction::Update => "update",
            AuditAction::Search => "search",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of personal data accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEntity {
    /// An appointment (with its patient).
    Appointment,
    /// A medical document.
    Document,
    /// A patient's identification (a lookup).
    Patient,
    /// A patient's appointment history.
    History,
    /// The stored bodies of a transaction record.
    TransactionBody,
    /// A referral (with its patient).
    Referral,
    /// A citizen's appeal (with the citizen's contact and identifiers).
    Appeal,
}

impl AuditEntity {
    /// Every entity.
    pub const ALL: [AuditEntity; 7] = [
        AuditEntity::Appointment,
        AuditEntity::Document,
        AuditEntity::Patient,
        AuditEntity::History,
        AuditEntity::TransactionBody,
        AuditEntity::Referral,
        AuditEntity::Appeal,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEntity::Appointment => "appointment",
            AuditEntity::Document => "document",
            AuditEntity::Patient => "patient",
            AuditEntity::History => "history",
            AuditEntity::TransactionBody => "transaction-body",
            AuditEntity::Referral => "referral",
            AuditEntity::Appeal => "appeal",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<AuditEntity> {
        AuditEntity::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One access to personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Id (UUIDv7).
    pub id: String,
    /// When (epoch ms).
    pub at: i64,
    /// The request that made the access.
    pub request_id: String,
    /// The API client.
    pub client_id: String,
    /// The organization whose record it is, when known.
    pub org: Option<Oid>,
    /// What was done.
    pub action: AuditAction,
    /// To what.
    pub entity: AuditEntity,
    /// The record's id, when there is one.
    pub entity_id: Option<String>,
    /// The patient's SNILS, when known.
    pub snils: Option<Snils>,
    /// The patient's OMS policy number, when known.
    pub policy: Option<PolicyNumber>,
    /// `success`, or `refused` with the refusal's code in `detail`.
    pub success: bool,
    /// The refusal's code, or what else the operator should know.
    pub detail: String,
}

impl AuditEvent {
    /// The patient's identifiers of `p` on this event.
    pub fn patient(mut self, p: &Patient) -> AuditEvent {
        self.snils = p.snils.clone().or(self.snils);
        self.policy = p.policy.clone().or(self.policy);
        self
    }

    /// The record of organization `org` this event is about.
    pub fn record(mut self, org: &Oid, id: &str) -> AuditEvent {
        self.org = Some(org.clone());
        self.entity_id = Some(id.to_string());
        self
    }

    /// The access was refused with `code`.
    pub fn refused(mut self, code: &str) -> AuditEvent {
        self.success = false;
        self.detail = code.to_string();
        self
    }
}
