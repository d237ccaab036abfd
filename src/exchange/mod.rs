//! Durable exchange: the transaction log of every inbound request and outbound call, and
//! the delivery of outbox items with a bounded retry schedule and dead letters, and the
//! partners' circuit breakers and delivery metrics.

pub mod delivery;
pub mod partners;
pub mod txlog;

pub use txlog::{Direction, TxLog, TxLogHandle};
