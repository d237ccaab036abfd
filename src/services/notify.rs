//! Port: notifications to patients (through the region's notification service), as the
//! booking service sees them.

use futures_util::future::BoxFuture;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice<'a> {
    /// Unique per notification: the receiver drops repeats.
    pub id: &'a str,
    /// Event name, e.g. `slot-withdrawn`.
    pub event: &'a str,
    /// JSON body.
    pub payload: &'a str,
}

/// Why a notification was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The receiver refused it; sending it again cannot help.
    #[error("notification refused: {0}")]
    Refused(String),
    /// No usable answer; a later attempt may succeed.
    #[error("notification not delivered: {0}")]
    Unavailable(String),
}

/// Where notifications go.
pub trait Notifier: Send + Sync {
    /// Delivers one notification.
    fn notify<'a>(&'a self, notice: Notice<'a>) -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// Delivers one queued notice through `notifier`: a refusal dead-letters it, anything else
/// retries on `retries` until the schedule is spent.
pub async fn deliver(
    notifier: Option<&dyn Notifier>,
    item: &crate::store::outbox::OutboxItem,
    retries: &[u64],
    now: i64,
) -> crate::exchange::delivery::Outcome {
    use crate::exchange::delivery::{retry_or_dead, Outcome};
    let Some(notifier) = notifier else {
        return Outcome::Dead("no notification receiver is configured".into());
    };
    let notice = Notice {
        id: &item.id,
        event: &item.kind,
        payload: &item.payload,
    };
    match notifier.notify(notice).await {
        Ok(()) => Outcome::Delivered,
        Err(e @ NotifyError::Refused(_)) => Outcome::Dead(e.to_string()),
        Err(e) => retry_or_dead(retries, item, e.to_string(), now),
    }
}
