//! The referrals service: a doctor's referral from one organization to another, checked
//! against the target's acceptance rules, moved through its lifecycle only by the side
//! allowed to make each move, every move recorded and told to the other organization
//! through the outbox (bounded retries, then a dead letter); open referrals lapse when
//! their validity ends.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::Notify;

use super::booking::{Booking, BookingError, Requester, Target};
use super::federation::{
    Federation, PeerError, PeerGateway, PeerUpdate, Route, FORWARD, MAX_HOPS, PEER_DESTINATION,
    UPDATE,
};
use super::notify::Notifier;
use super::schedules::{FreeSlots, Schedules};
use super::{audit_event, Caller};
use crate::config::ReferralSettings;
use crate::exchange::delivery::{retry_or_dead, Outcome};
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
use crate::model::booking::{Appointment, Patient, PatientError};
use crate::model::organization::Region;
use crate::model::referral::{
    check_rules, AcceptanceRule, Referral, ReferralEvent, ReferralKind, ReferralStatus,
    RemoteDocument, RuleRefusal, Side, Urgency,
};
use crate::model::schedule::{Channel, Slot};
use crate::model::time::{SharedClock, DAY_MS};
use crate::model::{Icd10, Oid, Snils};
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::referrals::Move;
pub use crate::store::referrals::ReferralQuery;
use crate::store::{Store, StoreError};

/// Outbox destination of the notices about referrals.
pub const NOTIFY_DESTINATION: &str = "referral-notify";
/// The client recorded for the gateway's own moves (expiry).
pub const GATEWAY_ACTOR: &str = "gateway";
/// Whom an overdue referral's notice is for: the region's operator.
pub const OPERATOR: &str = "operator";

/// A referral as the referring doctor's system sends it.
#[derive(Debug, Clone)]
pub struct NewReferral {
    /// The patient.
    pub patient: Patient,
    /// Diagnosis.
    pub diagnosis: Icd10,
    /// Why, in the doctor's words.
    pub reason: String,
    /// The referring organization.
    pub requester_org: Oid,
    /// The referring doctor.
    pub requester_snils: Snils,
    /// Target profile or specialty code.
    pub profile: String,
    /// The target; `None`: any organization of the region whose rules accept it.
    pub target_org: Option<Oid>,
    /// How soon.
    pub urgency: Urgency,
    /// What is asked for.
    pub kind: ReferralKind,
    /// Days of validity; `None`: the configured default.
    pub valid_days: Option<u32>,
    /// Documents the gateway registered, attached by id (empty where a new one submitted
    /// with the referral goes).
    pub documents: Vec<String>,
    /// New documents submitted with the referral, with their places in `documents`.
    pub submitted: Vec<(usize, crate::model::document::Submission)>,
    /// Set when a peer gateway forwards the referral.
    pub forwarded: Option<Forwarded>,
    /// A slot of the target's duty schedule (its free slots open to referrals): the
    /// referral is accepted on the schedule's standing and booked there at once.
    pub duty_slot: Option<String>,
}

/// What a peer gateway's forwarded referral carries besides a new one's fields.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The referral's id (the same in every gateway).
    pub id: String,
    /// End of validity as the referring region set it (epoch ms).
    pub valid_until: i64,
    /// The kinds of the attached documents (they stay in the referring region), in order.
    pub document_kinds: Vec<String>,
    /// Gateways the request passed already.
    pub hops: u32,
}

/// Free slots for a referral's visit: this gateway's, or the peer's answer as it gave it.
#[derive(Debug, Clone)]
pub enum Found {
    /// Slots of this gateway's target.
    Here(Vec<Slot>),
    /// The searchset of the peer gateway holding the target.
    AtPeer(serde_json::Value),
}

/// Whether a referral whose target is another region's may be served through its gateway
/// (FHIR, which speaks the peers' language) or is refused (the portal contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Ask the peer gateway.
    Ask,
    /// Refuse with [`ReferralError::InAnotherRegion`].
    Refuse,
}

/// A booked referral visit: this gateway's appointment, or the peer's.
#[derive(Debug, Clone)]
pub enum Visit {
    /// An appointment of this gateway.
    Here(Box<Appointment>),
    /// The Appointment the peer gateway holding the target answered.
    AtPeer(serde_json::Value),
}
/// A move asked for by one of the two organizations.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The state to enter.
    pub to: ReferralStatus,
    /// Why (required to reject).
    pub reason: Option<String>,
    /// The conclusion document (required to complete).
    pub conclusion: Option<String>,
    /// The video-visit link of a tele-consultation (with the acceptance).
    pub video_url: Option<String>,
    /// Documents the attending doctor attaches when confirming a patient's request.
    pub documents: Vec<String>,
}

