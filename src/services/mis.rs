//! Port: the clinic systems that own slots, as the booking service sees them: book and
//! cancel in the system named by a slot's `source`, whatever protocol that system speaks.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::model::booking::Patient;
use crate::model::schedule::Channel;

/// What the gateway asks a clinic system to book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MisBooking {
    /// The slot's id in the clinic system (without the `source:` prefix).
    pub slot_external_id: String,
    /// The gateway's appointment id: the clinic system keeps it as the client reference, so
    /// a retried create returns the first appointment and a compensating cancel can find it.
    pub client_ref: String,
    /// The patient.
    pub patient: Patient,
    /// The booking channel.
    pub channel: Channel,
}

/// Why a clinic system did not book or cancel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MisError {
    /// A definite refusal: nothing was booked (slot taken, withdrawn, bad request).
    #[error("clinic system refused ({code}): {message}")]
    Refused {
        /// The clinic system's code, e.g. `SLOT_TAKEN`.
        code: String,
        /// Its message.
        message: String,
    },
    /// No usable answer (timeout, transport, internal error): the outcome is unknown, so
    /// the caller must compensate.
    #[error("clinic system unavailable: {0}")]
    Unavailable(String),
}

impl MisError {
    /// True when the clinic system reported that the slot is not (or no longer) free.
    pub fn slot_gone(&self) -> bool {
        matches!(self, MisError::Refused { code, .. } if code == "SLOT_TAKEN" || code == "SLOT_WITHDRAWN")
    }
}

/// A clinic system that owns slots.
pub trait Mis: Send + Sync {
    /// Books a slot; returns the clinic system's appointment id. Idempotent per
    /// `client_ref`.
    fn book(&self, booking: MisBooking) -> BoxFuture<'_, Result<String, MisError>>;

    /// Cancels by the clinic system's appointment id, or, when that is unknown (the create
    /// timed out), by the gateway's client reference. Cancelling something that does not
    /// exist succeeds: the goal "nothing booked" holds.
    fn cancel<'a>(
        &'a self,
        external_id: Option<&'a str>,
        client_ref: &'a str,
    ) -> BoxFuture<'a, Result<(), MisError>>;
}

/// Clinic systems by source name (`emias`, `fhir-mis`, ...).
#[derive(Clone, Default)]
pub struct MisRegistry {
    systems: HashMap<String, Arc<dyn Mis>>,
}

impl MisRegistry {
    /// Registers the system behind `source`.
    pub fn insert(&mut self, source: &str, mis: Arc<dyn Mis>) {
        self.systems.insert(source.to_string(), mis);
    }

    /// The system behind `source`.
    pub fn get(&self, source: &str) -> Option<&Arc<dyn Mis>> {
        self.systems.get(source)
    }

    /// True when no system is configured.
    pub fn is_empty(&self) -> bool {
        self.systems.is_empty()
    }
}

impl std::fmt::Debug for MisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.systems.keys()).finish()
    }
}
