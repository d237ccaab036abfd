//! Booking: hold, book, cancel and reschedule slots owned by clinic systems, record urgent
//! visits, and tell patients when a clinic withdraws their slot.
//!
//! The rules, in order: the slot exists, lies ahead and is not withdrawn; the channel may
//! take it (the slot's channels, then the organization's temporary restrictions); the
//! patient is identified (policy + birth date, or SNILS). A booking first takes a hold in
//! the database (the partial unique index allows one active appointment per slot), then the
//! owning clinic system is asked. A refusal ends the hold; no answer ends it too and queues
//! a compensating cancel through the outbox, so neither side keeps a half-made booking.
//! Cancels are forwarded through the outbox as well (guaranteed delivery).

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::Notify;

use super::mis::{MisBooking, MisError, MisRegistry};
use crate::config::BookingSettings;
use crate::exchange::delivery::{self, Outcome};
use crate::model::schedule::{Channel, Channels};
use crate::model::{PolicyNumber, Snils};
use crate::store::appointments::{Appointment, KeyClaim};
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::schedules::SlotQuery;
use crate::store::{now_ms, Store, StoreError};

/// Outbox destination of forwarded cancels.
pub const MIS_DESTINATION: &str = "mis";
/// Outbox destination of patient notifications.
pub const NOTIFY_DESTINATION: &str = "notify";
/// Channels an organization may restrict temporarily.
pub const RESTRICTABLE: Channels = Channels(4 | 8);

/// How long the clinic system may take to book before the hold would lapse.
const BOOKING_GRACE_MS: i64 = 120_000;
/// Delays between delivery attempts of forwarded cancels and notifications.
const RETRY_SCHEDULE_SECS: [u64; 8] = [1, 5, 15, 60, 300, 900, 3600, 21600];

/// A patient as identified by a booking channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    /// OMS policy number.
    pub policy: Option<PolicyNumber>,
    /// Birth date (required with a policy number).
    pub birth_date: Option<NaiveDate>,
    /// SNILS.
    pub snils: Option<Snils>,
}

impl Patient {
    /// Checks that the patient is identified: policy number with birth date, or SNILS.
    pub fn check(&self) -> Result<(), BookingError> {
        match (&self.policy, &self.birth_date, &self.snils) {
            (_, _, Some(_)) | (Some(_), Some(_), None) => Ok(()),
            (Some(_), None, None) => Err(BookingError::Patient {
                field: "patient.birthDate",
                message: "a policy number identifies a patient only together with the birth date"
                    .into(),
            }),
            _ => Err(BookingError::Patient {
                field: "patient",
                message: "identify the patient by OMS policy number and birth date, or by SNILS"
                    .into(),
            }),
        }
    }
}

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
        org: String,
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
    #[error("{message}")]
    Patient {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The hold ended before it was booked.
    #[error("hold {0} expired")]
    HoldExpired(String),
    /// The appointment is not in a state that allows the operation.
    #[error("appointment {id} is {status}; {wanted}")]
    WrongState {
        /// Appointment id.
        id: String,
        /// Its status.
        status: String,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// Another client's appointment.
    #[error("appointment {0} belongs to another client")]
    NotYours(String),
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
    /// Invalid request data.
    #[error("{message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BookingError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            BookingError::UnknownSlot(_) => "UNKNOWN_SLOT",
            BookingError::UnknownAppointment(_) => "UNKNOWN_APPOINTMENT",
            BookingError::SlotTaken(_) => "SLOT_TAKEN",
            BookingError::SlotWithdrawn(_) => "SLOT_WITHDRAWN",
            BookingError::SlotInPast(_) => "SLOT_IN_PAST",
            BookingError::ChannelNotAllowed { .. } => "CHANNEL_NOT_ALLOWED",
            BookingError::ChannelRestricted { .. } => "CHANNEL_RESTRICTED",
            BookingError::Patient { .. } => "PATIENT_NOT_IDENTIFIED",
            BookingError::HoldExpired(_) => "HOLD_EXPIRED",
            BookingError::WrongState { .. } => "WRONG_STATE",
            BookingError::NotYours(_) => "NOT_YOUR_APPOINTMENT",
            BookingError::MisRefused { .. } => "MIS_REFUSED",
            BookingError::MisUnavailable(_) => "MIS_UNAVAILABLE",
            BookingError::NoMis(_) => "MIS_NOT_CONFIGURED",
            BookingError::KeyMismatch(_) => "IDEMPOTENCY_KEY_REUSED",
            BookingError::KeyInProgress(_) => "IDEMPOTENCY_KEY_IN_PROGRESS",
            BookingError::Invalid { .. } => "INVALID_REQUEST",
            BookingError::Store(_) => "STORAGE_ERROR",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            BookingError::UnknownSlot(_)
            | BookingError::SlotTaken(_)
            | BookingError::SlotWithdrawn(_)
            | BookingError::SlotInPast(_) => Some("slot"),
            BookingError::ChannelNotAllowed { .. } | BookingError::ChannelRestricted { .. } => {
                Some("channel")
            }
            BookingError::Patient { field, .. } | BookingError::Invalid { field, .. } => {
                Some(field)
            }
            BookingError::UnknownAppointment(_)
            | BookingError::HoldExpired(_)
            | BookingError::WrongState { .. }
            | BookingError::NotYours(_) => Some("appointment"),
            _ => None,
        }
    }
}