/// Why a referral request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReferralError {
    /// No such referral, or not one of the caller's organizations'.
    #[error("referral not found")]
    NotFound,
    /// The patient is not identified.
    #[error(transparent)]
    Patient(#[from] PatientError),
    /// The referring organization is not one the caller acts for.
    #[error("the client does not act for organization {0}")]
    NotYourOrganization(Oid),
    /// The target organization is unknown to the gateway.
    #[error("unknown organization {0}")]
    UnknownOrganization(Oid),
    /// An attached document is unknown (or not the caller's).
    #[error("document {id} is not known to the gateway")]
    UnknownDocument {
        /// Position in the list.
        index: usize,
        /// Its id.
        id: String,
    },
    /// An attached document is about another patient.
    #[error("document {id} is about another patient")]
    DocumentOfAnotherPatient {
        /// Position in the list.
        index: usize,
        /// Its id.
        id: String,
    },
    /// The target's rules refuse it.
    #[error(transparent)]
    Refused(#[from] RuleRefusal),
    /// No organization's rules accept it.
    #[error("no organization of the region accepts a {kind} referral for profile {profile} with diagnosis {diagnosis}")]
    NoSuitableTarget {
        /// Kind asked for.
        kind: &'static str,
        /// Profile asked for.
        profile: String,
        /// The diagnosis.
        diagnosis: String,
    },
    /// Validity out of range.
    #[error("validity must be 1 to 365 days")]
    Validity,
    /// The lifecycle does not allow the move.
    #[error("a {from} referral cannot become {to}")]
    NotAllowed {
        /// Current state.
        from: ReferralStatus,
        /// Asked-for state.
        to: ReferralStatus,
    },
    /// The other side makes this move.
    #[error("only the {side} organization may make a referral {to}")]
    WrongSide {
        /// Who may.
        side: &'static str,
        /// Asked-for state.
        to: ReferralStatus,
    },
    /// Its validity ended.
    #[error("the referral expired")]
    Expired,
    /// A rejection needs a reason.
    #[error("a rejection needs a reason")]
    ReasonRequired,
    /// Completion needs the conclusion: a document of the target registered through the
    /// gateway.
    #[error("completion needs the conclusion: a document of the target organization")]
    ConclusionRequired,
    /// The clinic named for a referral's visit is not its target.
    #[error("the referral is to {target}, not to {named}")]
    TargetMismatch {
        /// The clinic named.
        named: Oid,
        /// The referral's target.
        target: Oid,
    },
    /// A video-visit link comes with the acceptance only.
    #[error("a video-visit link is given when accepting")]
    VideoWithoutAcceptance,
    /// Someone else moved it first.
    #[error("the referral changed meanwhile; read it again")]
    Changed,
    /// The booking of its visit failed.
    #[error(transparent)]
    Booking(#[from] BookingError),
    /// A document submitted with the referral was refused.
    #[error("document {index} submitted with the referral: {error}")]
    Document {
        /// Its place among the attached documents.
        index: usize,
        /// Why.
        error: super::documents::DocumentError,
    },
    /// The gateway of the target's region refused.
    #[error("the gateway of region {region} refused: {message}")]
    PeerRefused {
        /// The target's region.
        region: String,
        /// The peer's HTTP status.
        status: u16,
        /// The peer's code.
        code: String,
        /// The field it named.
        field: Option<String>,
        /// What it said.
        message: String,
    },
    /// The gateway of the target's region is not answering.
    #[error("the gateway of region {0} is not answering; try again later")]
    PeerUnavailable(String),
    /// No peer gateway reaches the target's region.
    #[error("no gateway of region {0} is known to this gateway")]
    Unreachable(String),
    /// The duty slot named is not a free referral slot of the target.
    #[error("slot {slot} is not a free slot of {target}'s duty schedule (its free slots open to referrals)")]
    DutySlot {
        /// The slot named.
        slot: String,
        /// The referral's target.
        target: Oid,
    },
    /// A patient's request names no target: the patient asks for a particular one.
    #[error("a patient's request names the organization it asks for")]
    ProposalTarget,
    /// Documents are attached by the attending doctor, not with a patient's request.
    #[error("documents are attached by the attending doctor when confirming the request")]
    ProposalDocuments,
    /// The referral's target is another region's, which this interface cannot serve.
    #[error("the referral's target is in region {0}: find and book its visit through FHIR Appointment/$find?referral= and ServiceRequest/$book")]
    InAnotherRegion(String),
    /// The request passed more gateways than the federation allows.
    #[error("the request passed {0} gateways; at most {MAX_HOPS} are allowed")]
    HopLimit(u32),
    /// A coded value is not in the reference book kept (the field names which).
    #[error("{field}: {message}")]
    UnknownCode {
        /// The field, as [`ReferralError::field`] names fields.
        field: String,
        /// What the reference book says.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReferralError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ReferralError::NotFound => "NOT_FOUND",
            ReferralError::Patient(_) => "PATIENT_NOT_IDENTIFIED",
            ReferralError::NotYourOrganization(_) => "NOT_YOUR_ORGANIZATION",
            ReferralError::UnknownOrganization(_) => "UNKNOWN_ORGANIZATION",
            ReferralError::UnknownDocument { .. } => "UNKNOWN_DOCUMENT",
            ReferralError::DocumentOfAnotherPatient { .. } => "DOCUMENT_OF_ANOTHER_PATIENT",
            ReferralError::Refused(RuleRefusal::MissingDocuments(_)) => "MISSING_DOCUMENTS",
            ReferralError::Refused(RuleRefusal::Diagnosis { .. }) => "DIAGNOSIS_NOT_ACCEPTED",
            ReferralError::Refused(RuleRefusal::NotAccepted { .. }) => "NOT_ACCEPTED",
            ReferralError::NoSuitableTarget { .. } => "NO_SUITABLE_TARGET",
            ReferralError::Validity => "INVALID_VALIDITY",
            ReferralError::NotAllowed { .. } => "INVALID_TRANSITION",
            ReferralError::WrongSide { .. } => "WRONG_SIDE",
            ReferralError::Expired => "REFERRAL_EXPIRED",
            ReferralError::ReasonRequired => "REASON_REQUIRED",
            ReferralError::ConclusionRequired => "CONCLUSION_REQUIRED",
            ReferralError::VideoWithoutAcceptance => "VIDEO_WITHOUT_ACCEPTANCE",
            ReferralError::TargetMismatch { .. } => "REFERRAL_TO_ANOTHER_ORGANIZATION",
            ReferralError::Changed => "CONFLICT",
            ReferralError::Booking(e) => e.code(),
            ReferralError::Document { error, .. } => error.code(),
            ReferralError::PeerRefused { .. } => "PEER_REFUSED",
            ReferralError::PeerUnavailable(_) => "PEER_UNAVAILABLE",
            ReferralError::Unreachable(_) => "REGION_UNREACHABLE",
            ReferralError::HopLimit(_) => "HOP_LIMIT",
            ReferralError::InAnotherRegion(_) => "REFERRAL_IN_ANOTHER_REGION",
            ReferralError::ProposalTarget => "TARGET_REQUIRED",
            ReferralError::DutySlot { .. } => "DUTY_SLOT_UNAVAILABLE",
            ReferralError::ProposalDocuments => "DOCUMENTS_NOT_ALLOWED",
            ReferralError::UnknownCode { .. } => "INVALID_ELEMENT_VALUE_CODE",
            ReferralError::Store(_) => "STORE_ERROR",
        }
    }

    /// The field of the request at fault, in the canonical names the edges translate.
    pub fn field(&self) -> Option<String> {
        Some(match self {
            ReferralError::Patient(e) => e.field.to_string(),
            ReferralError::NotYourOrganization(_) => "requester".into(),
            ReferralError::UnknownOrganization(_) => "performer".into(),
            ReferralError::UnknownDocument { index, .. }
            | ReferralError::DocumentOfAnotherPatient { index, .. } => {
                format!("supportingInfo[{index}]")
            }
            ReferralError::Refused(RuleRefusal::MissingDocuments(_)) => "supportingInfo".into(),
            ReferralError::Refused(RuleRefusal::Diagnosis { .. }) => "reasonCode".into(),
            ReferralError::Refused(RuleRefusal::NotAccepted { .. })
            | ReferralError::NoSuitableTarget { .. } => "performer".into(),
            ReferralError::Validity => "occurrencePeriod".into(),
            ReferralError::NotAllowed { .. } | ReferralError::WrongSide { .. } => "status".into(),
            ReferralError::ReasonRequired => "statusReason".into(),
            ReferralError::ConclusionRequired => "output".into(),
            ReferralError::VideoWithoutAcceptance => "input".into(),
            ReferralError::TargetMismatch { .. } => "performer".into(),
            ReferralError::Booking(e) => return e.field(),
            ReferralError::PeerRefused { field, .. } => return field.clone(),
            ReferralError::Unreachable(_) | ReferralError::ProposalTarget => "performer".into(),
            ReferralError::ProposalDocuments => "supportingInfo".into(),
            ReferralError::DutySlot { .. } => "extension[duty-slot]".into(),
            ReferralError::UnknownCode { field, .. } => field.clone(),
            _ => return None,
        })
    }
}

/// A peer gateway's failure as the service's error, naming the target's region.
fn peer_failure(region: String, e: PeerError) -> ReferralError {
    match e {
        PeerError::Unavailable(why) => {
            tracing::warn!(region = %region, error = %why, "peer gateway not answering");
            ReferralError::PeerUnavailable(region)
        }
        PeerError::Refused {
            status,
            code,
            field,
            message,
        } => ReferralError::PeerRefused {
            region,
            status,
            code,
            field,
            message,
        },
    }
}

/// A move the gateway makes itself (expiry, a released booking, an escalation).
fn gateway_event(id: String, at: i64, status: ReferralStatus, reason: String) -> ReferralEvent {
    ReferralEvent {
        referral_id: id,
        at,
        status,
        client_id: GATEWAY_ACTOR.into(),
        reason: Some(reason),
    }
}

/// What a move changes besides the state.
enum Change<'a> {
    /// Nothing else.
    Plain,
    /// Attaches the conclusion (completion).
    Conclude(String),
    /// Sets the booked appointment.
    Book(&'a str),
    /// Clears the appointment (its visit was cancelled).
    Release,
    /// Sets the video-visit link (acceptance of a tele-consultation).
    Video(String),
    /// A peer's move: whatever it carried.
    Mirror(PeerUpdate),
}

/// The referrals service.
#[derive(Clone)]
pub struct Referrals {
    store: Store,
    booking: Booking,
    schedules: Schedules,
    rules: Arc<[AcceptanceRule]>,
    validity_days: u32,
    answer_within_hours: u32,
    remind_days_before: u32,
    notifier: Option<Arc<dyn Notifier>>,
    retries: Arc<[u64]>,
    wake: Arc<Notify>,
    clock: SharedClock,
    federation: Option<Arc<Federation>>,
    peers: Option<Arc<dyn PeerGateway>>,
    peer_wake: Arc<Notify>,
    books: Option<super::nsi::ReferenceBooks>,
}

impl Referrals {
    /// A referrals service over `store`, booking visits through `booking`, with the
    /// targets' `rules`, telling organizations
    /// through `notifier`; time comes from `clock`.
    pub fn new(
        store: Store,
        booking: Booking,
        rules: Vec<AcceptanceRule>,
        settings: &ReferralSettings,
        notifier: Option<Arc<dyn Notifier>>,
        clock: SharedClock,
    ) -> Referrals {
        Referrals {
            schedules: Schedules::new(store.clone(), clock.clone()),
            store,
            booking,
            rules: rules.into(),
            validity_days: settings.validity_days,
            answer_within_hours: settings.answer_within_hours,
            remind_days_before: settings.remind_days_before,
            notifier,
            retries: settings.notify_retry_schedule_secs.clone().into(),
            wake: Arc::new(Notify::new()),
            clock,
            federation: None,
            peers: None,
            peer_wake: Arc::new(Notify::new()),
            books: None,
        }
    }

    /// The same service checking referrals' codes against the reference books kept.
    pub fn with_reference_books(mut self, books: super::nsi::ReferenceBooks) -> Referrals {
        self.books = Some(books);
        self
    }

    /// A referral's codes against the current versions of the reference books kept (a
    /// referral cites no version): the diagnosis in ICD-10, a profile given as a specialty
    /// code (digits) in the specialties, and the kinds of documents a peer forwards (those
    /// registered here were checked at intake).
    async fn check_codes(
        &self,
        new: &NewReferral,
        forwarded_kinds: &[String],
    ) -> Result<(), ReferralError> {
        use super::nsi::CodeRefusal;
        use crate::model::nsi::{BOOK_DOCUMENT_KINDS, BOOK_ICD10, BOOK_SPECIALTIES};
        let Some(books) = &self.books else {
            return Ok(());
        };
        let refused = |field: String| {
            move |e: CodeRefusal| match e {
                CodeRefusal::Store(inner) => ReferralError::Store(inner),
                other => ReferralError::UnknownCode {
                    field,
                    message: other.to_string(),
                },
            }
        };
        books
            .check(BOOK_ICD10, None, new.diagnosis.as_str())
            .await
            .map_err(refused("reasonCode".into()))?;
        if !new.profile.is_empty() && new.profile.bytes().all(|b| b.is_ascii_digit()) {
            books
                .check(BOOK_SPECIALTIES, None, &new.profile)
                .await
                .map_err(refused("code".into()))?;
        }
        for (i, kind) in forwarded_kinds.iter().enumerate() {
            books
                .check(BOOK_DOCUMENT_KINDS, None, kind)
                .await
                .map_err(refused(format!("supportingInfo[{i}]")))?;
        }
        Ok(())
    }

    /// The same service taking part in `federation`, reaching peer gateways through
    /// `peers`.
    pub fn with_federation(
        mut self,
        federation: Federation,
        peers: Arc<dyn PeerGateway>,
    ) -> Referrals {
        self.federation = Some(Arc::new(federation));
        self.peers = Some(peers);
        self
    }

    /// Notified when something is queued for a peer gateway.
    pub fn peer_item_queued(&self) -> Arc<Notify> {
        self.peer_wake.clone()
    }

    /// Where referrals to `org` go.
    fn route(&self, org: &Oid) -> Route {
        self.federation
            .as_ref()
            .map_or(Route::Local, |f| f.route(org))
    }

    /// Notified when a notice is queued.
    pub fn notice_queued(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The published acceptance rules, of one organization or of all.
    pub fn rules(&self, org: Option<&Oid>) -> Vec<AcceptanceRule> {
        self.rules
            .iter()
            .filter(|r| org.is_none_or(|o| &r.org == o))
            .cloned()
            .collect()
    }

    /// Submits the new documents that come with a referral (each through the document
    /// intake, as `client`: validated, signed, queued for the registry), then creates the
    /// referral with them attached. A refused document stops it; those taken before stay
    /// registered (they are documents in their own right).
    pub async fn create_submitting(
        &self,
        documents: &super::documents::Documents,
        client: &crate::auth::Client,
        mut new: NewReferral,
    ) -> Result<Referral, ReferralError> {
        for (index, submission) in std::mem::take(&mut new.submitted) {
            let (doc, _) = documents
                .submit(client, submission)
                .await
                .map_err(|error| ReferralError::Document { index, error })?;
            if let Some(slot) = new.documents.get_mut(index) {
                *slot = doc.id;
            }
        }
        self.create(Caller::of(client), new).await
    }

    /// Creates a referral after checking the caller, the patient, the attached documents
    /// and the target's rules (or finding a target whose rules accept it).
    pub async fn create(
        &self,
        caller: Caller<'_>,
        new: NewReferral,
    ) -> Result<Referral, ReferralError> {
        let event = AuditEvent {
            org: Some(new.requester_org.clone()),
            ..self.event(caller, AuditAction::Create)
        };
        let result = self.create_checked(caller, new).await;
        self.settle(event, result, |r| r).await
    }

    async fn create_checked(
        &self,
        caller: Caller<'_>,
        mut new: NewReferral,
    ) -> Result<Referral, ReferralError> {
        let forwarded = new.forwarded.take();
        let hops = forwarded.as_ref().map_or(0, |f| f.hops);
        if hops > MAX_HOPS {
            return Err(ReferralError::HopLimit(hops));
        }
        if !caller.acts_for(&new.requester_org) {
            return Err(ReferralError::NotYourOrganization(new.requester_org));
        }
        new.patient.check()?;
        let now = self.clock.now_ms();
        let valid_until = match &forwarded {
            Some(f) if f.valid_until < now => return Err(ReferralError::Expired),
            Some(f) => f.valid_until,
            None => {
                let days = new.valid_days.unwrap_or(self.validity_days);
                if !(1..=365).contains(&days) {
                    return Err(ReferralError::Validity);
                }
                now + i64::from(days) * DAY_MS
            }
        };
        let forwarded_kinds = forwarded.as_ref().map_or(&[][..], |f| &f.document_kinds);
        self.check_codes(&new, forwarded_kinds).await?;
        let kinds = match &forwarded {
            Some(f) => f.document_kinds.clone(),
            None => {
                self.attached_kinds(caller, &new.patient, &new.documents)
                    .await?
            }
        };
        let (target, peer) = match new.target_org.as_ref().map(|o| (o, self.route(o))) {
            Some((org, Route::Local)) => {
                if self.store.get_organization(org).await?.is_none() {
                    return Err(ReferralError::UnknownOrganization(org.clone()));
                }
                self.check_target_rules(org, new.kind, &new.profile, &new.diagnosis, &kinds)?;
                (org.clone(), None)
            }
            // The gateway of the target's region checks its rules.
            Some((org, Route::Peer { name, region })) => (org.clone(), Some((name, region))),
            Some((_, Route::Unreachable(region))) => {
                return Err(ReferralError::Unreachable(region.to_string()))
            }
            None => (self.suitable_target(&new, &kinds)?, None),
        };
        if let (Some(slot), None) = (&new.duty_slot, &peer) {
            self.check_duty_slot(slot, &target).await?;
        }
        let hours = self.answer_hours(&target);
        let mut referral = Referral {
            answer_due: now + i64::from(hours) * 3_600_000,
            escalated_at: None,
            video_url: None,
            id: forwarded
                .as_ref()
                .map_or_else(|| uuid::Uuid::now_v7().to_string(), |f| f.id.clone()),
            patient: new.patient,
            diagnosis: new.diagnosis,
            reason: new.reason,
            requester_org: new.requester_org,
            requester_snils: new.requester_snils,
            profile: new.profile,
            target_org: target,
            urgency: new.urgency,
            kind: new.kind,
            valid_until,
            documents: new.documents,
            document_kinds: kinds,
            origin_peer: caller.peer().map(str::to_string),
            peer: peer.as_ref().map(|(name, _)| name.clone()),
            forwarded_at: None,
            conclusion: None,
            status: ReferralStatus::Requested,
            status_reason: None,
            appointment_id: None,
            conclusion_id: None,
            client_id: caller.client_id.to_string(),
            created_at: now,
            updated_at: now,
        };
        let event = ReferralEvent {
            referral_id: referral.id.clone(),
            at: now,
            status: ReferralStatus::Requested,
            client_id: caller.client_id.to_string(),
            reason: None,
        };
        let mut outbox: Vec<NewOutboxItem> = self
            .notice(&referral, &event, &referral.target_org)
            .into_iter()
            .collect();
        // Stored before it is forwarded, so the peer's first moves find it here; the
        // forward is queued too, for the outbox to send should the one tried now not end.
        if let Some((name, _)) = &peer {
            outbox.push(self.queued_forward(&referral, name, new.duty_slot.as_deref(), hops + 1));
        }
        if !self
            .store
            .insert_referral(&referral, &event, &outbox)
            .await?
        {
            // A peer forwarding again what it forwarded before gets the referral it made.
            return match self.store.get_referral(&referral.id).await? {
                Some(r) if r.origin_peer.is_some() && r.origin_peer == referral.origin_peer => {
                    Ok(r)
                }
                _ => Err(ReferralError::Changed),
            };
        }
        if let Some((name, region)) = &peer {
            let duty = new.duty_slot.as_deref();
            match self.forward_now(name, &referral, duty, hops + 1).await {
                Ok(()) => {
                    self.store
                        .mark_referral_forwarded(&referral.id, now, FORWARD)
                        .await?;
                    referral.forwarded_at = Some(now);
                }
                // The target's gateway refused it: it never was, here either.
                Err(e @ PeerError::Refused { .. }) => {
                    self.store.remove_refused_referral(&referral.id).await?;
                    return Err(peer_failure(region.to_string(), e));
                }
                Err(PeerError::Unavailable(why)) => {
                    tracing::warn!(peer = %name, referral = %referral.id, error = %why, "peer gateway not answering: the referral waits in the outbox");
                }
            }
        }
        self.wake_for(&outbox);
        match (new.duty_slot, &referral.peer) {
            (Some(slot), None) => self.book_duty_slot(caller, referral, &slot).await,
            _ => Ok(referral),
        }
    }

    /// A free slot of `target` open to referrals: its duty schedule.
    async fn check_duty_slot(&self, slot: &str, target: &Oid) -> Result<(), ReferralError> {
        let ok = self.store.slot(slot).await?.is_some_and(|s| {
            &s.org == target
                && s.status == crate::model::schedule::SlotStatus::Free
                && s.channels.contains(Channel::Referral)
        });
        if ok {
            Ok(())
        } else {
            Err(ReferralError::DutySlot {
                slot: slot.to_string(),
                target: target.clone(),
            })
        }
    }

    /// The duty schedule's path: the new referral is accepted on the schedule's standing
    /// and its visit booked in the duty slot. A slot taken meanwhile leaves it accepted,
    /// to be booked in another.
    async fn book_duty_slot(
        &self,
        caller: Caller<'_>,
        r: Referral,
        slot: &str,
    ) -> Result<Referral, ReferralError> {
        let event = gateway_event(
            r.id.clone(),
            self.clock.now_ms(),
            ReferralStatus::Accepted,
            "accepted through the target's duty schedule".into(),
        );
        let accepted = self.apply(r, &event, Change::Plain, None).await?;
        let who = Requester {
            caller,
            channel: Channel::Referral,
        };
        let target = accepted.target_org.clone();
        let appointment = match self
            .booking
            .book_at(
                who,
                &target,
                &Target::Slot(slot.to_string()),
                Some(&accepted.patient),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(referral = %accepted.id, error = %e, "duty slot not booked: the referral stays accepted");
                return Ok(accepted);
            }
        };
        let event = ReferralEvent {
            referral_id: accepted.id.clone(),
            at: self.clock.now_ms(),
            status: ReferralStatus::Booked,
            client_id: caller.client_id.to_string(),
            reason: None,
        };
        self.apply(accepted, &event, Change::Book(&appointment.id), None)
            .await
    }

    /// The forward of a new referral, queued with it: due once the forward tried at once
    /// would have ended, so it goes only if that one did not.
    fn queued_forward(
        &self,
        r: &Referral,
        peer: &str,
        duty_slot: Option<&str>,
        hops: u32,
    ) -> NewOutboxItem {
        let mut item = self.peer_item(r, peer, FORWARD, json!({ "duty_slot": duty_slot }), hops);
        item.due_at += self
            .federation
            .as_ref()
            .map_or(15_000, |f| f.forward_grace_ms());
        item
    }

    async fn forward_now(
        &self,
        peer: &str,
        r: &Referral,
        duty_slot: Option<&str>,
        hops: u32,
    ) -> Result<(), PeerError> {
        match &self.peers {
            Some(p) => p.forward(peer, r, duty_slot, hops).await,
            None => Err(PeerError::Unavailable("no peer gateways configured".into())),
        }
    }

    /// Records a patient's own request for a referral (through a citizen-facing channel):
    /// it names the patient's attending organization and doctor and the organization
    /// asked for, and waits for the attending doctor, who confirms it (attaching the
    /// documents; the target's rules are checked then and it is sent) or declines it.
    pub async fn propose(
        &self,
        caller: Caller<'_>,
        new: NewReferral,
    ) -> Result<Referral, ReferralError> {
        let event = AuditEvent {
            org: Some(new.requester_org.clone()),
            ..self.event(caller, AuditAction::Create)
        };
        let result = self.propose_checked(caller, new).await;
        self.settle(event, result, |r| r).await
    }

    async fn propose_checked(
        &self,
        caller: Caller<'_>,
        new: NewReferral,
    ) -> Result<Referral, ReferralError> {
        new.patient.check()?;
        if !new.documents.is_empty() {
            return Err(ReferralError::ProposalDocuments);
        }
        // The attending organization is one of this region's.
        if self.route(&new.requester_org) != Route::Local
            || self
                .store
                .get_organization(&new.requester_org)
                .await?
                .is_none()
        {
            return Err(ReferralError::UnknownOrganization(new.requester_org));
        }
        let target = new
            .target_org
            .clone()
            .ok_or(ReferralError::ProposalTarget)?;
        let peer = match self.route(&target) {
            Route::Local => {
                if self.store.get_organization(&target).await?.is_none() {
                    return Err(ReferralError::UnknownOrganization(target));
                }
                None
            }
            Route::Peer { name, .. } => Some(name),
            Route::Unreachable(region) => {
                return Err(ReferralError::Unreachable(region.to_string()))
            }
        };
        let days = new.valid_days.unwrap_or(self.validity_days);
        if !(1..=365).contains(&days) {
            return Err(ReferralError::Validity);
        }
        let now = self.clock.now_ms();
        let referral = Referral {
            id: uuid::Uuid::now_v7().to_string(),
            patient: new.patient,
            diagnosis: new.diagnosis,
            reason: new.reason,
            requester_org: new.requester_org,
            requester_snils: new.requester_snils,
            profile: new.profile,
            target_org: target,
            urgency: new.urgency,
            kind: new.kind,
            valid_until: now + i64::from(days) * DAY_MS,
            // The target's clock starts when the request is sent.
            answer_due: now + i64::from(days) * DAY_MS,
            escalated_at: None,
            video_url: None,
            documents: Vec::new(),
            document_kinds: Vec::new(),
            origin_peer: None,
            peer,
            forwarded_at: None,
            conclusion: None,
            status: ReferralStatus::Proposed,
            status_reason: None,
            appointment_id: None,
            conclusion_id: None,
            client_id: caller.client_id.to_string(),
            created_at: now,
            updated_at: now,
        };
        let event = ReferralEvent {
            referral_id: referral.id.clone(),
            at: now,
            status: ReferralStatus::Proposed,
            client_id: caller.client_id.to_string(),
            reason: None,
        };
        // The attending organization hears of it: its doctor decides.
        let outbox: Vec<NewOutboxItem> = self
            .notice(&referral, &event, &referral.requester_org)
            .into_iter()
            .collect();
        self.store
            .insert_referral(&referral, &event, &outbox)
            .await?;
        self.wake_for(&outbox);
        Ok(referral)
    }

    /// The attending doctor's confirmation of a patient's request: the documents attached,
    /// the target's rules checked (here, or by the target's gateway when it is forwarded),
    /// and the request sent.
    async fn confirm(
        &self,
        caller: Caller<'_>,
        r: Referral,
        event: &ReferralEvent,
        documents: Vec<String>,
    ) -> Result<Referral, ReferralError> {
        let kinds = self.attached_kinds(caller, &r.patient, &documents).await?;
        if r.peer.is_none() {
            self.check_target_rules(&r.target_org, r.kind, &r.profile, &r.diagnosis, &kinds)?;
        }
        let hours = self.answer_hours(&r.target_org);
        let mut sent = Referral {
            documents,
            document_kinds: kinds,
            answer_due: event.at + i64::from(hours) * 3_600_000,
            status: ReferralStatus::Requested,
            updated_at: event.at,
            ..r.clone()
        };
        let mut queued = None;
        if let Some(peer) = sent.peer.clone() {
            match self.forward_now(&peer, &sent, None, 1).await {
                Ok(()) => sent.forwarded_at = Some(event.at),
                Err(PeerError::Unavailable(why)) => {
                    tracing::warn!(peer = %peer, referral = %sent.id, error = %why, "peer gateway not answering: the referral waits in the outbox");
                    queued = Some(self.peer_item(&sent, &peer, FORWARD, json!({}), 1));
                }
                Err(e) => return Err(self.peer_error(&sent, e)),
            }
        }
        let to = sent.target_org.clone();
        let mut outbox: Vec<NewOutboxItem> = self.notice(&sent, event, &to).into_iter().collect();
        outbox.extend(queued);
        let moved = self
            .store
            .confirm_referral(&sent, r.status, event, &outbox)
            .await?;
        if !moved {
            return Err(ReferralError::Changed);
        }
        self.wake_for(&outbox);
        Ok(Referral {
            status_reason: event.reason.clone(),
            ..sent
        })
    }

    /// The kinds of the attached documents: each must be known, the caller's, and about
    /// the same patient when the patient is named by SNILS.
    async fn attached_kinds(
        &self,
        caller: Caller<'_>,
        patient: &Patient,
        documents: &[String],
    ) -> Result<Vec<String>, ReferralError> {
        let mut kinds = Vec::with_capacity(documents.len());
        for (index, id) in documents.iter().enumerate() {
            let doc = match self.store.get_document(id).await? {
                Some(d) if caller.acts_for(&d.org) => d,
                _ => {
                    return Err(ReferralError::UnknownDocument {
                        index,
                        id: id.clone(),
                    })
                }
            };
            if patient.snils.as_ref().is_some_and(|s| s != &doc.patient) {
                return Err(ReferralError::DocumentOfAnotherPatient {
                    index,
                    id: id.clone(),
                });
            }
            kinds.push(doc.kind_code);
        }
        Ok(kinds)
    }

    /// "Any suitable organization": the first whose rules accept the referral.
    fn suitable_target(&self, new: &NewReferral, kinds: &[String]) -> Result<Oid, ReferralError> {
        let mut orgs: Vec<&Oid> = self.rules.iter().map(|r| &r.org).collect();
        orgs.dedup();
        orgs.into_iter()
            .find(|org| {
                self.check_target_rules(org, new.kind, &new.profile, &new.diagnosis, kinds)
                    .is_ok()
            })
            .cloned()
            .ok_or_else(|| ReferralError::NoSuitableTarget {
                kind: new.kind.as_str(),
                profile: new.profile.clone(),
                diagnosis: new.diagnosis.to_string(),
            })
    }

    /// One referral with its history, if one of the caller's organizations is its
    /// referring or target organization.
    pub async fn get(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<(Referral, Vec<ReferralEvent>), ReferralError> {
        let event = AuditEvent {
            entity_id: Some(id.to_string()),
            ..self.event(caller, AuditAction::Read)
        };
        let found = self.visible(caller, id).await;
        let referral = self.settle(event, found, |r| r).await?;
        let events = self.store.referral_events(&referral.id).await?;
        Ok((referral, events))
    }

    async fn visible(&self, caller: Caller<'_>, id: &str) -> Result<Referral, ReferralError> {
        match self.store.get_referral(id).await? {
            Some(r) if caller.acts_for(&r.requester_org) || caller.acts_for(&r.target_org) => Ok(r),
            _ => Err(ReferralError::NotFound),
        }
    }

    /// Referrals matching `query` among those of the caller's organizations.
    pub async fn search(
        &self,
        caller: Caller<'_>,
        mut query: ReferralQuery,
        limit: u32,
    ) -> Result<Vec<Referral>, ReferralError> {
        query.visible_to = caller.scope().map(<[Oid]>::to_vec);
        let found = self.store.list_referrals(&query, limit).await?;
        let event = AuditEvent {
            snils: query.patient_snils.clone(),
            policy: query.patient_policy.clone(),
            ..self.event(caller, AuditAction::Search)
        };
        self.store.insert_audit(&event).await?;
        Ok(found)
    }

    /// A referral's transitions (for a referral the caller was already shown).
    pub async fn events(&self, id: &str) -> Result<Vec<ReferralEvent>, ReferralError> {
        Ok(self.store.referral_events(id).await?)
    }

    /// Moves a referral, when its state allows the move and the caller is on the side that
    /// makes it; repeating the move it is already in answers it unchanged.
    pub async fn transition(
        &self,
        caller: Caller<'_>,
        id: &str,
        t: Transition,
    ) -> Result<Referral, ReferralError> {
        let event = AuditEvent {
            entity_id: Some(id.to_string()),
            detail: t.to.as_str().to_string(),
            ..self.event(caller, AuditAction::Update)
        };
        let result = self.transition_checked(caller, id, t).await;
        self.settle(event, result, |r| r).await
    }

    async fn transition_checked(
        &self,
        caller: Caller<'_>,
        id: &str,
        t: Transition,
    ) -> Result<Referral, ReferralError> {
        let r = self.visible(caller, id).await?;
        if r.status == t.to {
            return Ok(r);
        }
        if !r.status.allows(t.to) {
            return Err(ReferralError::NotAllowed {
                from: r.status,
                to: t.to,
            });
        }
        let (side, org) = match t.to.made_by() {
            Side::Target => ("target", &r.target_org),
            Side::Referring => ("referring", &r.requester_org),
            Side::Gateway => {
                return Err(ReferralError::NotAllowed {
                    from: r.status,
                    to: t.to,
                })
            }
        };
        if !caller.acts_for(org) {
            return Err(ReferralError::WrongSide { side, to: t.to });
        }
        let now = self.clock.now_ms();
        if r.status.is_open() && r.status != ReferralStatus::Booked && r.valid_until < now {
            return Err(ReferralError::Expired);
        }
        let reason = t.reason.filter(|s| !s.trim().is_empty());
        if t.to == ReferralStatus::Rejected && reason.is_none() {
            return Err(ReferralError::ReasonRequired);
        }
        let conclusion = match t.to {
            ReferralStatus::Completed => {
                let id = t.conclusion.ok_or(ReferralError::ConclusionRequired)?;
                match self.store.get_document(&id).await? {
                    Some(d) if d.org == r.target_org => Some(id),
                    _ => return Err(ReferralError::ConclusionRequired),
                }
            }
            _ => None,
        };
        let event = ReferralEvent {
            referral_id: r.id.clone(),
            at: now,
            status: t.to,
            client_id: caller.client_id.to_string(),
            reason,
        };
        if t.to == ReferralStatus::Requested {
            return self.confirm(caller, r, &event, t.documents).await;
        }
        let change = match (conclusion, t.video_url) {
            (Some(c), _) => Change::Conclude(c),
            (None, Some(v)) if t.to == ReferralStatus::Accepted => Change::Video(v),
            (None, Some(_)) => return Err(ReferralError::VideoWithoutAcceptance),
            (None, None) => Change::Plain,
        };
        self.apply(r, &event, change, None).await
    }

    /// Writes a move from the referral's current state and tells the other organization
    /// and the linked peer gateways (all but `from_peer`, the one that told us).
    async fn apply(
        &self,
        r: Referral,
        event: &ReferralEvent,
        change: Change<'_>,
        from_peer: Option<&str>,
    ) -> Result<Referral, ReferralError> {
        // The referring side hears about the target's moves and the gateway's, the
        // target about the referring side's.
        let to = match event.status.made_by() {
            Side::Referring => &r.target_org,
            Side::Target | Side::Gateway => &r.requester_org,
        };
        let mut outbox: Vec<NewOutboxItem> = self.notice(&r, event, to).into_iter().collect();
        let mut next = Referral {
            status: event.status,
            status_reason: event.reason.clone(),
            updated_at: event.at,
            ..r.clone()
        };
        match &change {
            Change::Book(a) => next.appointment_id = Some(a.to_string()),
            Change::Release => next.appointment_id = None,
            Change::Conclude(c) => next.conclusion_id = Some(c.clone()),
            Change::Video(v) => next.video_url = Some(v.clone()),
            Change::Mirror(u) => {
                if event.status == ReferralStatus::Booked || u.appointment_id.is_some() {
                    next.appointment_id = u.appointment_id.clone();
                }
                if u.video_url.is_some() {
                    next.video_url = u.video_url.clone();
                }
                if let Some(d) = &u.conclusion {
                    next.conclusion_id = Some(d.id.clone());
                    next.conclusion = Some(d.clone());
                }
            }
            Change::Plain => {}
        }
        for peer in next.linked_peers().filter(|p| Some(*p) != from_peer) {
            outbox.push(self.peer_item(&next, peer, UPDATE, json!({}), 1));
        }
        let moved = self
            .store
            .transition_referral(
                &r.id,
                &Move {
                    from: r.status,
                    event,
                    appointment_id: (next.appointment_id != r.appointment_id)
                        .then_some(next.appointment_id.as_deref()),
                    conclusion_id: next
                        .conclusion_id
                        .as_deref()
                        .filter(|_| next.conclusion_id != r.conclusion_id),
                    video_url: next
                        .video_url
                        .as_deref()
                        .filter(|_| next.video_url != r.video_url),
                    remote_conclusion: next
                        .conclusion
                        .as_ref()
                        .filter(|_| next.conclusion != r.conclusion),
                    outbox: &outbox,
                },
            )
            .await?;
        if !moved {
            return Err(ReferralError::Changed);
        }
        self.wake_for(&outbox);
        Ok(next)
    }

    /// A move a linked peer gateway made on its copy of the referral: the gateway that
    /// forwarded it here may withdraw it for the referring side; the one it went to answers,
    /// books, completes and expires it for the target. Anything else looks like an unknown
    /// referral; repeating the move it is already in answers it unchanged.
    pub async fn mirror(
        &self,
        caller: Caller<'_>,
        update: PeerUpdate,
    ) -> Result<Referral, ReferralError> {
        let event = AuditEvent {
            entity_id: Some(update.referral_id.clone()),
            detail: update.status.as_str().to_string(),
            ..self.event(caller, AuditAction::Update)
        };
        let result = self.mirror_checked(caller, update).await;
        self.settle(event, result, |r| r).await
    }

    async fn mirror_checked(
        &self,
        caller: Caller<'_>,
        u: PeerUpdate,
    ) -> Result<Referral, ReferralError> {
        let peer = caller.peer().ok_or(ReferralError::NotFound)?;
        let r = self
            .store
            .get_referral(&u.referral_id)
            .await?
            .ok_or(ReferralError::NotFound)?;
        let downstream = r.peer.as_deref() == Some(peer) && caller.acts_for(&r.target_org);
        let upstream = r.origin_peer.as_deref() == Some(peer) && caller.acts_for(&r.requester_org);
        if !downstream && !upstream {
            return Err(ReferralError::NotFound);
        }
        if r.status == u.status {
            return Ok(r);
        }
        // This copy is not sent yet (a confirmation still forwarding): the peer tries again.
        if r.status == ReferralStatus::Proposed {
            return Err(ReferralError::Changed);
        }
        let side_ok = match u.status.made_by() {
            Side::Referring => upstream,
            Side::Target | Side::Gateway => downstream,
        };
        if !side_ok {
            let side = if upstream { "target" } else { "referring" };
            return Err(ReferralError::WrongSide { side, to: u.status });
        }
        if !r.status.allows(u.status) {
            return Err(ReferralError::NotAllowed {
                from: r.status,
                to: u.status,
            });
        }
        if u.status == ReferralStatus::Completed && u.conclusion.is_none() {
            return Err(ReferralError::ConclusionRequired);
        }
        let event = ReferralEvent {
            referral_id: r.id.clone(),
            at: self.clock.now_ms(),
            status: u.status,
            client_id: caller.client_id.to_string(),
            reason: u.reason.clone(),
        };
        self.apply(r, &event, Change::Mirror(u), Some(peer)).await
    }

    /// An outbox item for `peer` about referral `r`, delivered after everything queued
    /// before for the same referral and peer.
    fn peer_item(
        &self,
        r: &Referral,
        peer: &str,
        kind: &str,
        extra: serde_json::Value,
        hops: u32,
    ) -> NewOutboxItem {
        let mut payload = json!({
            "peer": peer,
            "referral": r.id,
            "status": r.status.as_str(),
            "reason": r.status_reason,
            "appointment": r.appointment_id,
            "video_url": r.video_url,
            "conclusion": r.conclusion_id,
            "hops": hops,
        });
        if let (Some(map), serde_json::Value::Object(more)) = (payload.as_object_mut(), extra) {
            map.extend(more);
        }
        NewOutboxItem {
            destination: PEER_DESTINATION.into(),
            kind: kind.into(),
            aggregate_id: r.id.clone(),
            payload: payload.to_string(),
            due_at: r.updated_at,
            attempts: 0,
            ordering_key: Some(format!("peer:{peer}:referral:{}", r.id)),
        }
    }

    /// Delivers one item to a peer gateway: a referral to forward (a refusal there
    /// rejects it here, with the peer's reason) or a move to tell.
    pub async fn deliver_to_peer(&self, item: OutboxItem) -> Outcome {
        let now = self.clock.now_ms();
        let retries = self.federation.as_ref().map_or(&[][..], |f| f.retries());
        let Ok(p) = serde_json::from_str::<serde_json::Value>(&item.payload) else {
            return Outcome::Dead("unreadable payload".into());
        };
        let (Some(peer), Some(id)) = (p["peer"].as_str(), p["referral"].as_str()) else {
            return Outcome::Dead("payload names no peer or referral".into());
        };
        let hops = p["hops"].as_u64().unwrap_or(1) as u32;
        let Some(peers) = &self.peers else {
            return retry_or_dead(retries, &item, "no peer gateways configured".into(), now);
        };
        let r = match self.store.get_referral(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Dead(format!("referral {id} is gone")),
            Err(e) => return retry_or_dead(retries, &item, e.to_string(), now),
        };
        let sent = if item.kind == FORWARD {
            peers.forward(peer, &r, p["duty_slot"].as_str(), hops).await
        } else {
            let update = match self.update_of(&p, &r).await {
                Ok(u) => u,
                Err(e) => return retry_or_dead(retries, &item, e.to_string(), now),
            };
            peers.update(peer, &update, hops).await
        };
        match sent {
            Ok(()) if item.kind == FORWARD => {
                match self.store.mark_referral_forwarded(id, now, FORWARD).await {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => retry_or_dead(retries, &item, e.to_string(), now),
                }
            }
            Ok(()) => Outcome::Delivered,
            Err(PeerError::Refused { message, code, .. }) if item.kind == FORWARD => {
                // The target's gateway refused the referral: it is rejected, with the reason.
                let region = self.region_of(&r);
                let event = gateway_event(
                    r.id.clone(),
                    now,
                    ReferralStatus::Rejected,
                    format!("the gateway of region {region} refused ({code}): {message}"),
                );
                let _ = self.store.mark_referral_forwarded(id, now, FORWARD).await;
                match self.apply(r, &event, Change::Plain, Some(peer)).await {
                    Ok(_) | Err(ReferralError::Changed) => Outcome::Delivered,
                    Err(e) => retry_or_dead(retries, &item, e.to_string(), now),
                }
            }
            // Its copy is not there yet, or not yet where this move starts (the forward that
            // makes it is still answering): later.
            Err(PeerError::Refused { status, code, .. }) if status == 404 || code == "CONFLICT" => {
                retry_or_dead(retries, &item, format!("peer {peer}: {code}"), now)
            }
            Err(e @ PeerError::Refused { .. }) => {
                Outcome::Dead(format!("peer {peer} refused the change: {e}"))
            }
            Err(PeerError::Unavailable(why)) => retry_or_dead(retries, &item, why, now),
        }
    }

    /// The move a queued item tells, with the conclusion document loaded.
    async fn update_of(
        &self,
        p: &serde_json::Value,
        r: &Referral,
    ) -> Result<PeerUpdate, ReferralError> {
        let text = |k: &str| p[k].as_str().map(str::to_string);
        let status = text("status")
            .and_then(|s| ReferralStatus::parse(&s))
            .unwrap_or(r.status);
        let conclusion = match (&r.conclusion, text("conclusion")) {
            (_, None) => None,
            (Some(d), Some(_)) => Some(d.clone()),
            (None, Some(id)) => match self.store.get_document(&id).await? {
                Some(d) => Some(RemoteDocument {
                    id: d.id.clone(),
                    kind: d.kind_code.clone(),
                    registry_number: d.emdr_id.clone(),
                    content_type: d.content_type.clone(),
                    content: d.content.clone(),
                }),
                None => None,
            },
        };
        Ok(PeerUpdate {
            referral_id: r.id.clone(),
            status,
            reason: text("reason"),
            appointment_id: text("appointment"),
            video_url: text("video_url"),
            conclusion,
        })
    }

    /// Free slots of an accepted referral's target open to the referral channel, between
    /// `from` and `to`, at most `limit`.
    pub async fn free_slots(
        &self,
        caller: Caller<'_>,
        id: &str,
        from: i64,
        to: i64,
        limit: usize,
        remote: Remote,
    ) -> Result<Found, ReferralError> {
        let event = AuditEvent {
            entity_id: Some(id.to_string()),
            ..self.event(caller, AuditAction::Read)
        };
        let found = self.bookable(caller, id).await;
        let r = self.settle(event, found, |r| r).await?;
        // The target's gateway answers for its slots.
        if let Some(peer) = &r.peer {
            if remote == Remote::Refuse {
                return Err(ReferralError::InAnotherRegion(self.region_of(&r)));
            }
            let peers = self.peers.as_ref().ok_or_else(|| self.unavailable(&r))?;
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("referral", &r.id)
                .append_pair("start", &crate::model::time::instant_secs(from))
                .append_pair("end", &crate::model::time::instant_secs(to))
                .append_pair("_count", &limit.min(100).to_string())
                .finish();
            return match peers.find(peer, &query).await {
                Ok(bundle) => Ok(Found::AtPeer(bundle)),
                Err(e) => Err(self.peer_error(&r, e)),
            };
        }
        let q = FreeSlots {
            org: Some(r.target_org),
            practitioner_id: None,
            specialty_code: None,
            from: Some(from),
            to: Some(to),
            channel: Channel::Referral,
            limit,
            // A clinic's month of slots at most.
            scan: 100_000,
        };
        self.schedules
            .find_free(&q)
            .await
            .map(Found::Here)
            .map_err(|e| ReferralError::Booking(BookingError::Directory(e)))
    }

    /// Free slots of another region's organization, as the peer serving that region
    /// answers a search (`query`: the search's own parameters); `None` when `org` is this
    /// gateway's.
    pub async fn find_at_peer(
        &self,
        org: &Oid,
        query: &str,
    ) -> Option<Result<serde_json::Value, ReferralError>> {
        let (name, region) = match self.route(org) {
            Route::Local => return None,
            Route::Unreachable(region) => {
                return Some(Err(ReferralError::Unreachable(region.to_string())))
            }
            Route::Peer { name, region } => (name, region),
        };
        let Some(peers) = &self.peers else {
            return Some(Err(ReferralError::PeerUnavailable(region.to_string())));
        };
        Some(
            peers
                .find(&name, query)
                .await
                .map_err(|e| peer_failure(region.to_string(), e)),
        )
    }

    fn region_of(&self, r: &Referral) -> String {
        Region::of(&r.target_org).map_or_else(String::new, |x| x.to_string())
    }

    fn unavailable(&self, r: &Referral) -> ReferralError {
        ReferralError::PeerUnavailable(self.region_of(r))
    }

    /// A peer's failure as this service's error, naming the target's region.
    fn peer_error(&self, r: &Referral, e: PeerError) -> ReferralError {
        peer_failure(self.region_of(r), e)
    }

    /// The target's acceptance rules applied (an organization that publishes none takes
    /// what it is sent).
    fn check_target_rules(
        &self,
        org: &Oid,
        kind: ReferralKind,
        profile: &str,
        diagnosis: &Icd10,
        kinds: &[String],
    ) -> Result<(), RuleRefusal> {
        let rules: Vec<&AcceptanceRule> = self.rules.iter().filter(|r| &r.org == org).collect();
        if rules.is_empty() {
            return Ok(());
        }
        check_rules(&rules, org, kind, profile, diagnosis, kinds)
    }

    /// Hours `org` has to answer a referral: its rule's, or the configured default.
    fn answer_hours(&self, org: &Oid) -> u32 {
        self.rules
            .iter()
            .filter(|r| &r.org == org)
            .find_map(|r| r.answer_within_hours)
            .unwrap_or(self.answer_within_hours)
    }

    /// A referral the caller sees that may be booked now (accepted, still valid).
    async fn bookable(&self, caller: Caller<'_>, id: &str) -> Result<Referral, ReferralError> {
        let r = self.visible(caller, id).await?;
        if r.status != ReferralStatus::Accepted {
            return Err(ReferralError::NotAllowed {
                from: r.status,
                to: ReferralStatus::Booked,
            });
        }
        if r.valid_until < self.clock.now_ms() {
            return Err(ReferralError::Expired);
        }
        Ok(r)
    }

    /// Books the visit of an accepted referral: a slot of its target that takes the
    /// referral channel, for the referral's patient; the referral becomes booked with the
    /// appointment (one booking per referral). A referral that moved meanwhile gets no
    /// visit: the booking is cancelled again.
    pub async fn book(
        &self,
        who: Requester<'_>,
        id: &str,
        slot: &str,
        named_org: Option<&Oid>,
        remote: Remote,
    ) -> Result<(Referral, Visit), ReferralError> {
        let result = self.book_checked(who, id, slot, named_org, remote).await;
        // The access is the appointment's creation: a booking made or refused by the
        // booking service is audited there; every refusal of the referral's own here.
        if let Err(e) = &result {
            if matches!(e, ReferralError::Store(_) | ReferralError::Booking(_)) {
                return result;
            }
            let event = audit_event(
                who.caller,
                AuditAction::Create,
                AuditEntity::Appointment,
                self.clock.now_ms(),
            );
            self.store.insert_audit(&event.refused(e.code())).await?;
        }
        result
    }

    async fn book_checked(
        &self,
        who: Requester<'_>,
        id: &str,
        slot: &str,
        named_org: Option<&Oid>,
        remote: Remote,
    ) -> Result<(Referral, Visit), ReferralError> {
        let r = self.bookable(who.caller, id).await?;
        if let Some(org) = named_org.filter(|o| **o != r.target_org) {
            return Err(ReferralError::TargetMismatch {
                named: org.clone(),
                target: r.target_org,
            });
        }
        if let Some(peer) = r.peer.clone() {
            if remote == Remote::Refuse {
                return Err(ReferralError::InAnotherRegion(self.region_of(&r)));
            }
            return self.book_at_peer(who, r, &peer, slot).await;
        }
        let appointment = self
            .booking
            .book_at(
                who,
                &r.target_org,
                &Target::Slot(slot.to_string()),
                Some(&r.patient),
            )
            .await?;
        let event = ReferralEvent {
            referral_id: r.id.clone(),
            at: self.clock.now_ms(),
            status: ReferralStatus::Booked,
            client_id: who.caller.client_id.to_string(),
            reason: None,
        };
        match self
            .apply(r, &event, Change::Book(&appointment.id), None)
            .await
        {
            Ok(r) => Ok((r, Visit::Here(Box::new(appointment)))),
            Err(e) => {
                // The referral moved meanwhile: the visit it no longer stands for is undone.
                if let Err(undo) = self
                    .booking
                    .cancel(who, &appointment.id, "referral changed")
                    .await
                {
                    tracing::warn!(error = %undo, appointment = %appointment.id, "could not undo a referral's booking");
                }
                Err(e)
            }
        }
    }

    /// Books the visit at the gateway holding the target; this copy follows at once (the
    /// peer's own notice of the booking then finds it booked already).
    async fn book_at_peer(
        &self,
        who: Requester<'_>,
        r: Referral,
        peer: &str,
        slot: &str,
    ) -> Result<(Referral, Visit), ReferralError> {
        let peers = self.peers.as_ref().ok_or_else(|| self.unavailable(&r))?;
        let appointment = peers
            .book(peer, &r.id, slot)
            .await
            .map_err(|e| self.peer_error(&r, e))?;
        let appointment_id = appointment["id"].as_str().map(str::to_string);
        let event = ReferralEvent {
            referral_id: r.id.clone(),
            at: self.clock.now_ms(),
            status: ReferralStatus::Booked,
            client_id: who.caller.client_id.to_string(),
            reason: None,
        };
        let update = PeerUpdate {
            referral_id: r.id.clone(),
            status: ReferralStatus::Booked,
            reason: None,
            appointment_id,
            video_url: None,
            conclusion: None,
        };
        // The peer told its own side already; this copy's other links hear it from here.
        let peer = peer.to_string();
        match self
            .apply(r, &event, Change::Mirror(update), Some(&peer))
            .await
        {
            Ok(r) => Ok((r, Visit::AtPeer(appointment))),
            // Its notice moved this copy first: the visit stands.
            Err(ReferralError::Changed) => match self.store.get_referral(&event.referral_id).await?
            {
                Some(r) => Ok((r, Visit::AtPeer(appointment))),
                None => Err(ReferralError::NotFound),
            },
            Err(e) => Err(e),
        }
    }

    /// One step of the upkeep job: booked referrals whose visit was cancelled (or lapsed,
    /// or withdrawn) return to accepted, so the patient can be booked again; returns how
    /// many.
    pub async fn release_ended_bookings(&self, limit: u32) -> Result<u64, ReferralError> {
        let mut released = 0;
        for r in self.store.referrals_with_ended_bookings(limit).await? {
            let id = r.id.clone();
            let event = gateway_event(
                id,
                self.clock.now_ms(),
                ReferralStatus::Accepted,
                "the booked visit was cancelled".into(),
            );
            match self.apply(r, &event, Change::Release, None).await {
                Ok(_) => released += 1,
                Err(ReferralError::Changed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// One step of the upkeep job: requested referrals the target has not answered in
    /// time are escalated to the region's operator (once, recorded, told); returns how
    /// many.
    pub async fn escalate_unanswered(&self, limit: u32) -> Result<u64, ReferralError> {
        let now = self.clock.now_ms();
        let mut escalated = 0;
        for r in self.store.unanswered_referrals(now, limit).await? {
            let id = r.id.clone();
            let reason = format!(
                "no answer from {} in time: escalated to the region's operator",
                r.target_org
            );
            let event = gateway_event(id, now, ReferralStatus::Requested, reason);
            let notice = self.notice_for(&r, &event, OPERATOR, "referral-overdue".into());
            if self
                .store
                .escalate_referral(&event, notice.as_ref())
                .await?
            {
                escalated += 1;
                self.wake_if(notice.is_some());
            }
        }
        Ok(escalated)
    }

    /// Reminds the referring organization of accepted referrals not yet booked whose
    /// validity ends within the configured days (once each, recorded in the referral's
    /// history); returns how many.
    pub async fn remind_expiring(&self, limit: u32) -> Result<u64, ReferralError> {
        if self.remind_days_before == 0 {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let until = now + i64::from(self.remind_days_before) * crate::model::time::DAY_MS;
        let mut reminded = 0;
        for r in self.store.expiring_unbooked(now, until, limit).await? {
            let reason = format!(
                "not booked and valid until {}: the referring organization is reminded",
                crate::model::time::from_ms(r.valid_until).to_rfc3339()
            );
            let event = gateway_event(r.id.clone(), now, ReferralStatus::Accepted, reason);
            let notice = self.notice_for(
                &r,
                &event,
                r.requester_org.as_str(),
                "referral-expiring".into(),
            );
            if self.store.remind_referral(&event, notice.as_ref()).await? {
                reminded += 1;
                self.wake_if(notice.is_some());
            }
        }
        Ok(reminded)
    }

    /// One step of the expiry job: open referrals (not booked) whose validity ended
    /// become expired; returns how many.
    pub async fn expire_lapsed(&self, limit: u32) -> Result<u64, ReferralError> {
        let now = self.clock.now_ms();
        let mut expired = 0;
        for r in self.store.lapsed_referrals(now, limit).await? {
            let id = r.id.clone();
            let event = gateway_event(id, now, ReferralStatus::Expired, "validity ended".into());
            // Moved meanwhile (accepted, cancelled): the next round sees its new state.
            match self.apply(r, &event, Change::Plain, None).await {
                Ok(_) => expired += 1,
                Err(ReferralError::Changed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }

    /// Delivers one queued notice about a referral.
    pub async fn deliver_notice(&self, item: OutboxItem) -> Outcome {
        super::notify::deliver(
            self.notifier.as_deref(),
            &item,
            &self.retries,
            self.clock.now_ms(),
        )
        .await
    }

    /// The notice of a move for organization `to`; `None` when nobody receives notices or
    /// `to` is another region's (its gateway tells it).
    fn notice(&self, r: &Referral, e: &ReferralEvent, to: &Oid) -> Option<NewOutboxItem> {
        if self.federation.as_ref().is_some_and(|f| !f.is_local(to)) {
            return None;
        }
        self.notice_for(r, e, to.as_str(), format!("referral-{}", e.status))
    }

    /// The notice of `e` for `to` (an organization's OID, or [`OPERATOR`]) as `kind`.
    fn notice_for(
        &self,
        r: &Referral,
        e: &ReferralEvent,
        to: &str,
        kind: String,
    ) -> Option<NewOutboxItem> {
        self.notifier.as_ref()?;
        Some(NewOutboxItem {
            destination: NOTIFY_DESTINATION.into(),
            kind,
            aggregate_id: r.id.clone(),
            payload: json!({
                "referral": r.id,
                "status": e.status.as_str(),
                "reason": e.reason,
                "organization": to,
                "requester": r.requester_org.as_str(),
                "target": r.target_org.as_str(),
                "at": e.at,
            })
            .to_string(),
            due_at: e.at,
            attempts: 0,
            // The notices of one referral arrive in the order of its moves.
            ordering_key: Some(format!("referral:{}", r.id)),
        })
    }

    fn wake_if(&self, queued: bool) {
        if queued {
            self.wake.notify_one();
        }
    }

    /// Wakes the workers of what `outbox` queued.
    fn wake_for(&self, outbox: &[NewOutboxItem]) {
        self.wake_if(outbox.iter().any(|i| i.destination == NOTIFY_DESTINATION));
        if outbox.iter().any(|i| i.destination == PEER_DESTINATION) {
            self.peer_wake.notify_one();
        }
    }

    /// Records the audit event of an access to one referral: with the referral's
    /// organization and patient when it succeeded, as a refusal when the service refused;
    /// a store failure leaves nothing to record (nothing was accessed).
    async fn settle<T>(
        &self,
        event: AuditEvent,
        result: Result<T, ReferralError>,
        referral: impl FnOnce(&T) -> &Referral,
    ) -> Result<T, ReferralError> {
        let event = match &result {
            Ok(value) => {
                let r = referral(value);
                Some(AuditEvent {
                    entity_id: Some(r.id.clone()),
                    org: Some(r.requester_org.clone()),
                    snils: r.patient.snils.clone(),
                    policy: r.patient.policy.clone(),
                    ..event
                })
            }
            Err(ReferralError::Store(_)) => None,
            Err(e) => Some(event.refused(e.code())),
        };
        if let Some(e) = event {
            self.store.insert_audit(&e).await?;
        }
        result
    }

    fn event(&self, caller: Caller<'_>, action: AuditAction) -> AuditEvent {
        audit_event(caller, action, AuditEntity::Referral, self.clock.now_ms())
    }
}
