//! Booking: hold, book, cancel and reschedule slots owned by clinic systems, record urgent
//! visits, manage an organization's channel restrictions, and tell patients when a clinic
//! withdraws or moves their slot.
//!
//! The rules, in order ([`refusal`]): the slot is not withdrawn, not taken, lies ahead; the
//! channel may take it (the slot's channels, then the organization's temporary
//! restrictions); the patient is identified (policy + birth date, or SNILS). A booking
//! first takes a hold in the database (the partial unique index allows one active
//! appointment per slot), then the owning clinic system is asked. A refusal ends the hold;
//! no answer ends it too and queues a compensating cancel through the outbox, so neither
//! side keeps a half-made booking. Cancels and patient notifications are delivered through
//! the outbox (guaranteed delivery, bounded retries).

use std::sync::Arc;

use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::Notify;

use super::mis::{MisBooking, MisError, MisRegistry};
use super::notify::Notifier;
use super::schedules::{FreeSlots, ScheduleError, Schedules};
use super::{audit_event, Caller};
use crate::config::BookingSettings;
use crate::exchange::delivery::{self, Outcome, Recorder};
use crate::exchange::partners::Partners;
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
use crate::model::booking::{
    Appointment, AppointmentStatus, Patient, PatientError, Restriction, Transition, RESTRICTABLE,
};
use crate::model::schedule::{external_part, Channel, Channels, Slot, SlotStatus};
use crate::model::time::{from_ms, SharedClock, DAY_MS};
use crate::model::Oid;
pub use crate::store::appointments::AppointmentQuery;
use crate::store::appointments::{KeyClaim, NewHold};
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::{Store, StoreError};

/// Outbox destination of forwarded cancels.
pub const MIS_DESTINATION: &str = "mis";
/// Outbox destination of patient notifications.
pub const NOTIFY_DESTINATION: &str = "notify";

tokio::task_local! {
    /// The (client, idempotency key) of the request being served: the booking's commit
    /// completes the key in the same transaction, so a crash cannot leave it half-done.
    static REQUEST_KEY: (String, String);
}

/// How long a booking waits for an earlier effect on its slot another worker is delivering.
const SLOT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

use AppointmentStatus::{Booked, Cancelled, Expired, Failed, Held, Urgent, Withdrawn};

/// What to book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A slot, directly.
    Slot(String),
    /// An appointment held earlier.
    Hold(String),
}

/// Why a booking operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// No such slot.
    #[error("no slot {0}")]
    UnknownSlot(String),
    /// No such appointment.
    #[error("no appointment {0}")]
    UnknownAppointment(String),
    /// The slot has an active appointment (or the clinic system says it is taken).
    #[error("slot {0} is already taken")]
    SlotTaken(String),
    /// The clinic system withdrew the slot.
    #[error("slot {0} was withdrawn by the clinic")]
    SlotWithdrawn(String),
    /// The slot belongs to another organization than the request names.
    #[error("slot {slot} belongs to {org}, not to {named}")]
    SlotElsewhere {
        /// Slot id.
        slot: String,
        /// The slot's organization.
        org: Oid,
        /// The organization the request named.
        named: Oid,
    },
    /// The slot started already.
    #[error("slot {0} is in the past")]
    SlotInPast(String),
    /// The slot does not accept the channel.
    #[error("slot {slot} does not accept booking by channel {channel}; it accepts: {allowed}")]
    ChannelNotAllowed {
        /// Slot id.
        slot: String,
        /// Requested channel.
        channel: Channel,
        /// Accepted channels.
        allowed: String,
    },
    /// The organization restricted the channel for the slot's date.
    #[error(
        "organization {org} restricted booking by channel {channel} from {from} to {to}: {reason}"
    )]
    ChannelRestricted {
        /// Organization.
        org: Oid,
        /// Channel.
        channel: Channel,
        /// Start of the restriction (RFC 3339).
        from: String,
        /// End of the restriction (RFC 3339).
        to: String,
        /// Reason given by the organization.
        reason: String,
    },
    /// The patient is not identified well enough.
    #[error(transparent)]
    Patient(#[from] PatientError),
    /// The hold ended before it was booked.
    #[error("hold {0} expired")]
    HoldExpired(String),
    /// The appointment is not in a state that allows the operation.
    #[error("appointment {id} is {status}; {wanted}")]
    WrongState {
        /// Appointment id.
        id: String,
        /// Its state.
        status: AppointmentStatus,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// A record for an organization the client does not act for.
    #[error("client may not act for organization {0}")]
    NotYourOrganization(Oid),
    /// An earlier effect on the slot (a cancellation) has not reached the clinic system
    /// yet: booking it there now would be refused; the client may retry shortly.
    #[error("an earlier cancellation of slot {0} has not reached the clinic system yet; try again shortly")]
    SlotReleasePending(String),
    /// The clinic system refused.
    #[error("the clinic system refused: {code}: {message}")]
    MisRefused {
        /// Its code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The clinic system did not answer; nothing was booked (a compensating cancel is queued).
    #[error("the clinic system did not answer ({0}); nothing was booked, try again")]
    MisUnavailable(String),
    /// No clinic system is configured for the slot's source.
    #[error("no clinic system is configured for source {0}")]
    NoMis(String),
    /// The idempotency key was used with a different request.
    #[error("idempotency key {0:?} was used with a different request")]
    KeyMismatch(String),
    /// The first request with this idempotency key is still running.
    #[error("a request with idempotency key {0:?} is still running; retry shortly")]
    KeyInProgress(String),
    /// An appointment search names neither a patient, a slot nor an id.
    #[error("search appointments by patient identifier, slot or identifier")]
    SearchTooBroad,
    /// A channel that cannot be restricted (only internet and kiosk can).
    #[error("only internet and kiosk booking can be restricted, got {channel}")]
    NotRestrictable {
        /// Position in the request's list.
        index: usize,
        /// The channel.
        channel: Channel,
    },
    /// No such restriction.
    #[error("no restriction {0}")]
    UnknownRestriction(String),
    /// Invalid request data.
    #[error("{message}")]
    Invalid {
        /// Machine code.
        code: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The organization or practitioner named is not known.
    #[error(transparent)]
    Directory(ScheduleError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ScheduleError> for BookingError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Store(s) => BookingError::Store(s),
            other => BookingError::Directory(other),
        }
    }
}

impl BookingError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            BookingError::UnknownSlot(_) => "UNKNOWN_SLOT",
            BookingError::UnknownAppointment(_) => "UNKNOWN_APPOINTMENT",
            BookingError::SlotTaken(_) => "SLOT_TAKEN",
            BookingError::SlotWithdrawn(_) => "SLOT_WITHDRAWN",
            BookingError::SlotReleasePending(_) => "SLOT_RELEASE_PENDING",
            BookingError::SlotInPast(_) => "SLOT_IN_PAST",
            BookingError::SlotElsewhere { .. } => "SLOT_OF_ANOTHER_CLINIC",
            BookingError::ChannelNotAllowed { .. } => "CHANNEL_NOT_ALLOWED",
            BookingError::ChannelRestricted { .. } => "CHANNEL_RESTRICTED",
            BookingError::Patient(_) => "PATIENT_NOT_IDENTIFIED",
            BookingError::HoldExpired(_) => "HOLD_EXPIRED",
            BookingError::WrongState { .. } => "WRONG_STATE",
            BookingError::NotYourOrganization(_) => "FORBIDDEN",
            BookingError::MisRefused { .. } => "MIS_REFUSED",
            BookingError::MisUnavailable(_) => "MIS_UNAVAILABLE",
            BookingError::NoMis(_) => "MIS_NOT_CONFIGURED",
            BookingError::KeyMismatch(_) => "IDEMPOTENCY_KEY_REUSED",
            BookingError::KeyInProgress(_) => "IDEMPOTENCY_KEY_IN_PROGRESS",
            BookingError::SearchTooBroad => "SEARCH_TOO_BROAD",
            BookingError::NotRestrictable { .. } => "INVALID_CHANNEL",
            BookingError::UnknownRestriction(_) => "UNKNOWN_RESTRICTION",
            BookingError::Invalid { code, .. } => code,
            BookingError::Directory(ScheduleError::UnknownOrganization(_)) => {
                "UNKNOWN_ORGANIZATION"
            }
            BookingError::Directory(_) => "UNKNOWN_DOCTOR",
            BookingError::Store(_) => "STORAGE_ERROR",
        }
    }

    /// The request field the error is about, in the service's words (`slot`, `channel`,
    /// `patient`, `patient.birthDate`, `appointment`, `organization`, `practitioner`,
    /// `channels[i]`, ...); each edge maps it to its own path.
    pub fn field(&self) -> Option<String> {
        let f = match self {
            BookingError::UnknownSlot(_)
            | BookingError::SlotTaken(_)
            | BookingError::SlotWithdrawn(_)
            | BookingError::SlotReleasePending(_)
            | BookingError::SlotElsewhere { .. }
            | BookingError::SlotInPast(_) => "slot",
            BookingError::ChannelNotAllowed { .. } | BookingError::ChannelRestricted { .. } => {
                "channel"
            }
            BookingError::Patient(p) => p.field,
            BookingError::Invalid { field, .. } => field,
            BookingError::UnknownAppointment(_)
            | BookingError::HoldExpired(_)
            | BookingError::WrongState { .. } => "appointment",
            BookingError::NotYourOrganization(_) => "organization",
            BookingError::SearchTooBroad => "patient",
            BookingError::NotRestrictable { index, .. } => {
                return Some(format!("channels[{index}]"))
            }
            BookingError::Directory(ScheduleError::UnknownOrganization(_)) => "organization",
            BookingError::Directory(_) => "practitioner",
            _ => return None,
        };
        Some(f.to_string())
    }
}

