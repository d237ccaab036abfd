//! What the request being served carries across layers: its id, for logs and for the
//! transaction log records of the calls it causes, and its W3C trace context, so one
//! exchange reads as one trace across clinic systems, the registry and peer gateways. The
//! HTTP edge sets both; any layer reads them; background workers restore a trace they kept.
//! A delivery attempt also carries a note of its calls: whether one went out, and whether a
//! partner's open circuit refused one (then the attempt was not made, and is not counted).

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
    static TRACE: Trace;
    static CALLS: std::cell::Cell<CallNote>;
}

/// What became of the outbound calls of one piece of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallNote {
    /// At least one call went out.
    pub called: bool,
    /// A call was refused by an open circuit that lets a probe through at this time
    /// (epoch ms).
    pub refused_until: Option<i64>,
}

/// Runs `work`, noting its outbound calls.
pub async fn with_call_note<F: Future>(work: F) -> (F::Output, CallNote) {
    CALLS
        .scope(std::cell::Cell::new(CallNote::default()), async move {
            let out = work.await;
            (out, CALLS.with(std::cell::Cell::get))
        })
        .await
}

/// Notes that a call went out (outside [`with_call_note`]: nothing).
pub fn note_call() {
    let _ = CALLS.try_with(|c| {
        c.set(CallNote {
            called: true,
            ..c.get()
        })
    });
}

/// Notes that an open circuit refused a call until `until` (epoch ms).
pub fn note_circuit_refused(until: i64) {
    let _ = CALLS.try_with(|c| {
        let n = c.get();
        c.set(CallNote {
            refused_until: Some(n.refused_until.map_or(until, |u| u.max(until))),
            ..n
        })
    });
}

/// Runs `work` as part of the request `request_id`.
pub async fn with_request_id<F: Future>(request_id: String, work: F) -> F::Output {
    REQUEST_ID.scope(request_id, work).await
}

/// The id of the request being served by the current task, if any.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A W3C trace context (`traceparent`): the trace and the span of the work in hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero: this gateway's span.
    pub span_id: String,
    /// The caller's span, when the trace came from a caller.
    pub parent_id: Option<String>,
    /// The sampled flag.
    pub sampled: bool,
}

/// A new span id: 16 lowercase hex digits.
pub fn new_span_id() -> String {
    random_hex(8)
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        out.push_str(&hex::encode(uuid::Uuid::new_v4().as_bytes()));
    }
    out.truncate(bytes * 2);
    out
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

impl Trace {
    /// A new trace, this gateway's span its root.
    pub fn root() -> Trace {
        Trace {
            trace_id: random_hex(16),
            span_id: random_hex(8),
            parent_id: None,
            sampled: true,
        }
    }

    /// This gateway's span in the trace a caller's `traceparent` header names; `None` for
    /// a header the W3C rules make us ignore (then a new trace starts).
    pub fn continue_from(header: &str) -> Option<Trace> {
        let mut parts = header.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four fields; later versions may add some after them.
        let extra = parts.next().is_some();
        let version_ok = version.len() == 2
            && version
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && version != "ff";
        if !version_ok || (version == "00" && extra) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(parent, 16) || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Trace {
            trace_id: trace.to_string(),
            span_id: random_hex(8),
            parent_id: Some(parent.to_string()),
            sampled: flags & 1 == 1,
        })
    }

    /// The `traceparent` header of a call this span makes.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// Runs `work` inside the trace `trace`.
pub async fn with_trace<F: Future>(trace: Trace, work: F) -> F::Output {
    TRACE.scope(trace, work).await
}

/// The trace of the current task, if any.
pub fn trace() -> Option<Trace> {
    TRACE.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_the_w3c_way() {
        let t = Trace::continue_from("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(t.sampled);
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(t
            .header()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(Trace::continue_from(bad), None, "{bad}");
        }
        let root = Trace::root();
        assert_eq!(root.trace_id.len(), 32);
        assert_eq!(root.span_id.len(), 16);
        assert!(Trace::continue_from(&root.header()).is_some());
    }
}
