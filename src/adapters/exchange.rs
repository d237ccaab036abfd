//! One outbound HTTP exchange, recorded in the transaction log and guarded by the partner's
//! circuit breaker: the shared part of every adapter's calls (send, time out, read the
//! answer, record it).

use std::time::{Duration, Instant};

use crate::exchange::partners::Partners;
use crate::exchange::txlog::{OutboundCall, TxLog};

/// Tells the partner's own failures (it is down, overloaded, broken) from its refusals of
/// a request: only the former count towards opening its circuit.
pub trait PartnerFault {
    /// True when the partner failed rather than refused.
    fn is_partner_fault(&self) -> bool;
}

/// A call that got no usable HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoAnswer {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, unreadable body...
    #[error("unreachable: {0}")]
    Transport(String),
    /// The partner's circuit is open: it failed repeatedly and is skipped for a while.
    #[error("not called: {0} failed repeatedly and is skipped for a cool-down")]
    CircuitOpen(String),
}

/// The description of one outbound call.
pub struct Request<'a> {
    /// Adapter name (transaction log protocol).
    pub adapter: &'a str,
    /// Operation name (transaction log operation).
    pub operation: String,
    /// HTTP method.
    pub method: reqwest::Method,
    /// Target URL.
    pub url: &'a str,
    /// Correlation id for the log.
    pub correlation_id: &'a str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

/// What every call of one adapter shares: its HTTP client, the transaction log, its timeout
/// and the partners' breakers.
#[derive(Clone)]
pub struct Link {
    /// HTTP client (its own timeout set).
    pub http: reqwest::Client,
    /// Transaction log.
    pub txlog: TxLog,
    /// Time allowed for an answer.
    pub timeout: Duration,
    /// Circuit breakers and partner metrics.
    pub partners: Partners,
}

impl Link {
    /// A link with a client timing out after `timeout`.
    pub fn new(timeout: Duration, txlog: TxLog, partners: Partners) -> Link {
        Link {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            txlog,
            timeout,
            partners,
        }
    }
}

/// Sends `req` (unless the partner's circuit is open), then `read` turns the HTTP status
/// and body into the adapter's result; the record (with the error, if `read` failed) goes
/// to the transaction log, the outcome to the partner's breaker.
pub async fn exchange<T, E>(
    link: &Link,
    req: Request<'_>,
    read: impl FnOnce(u16, &[u8]) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<NoAnswer> + std::fmt::Display + PartnerFault,
{
    let partner = req.adapter;
    if let Err(reopens) = link.partners.gate(partner) {
        crate::context::note_circuit_refused(reopens);
        return Err(NoAnswer::CircuitOpen(partner.to_string()).into());
    }
    crate::context::note_call();
    let result = send(&link.http, &link.txlog, link.timeout, req, read).await;
    let failed = result
        .as_ref()
        .err()
        .is_some_and(PartnerFault::is_partner_fault);
    link.partners.record(partner, failed);
    result
}

async fn send<T, E>(
    http: &reqwest::Client,
    txlog: &TxLog,
    timeout: Duration,
    req: Request<'_>,
    read: impl FnOnce(u16, &[u8]) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<NoAnswer> + std::fmt::Display,
{
    let started = Instant::now();
    let mut call = OutboundCall::new(
        req.adapter,
        &req.operation,
        &redact_keys(req.url),
        req.correlation_id,
    );
    call.request_body(req.body.as_bytes());
    let mut builder = http.request(req.method.clone(), req.url);
    for (k, v) in req.headers {
        builder = builder.header(k, v);
    }
    // The partner continues the trace of the work that causes the call, under this call.
    if let Some(traceparent) = call.traceparent() {
        builder = builder.header("traceparent", traceparent);
    }
    let no_answer = |e: reqwest::Error| {
        if e.is_timeout() {
            NoAnswer::Timeout(timeout)
        } else {
            NoAnswer::Transport(redact_keys(&e.to_string()))
        }
    };
    let response = match builder.body(req.body).send().await {
        Ok(r) => r,
        Err(e) => {
            let err = no_answer(e);
            txlog
                .record_outbound(call.failed(started, &err.to_string()))
                .await;
            return Err(err.into());
        }
    };
    let status = response.status().as_u16();
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let err = no_answer(e);
            txlog
                .record_outbound(call.failed(started, &err.to_string()))
                .await;
            return Err(err.into());
        }
    };
    let result = read(status, &bytes);
    txlog
        .record_outbound(call.answered(
            started,
            status,
            &bytes,
            result.as_ref().err().map(|e| e.to_string()),
        ))
        .await;
    result
}

/// Query parameters that carry a partner's credential (the reference-book service's
/// `userKey`): their values never reach the transaction log or an error message.
const SECRET_PARAMETERS: [&str; 1] = ["userKey="];

/// `text` (a URL, or a message quoting one) with the values of credential parameters
/// replaced by `***`.
pub fn redact_keys(text: &str) -> String {
    let mut out = text.to_string();
    for name in SECRET_PARAMETERS {
        let mut from = 0;
        while let Some(i) = out[from..].find(name) {
            let start = from + i + name.len();
            let end = out[start..]
                .find(|c: char| c == '&' || c == ')' || c == '#' || c.is_whitespace())
                .map_or(out.len(), |e| start + e);
            out.replace_range(start..end, "***");
            from = start + 3;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            super::redact_keys("http://nsi/port/rest/data?userKey=s3cr3t&identifier=1.2"),
            "http://nsi/port/rest/data?userKey=***&identifier=1.2"
        );
        assert_eq!(
            super::redact_keys("error sending request for url (http://n/x?userKey=k)"),
            "error sending request for url (http://n/x?userKey=***)"
        );
        assert_eq!(super::redact_keys("http://n/x?a=1"), "http://n/x?a=1");
    }
}
