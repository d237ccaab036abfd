//! The rules of the domain, written against the model and the store.

pub mod booking;
pub mod documents;
pub mod mis;
pub mod schedule_sync;
