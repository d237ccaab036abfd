//! The rules of the domain. Each service declares the ports it needs as traits (clinic
//! booking, schedule source, registry, notifier, signing keys), takes them at construction
//! and reads time from an injected clock; services never import adapters or the HTTP edge.

pub mod booking;
pub mod documents;
pub mod mis;
pub mod notify;
pub mod operations;
pub mod registry;
pub mod schedule_sync;
pub mod schedules;

pub use crate::store::StoreError;
