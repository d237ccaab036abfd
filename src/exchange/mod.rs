//! Durable exchange: the transaction log now; outbox, deliveries and reruns build on it.

pub mod delivery;
pub mod txlog;

pub use txlog::{Direction, TxLog, TxLogHandle};