/// Who asks: the caller and the channel it books through.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// The client.
    pub caller: Caller<'a>,
    /// Booking channel.
    pub channel: Channel,
}

impl Requester<'_> {
    /// The ownership rule: a client sees and changes the appointments it made and those at
    /// organizations it acts for; operators see all. Others do not exist for it.
    pub fn owns(&self, a: &Appointment) -> bool {
        a.client_id == self.caller.client_id || self.caller.acts_for(&a.org)
    }
}

/// An appointment search: one appointment by id, or a patient's or a slot's appointments.
#[derive(Debug, Clone, Default)]
pub struct AppointmentSearch {
    /// The gateway's appointment id.
    pub id: Option<String>,
    /// Filters.
    pub query: AppointmentQuery,
    /// Only appointments of a patient born on this date (the hub names patients by policy
    /// and birth date).
    pub birth_date: Option<NaiveDate>,
    /// At most this many.
    pub limit: u32,
}

impl AppointmentSearch {
    /// A patient's appointments: by policy number (and birth date) when given, else by SNILS.
    pub fn for_patient(p: &Patient, limit: u32) -> AppointmentSearch {
        let query = AppointmentQuery {
            policy: p.policy.clone(),
            snils: if p.policy.is_none() {
                p.snils.clone()
            } else {
                None
            },
            ..AppointmentQuery::default()
        };
        AppointmentSearch {
            id: None,
            birth_date: p.policy.as_ref().and(p.birth_date),
            query,
            limit,
        }
    }
}

/// A restriction as requested: an organization, channels by position, a period, a reason.
#[derive(Debug, Clone)]
pub struct NewRestriction {
    /// Organization.
    pub org: Oid,
    /// Channels, in the order the request listed them.
    pub channels: Vec<Channel>,
    /// Start of the restricted period of slot times (epoch ms).
    pub from_at: i64,
    /// End (epoch ms, exclusive).
    pub to_at: i64,
    /// Why, shown to patients refused.
    pub reason: String,
}

/// Why `channel` may not take `slot` at `now`, the rules tried in order; `None` when the
/// slot is bookable (as far as these rules go: the hold itself may still lose a race).
/// `restriction` is the organization's restriction covering the slot for this channel.
pub fn refusal(
    slot: &Slot,
    restriction: Option<&Restriction>,
    channel: Channel,
    now: i64,
) -> Option<BookingError> {
    match slot.status {
        SlotStatus::Withdrawn => return Some(BookingError::SlotWithdrawn(slot.id.clone())),
        SlotStatus::Busy => return Some(BookingError::SlotTaken(slot.id.clone())),
        SlotStatus::Free => {}
    }
    if slot.start_at <= now {
        return Some(BookingError::SlotInPast(slot.id.clone()));
    }
    if !slot.channels.contains(channel) {
        return Some(BookingError::ChannelNotAllowed {
            slot: slot.id.clone(),
            channel,
            allowed: slot.channels.to_list(),
        });
    }
    restriction.map(|r| BookingError::ChannelRestricted {
        org: r.org.clone(),
        channel,
        from: from_ms(r.from_at).to_rfc3339(),
        to: from_ms(r.to_at).to_rfc3339(),
        reason: r.reason.clone(),
    })
}

/// What became of a booking the clinic system lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebook {
    /// Booked there again.
    Resent,
    /// Marked for a person, with the reason.
    Flagged(String),
    /// Left for the next check (our own effect on its way, or the clinic unreachable).
    Pending,
}

/// The booking service.
#[derive(Clone)]
pub struct Booking {
    store: Store,
    /// How long an inline delivery holds its claim (as long as the delivery job's), ms.
    mis_lease_ms: i64,
    schedules: Schedules,
    mis: MisRegistry,
    notifier: Option<Arc<dyn Notifier>>,
    clock: SharedClock,
    hold_ms: i64,
    /// How long a booking's hold waits for the clinic system (ms).
    grace_ms: i64,
    wake_mis: Arc<Notify>,
    wake_notify: Arc<Notify>,
    /// Woken when a visit booked through the referral channel is cancelled.
    referral_released: Arc<Notify>,
    mis_retries: Arc<[u64]>,
    notify_retries: Arc<[u64]>,
    /// Records the deliveries this service makes itself (a slot's earlier effects, before
    /// booking it), under its own worker id.
    inline: Arc<Recorder>,
}

