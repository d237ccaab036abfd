//! Logging set-up: pretty on a terminal, JSON for collectors; every request line carries
//! the request id through the request span.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber; `RUST_LOG` overrides the configured filter.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(settings: &LogSettings) {
    let env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = [env.as_deref(), Some(settings.filter.as_str()), Some("info")]
        .into_iter()
        .flatten()
        .find_map(filter)
        .unwrap_or_default();
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init()
    };
    let _ = result;
}

/// Installs a global subscriber writing JSON lines (as `init` does for collectors) to
/// `writer` with `filter`; tests capture the gateway's logs with it. Calling it twice is
/// harmless.
pub fn init_json_to<W>(filter: &str, writer: W)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::registry()
        .with(self::filter(filter).unwrap_or_else(|| EnvFilter::new("info")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer),
        )
        .try_init();
}

/// The filter a spec (`info,medgate=debug`) stands for, or `None` when it does not parse.
/// actix-http reports a client's malformed HTTP (bad framing, a head too large) at error
/// level though it is the client's fault and answered 400 or 431: those reports are off
/// unless the spec names `actix_http`.
pub fn filter(spec: &str) -> Option<EnvFilter> {
    let spec = if spec.contains("actix_http") {
        spec.to_string()
    } else {
        format!("{spec},actix_http::h1::dispatcher=off")
    };
    EnvFilter::try_new(spec).ok()
}
