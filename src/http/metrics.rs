//! Prometheus metrics of the HTTP server and the database pool.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The gateway's metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route pattern, status and fault (`client`: the request was
    /// refused; `server`: the gateway or a partner failed; `none`). A SOAP 1.1 fault is
    /// sent as 500 whoever is at fault: the label tells them apart.
    pub requests: IntCounterVec,
    /// Outbox items by destination and status (pending, inflight, dead).
    pub outbox: IntGaugeVec,
    /// Requests shed by admission control, by reason (`busy`, `recording`).
    pub shed: IntCounterVec,
    /// Requests at work now (admitted, not yet answered).
    pub inflight: IntGauge,
    /// Request latency by method and route pattern.
    pub latency: HistogramVec,
    /// Database pool connections by state (`open`, `idle`).
    pub db_pool: IntGaugeVec,
    /// Transaction log records dropped because its queue was full.
    pub txlog_dropped: IntGauge,
}

impl Metrics {
    /// Creates and registers the families.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("medgate".into()), None)
            .expect("static registry prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["method", "route", "status", "fault"],
        )
        .expect("static metric definition");
        let outbox = IntGaugeVec::new(
            Opts::new(
                "outbox_items",
                "Outbox items by destination and status (pending and inflight: the queue; dead: dead letters)",
            ),
            &["destination", "status"],
        )
        .expect("static metric definition");
        let shed = IntCounterVec::new(
            Opts::new(
                "http_shed_total",
                "Requests answered 503 by admission control, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let inflight = IntGauge::new("http_inflight", "Requests at work now")
            .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["method", "route"],
        )
        .expect("static metric definition");
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections"),
            &["state"],
        )
        .expect("static metric definition");
        let txlog_dropped = IntGauge::new(
            "txlog_dropped_total",
            "Transaction log records dropped because the queue was full",
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(db_pool.clone()),
            Box::new(txlog_dropped.clone()),
            Box::new(outbox.clone()),
            Box::new(shed.clone()),
            Box::new(inflight.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            outbox,
            shed,
            inflight,
            latency,
            db_pool,
            txlog_dropped,
        }
    }

    /// The registry, for families other layers own (partners, deliveries).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one served request; `class` is the status the answer stands for (a SOAP
    /// fault's real class).
    pub fn observe(&self, method: &str, route: &str, status: u16, class: u16, seconds: f64) {
        let fault = match class {
            400..=499 => "client",
            500..=599 => "server",
            _ => "none",
        };
        self.requests
            .with_label_values(&[method, route, &status.to_string(), fault])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
