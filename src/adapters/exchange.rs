//! One outbound HTTP exchange, recorded in the transaction log: the shared part of every
//! adapter's calls (send, time out, read the answer, record it).

use std::time::{Duration, Instant};

use crate::exchange::txlog::{OutboundCall, TxLog};

/// A call that got no usable HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoAnswer {
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, unreadable body...
    #[error("unreachable: {0}")]
    Transport(String),
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

/// Sends `req`, then `read` turns the HTTP status and body into the adapter's result; the
/// record (with the error, if `read` failed) goes to the transaction log.
pub async fn exchange<T, E>(
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
    let mut call = OutboundCall::new(req.adapter, &req.operation, req.url, req.correlation_id);
    call.request_body(req.body.as_bytes());
    let mut builder = http.request(req.method.clone(), req.url);
    for (k, v) in req.headers {
        builder = builder.header(k, v);
    }
    let no_answer = |e: reqwest::Error| {
        if e.is_timeout() {
            NoAnswer::Timeout(timeout)
        } else {
            NoAnswer::Transport(e.to_string())
        }
    };
    let response = match builder.body(req.body).send().await {
        Ok(r) => r,
        Err(e) => {
            let err = no_answer(e);
            txlog.record_outbound(call.failed(started, &err.to_string()));
            return Err(err.into());
        }
    };
    let status = response.status().as_u16();
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            let err = no_answer(e);
            txlog.record_outbound(call.failed(started, &err.to_string()));
            return Err(err.into());
        }
    };
    let result = read(status, &bytes);
    txlog.record_outbound(call.answered(
        started,
        status,
        &bytes,
        result.as_ref().err().map(|e| e.to_string()),
    ));
    result
}
