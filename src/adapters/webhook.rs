//! Patient notifications as webhook calls: JSON POSTed to the region's notification
//! service, with the event name and an idempotency key in headers.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::services::notify::{Notice, Notifier, NotifyError};

/// A webhook receiver at one URL.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    http: reqwest::Client,
    url: String,
}

impl WebhookNotifier {
    /// Posts to `url`, giving up on a call after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> WebhookNotifier {
        WebhookNotifier {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            url: url.to_string(),
        }
    }
}

impl Notifier for WebhookNotifier {
    fn notify<'a>(&'a self, n: Notice<'a>) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-medgate-event", n.event)
                .header("idempotency-key", n.id)
                .body(n.payload.to_string())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                // 429 asks to come back later; other client errors will not change.
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    Err(NotifyError::Refused(format!(
                        "notification endpoint refused: HTTP {}",
                        r.status()
                    )))
                }
                Ok(r) => Err(NotifyError::Unavailable(format!(
                    "notification endpoint answered HTTP {}",
                    r.status()
                ))),
                Err(e) => Err(NotifyError::Unavailable(format!(
                    "notification endpoint unreachable: {e}"
                ))),
            }
        })
    }
}