/// Who asks: the API client and the channel it books through.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    /// API client id.
    pub client_id: &'a str,
    /// True for operators, who may act on any client's appointments.
    pub admin: bool,
    /// Booking channel.
    pub channel: Channel,
}

/// The booking service.
#[derive(Clone)]
pub struct Booking {
    store: Store,
    mis: MisRegistry,
    hold_ms: i64,
    settings: BookingSettings,
    wake_mis: Arc<Notify>,
    wake_notify: Arc<Notify>,
}

impl Booking {
    /// A booking service over `store` forwarding to the clinic systems in `mis`.
    pub fn new(store: Store, mis: MisRegistry, settings: BookingSettings) -> Booking {
        Booking {
            store,
            mis,
            hold_ms: i64::try_from(settings.hold_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            settings,
            wake_mis: Arc::new(Notify::new()),
            wake_notify: Arc::new(Notify::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
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
                field: "Idempotency-Key",
                message: "an idempotency key has 1 to 200 characters".into(),
            });
        }
        match self
            .store
            .claim_idempotency_key(client_id, key, request_digest, now_ms())
            .await?
        {
            KeyClaim::Replay(id) => self
                .store
                .appointment(&id)
                .await?
                .ok_or(BookingError::UnknownAppointment(id)),
            KeyClaim::Mismatch => Err(BookingError::KeyMismatch(key.into())),
            KeyClaim::InProgress => Err(BookingError::KeyInProgress(key.into())),
            KeyClaim::Fresh => match create().await {
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
        if let Some(p) = patient {
            p.check()?;
        }
        self.take(who, slot_id, patient, self.hold_ms, None).await
    }

    /// Books a slot or a held appointment in the clinic system that owns the slot.
    pub async fn book(
        &self,
        who: Requester<'_>,
        target: &Target,
        patient: Option<&Patient>,
    ) -> Result<Appointment, BookingError> {
        let now = now_ms();
        let held = match target {
            Target::Slot(slot) => {
                let p = patient.ok_or(BookingError::Patient {
                    field: "patient",
                    message: "booking needs the patient".into(),
                })?;
                p.check()?;
                self.take(who, slot, Some(p), BOOKING_GRACE_MS, None)
                    .await?
            }
            Target::Hold(id) => {
                let a = self.owned(who, id).await?;
                if a.status != "held" {
                    return Err(BookingError::WrongState {
                        id: a.id,
                        status: a.status,
                        wanted: "only a held appointment can be booked",
                    });
                }
                if let Some(p) = patient {
                    p.check()?;
                    self.store
                        .set_hold_patient(
                            &a.id,
                            p.policy.as_ref().map(|x| x.digits()),
                            p.snils.as_ref().map(|x| x.digits()).as_deref(),
                            p.birth_date.map(|d| d.to_string()).as_deref(),
                            now,
                        )
                        .await?;
                } else if a.patient_policy.is_none() && a.patient_snils.is_none() {
                    return Err(BookingError::Patient {
                        field: "patient",
                        message: "the hold has no patient; give one to book it".into(),
                    });
                }
                if !self
                    .store
                    .extend_hold(&a.id, now + BOOKING_GRACE_MS, now)
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
        self.forward(held).await
    }

    /// Cancels a held or booked appointment; a booked one is cancelled in the clinic system
    /// through the outbox.
    pub async fn cancel(
        &self,
        who: Requester<'_>,
        id: &str,
        reason: &str,
    ) -> Result<Appointment, BookingError> {
        let a = self.owned(who, id).await?;
        let reason = if reason.is_empty() {
            "CANCELLED"
        } else {
            reason
        };
        let ended = match a.status.as_str() {
            "held" => {
                self.store
                    .end_appointment(
                        id,
                        &["held"],
                        "cancelled",
                        reason,
                        Some("free"),
                        None,
                        now_ms(),
                    )
                    .await?
            }
            "booked" => {
                let effect = cancel_effect(&a);
                let r = self
                    .store
                    .end_appointment(
                        id,
                        &["booked"],
                        "cancelled",
                        reason,
                        Some("free"),
                        Some(&effect),
                        now_ms(),
                    )
                    .await?;
                self.wake_mis.notify_one();
                r
            }
            _ => None,
        };
        if ended.is_none() {
            return Err(BookingError::WrongState {
                id: a.id,
                status: a.status,
                wanted: "only held or booked appointments can be cancelled",
            });
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
        let old = self.owned(who, id).await?;
        if old.status != "booked" {
            return Err(BookingError::WrongState {
                id: old.id,
                status: old.status,
                wanted: "only a booked appointment can be rescheduled",
            });
        }
        let patient = patient_of(&old);
        let held = self
            .take(
                who,
                new_slot,
                Some(&patient),
                BOOKING_GRACE_MS,
                Some(&old.id),
            )
            .await?;
        let booked = self.forward(held).await?;
        let effect = cancel_effect(&old);
        self.store
            .end_appointment(
                &old.id,
                &["booked"],
                "cancelled",
                "RESCHEDULED",
                Some("free"),
                Some(&effect),
                now_ms(),
            )
            .await?;
        self.wake_mis.notify_one();
        Ok(booked)
    }

    /// Records an urgent visit seen out of schedule (no slot is taken).
    pub async fn urgent(
        &self,
        who: Requester<'_>,
        org: &str,
        practitioner_id: Option<&str>,
        patient: &Patient,
        at: i64,
    ) -> Result<Appointment, BookingError> {
        patient.check()?;
        let now = now_ms();
        let specialty = match practitioner_id {
            Some(p) => self
                .store
                .get_practitioner(p)
                .await?
                .filter(|x| x.org_oid == org)
                .map(|x| x.specialty_code)
                .ok_or(BookingError::Invalid {
                    field: "practitioner",
                    message: format!("organization {org} has no practitioner {p}"),
                })?,
            None => String::new(),
        };
        let a = Appointment {
            id: uuid::Uuid::now_v7().to_string(),
            slot_id: String::new(),
            org_oid: org.into(),
            practitioner_id: practitioner_id.unwrap_or("").into(),
            specialty_code: specialty,
            start_at: at,
            end_at: at,
            source: String::new(),
            patient_policy: patient.policy.as_ref().map(|p| p.digits().to_string()),
            patient_snils: patient.snils.as_ref().map(|s| s.digits()),
            patient_birth: patient.birth_date.map(|d| d.to_string()),
            channel: who.channel.as_str().into(),
            status: "urgent".into(),
            hold_expires_at: None,
            external_id: None,
            client_id: who.client_id.into(),
            reason: "OUT_OF_SCHEDULE".into(),
            replaces: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_unslotted(&a).await?;
        Ok(a)
    }

    /// Ends active appointments on slots the clinic systems withdrew and queues a patient
    /// notification for each, offering free slots of the same specialty. Looks at the given
    /// slots only (those a sync just changed) or, with `None`, at every active appointment.
    /// Returns how many.
    pub async fn handle_withdrawn_slots(
        &self,
        slots: Option<&[String]>,
    ) -> Result<usize, BookingError> {
        let now = now_ms();
        let mut n = 0;
        for a in self.store.active_on_withdrawn_slots(slots, 1000).await? {
            let start = crate::store::from_ms(a.start_at).to_rfc3339();
            let effect = self
                .patient_notice("slot-withdrawn", &a, json!({ "start": start }), now)
                .await?;
            if self
                .store
                .end_appointment(
                    &a.id,
                    &["held", "booked"],
                    "withdrawn",
                    "SLOT_WITHDRAWN",
                    None,
                    Some(&effect),
                    now,
                )
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
        let now = now_ms();
        let mut n = 0;
        for (a, start, end) in self.store.active_on_moved_slots(slots, 1000).await? {
            let effect = if a.status == "booked" {
                let time = |ms: i64| crate::store::from_ms(ms).to_rfc3339();
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

    /// A notification to the patient of appointment `a` about `event` (`slot-withdrawn`,
    /// `slot-moved`), for the notification webhook through the outbox: the appointment, its
    /// clinic, slot, specialty, channel and patient, the fields of `times`, and up to five
    /// free slots of the same specialty.
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
            "organization": a.org_oid,
            "slot": a.slot_id,
            "specialty": a.specialty_code,
            "channel": a.channel,
            "patient": {"policy": a.patient_policy, "snils": a.patient_snils, "birthDate": a.patient_birth},
            "alternatives": self.alternatives(a, now).await?,
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
        })
    }

    /// Expires lapsed holds; returns how many.
    pub async fn expire_holds(&self) -> Result<u64, BookingError> {
        Ok(self.store.expire_holds(now_ms()).await?)
    }

    /// Background work: the hold sweeper, forwarded cancels and, when a URL is configured,
    /// patient notifications.
    pub fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let svc = self.clone();
        let period = Duration::from_millis((self.hold_ms / 4).clamp(200, 30_000) as u64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                match svc.expire_holds().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "holds expired"),
                    Err(e) => tracing::warn!(error = %e, "hold sweep failed"),
                }
            }
        }));
        let svc = self.clone();
        let handler: delivery::Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver_cancel(item).await })
        });
        tasks.push(tokio::spawn(delivery::run(
            self.store.clone(),
            delivery::WorkerConfig {
                destination: MIS_DESTINATION.into(),
                concurrency: 8,
                lease: Duration::from_secs(120),
                idle_poll: Duration::from_millis(500),
            },
            handler,
            self.wake_mis.clone(),
        )));
        if let Some(url) = self.settings.notify_url.clone() {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(self.settings.notify_timeout_secs))
                .build()
                .unwrap_or_default();
            let handler: delivery::Handler = Arc::new(move |item| {
                let (http, url) = (http.clone(), url.clone());
                Box::pin(async move { deliver_notification(&http, &url, item).await })
            });
            tasks.push(tokio::spawn(delivery::run(
                self.store.clone(),
                delivery::WorkerConfig {
                    destination: NOTIFY_DESTINATION.into(),
                    concurrency: 8,
                    lease: Duration::from_secs(self.settings.notify_timeout_secs * 3 + 5),
                    idle_poll: Duration::from_millis(500),
                },
                handler,
                self.wake_notify.clone(),
            )));
        }
        tasks
    }

    async fn owned(&self, who: Requester<'_>, id: &str) -> Result<Appointment, BookingError> {
        let a = self
            .store
            .appointment(id)
            .await?
            .ok_or_else(|| BookingError::UnknownAppointment(id.into()))?;
        if !who.admin && a.client_id != who.client_id {
            return Err(BookingError::NotYours(id.into()));
        }
        Ok(a)
    }

    /// Checks the rules and inserts a hold lasting `ttl_ms`.
    async fn take(
        &self,
        who: Requester<'_>,
        slot_id: &str,
        patient: Option<&Patient>,
        ttl_ms: i64,
        replaces: Option<&str>,
    ) -> Result<Appointment, BookingError> {
        let now = now_ms();
        let restrictable = if RESTRICTABLE.contains(who.channel) {
            who.channel.bit()
        } else {
            0
        };
        let mut a = Appointment {
            id: uuid::Uuid::now_v7().to_string(),
            slot_id: slot_id.to_string(),
            org_oid: String::new(),
            practitioner_id: String::new(),
            specialty_code: String::new(),
            start_at: 0,
            end_at: 0,
            source: String::new(),
            patient_policy: patient.and_then(|p| p.policy.as_ref().map(|x| x.digits().to_string())),
            patient_snils: patient.and_then(|p| p.snils.as_ref().map(|x| x.digits())),
            patient_birth: patient.and_then(|p| p.birth_date.map(|d| d.to_string())),
            channel: who.channel.as_str().into(),
            status: "held".into(),
            hold_expires_at: Some(now + ttl_ms),
            external_id: None,
            client_id: who.client_id.into(),
            reason: String::new(),
            replaces: replaces.map(str::to_string),
            created_at: now,
            updated_at: now,
        };
        if let Some(held) = self
            .store
            .hold_if_bookable(&a, who.channel.bit(), restrictable, now)
            .await?
        {
            return Ok(held);
        }
        // Refused: find the rule that refused, in order, and take a lapsed hold's place.
        let (slot, restriction) = self
            .store
            .slot_for_booking(slot_id, restrictable)
            .await?
            .ok_or_else(|| BookingError::UnknownSlot(slot_id.into()))?;
        match slot.status.as_str() {
            "withdrawn" => return Err(BookingError::SlotWithdrawn(slot.id)),
            "busy" => return Err(BookingError::SlotTaken(slot.id)),
            _ => {}
        }
        if slot.start_at <= now {
            return Err(BookingError::SlotInPast(slot.id));
        }
        let allowed = Channels(slot.channels);
        if !allowed.contains(who.channel) {
            return Err(BookingError::ChannelNotAllowed {
                slot: slot.id,
                channel: who.channel,
                allowed: allowed.to_list(),
            });
        }
        if let Some(r) = restriction {
            let t = |ms| crate::store::from_ms(ms).to_rfc3339();
            return Err(BookingError::ChannelRestricted {
                org: r.org_oid,
                channel: who.channel,
                from: t(r.from_at),
                to: t(r.to_at),
                reason: r.reason,
            });
        }
        a.org_oid = slot.org_oid;
        a.practitioner_id = slot.practitioner_id;
        a.specialty_code = slot.specialty_code;
        a.start_at = slot.start_at;
        a.end_at = slot.end_at;
        a.source = slot.source;
        if !self.store.insert_hold(&a, now).await? {
            return Err(BookingError::SlotTaken(slot.id));
        }
        Ok(a)
    }

    /// Asks the owning clinic system to book a held appointment.
    async fn forward(&self, held: Appointment) -> Result<Appointment, BookingError> {
        let Some(mis) = self.mis.get(&held.source).cloned() else {
            self.store
                .end_appointment(
                    &held.id,
                    &["held"],
                    "failed",
                    "MIS_NOT_CONFIGURED",
                    None,
                    None,
                    now_ms(),
                )
                .await?;
            return Err(BookingError::NoMis(held.source));
        };
        let request = MisBooking {
            slot_external_id: external_part(&held.slot_id).to_string(),
            client_ref: held.id.clone(),
            policy: held.patient_policy.clone(),
            snils: held.patient_snils.clone(),
            birth_date: held
                .patient_birth
                .as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
            channel: held.channel.clone(),
        };
        match mis.book(request).await {
            Ok(external) => {
                if let Some(booked) = self
                    .store
                    .confirm_booking(&held.id, &external, now_ms())
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
            Err(e @ MisError::Refused { .. }) => {
                let slot_status = e.slot_gone().then_some("busy");
                self.store
                    .end_appointment(
                        &held.id,
                        &["held"],
                        "failed",
                        &mis_code(&e),
                        slot_status,
                        None,
                        now_ms(),
                    )
                    .await?;
                let MisError::Refused { code, message } = e else {
                    unreachable!("matched above")
                };
                if code == "SLOT_TAKEN" {
                    return Err(BookingError::SlotTaken(held.slot_id));
                }
                if code == "SLOT_WITHDRAWN" {
                    return Err(BookingError::SlotWithdrawn(held.slot_id));
                }
                Err(BookingError::MisRefused { code, message })
            }
            Err(MisError::Unavailable(why)) => {
                self.compensate(&held.id, "MIS_UNAVAILABLE", &held).await?;
                Err(BookingError::MisUnavailable(why))
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
        let effect = cancel_effect(a);
        let ended = self
            .store
            .end_appointment(
                id,
                &["held"],
                "failed",
                reason,
                None,
                Some(&effect),
                now_ms(),
            )
            .await?;
        if ended.is_none() {
            // Already expired by the sweeper: queue the cancel on its own.
            let mut tx = self.store.pool().begin().await.map_err(StoreError::from)?;
            crate::store::outbox::enqueue(&mut tx, &effect, now_ms()).await?;
            tx.commit().await.map_err(StoreError::from)?;
        }
        self.wake_mis.notify_one();
        Ok(())
    }

    async fn deliver_cancel(&self, item: OutboxItem) -> Outcome {
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
            Ok(()) => Outcome::Delivered,
            Err(e @ MisError::Refused { .. }) => Outcome::Dead(e.to_string()),
            Err(e) => retry(&item, e.to_string()),
        }
    }

    async fn alternatives(
        &self,
        a: &Appointment,
        now: i64,
    ) -> Result<Vec<serde_json::Value>, BookingError> {
        let mut out = Vec::new();
        for org in [Some(a.org_oid.clone()), None] {
            let q = SlotQuery {
                org_oid: org,
                specialty_code: Some(a.specialty_code.clone()),
                status: Some("free".into()),
                start_from: Some(now.max(a.start_at - 86_400_000)),
                ..SlotQuery::default()
            };
            for s in self.store.search_slots(&q, 10).await? {
                if out.len() < 5
                    && s.id != a.slot_id
                    && Channels(s.channels)
                        .contains(Channel::parse(&a.channel).unwrap_or(Channel::Registry))
                    && !out
                        .iter()
                        .any(|x: &serde_json::Value| x["slot"] == s.id.as_str())
                {
                    out.push(json!({
                        "slot": s.id,
                        "organization": s.org_oid,
                        "practitioner": s.practitioner_id,
                        "start": crate::store::from_ms(s.start_at).to_rfc3339(),
                    }));
                }
            }
        }
        Ok(out)
    }
}

/// The patient recorded on an appointment.
pub fn patient_of(a: &Appointment) -> Patient {
    Patient {
        policy: a
            .patient_policy
            .as_deref()
            .and_then(|p| PolicyNumber::parse(p).ok()),
        birth_date: a
            .patient_birth
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        snils: a
            .patient_snils
            .as_deref()
            .and_then(|s| Snils::parse(s).ok()),
    }
}

fn external_part(slot_id: &str) -> &str {
    slot_id.split_once(':').map_or(slot_id, |(_, x)| x)
}

fn mis_code(e: &MisError) -> String {
    match e {
        MisError::Refused { code, .. } => format!("MIS_REFUSED:{code}"),
        MisError::Unavailable(_) => "MIS_UNAVAILABLE".into(),
    }
}

fn cancel_effect(a: &Appointment) -> NewOutboxItem {
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
        due_at: now_ms(),
    }
}

fn retry(item: &OutboxItem, error: String) -> Outcome {
    match delivery::next_attempt(&RETRY_SCHEDULE_SECS, item.attempts, now_ms()) {
        Some(at) => Outcome::RetryAt(at, error),
        None => Outcome::Dead(error),
    }
}

async fn deliver_notification(http: &reqwest::Client, url: &str, item: OutboxItem) -> Outcome {
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-medgate-event", item.kind.clone())
        .header("idempotency-key", item.id.clone())
        .body(item.payload.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => Outcome::Dead(
            format!("notification endpoint refused: HTTP {}", r.status()),
        ),
        Ok(r) => retry(
            &item,
            format!("notification endpoint answered HTTP {}", r.status()),
        ),
        Err(e) => retry(&item, format!("notification endpoint unreachable: {e}")),
    }
}
