//! Durable exchange: the transaction log of every inbound request and outbound call, and
//! the delivery of outbox items with a bounded retry schedule and dead letters, and the
//! partners' circuit breakers and delivery metrics, and the spans of those exchanges
//! exported over OTLP.

pub mod delivery;
pub mod partners;
pub mod spans;
pub mod txlog;

pub use txlog::{Direction, TxLog, TxLogHandle};
