//! The HTTP edge (actix-web): routes per protocol; each handler parses its request, makes
//! one service call and maps the answer or the error to its protocol.

pub mod access;
pub mod admin;
pub mod admission;
pub mod appeals;
pub mod booking;
pub mod dashboard;
pub mod documents;
pub mod error;
pub mod fhir;
pub mod fhir_booking;
pub mod fhir_referral;
pub mod fhir_schedule;
pub mod fhir_terminology;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod query;
pub mod replay;
pub mod soap;
pub mod tls;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use crate::route;
use access::{Access, AccessRules, Route};

use actix_web::dev::{Payload, Server};
use actix_web::web::{self, Data};
use actix_web::{App, FromRequest, HttpMessage, HttpRequest, HttpServer};

use crate::auth::{Client, ClientRegistry};
use crate::config::Settings;
use crate::exchange::TxLog;
use crate::services::booking::Booking;
use crate::services::documents::Documents;
use crate::services::operations::Operations;
use crate::services::schedules::Schedules;
pub use error::{ApiError, ApiResult, Protocol};
pub use metrics::Metrics;

/// Everything handlers share: the services, and what the edge itself needs.
pub struct AppState {
    /// Settings the process started with.
    pub settings: Arc<Settings>,
    /// Transaction log (the middleware records every request).
    pub txlog: TxLog,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Known API clients.
    pub clients: ClientRegistry,
    /// Certificates the registry signs its callbacks with (DER); empty: unsigned accepted.
    pub callback_trust: Arc<Vec<Vec<u8>>>,
    /// Documents service.
    pub documents: Documents,
    /// Booking service.
    pub booking: Booking,
    /// Referrals service.
    pub referrals: crate::services::referrals::Referrals,
    /// Citizens' appeals.
    pub appeals: crate::services::appeals::Appeals,
    /// The dashboard's operators and their sessions.
    pub sessions: crate::services::sessions::Sessions,
    /// Directory and schedule reads.
    pub schedules: Schedules,
    /// The reference books (NSI) kept, for the terminology routes.
    pub reference_books: crate::services::nsi::ReferenceBooks,
    /// The gateway's own state: transaction log reads, readiness.
    pub operations: Operations,
    /// Process start time.
    pub started: Instant,
    /// The gate of requests at work (load shedding).
    pub admission: admission::Admission,
}

/// The authenticated client of the current request; every protected handler takes one.
#[derive(Debug, Clone)]
pub struct Principal(pub Arc<Client>);

impl std::ops::Deref for Principal {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Principal, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Arc<Client>>()
                .cloned()
                .map(Principal)
                .ok_or_else(|| {
                    ApiError::unauthorized("this route requires an authenticated client")
                }),
        )
    }
}

/// The open routes of orchestrators and scrapers.
const ROOT: &[Route] = &[
    route!(GET "" "/healthz" => health::healthz, Access::Open),
    route!(GET "" "/readyz" => health::readyz, Access::Open),
    route!(GET "" "/metrics" => health::metrics, Access::Open),
];

/// Every route the gateway serves, with its access rule.
pub fn route_table() -> impl Iterator<Item = &'static Route> {
    [
        ROOT,
        fhir::ROUTES,
        fhir::AUDIT_ROUTES,
        fhir_schedule::ROUTES,
        fhir_booking::ROUTES,
        fhir_referral::ROUTES,
        fhir_terminology::ROUTES,
        documents::ROUTES,
        hub::ROUTES,
        admin::ROUTES,
        appeals::ROUTES,
        dashboard::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// The access rules of every route of the gateway.
pub fn access_rules() -> AccessRules {
    AccessRules::of(route_table())
}

fn register(cfg: &mut web::ServiceConfig, scope: &str) {
    for r in route_table().filter(|r| r.scope == scope) {
        (r.register)(cfg);
    }
}

/// Registers every route on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    register(cfg, "");
    cfg.service(web::scope("/api/admin").configure(|c| register(c, "/api/admin")))
        .service(
            web::scope("/fhir")
                .configure(|c| register(c, "/fhir"))
                .default_service(web::to(fhir::unknown)),
        )
        .service(web::scope("/soap").configure(|c| register(c, "/soap")))
        .service(web::scope("/admin").configure(|c| register(c, "/admin")))
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> ApiResult<actix_web::HttpResponse> {
    Err(ApiError::not_found(
        "NO_SUCH_ROUTE",
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// The gateway's application: its state, the access rules, the gateway middleware around
/// every route (the server's and, in process, a rerun's).
pub fn app(
    data: Data<AppState>,
    rules: Data<AccessRules>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(data)
        .app_data(rules)
        .app_data(web::PayloadConfig::new(usize::MAX))
        .wrap(actix_web::middleware::from_fn(middleware::gateway))
        .configure(routes)
}

/// Starts the HTTP server on an already bound listener.
pub fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<&tls::TlsReloader>,
    peers: Option<(TcpListener, &tls::TlsReloader)>,
) -> std::io::Result<Server> {
    let workers = match state.settings.http.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let state_http = state.settings.http.clone();
    let data = Data::from(state);
    let rules = Data::new(access_rules());
    let server = HttpServer::new(move || app(data.clone(), rules.clone()))
        .workers(workers)
        .shutdown_timeout(10)
        .client_request_timeout(std::time::Duration::from_secs(
            state_http.header_timeout_secs,
        ))
        .keep_alive(std::time::Duration::from_secs(state_http.keep_alive_secs))
        .on_connect(tls::on_connect);
    let server = match tls {
        None => server.listen(listener)?,
        Some(t) => server.listen_openssl(listener, t.acceptor().map_err(std::io::Error::other)?)?,
    };
    // Peer gateways' own listener: the same API, mutual TLS required.
    let server = match peers {
        None => server,
        Some((l, t)) => server.listen_openssl(l, t.acceptor().map_err(std::io::Error::other)?)?,
    }
    .run();
    Ok(server)
}
