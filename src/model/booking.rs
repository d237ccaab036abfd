//! Appointments: their states and transitions, the patient a booking names, and the
//! temporary channel restrictions of an organization.

use std::fmt;

use chrono::NaiveDate;

use super::schedule::{Channel, Channels};
use super::{Oid, PolicyNumber, Snils};

/// The state of an appointment at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppointmentStatus {
    /// A slot held for a short while, not yet booked in the clinic system.
    Held,
    /// Booked in the clinic system that owns the slot.
    Booked,
    /// Cancelled by the patient, a client or a reschedule.
    Cancelled,
    /// A hold that lapsed.
    Expired,
    /// The clinic system refused or did not answer; nothing stays booked.
    Failed,
    /// The clinic system withdrew the slot.
    Withdrawn,
    /// An urgent visit seen out of schedule (no slot).
    Urgent,
}

impl AppointmentStatus {
    /// Every state.
    pub const ALL: [AppointmentStatus; 7] = [
        AppointmentStatus::Held,
        AppointmentStatus::Booked,
        AppointmentStatus::Cancelled,
        AppointmentStatus::Expired,
        AppointmentStatus::Failed,
        AppointmentStatus::Withdrawn,
        AppointmentStatus::Urgent,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Held => "held",
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::Expired => "expired",
            AppointmentStatus::Failed => "failed",
            AppointmentStatus::Withdrawn => "withdrawn",
            AppointmentStatus::Urgent => "urgent",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<AppointmentStatus> {
        AppointmentStatus::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Held or booked: the appointment occupies its slot.
    pub fn is_active(self) -> bool {
        matches!(self, AppointmentStatus::Held | AppointmentStatus::Booked)
    }
}

impl fmt::Display for AppointmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a patient is not identified well enough to book.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PatientError {
    /// The missing part: `patient` or `patient.birthDate`.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

/// A patient as a booking channel identifies them.
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
    pub fn check(&self) -> Result<(), PatientError> {
        match (&self.policy, &self.birth_date, &self.snils) {
            (_, _, Some(_)) | (Some(_), Some(_), None) => Ok(()),
            (Some(_), None, None) => Err(PatientError {
                field: "patient.birthDate",
                message: "a policy number identifies a patient only together with the birth date",
            }),
            _ => Err(PatientError {
                field: "patient",
                message: "identify the patient by OMS policy number and birth date, or by SNILS",
            }),
        }
    }

    /// True when no identifier is given.
    pub fn is_empty(&self) -> bool {
        self.policy.is_none() && self.snils.is_none()
    }
}

/// An appointment at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appointment {
    /// Gateway id (UUIDv7); also the client reference given to the clinic system.
    pub id: String,
    /// Slot id (`source:external id`); `None` for urgent visits.
    pub slot_id: Option<String>,
    /// Organization.
    pub org: Oid,
    /// Practitioner id; empty when not known (urgent visits).
    pub practitioner_id: String,
    /// Specialty code.
    pub specialty_code: String,
    /// Start (epoch ms).
    pub start_at: i64,
    /// End (epoch ms).
    pub end_at: i64,
    /// Clinic system that owns the slot; empty for urgent visits.
    pub source: String,
    /// The patient.
    pub patient: Patient,
    /// Booking channel.
    pub channel: Channel,
    /// State.
    pub status: AppointmentStatus,
    /// When a hold ends (epoch ms).
    pub hold_expires_at: Option<i64>,
    /// The clinic system's appointment id.
    pub external_id: Option<String>,
    /// The API client that created it.
    pub client_id: String,
    /// Why the state last changed (refusal code, cancel reason, ...).
    pub reason: String,
    /// The appointment this one replaces (reschedule).
    pub replaces: Option<String>,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Last change (epoch ms).
    pub updated_at: i64,
}

/// A change of an appointment's state, applied only if it is in one of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The states it may leave.
    pub from: &'static [AppointmentStatus],
    /// The state it enters.
    pub to: AppointmentStatus,
    /// Why (stored as the appointment's reason).
    pub reason: String,
    /// What the slot becomes, if anything changes there (never un-withdraws a slot).
    pub slot: Option<super::schedule::SlotStatus>,
}

impl Transition {
    /// A transition from `from` to `to` for `reason` that leaves the slot alone.
    pub fn new(
        from: &'static [AppointmentStatus],
        to: AppointmentStatus,
        reason: impl Into<String>,
    ) -> Transition {
        Transition {
            from,
            to,
            reason: reason.into(),
            slot: None,
        }
    }

    /// The slot takes `status` too.
    pub fn slot(mut self, status: super::schedule::SlotStatus) -> Transition {
        self.slot = Some(status);
        self
    }
}

/// A temporary restriction of an organization's internet or kiosk booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// Id (UUIDv7).
    pub id: String,
    /// Organization.
    pub org: Oid,
    /// Restricted channels.
    pub channels: Channels,
    /// Start of the restricted period of slot times (epoch ms, inclusive).
    pub from_at: i64,
    /// End (epoch ms, exclusive).
    pub to_at: i64,
    /// Why (shown in refusals).
    pub reason: String,
}

/// Channels an organization may restrict temporarily (internet and kiosk).
pub const RESTRICTABLE: Channels = Channels(4 | 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_roundtrip_and_only_held_and_booked_are_active() {
        for s in AppointmentStatus::ALL {
            assert_eq!(AppointmentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(AppointmentStatus::parse("booked "), None);
        let active: Vec<_> = AppointmentStatus::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(active, [AppointmentStatus::Held, AppointmentStatus::Booked]);
    }

    #[test]
    fn a_patient_needs_policy_and_birth_date_or_snils() {
        let policy = PolicyNumber::parse("7700000000000031").ok();
        let birth = NaiveDate::from_ymd_opt(1980, 5, 17);
        let p = Patient {
            policy: policy.clone(),
            birth_date: None,
            snils: None,
        };
        assert_eq!(p.check().unwrap_err().field, "patient.birthDate");
        let p = Patient {
            birth_date: birth,
            ..p
        };
        assert!(p.check().is_ok());
        assert_eq!(Patient::default().check().unwrap_err().field, "patient");
        assert!(RESTRICTABLE.contains(Channel::Internet) && RESTRICTABLE.contains(Channel::Kiosk));
        assert!(!RESTRICTABLE.contains(Channel::Registry));
    }
}
