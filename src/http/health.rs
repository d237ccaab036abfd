//! Liveness, readiness and metrics: open routes for orchestrators and scrapers.

use actix_web::web::Data;
use actix_web::HttpResponse;
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "ok",
        "instance": state.settings.instance,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

/// `GET /readyz`: the database answers and every migration is applied.
pub async fn readyz(state: Data<AppState>) -> HttpResponse {
    match state.operations.readiness().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "database": state.operations.database(),
        })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "not-ready",
                "database": state.operations.database(),
                "reason": reason,
            }))
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: Data<AppState>) -> HttpResponse {
    let (open, idle) = state.operations.pool_stats();
    state
        .metrics
        .db_pool
        .with_label_values(&["open"])
        .set(i64::from(open));
    state
        .metrics
        .db_pool
        .with_label_values(&["idle"])
        .set(idle as i64);
    state
        .metrics
        .txlog_dropped
        .set(state.operations.txlog_dropped() as i64);
    let max = state.settings.http.max_inflight;
    state
        .metrics
        .inflight
        .set(state.admission.inflight(max) as i64);
    // The queues as they are now; a failed count leaves the last one standing.
    if let Ok(depths) = state.operations.outbox_depths().await {
        state.metrics.outbox.reset();
        for (destination, status, n) in depths {
            state
                .metrics
                .outbox
                .with_label_values(&[destination.as_str(), status.as_str()])
                .set(n);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