impl Booking {
    /// A booking service over `store` forwarding to the clinic systems in `mis` and telling
    /// patients through `notifier`; time comes from `clock`; its own deliveries are counted
    /// in `partners`.
    pub fn new(
        store: Store,
        mis: MisRegistry,
        notifier: Option<Arc<dyn Notifier>>,
        settings: &BookingSettings,
        clock: SharedClock,
        partners: Partners,
    ) -> Booking {
        Booking {
            schedules: Schedules::new(store.clone(), clock.clone()),
            mis,
            notifier,
            hold_ms: i64::try_from(settings.hold_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            grace_ms: i64::try_from(settings.booking_grace_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            wake_mis: Arc::new(Notify::new()),
            wake_notify: Arc::new(Notify::new()),
            referral_released: Arc::new(Notify::new()),
            mis_retries: settings.mis_retry_schedule_secs.clone().into(),
            notify_retries: settings.notify_retry_schedule_secs.clone().into(),
            inline: Arc::new(Recorder {
                worker: format!("booking-inline-{}", uuid::Uuid::new_v4().simple()),
                max_attempts: i32::try_from(settings.mis_retry_schedule_secs.len() + 1)
                    .unwrap_or(i32::MAX),
                // As the MIS delivery job's: the schedule's span.
                patience_ms: i64::try_from(
                    settings
                        .mis_retry_schedule_secs
                        .iter()
                        .sum::<u64>()
                        .saturating_mul(1000),
                )
                .unwrap_or(i64::MAX),
                clock: clock.clone(),
                partners,
                store: store.clone(),
            }),
            mis_lease_ms: 120_000,
            store,
            clock,
        }
    }

    /// The same service, its inline deliveries holding their claims for `lease` (the MIS
    /// delivery job's).
    pub fn with_mis_lease(mut self, lease: std::time::Duration) -> Booking {
        self.mis_lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// How long a hold lasts (ms).
    pub fn hold_ms(&self) -> i64 {
        self.hold_ms
    }

    /// True when patient notifications have somewhere to go.
    pub fn notifies(&self) -> bool {
        self.notifier.is_some()
    }

    /// Notified when a forwarded cancel is queued.
    pub fn mis_queued(&self) -> Arc<Notify> {
        self.wake_mis.clone()
    }

    /// Notified when a visit booked through the referral channel is cancelled (its
    /// referral may be booked again).
    pub fn referral_visit_cancelled(&self) -> Arc<Notify> {
        self.referral_released.clone()
    }

    /// Notified when a patient notification is queued.
    pub fn notice_queued(&self) -> Arc<Notify> {
        self.wake_notify.clone()
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The audit event of an access by `who` to an appointment.
    fn event(&self, who: &Requester<'_>, action: AuditAction) -> AuditEvent {
        audit_event(who.caller, action, AuditEntity::Appointment, self.now())
    }

    /// The audit event of an access by `who` to appointment `id`.
    fn event_on(&self, who: &Requester<'_>, action: AuditAction, id: &str) -> AuditEvent {
        AuditEvent {
            entity_id: Some(id.to_string()),
            ..self.event(who, action)
        }
    }

    /// The event of an access whose outcome no change recorded: written now. A refusal is
    /// recorded as such; a store failure leaves nothing to record (nothing was accessed).
    async fn settle<T>(
        &self,
        event: AuditEvent,
        result: Result<T, BookingError>,
        success: impl FnOnce(&T, AuditEvent) -> Option<AuditEvent>,
    ) -> Result<T, BookingError> {
        let event = match &result {
            Ok(value) => success(value, event),
            Err(BookingError::Store(_)) => None,
            Err(e) => Some(event.refused(e.code())),
        };
        if let Some(e) = event {
            self.store.insert_audit(&e).await?;
        }
        result
    }

    /// Runs `create` at most once per (client, key): a replay with the same request digest
    /// returns the appointment the first request produced.
    pub async fn idempotent<F, Fut>(
        &self,
        client_id: &str,
        key: Option<&str>,
        request_digest: &str,
        create: F,
    ) -> Result<Appointment, BookingError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Appointment, BookingError>>,
    {
        let Some(key) = key else {
            return create().await;
        };
        if key.is_empty() || key.len() > 200 {
            return Err(BookingError::Invalid {
                code: "INVALID_REQUEST",
                field: "Idempotency-Key",
                message: "an idempotency key has 1 to 200 characters".into(),
            });
        }
        let now = self.now();
        match self
            .store
            .claim_idempotency_key(
                client_id,
                key,
                request_digest,
                now,
                // By then a hold its first request made has lapsed and the sweeper (four
                // rounds per hold time) has queued its compensation.
                now - 2 * self.hold_ms.max(self.grace_ms),
            )
            .await?
        {
            KeyClaim::Replay(id) => {
                let a = self
                    .store
                    .appointment(&id)
                    .await?
                    .ok_or(BookingError::UnknownAppointment(id))?;
                // A replay reads the first result back: an access of its own.
                let e = audit_event(
                    Caller {
                        client_id,
                        operator: false,
                        organizations: &[],
                        regions: &[],
                    },
                    AuditAction::Read,
                    AuditEntity::Appointment,
                    self.now(),
                )
                .record(&a.org, &a.id)
                .patient(&a.patient);
                self.store.insert_audit(&e).await?;
                Ok(a)
            }
            KeyClaim::Mismatch => Err(BookingError::KeyMismatch(key.into())),
            KeyClaim::InProgress => Err(BookingError::KeyInProgress(key.into())),
            KeyClaim::Fresh => match REQUEST_KEY
                .scope((client_id.to_string(), key.to_string()), create())
                .await
            {
                Ok(a) => {
                    self.store
                        .complete_idempotency_key(client_id, key, &a.id)
                        .await?;
                    Ok(a)
                }
                Err(e) => {
                    self.store.abandon_idempotency_key(client_id, key).await?;
                    Err(e)
                }
            },
        }
    }

    /// Holds a slot for the requester until the hold time ends.
    pub async fn hold(
        &self,
        who: Requester<'_>,
        slot_id: &str,
        patient: Option<&Patient>,
    ) -> Result<Appointment, BookingError> {
        let event = self.event(&who, AuditAction::Create);
        let result = async {
            if let Some(p) = patient {
                p.check()?;
            }
            self.take(who, slot_id, patient, self.hold_ms, None, Some(&event))
                .await
        }
        .await;
        // A hold made was audited with its insert.
        self.settle(event, result, |_, _| None).await
    }

    /// Books a slot or a held appointment in the clinic system that owns the slot.
    pub async fn book(
        &self,
        who: Requester<'_>,
        target: &Target,
        patient: Option<&Patient>,
    ) -> Result<Appointment, BookingError> {
        let mut event = match target {
            Target::Slot(_) => self.event(&who, AuditAction::Create),
            Target::Hold(id) => {
                let mut e = self.event(&who, AuditAction::Update);
                e.entity_id = Some(id.clone());
                e
            }
        };
        if let Some(p) = patient {
            event = event.patient(p);
        }
        let result = self.book_audited(who, target, patient, &event).await;
        // A booking made was audited with its confirmation.
        self.settle(event, result, |_, _| None).await
    }

    async fn book_audited(
        &self,
        who: Requester<'_>,
        target: &Target,
        patient: Option<&Patient>,
        event: &AuditEvent,
    ) -> Result<Appointment, BookingError> {
        let now = self.now();
        let held = match target {
            Target::Slot(slot) => {
                let p = patient.ok_or(PatientError {
                    field: "patient",
                    message: "booking needs the patient",
                })?;
                p.check()?;
                self.take(who, slot, Some(p), self.grace_ms, None, None)
                    .await?
            }
            Target::Hold(id) => {
                let a = self.owned(who, id).await?;
                if a.status == Expired {
                    return Err(BookingError::HoldExpired(a.id));
                }
                if a.status != Held {
                    return Err(BookingError::WrongState {
                        id: a.id,
                        status: a.status,
                        wanted: "only a held appointment can be booked",
                    });
                }
                if let Some(p) = patient {
                    p.check()?;
                    self.store.set_hold_patient(&a.id, p, now).await?;
                } else if a.patient.is_empty() {
                    return Err(PatientError {
                        field: "patient",
                        message: "the hold has no patient; give one to book it",
                    }
                    .into());
                }
                if !self
                    .store
                    .extend_hold(&a.id, now + self.grace_ms, now)
                    .await?
                {
                    return Err(BookingError::HoldExpired(a.id));
                }
                self.store
                    .appointment(&a.id)
                    .await?
                    .ok_or(BookingError::UnknownAppointment(a.id))?
            }
        };
        self.forward(held, Some(event)).await
    }

    /// Books as [`Booking::book`] for a request that names the slot's organization too (the
    /// hub does): a slot of another organization is refused.
    pub async fn book_at(
        &self,
        who: Requester<'_>,
        org: &Oid,
        target: &Target,
        patient: Option<&Patient>,
    ) -> Result<Appointment, BookingError> {
        if let Target::Slot(id) = target {
            if let Some(s) = self.store.slot(id).await? {
                if &s.org != org {
                    return Err(BookingError::SlotElsewhere {
                        slot: s.id,
                        org: s.org,
                        named: org.clone(),
                    });
                }
            }
        }
        self.book(who, target, patient).await
    }

    /// Cancels a held or booked appointment; a booked one is cancelled in the clinic system
    /// through the outbox.
    pub async fn cancel(
        &self,
        who: Requester<'_>,
        id: &str,
        reason: &str,
    ) -> Result<Appointment, BookingError> {
        let event = self.event_on(&who, AuditAction::Update, id);
        let result = self.cancel_audited(who, id, reason, &event).await;
        self.settle(event, result, |_, _| None).await
    }

    async fn cancel_audited(
        &self,
        who: Requester<'_>,
        id: &str,
        reason: &str,
        event: &AuditEvent,
    ) -> Result<Appointment, BookingError> {
        let a = self.owned(who, id).await?;
        let reason = if reason.is_empty() {
            "CANCELLED"
        } else {
            reason
        };
        let now = self.now();
        let ended = match a.status {
            Held => {
                let change = Transition::new(&[Held], Cancelled, reason).slot(SlotStatus::Free);
                self.store
                    .transition_appointment(id, &change, None, now, Some(event))
                    .await?
            }
            Booked => {
                let change = Transition::new(&[Booked], Cancelled, reason).slot(SlotStatus::Free);
                let effect = cancel_effect(&a, now);
                let r = self
                    .store
                    .transition_appointment(id, &change, Some(&effect), now, Some(event))
                    .await?;
                self.wake_mis.notify_one();
                r
            }
            _ => None,
        };
        ended.ok_or(BookingError::WrongState {
            id: a.id,
            status: a.status,
            wanted: "only held or booked appointments can be cancelled",
        })?;
        if a.channel == Channel::Referral {
            self.referral_released.notify_one();
        }
        self.store
            .appointment(id)
            .await?
            .ok_or_else(|| BookingError::UnknownAppointment(id.into()))
    }

    /// Moves a booked appointment to another slot: the new slot is booked first, then the
    /// old appointment is cancelled; if the new booking fails, the old one stays.
    pub async fn reschedule(
        &self,
        who: Requester<'_>,
        id: &str,
        new_slot: &str,
    ) -> Result<Appointment, BookingError> {
        let event = self.event_on(&who, AuditAction::Update, id);
        let result = self.reschedule_audited(who, id, new_slot, &event).await;
        self.settle(event, result, |_, _| None).await
    }

    async fn reschedule_audited(
        &self,
        who: Requester<'_>,
        id: &str,
        new_slot: &str,
        event: &AuditEvent,
    ) -> Result<Appointment, BookingError> {
        let old = self.owned(who, id).await?;
        if old.status != Booked {
            return Err(BookingError::WrongState {
                id: old.id,
                status: old.status,
                wanted: "only a booked appointment can be rescheduled",
            });
        }
        let held = self
            .take(
                who,
                new_slot,
                Some(&old.patient),
                self.grace_ms,
                Some(&old.id),
                None,
            )
            .await?;
        let booked = self.forward(held, None).await?;
        let now = self.now();
        let change = Transition::new(&[Booked], Cancelled, "RESCHEDULED").slot(SlotStatus::Free);
        self.store
            .transition_appointment(
                &old.id,
                &change,
                Some(&cancel_effect(&old, now)),
                now,
                Some(event),
            )
            .await?;
        self.wake_mis.notify_one();
        Ok(booked)
    }

    /// Records an urgent visit seen out of schedule (no slot is taken) at a known
    /// organization, with one of its practitioners when named.
    pub async fn urgent(
        &self,
        who: Requester<'_>,
        org: &Oid,
        practitioner_id: Option<&str>,
        patient: &Patient,
        at: Option<i64>,
    ) -> Result<Appointment, BookingError> {
        let event = self.event(&who, AuditAction::Create).patient(patient);
        let result = self
            .urgent_audited(who, org, practitioner_id, patient, at, &event)
            .await;
        self.settle(event, result, |_, _| None).await
    }

    async fn urgent_audited(
        &self,
        who: Requester<'_>,
        org: &Oid,
        practitioner_id: Option<&str>,
        patient: &Patient,
        at: Option<i64>,
        event: &AuditEvent,
    ) -> Result<Appointment, BookingError> {
        patient.check()?;
        self.schedules.known_organization(org).await?;
        if !who.caller.acts_for(org) {
            return Err(BookingError::NotYourOrganization(org.clone()));
        }
        let specialty = match practitioner_id {
            Some(p) => match self.schedules.practitioner_of(org, p).await {
                Ok(found) => found.specialty_code,
                Err(ScheduleError::UnknownPractitioner { .. }) => {
                    return Err(BookingError::Invalid {
                        code: "INVALID_REQUEST",
                        field: "practitioner",
                        message: format!("organization {org} has no practitioner {p}"),
                    })
                }
                Err(e) => return Err(e.into()),
            },
            None => String::new(),
        };
        let now = self.now();
        let at = at.unwrap_or(now);
        let a = Appointment {
            id: uuid::Uuid::now_v7().to_string(),
            slot_id: None,
            org: org.clone(),
            practitioner_id: practitioner_id.unwrap_or("").into(),
            specialty_code: specialty,
            start_at: at,
            end_at: at,
            source: String::new(),
            patient: patient.clone(),
            channel: who.channel,
            status: Urgent,
            hold_expires_at: None,
            external_id: None,
            client_id: who.caller.client_id.into(),
            reason: "OUT_OF_SCHEDULE".into(),
            replaces: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_unslotted(&a, event).await?;
        Ok(a)
    }

    /// A patient looked up by the identifiers a channel gives: checked, and answered with a
    /// stable pseudonymous id (the gateway holds no population register; the clinic system
    /// decides on booking). A lookup of personal data: audited.
    pub async fn identify(&self, who: Requester<'_>, p: &Patient) -> Result<String, BookingError> {
        let event = AuditEvent {
            entity: AuditEntity::Patient,
            ..self.event(&who, AuditAction::Read).patient(p)
        };
        let result = p.check().map_err(BookingError::from).map(|()| {
            let key = match (&p.snils, &p.policy) {
                (Some(s), _) => s.digits(),
                (None, Some(policy)) => format!(
                    "{}|{}",
                    policy.digits(),
                    p.birth_date.map(|d| d.to_string()).unwrap_or_default()
                ),
                (None, None) => String::new(),
            };
            hex::encode(&openssl::sha::sha256(format!("patient\0{key}\0").as_bytes())[..8])
        });
        self.settle(event, result, |_, e| Some(e)).await
    }

    /// One appointment, if the requester owns it (the ownership rule, [`Requester::owns`]).
    pub async fn appointment(
        &self,
        who: Requester<'_>,
        id: &str,
    ) -> Result<Appointment, BookingError> {
        let event = self.event_on(&who, AuditAction::Read, id);
        let result = self.owned(who, id).await;
        self.settle(event, result, |a, e| {
            Some(e.record(&a.org, &a.id).patient(&a.patient))
        })
        .await
    }

    /// One appointment the requester owns; others do not exist for it.
    async fn owned(&self, who: Requester<'_>, id: &str) -> Result<Appointment, BookingError> {
        let a = self
            .store
            .appointment(id)
            .await?
            .ok_or_else(|| BookingError::UnknownAppointment(id.into()))?;
        if !who.owns(&a) {
            return Err(BookingError::UnknownAppointment(id.into()));
        }
        Ok(a)
    }

    /// Appointments the requester owns matching the search, newest first.
    pub async fn appointments(
        &self,
        who: Requester<'_>,
        search: &AppointmentSearch,
    ) -> Result<Vec<Appointment>, BookingError> {
        let mut event = self.event(&who, AuditAction::Search);
        event.snils = search.query.snils.clone();
        event.policy = search.query.policy.clone();
        event.entity_id = search.id.clone();
        let result = self.search(who, search).await;
        self.settle(event, result, |_, e| Some(e)).await
    }

    async fn search(
        &self,
        who: Requester<'_>,
        search: &AppointmentSearch,
    ) -> Result<Vec<Appointment>, BookingError> {
        let q = &search.query;
        let mut rows = match &search.id {
            Some(id) => self.store.appointment(id).await?.into_iter().collect(),
            None if q.policy.is_none() && q.snils.is_none() && q.slot_id.is_none() => {
                return Err(BookingError::SearchTooBroad)
            }
            None => self.store.search_appointments(q, search.limit).await?,
        };
        rows.retain(|a| {
            who.owns(a)
                && search
                    .birth_date
                    .is_none_or(|b| a.patient.birth_date == Some(b))
        });
        Ok(rows)
    }

    /// Restricts internet or kiosk booking of a known organization the caller acts for.
    pub async fn add_restriction(
        &self,
        caller: Caller<'_>,
        r: NewRestriction,
    ) -> Result<Restriction, BookingError> {
        self.schedules.known_organization(&r.org).await?;
        if !caller.acts_for(&r.org) {
            return Err(BookingError::NotYourOrganization(r.org));
        }
        if let Some((index, channel)) = r
            .channels
            .iter()
            .enumerate()
            .find(|(_, c)| !RESTRICTABLE.contains(**c))
        {
            return Err(BookingError::NotRestrictable {
                index,
                channel: *channel,
            });
        }
        if r.channels.is_empty() {
            return Err(BookingError::Invalid {
                code: "REQUIRED_FIELD_MISSING",
                field: "channels",
                message: "name at least one channel to restrict".into(),
            });
        }
        if r.from_at >= r.to_at {
            return Err(BookingError::Invalid {
                code: "INVALID_PERIOD",
                field: "to",
                message: "`to` must be after `from`".into(),
            });
        }
        let reason = r.reason.trim();
        if reason.is_empty() {
            return Err(BookingError::Invalid {
                code: "REQUIRED_FIELD_MISSING",
                field: "reason",
                message: "give the reason patients will be shown".into(),
            });
        }
        let restriction = Restriction {
            id: uuid::Uuid::now_v7().to_string(),
            org: r.org,
            channels: Channels::of(&r.channels),
            from_at: r.from_at,
            to_at: r.to_at,
            reason: reason.to_string(),
        };
        self.store.add_restriction(&restriction).await?;
        Ok(restriction)
    }

    /// Restrictions of an organization (or all) that the caller acts for, ordered by start.
    pub async fn restrictions(
        &self,
        caller: Caller<'_>,
        org: Option<&Oid>,
    ) -> Result<Vec<Restriction>, BookingError> {
        let mut rows = self.store.restrictions(org).await?;
        rows.retain(|r| caller.acts_for(&r.org));
        Ok(rows)
    }

    /// Lifts a restriction of an organization the caller acts for.
    pub async fn delete_restriction(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<(), BookingError> {
        let unknown = || BookingError::UnknownRestriction(id.into());
        let r = self.store.restriction(id).await?.ok_or_else(unknown)?;
        if !caller.acts_for(&r.org) || !self.store.delete_restriction(id).await? {
            return Err(unknown());
        }
        Ok(())
    }

    /// Ends active appointments on slots the clinic systems withdrew and queues a patient
    /// notification for each, offering free slots of the same specialty. Looks at the given
    /// slots only (those a sync just changed) or, with `None`, at every active appointment.
    /// Returns how many.
    pub async fn handle_withdrawn_slots(
        &self,
        slots: Option<&[String]>,
    ) -> Result<usize, BookingError> {
        let now = self.now();
        let mut n = 0;
        let change = Transition::new(&[Held, Booked], Withdrawn, "SLOT_WITHDRAWN");
        for a in self.store.active_on_withdrawn_slots(slots, 1000).await? {
            let start = from_ms(a.start_at).to_rfc3339();
            let effect = self
                .patient_notice("slot-withdrawn", &a, json!({ "start": start }), now)
                .await?;
            if self
                .store
                .transition_appointment(&a.id, &change, Some(&effect), now, None)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake_notify.notify_one();
        }
        Ok(n)
    }

    /// Follows the clinic systems' moves of booked slots: each active appointment on a slot
    /// whose times changed takes the new times (reason `SLOT_MOVED`) and, when booked, a
    /// patient notification is queued with the old and new time and free slots of the same
    /// specialty, in the same transaction. Looks at the given slots only or, with `None`,
    /// at every active appointment. Returns how many appointments moved.
    pub async fn handle_moved_slots(
        &self,
        slots: Option<&[String]>,
    ) -> Result<usize, BookingError> {
        let now = self.now();
        let mut n = 0;
        for (a, start, end) in self.store.active_on_moved_slots(slots, 1000).await? {
            let effect = if a.status == Booked {
                let time = |ms: i64| from_ms(ms).to_rfc3339();
                let times = json!({
                    "previousStart": time(a.start_at),
                    "start": time(start),
                    "end": time(end),
                });
                Some(self.patient_notice("slot-moved", &a, times, now).await?)
            } else {
                None
            };
            if self
                .store
                .move_appointment(&a.id, a.start_at, start, end, effect.as_ref(), now)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake_notify.notify_one();
        }
        Ok(n)
    }

    /// A booking the gateway confirmed that its clinic system lost (the slot is free there):
    /// booked there again under the appointment's own client reference, or, when the clinic
    /// refuses (someone took the slot, it was withdrawn), marked for a person to call the
    /// patient. Left alone while an effect of ours on the slot is still on its way (a
    /// cancellation explains the free slot) or the clinic system cannot be reached.
    pub async fn rebook_lost(&self, a: &Appointment) -> Result<Rebook, BookingError> {
        let slot_id = a.slot_id.clone().unwrap_or_default();
        if a.status != Booked
            || !self
                .store
                .unfinished_effects(MIS_DESTINATION, &slot_id)
                .await?
                .is_empty()
        {
            return Ok(Rebook::Pending);
        }
        let now = self.now();
        let Some(mis) = self.mis.get(&a.source).cloned() else {
            let why = format!("LOST_BY_CLINIC:NO_CLINIC_SYSTEM {}", a.source);
            self.store.mark_attention(&a.id, &why, now).await?;
            return Ok(Rebook::Flagged(why));
        };
        let request = MisBooking {
            slot_external_id: external_part(&slot_id).to_string(),
            client_ref: a.id.clone(),
            patient: a.patient.clone(),
            channel: a.channel,
        };
        match mis.book(request).await {
            Ok(external) => {
                self.store.rebooked(&a.id, &external, now).await?;
                Ok(Rebook::Resent)
            }
            Err(MisError::Refused { code, .. }) => {
                let why = format!("LOST_BY_CLINIC:{code}");
                self.store.mark_attention(&a.id, &why, now).await?;
                Ok(Rebook::Flagged(why))
            }
            Err(MisError::Unavailable(_)) => Ok(Rebook::Pending),
        }
    }

    /// Expires lapsed holds; returns how many.
    /// Each may have been booked in the clinic system by a request that died with its
    /// process, so each expiry queues a cancel there (by our reference; a no-op if none).
    pub async fn expire_holds(&self) -> Result<u64, BookingError> {
        self.expire_lapsed(None).await
    }

    /// Expires lapsed holds (of one slot when given), each with its compensating cancel.
    async fn expire_lapsed(&self, slot: Option<&str>) -> Result<u64, BookingError> {
        let now = self.now();
        let mut n = 0;
        for held in self.store.lapsed_holds(now, slot, 500).await? {
            let change = Transition::new(&[Held], Expired, "HOLD_EXPIRED");
            let effect = self
                .mis
                .get(&held.source)
                .is_some()
                .then(|| cancel_effect(&held, now));
            if self
                .store
                .transition_appointment(&held.id, &change, effect.as_ref(), now, None)
                .await?
                .is_some()
            {
                n += 1;
            }
        }
        if n > 0 {
            self.wake_mis.notify_one();
        }
        Ok(n)
    }

    /// Delivers one forwarded cancel to the clinic system that owns the slot.
    pub async fn deliver_cancel(&self, item: OutboxItem) -> Outcome {
        let payload: serde_json::Value = match serde_json::from_str(&item.payload) {
            Ok(v) => v,
            Err(e) => return Outcome::Dead(format!("unreadable payload: {e}")),
        };
        let source = payload["source"].as_str().unwrap_or_default();
        let client_ref = payload["client_ref"].as_str().unwrap_or_default();
        let external = payload["external_id"].as_str();
        let Some(mis) = self.mis.get(source) else {
            return Outcome::Dead(format!(
                "no clinic system is configured for source {source}"
            ));
        };
        match mis.cancel(external, client_ref).await {
            Ok(()) => {
                // The clinic system has the slot free again: a sync that saw our (now
                // cancelled) booking there may have marked it busy here.
                if let Some(slot) = payload["slot"].as_str() {
                    if let Err(e) = self.store.free_slot_if_unheld(slot).await {
                        tracing::warn!(slot, error = %e, "freeing a cancelled slot failed");
                    }
                }
                Outcome::Delivered
            }
            Err(e @ MisError::Refused { .. }) => Outcome::Dead(e.to_string()),
            Err(e) => delivery::retry_or_dead(&self.mis_retries, &item, e.to_string(), self.now()),
        }
    }

    /// Delivers one patient notification.
    pub async fn deliver_notice(&self, item: OutboxItem) -> Outcome {
        super::notify::deliver(
            self.notifier.as_deref(),
            &item,
            &self.notify_retries,
            self.now(),
        )
        .await
    }

    /// Checks the rules and inserts a hold lasting `ttl_ms`.
    async fn take(
        &self,
        who: Requester<'_>,
        slot_id: &str,
        patient: Option<&Patient>,
        ttl_ms: i64,
        replaces: Option<&str>,
        audit: Option<&AuditEvent>,
    ) -> Result<Appointment, BookingError> {
        let now = self.now();
        let channel = Channels::of(&[who.channel]);
        let restrictable = if RESTRICTABLE.contains(who.channel) {
            channel
        } else {
            Channels(0)
        };
        let hold = NewHold {
            id: uuid::Uuid::now_v7().to_string(),
            slot_id: slot_id.to_string(),
            patient: patient.cloned().unwrap_or_default(),
            channel: who.channel,
            expires_at: now + ttl_ms,
            client_id: who.caller.client_id.to_string(),
            replaces: replaces.map(str::to_string),
        };
        if let Some(held) = self
            .store
            .hold_if_bookable(&hold, channel, restrictable, now, audit)
            .await?
        {
            return Ok(held);
        }
        // Refused: find the rule that refused, in order.
        let (slot, restriction) = self
            .store
            .slot_for_booking(slot_id, restrictable)
            .await?
            .ok_or_else(|| BookingError::UnknownSlot(slot_id.into()))?;
        if let Some(refused) = refusal(&slot, restriction.as_ref(), who.channel, now) {
            return Err(refused);
        }
        // Free by every rule: a lapsed hold may still sit on it; expired, it frees the slot.
        let a = hold.on(slot, now);
        if !self.store.insert_hold(&a, audit).await? {
            let cleared = self.expire_lapsed(Some(slot_id)).await?;
            if cleared == 0 || !self.store.insert_hold(&a, audit).await? {
                return Err(BookingError::SlotTaken(a.slot_id.unwrap_or_default()));
            }
        }
        Ok(a)
    }

    /// Asks the owning clinic system to book a held appointment.
    async fn forward(
        &self,
        held: Appointment,
        audit: Option<&AuditEvent>,
    ) -> Result<Appointment, BookingError> {
        let Some(mis) = self.mis.get(&held.source).cloned() else {
            let change = Transition::new(&[Held], Failed, "MIS_NOT_CONFIGURED");
            self.store
                .transition_appointment(&held.id, &change, None, self.now(), None)
                .await?;
            return Err(BookingError::NoMis(held.source));
        };
        let slot_id = held.slot_id.clone().unwrap_or_default();
        if !self.release_slot(&slot_id).await? {
            let change = Transition::new(&[Held], Failed, "SLOT_RELEASE_PENDING");
            self.store
                .transition_appointment(&held.id, &change, None, self.now(), None)
                .await?;
            return Err(BookingError::SlotReleasePending(slot_id));
        }
        let request = MisBooking {
            slot_external_id: external_part(&slot_id).to_string(),
            client_ref: held.id.clone(),
            patient: held.patient.clone(),
            channel: held.channel,
        };
        match mis.book(request).await {
            Ok(external) => {
                if let Some(booked) = self
                    .store
                    .confirm_booking(
                        &held.id,
                        &external,
                        self.now(),
                        audit,
                        REQUEST_KEY.try_with(Clone::clone).ok().as_ref(),
                    )
                    .await?
                {
                    return Ok(booked);
                }
                // The hold lapsed while the clinic system booked: undo there.
                let mut undo = held.clone();
                undo.external_id = Some(external);
                self.compensate(&held.id, "HOLD_EXPIRED", &undo).await?;
                Err(BookingError::HoldExpired(held.id))
            }
            Err(MisError::Refused { code, message }) => {
                let mut change = Transition::new(&[Held], Failed, format!("MIS_REFUSED:{code}"));
                let refusal = match code.as_str() {
                    "SLOT_TAKEN" => BookingError::SlotTaken(slot_id.clone()),
                    "SLOT_WITHDRAWN" => BookingError::SlotWithdrawn(slot_id.clone()),
                    _ => BookingError::MisRefused { code, message },
                };
                // Busy on the clinic's word only when no effect of ours on the slot is
                // still on its way (a cancellation in flight explains a refusal).
                let ours_pending = !self
                    .store
                    .unfinished_effects(MIS_DESTINATION, &slot_id)
                    .await?
                    .is_empty();
                if !ours_pending
                    && matches!(
                        refusal,
                        BookingError::SlotTaken(_) | BookingError::SlotWithdrawn(_)
                    )
                {
                    change = change.slot(SlotStatus::Busy);
                }
                self.store
                    .transition_appointment(&held.id, &change, None, self.now(), None)
                    .await?;
                Err(refusal)
            }
            Err(MisError::Unavailable(why)) => {
                self.compensate(&held.id, "MIS_UNAVAILABLE", &held).await?;
                Err(BookingError::MisUnavailable(why))
            }
        }
    }

    /// Delivers the slot's earlier effects still queued for its clinic system (a
    /// cancellation made a moment ago) before a booking of it goes there, so the clinic
    /// system sees them in order; waits a bounded time for one another worker is
    /// delivering. False when one is still unfinished (it failed and waits for its retry).
    async fn release_slot(&self, slot_id: &str) -> Result<bool, BookingError> {
        // A wait on another worker: wall-clock time, whatever clock the service reads.
        let deadline = std::time::Instant::now() + SLOT_RELEASE_WAIT;
        loop {
            let pending = self
                .store
                .unfinished_effects(MIS_DESTINATION, slot_id)
                .await?;
            let Some(first) = pending.into_iter().next() else {
                return Ok(true);
            };
            let now = self.now();
            let lease = now + self.mis_lease_ms;
            let claimed = self
                .store
                .claim_outbox_item(&first.id, &self.inline.worker, now, lease)
                .await?;
            match claimed {
                Some(item) => {
                    let (outcome, calls) =
                        crate::context::with_call_note(self.deliver_cancel(item.clone())).await;
                    let failed = !matches!(outcome, Outcome::Delivered);
                    self.inline.record_attempt(&item, outcome, calls).await;
                    if failed {
                        return Ok(false);
                    }
                }
                // Being delivered by a worker, or waiting for its retry.
                None if first.status == "inflight" && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                None => return Ok(false),
            }
        }
    }

    /// Ends a hold as failed and queues a cancel in the clinic system, which may or may not
    /// have booked it.
    async fn compensate(
        &self,
        id: &str,
        reason: &str,
        a: &Appointment,
    ) -> Result<(), BookingError> {
        let now = self.now();
        let effect = cancel_effect(a, now);
        let change = Transition::new(&[Held], Failed, reason);
        let ended = self
            .store
            .transition_appointment(id, &change, Some(&effect), now, None)
            .await?;
        if ended.is_none() {
            // Already expired by the sweeper: queue the cancel on its own.
            self.store.enqueue(&effect, now).await?;
        }
        self.wake_mis.notify_one();
        Ok(())
    }

    /// A notification to the patient of appointment `a` about `event` (`slot-withdrawn`,
    /// `slot-moved`), for the notification receiver through the outbox: the appointment,
    /// its clinic, slot, specialty, channel and patient, the fields of `times`, and up to
    /// five free slots of the same specialty.
    async fn patient_notice(
        &self,
        event: &str,
        a: &Appointment,
        times: serde_json::Value,
        now: i64,
    ) -> Result<NewOutboxItem, BookingError> {
        let mut payload = json!({
            "event": event,
            "appointment": a.id,
            "organization": a.org.as_str(),
            "slot": a.slot_id,
            "specialty": a.specialty_code,
            "channel": a.channel.as_str(),
            "patient": {
                "policy": a.patient.policy.as_ref().map(|p| p.digits()),
                "snils": a.patient.snils.as_ref().map(|s| s.digits()),
                "birthDate": a.patient.birth_date.map(|d| d.to_string()),
            },
            "alternatives": self.alternatives(a).await?,
        });
        if let (Some(p), serde_json::Value::Object(t)) = (payload.as_object_mut(), times) {
            p.extend(t);
        }
        Ok(NewOutboxItem {
            destination: NOTIFY_DESTINATION.into(),
            kind: event.into(),
            aggregate_id: a.id.clone(),
            payload: payload.to_string(),
            due_at: now,
            attempts: 0,
            ordering_key: Some(a.id.clone()),
        })
    }

    /// Up to five free slots of `a`'s specialty its channel may take from the day before it
    /// on: at its own organization first, then anywhere.
    async fn alternatives(&self, a: &Appointment) -> Result<Vec<serde_json::Value>, BookingError> {
        let mut out: Vec<Slot> = Vec::new();
        for org in [Some(a.org.clone()), None] {
            let found = self
                .schedules
                .find_free(&FreeSlots {
                    org,
                    practitioner_id: None,
                    specialty_code: Some(a.specialty_code.clone()),
                    from: Some(a.start_at - DAY_MS),
                    to: None,
                    channel: a.channel,
                    limit: 6,
                    scan: 200,
                })
                .await?;
            for s in found {
                if out.len() < 5
                    && Some(&s.id) != a.slot_id.as_ref()
                    && !out.iter().any(|x| x.id == s.id)
                {
                    out.push(s);
                }
            }
        }
        Ok(out
            .iter()
            .map(|s| {
                json!({
                    "slot": s.id,
                    "organization": s.org.as_str(),
                    "practitioner": s.practitioner_id,
                    "start": from_ms(s.start_at).to_rfc3339(),
                })
            })
            .collect())
    }
}

/// The next attempt on `schedule` after the item's failed one, or its dead letter.
fn cancel_effect(a: &Appointment, now: i64) -> NewOutboxItem {
    NewOutboxItem {
        destination: MIS_DESTINATION.into(),
        kind: "cancel-appointment".into(),
        aggregate_id: a.id.clone(),
        payload: json!({
            "source": a.source,
            "external_id": a.external_id,
            "client_ref": a.id,
            "slot": a.slot_id,
        })
        .to_string(),
        due_at: now,
        attempts: 0,
        // Effects on one slot reach the clinic system in order.
        ordering_key: Some(a.slot_id.clone().unwrap_or_else(|| a.id.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn slot(status: SlotStatus, start_at: i64, channels: &[Channel]) -> Slot {
        Slot {
            id: "emias:S1".into(),
            org: Oid::parse("1.2.643.5.1.13.13.12.2.77.7001").unwrap(),
            practitioner_id: "emias:D1".into(),
            specialty_code: "27".into(),
            start_at,
            end_at: start_at + 900_000,
            status,
            channels: Channels::of(channels),
            source: "emias".into(),
        }
    }

    fn restriction() -> Restriction {
        Restriction {
            id: "r1".into(),
            org: Oid::parse("1.2.643.5.1.13.13.12.2.77.7001").unwrap(),
            channels: Channels::of(&[Channel::Internet]),
            from_at: NOW,
            to_at: NOW + DAY_MS,
            reason: "epidemic".into(),
        }
    }

    fn code(e: Option<BookingError>) -> &'static str {
        e.map_or("BOOKABLE", |e| e.code())
    }

    #[test]
    fn a_free_future_slot_of_the_channel_without_restriction_is_bookable() {
        let s = slot(SlotStatus::Free, NOW + 1, &[Channel::Internet]);
        assert_eq!(code(refusal(&s, None, Channel::Internet, NOW)), "BOOKABLE");
    }

    #[test]
    fn refusals_come_in_rule_order() {
        let r = restriction();
        let (past, ahead) = (NOW - 1, NOW + 1);
        let phone_only = [Channel::Phone];
        // Withdrawn beats everything, then taken, then past, then channel, then restriction.
        let s = slot(SlotStatus::Withdrawn, past, &phone_only);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "SLOT_WITHDRAWN"
        );
        let s = slot(SlotStatus::Busy, past, &phone_only);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "SLOT_TAKEN"
        );
        let s = slot(SlotStatus::Free, past, &phone_only);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "SLOT_IN_PAST"
        );
        let s = slot(SlotStatus::Free, NOW, &phone_only);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "SLOT_IN_PAST",
            "a slot starting now has started"
        );
        let s = slot(SlotStatus::Free, ahead, &phone_only);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "CHANNEL_NOT_ALLOWED"
        );
        let s = slot(SlotStatus::Free, ahead, &[Channel::Internet]);
        assert_eq!(
            code(refusal(&s, Some(&r), Channel::Internet, NOW)),
            "CHANNEL_RESTRICTED"
        );
    }

    #[test]
    fn refusals_say_what_the_slot_accepts_and_why_the_channel_is_restricted() {
        let s = slot(
            SlotStatus::Free,
            NOW + 1,
            &[Channel::Registry, Channel::Phone],
        );
        let e = refusal(&s, None, Channel::Kiosk, NOW).unwrap();
        assert_eq!(e.field().as_deref(), Some("channel"));
        assert!(e.to_string().ends_with("it accepts: registry,phone"), "{e}");
        let s = slot(SlotStatus::Free, NOW + 1, &[Channel::Internet]);
        let e = refusal(&s, Some(&restriction()), Channel::Internet, NOW).unwrap();
        assert!(e.to_string().contains("epidemic"), "{e}");
    }

    #[test]
    fn owners_and_operators_see_appointments() {
        let orgs = [restriction().org];
        let who = |client_id, operator, acts: bool| Requester {
            caller: Caller {
                client_id,
                operator,
                organizations: if acts { &orgs[..] } else { &[] },
                regions: &[],
            },
            channel: Channel::Internet,
        };
        let a = Appointment {
            id: "a".into(),
            slot_id: None,
            org: restriction().org,
            practitioner_id: String::new(),
            specialty_code: String::new(),
            start_at: NOW,
            end_at: NOW,
            source: String::new(),
            patient: Patient::default(),
            channel: Channel::Internet,
            status: Booked,
            hold_expires_at: None,
            external_id: None,
            client_id: "portal".into(),
            reason: String::new(),
            replaces: None,
            created_at: NOW,
            updated_at: NOW,
        };
        assert!(who("portal", false, false).owns(&a), "its maker");
        assert!(!who("kiosk", false, false).owns(&a), "another client");
        assert!(
            who("clinic", false, true).owns(&a),
            "a client of its organization"
        );
        assert!(who("operator", true, false).owns(&a));
    }
}
