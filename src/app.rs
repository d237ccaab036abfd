//! The composition root: connect and migrate, wire every service's ports to their adapters,
//! start the background jobs and the HTTP server, and stop them all in order.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::adapters::emias::EmiasClient;
use crate::adapters::fhir_mis::FhirMisClient;
use crate::adapters::nsi::NsiClient;
use crate::adapters::peer::PeerClient;
use crate::adapters::remd::RemdClient;
use crate::adapters::webhook::WebhookNotifier;
use crate::auth::ClientRegistry;
use crate::config::{KeyRole, Settings};
use crate::exchange::delivery::{Handler, Worker, WorkerConfig};
use crate::exchange::partners::{Partners, COOL_DOWN, TRIP_AFTER};
use crate::exchange::{TxLog, TxLogHandle};
use crate::http::tls::TlsReloader;
use crate::http::{self, AppState, Metrics};
use crate::jobs::appeals::AppealDeadlines;
use crate::jobs::delivery::Delivery;
use crate::jobs::documents::{DocumentReconciliation, VerdictPoll};
use crate::jobs::holds::HoldSweeper;
use crate::jobs::prune::Retention;
use crate::jobs::reconcile::ScheduleReconciliationJob;
use crate::jobs::referrals::ReferralUpkeep;
use crate::jobs::schedules::ScheduleRound;
use crate::jobs::{Job, Jobs};
use crate::model::time::{system_clock, SharedClock};
use crate::services::appeals::{
    Appeals, NOTIFY_DESTINATION as APPEAL_NOTIFY_DESTINATION,
    REPLY_DESTINATION as APPEAL_REPLY_DESTINATION,
};
use crate::services::booking::{Booking, MIS_DESTINATION, NOTIFY_DESTINATION};
use crate::services::documents::{Documents, RegistryLink, DESTINATION as REMD_DESTINATION};
use crate::services::federation::{Federation, PEER_DESTINATION};
use crate::services::mis::MisRegistry;
use crate::services::notify::Notifier;
use crate::services::nsi::{Book, ReferenceBooks};
use crate::services::operations::Operations;
use crate::services::reconcile::ScheduleReconciliation;
use crate::services::referrals::{Referrals, NOTIFY_DESTINATION as REFERRAL_NOTIFY_DESTINATION};
use crate::services::schedule_sync::ScheduleSource;
use crate::services::schedules::Schedules;
use crate::store::{Store, StoreError};

/// How often a delivery job looks for due items when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Database connection or migration.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A signing key could not be loaded.
    #[error("{0}")]
    Keys(String),
    /// The listener's TLS files do not make a context.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// Could not bind the listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running gateway: its address, state, jobs and server handle.
pub struct Gateway {
    /// The address the HTTP server listens on.
    pub addr: SocketAddr,
    /// Shared state of the handlers (services, settings, metrics).
    pub state: Arc<AppState>,
    /// The database.
    pub store: Store,
    /// The background jobs.
    pub jobs: Jobs,
    server: actix_web::dev::ServerHandle,
    /// The listener's TLS, when it speaks TLS.
    pub tls: Option<TlsReloader>,
    tls_watch: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The address of the peer gateways' listener, when it has one.
    pub peer_addr: Option<SocketAddr>,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    txlog_task: TxLogHandle,
}

impl Gateway {
    /// Connects to the database, migrates if configured, and starts serving.
    pub async fn start(settings: Settings) -> Result<Gateway, AppError> {
        let store = Store::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            store.migrate().await?;
        }
        let listener = TcpListener::bind(&settings.http.bind).map_err(|source| AppError::Bind {
            addr: settings.http.bind.clone(),
            source,
        })?;
        Self::start_on(settings, store, listener, system_clock()).await
    }

    /// Starts on an existing store and listener (tests bind port 0) with `clock` as the
    /// services' and jobs' time.
    pub async fn start_on(
        settings: Settings,
        store: Store,
        listener: TcpListener,
        clock: SharedClock,
    ) -> Result<Gateway, AppError> {
        let started = Instant::now();
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: settings.http.bind.clone(),
            source,
        })?;
        let (txlog, txlog_task) = TxLog::start(store.clone(), settings.transaction_log.clone());
        let txlog = match &settings.log.otlp_endpoint {
            None => txlog,
            Some(endpoint) => {
                let (spans, _export) = crate::exchange::spans::Spans::start(
                    endpoint,
                    &settings.instance,
                    Duration::from_secs(10),
                )
                .map_err(AppError::Keys)?;
                txlog.with_spans(spans)
            }
        };
        let partners = Partners::new(TRIP_AFTER, COOL_DOWN, clock.clone());
        let metrics = Metrics::new();
        partners
            .register(metrics.registry())
            .map_err(|e| AppError::Keys(format!("metrics: {e}")))?;
        let reference_books = reference_books(&settings, &store, &txlog, &clock, &partners);
        let documents = documents(&settings, &store, &txlog, &clock, &partners)
            .await?
            .with_reference_books(reference_books.clone());
        let (mis, sources) = clinic_systems(&settings, &txlog, &partners);
        let notifier = settings.booking.notify_url.as_ref().map(|url| {
            Arc::new(WebhookNotifier::new(
                url,
                Duration::from_secs(settings.booking.notify_timeout_secs),
            )) as Arc<dyn Notifier>
        });
        let booking = Booking::new(
            store.clone(),
            mis,
            notifier,
            &settings.booking,
            clock.clone(),
            partners.clone(),
        )
        .with_mis_lease(mis_lease(&settings));
        let referrals = Referrals::new(
            store.clone(),
            booking.clone(),
            settings
                .referrals
                .acceptance_rules()
                .map_err(|(key, why)| AppError::Keys(format!("{key}: {why}")))?,
            &settings.referrals,
            settings.referrals.notify_url.as_ref().map(|url| {
                Arc::new(WebhookNotifier::new(
                    url,
                    Duration::from_secs(settings.referrals.notify_timeout_secs),
                )) as Arc<dyn Notifier>
            }),
            clock.clone(),
        )
        .with_reference_books(reference_books.clone());
        let referrals = match &settings.federation {
            None => referrals,
            Some(f) => {
                let federation = Federation::from_settings(f)
                    .ok_or_else(|| AppError::Keys("federation.region: not a region code".into()))?;
                let peers = PeerClient::new(f, &txlog, &partners)
                    .map_err(|e| AppError::Keys(e.to_string()))?;
                referrals.with_federation(federation, Arc::new(peers))
            }
        };
        let appeals = appeals_service(&settings, &store, &clock)?;
        let all_jobs = background_jobs(
            &settings,
            &store,
            &clock,
            Services {
                booking: &booking,
                documents: &documents,
                referrals: &referrals,
                reference_books: &reference_books,
                appeals: &appeals,
            },
            sources,
            &partners,
        );
        // Each process is a replica of its own: its runs are recorded under this name.
        let replica = format!(
            "{}-{}",
            settings.instance,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let schedule = crate::jobs::Schedule {
            runner: crate::jobs::Runner::new(
                store.clone(),
                &replica,
                Duration::from_secs(settings.jobs.lease_secs),
                clock.clone(),
            )
            .with_worker_window(Duration::from_secs(settings.jobs.worker_window_secs.max(1))),
            time_zone: settings.jobs.tz(),
            crons: settings.jobs.schedules.clone(),
            disabled: settings.jobs.disabled.clone(),
            run_scheduled: settings.jobs.run_scheduled,
        };
        let board = Arc::new(crate::jobs::Board::new(&all_jobs, &schedule));
        let jobs = Jobs::start_scheduled(all_jobs, schedule)
            .await
            .map_err(AppError::Keys)?;
        let admission = crate::http::admission::Admission::new(
            settings.http.max_inflight,
            Duration::from_millis(settings.http.queue_timeout_ms),
        );
        let state = Arc::new(AppState {
            booking,
            documents,
            referrals,
            reference_books,
            appeals,
            schedules: Schedules::new(store.clone(), clock.clone()),
            operations: Operations::new(store.clone(), txlog.clone())
                .with_jobs(board)
                .with_partners(partners.clone()),
            sessions: crate::services::sessions::Sessions::new(
                store.clone(),
                &settings.dashboard,
                clock.clone(),
            )
            .map_err(|(key, why)| AppError::Keys(format!("{key}: {why}")))?,
            clients: ClientRegistry::from_settings(
                &settings.clients,
                settings.federation.as_ref().map_or(&[], |f| &f.peers),
            )
            .map_err(AppError::Keys)?,
            callback_trust: Arc::new(
                settings
                    .remd
                    .iter()
                    .flat_map(|r| &r.callback_certificates)
                    .map(|path| {
                        crate::sign::certificate_der(path)
                            .map_err(|e| AppError::Keys(format!("remd.callback_certificates: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            settings: Arc::new(settings),
            txlog,
            metrics,
            started,
            admission,
        });
        let tls = state
            .settings
            .http
            .tls
            .as_ref()
            .map(TlsReloader::new)
            .transpose()?;
        let peer_listener = match state
            .settings
            .federation
            .as_ref()
            .and_then(|f| f.listen.as_ref())
        {
            None => None,
            Some(l) => {
                let listener = TcpListener::bind(&l.bind).map_err(|source| AppError::Bind {
                    addr: l.bind.clone(),
                    source,
                })?;
                Some((listener, TlsReloader::new(&l.tls)?))
            }
        };
        let peer_addr = peer_listener
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok());
        let server = http::serve(
            state.clone(),
            listener,
            tls.as_ref(),
            match &peer_listener {
                None => None,
                Some((l, t)) => Some((
                    l.try_clone().map_err(|source| AppError::Bind {
                        addr: addr.to_string(),
                        source,
                    })?,
                    t,
                )),
            },
        )
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let tls_watch: Vec<_> = tls
            .iter()
            .chain(peer_listener.iter().map(|(_, t)| t))
            .map(|t| {
                let stop = CancellationToken::new();
                (stop.clone(), t.spawn_watch(stop))
            })
            .collect();
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        tracing::info!(%addr, database = store.backend().name(), jobs = ?jobs.names(), "medgate listening");
        Ok(Gateway {
            addr,
            state,
            store,
            jobs,
            server: handle,
            tls,
            tls_watch,
            peer_addr,
            server_task,
            txlog_task,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:8080` (`https` when the listener speaks TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Base URL of the peer gateways' listener, when it has one.
    pub fn peer_url(&self) -> Option<String> {
        self.peer_addr.map(|a| format!("https://{a}"))
    }

    /// The background job called `name`, to run one step of it by hand.
    pub fn job(&self, name: &str) -> Option<Arc<dyn Job>> {
        self.jobs.get(name)
    }

    /// Serves until the server stops (Ctrl-C / SIGTERM), then stops the jobs and drains the
    /// transaction log.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = match self.server_task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        self.jobs.stop(Duration::from_secs(5)).await;
        stop_watch(self.tls_watch).await;
        drop(self.state);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.txlog_task).await;
        result
    }

    /// Stops gracefully (used by tests and the demo).
    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.server_task.await;
        self.jobs.stop(Duration::from_secs(5)).await;
        stop_watch(self.tls_watch).await;
        self.state.txlog.flush().await;
    }
}

/// Stops the TLS files' watches.
async fn stop_watch(watch: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>) {
    for (stop, task) in watch {
        stop.cancel();
        let _ = task.await;
    }
}

/// The documents service: signing keys, and the registry link when one is configured.
async fn documents(
    settings: &Settings,
    store: &Store,
    txlog: &TxLog,
    clock: &SharedClock,
    partners: &Partners,
) -> Result<Documents, AppError> {
    crate::sign::init_crypto();
    let key_settings = settings.signing.keys.clone();
    let keys = tokio::task::spawn_blocking(move || crate::sign::KeyRing::load(&key_settings))
        .await
        .map_err(|e| AppError::Keys(e.to_string()))?
        .map_err(AppError::Keys)?;
    let remd = match settings.remd.as_ref() {
        None => None,
        Some(r) => {
            let mut client = RemdClient::new(
                &r.url,
                &r.client_entity_id,
                &r.callback_url,
                Duration::from_secs(r.timeout_secs),
                txlog.clone(),
            )
            .with_partners(partners.clone());
            if let Some(owner) = &r.message_key {
                let key = keys.get(KeyRole::Organization, owner).ok_or_else(|| {
                    AppError::Keys(format!(
                        "remd.message_key: no organization key for {owner} in [[signing.keys]]"
                    ))
                })?;
                client = client.with_message_signer(key);
            }
            Some(RegistryLink {
                settings: r.clone(),
                registry: Arc::new(client),
            })
        }
    };
    Ok(Documents::new(
        store.clone(),
        Arc::new(keys),
        remd,
        clock.clone(),
    ))
}

/// The reference books: read from the store always, kept from the reference-book service
/// (and checked against) when `[nsi]` is configured.
fn reference_books(
    settings: &Settings,
    store: &Store,
    txlog: &TxLog,
    clock: &SharedClock,
    partners: &Partners,
) -> ReferenceBooks {
    let books = ReferenceBooks::new(store.clone(), clock.clone());
    let Some(n) = &settings.nsi else {
        return books;
    };
    let client = NsiClient::new(n, txlog.clone()).with_partners(partners.clone());
    // The configuration was validated: every OID parses.
    let kept = n
        .books
        .iter()
        .filter_map(|b| {
            Some(Book {
                oid: crate::model::Oid::parse(&b.oid).ok()?,
                name: b.name.clone(),
                accepts: b.registry_accepts.clone(),
                code_column: b.code_column.clone(),
                display_column: b.display_column.clone(),
            })
        })
        .collect();
    books.with_source(Arc::new(client), kept, n.page_size)
}

/// The configured clinic systems: where bookings go and where schedules come from.
fn clinic_systems(
    settings: &Settings,
    txlog: &TxLog,
    partners: &Partners,
) -> (MisRegistry, Vec<Arc<dyn ScheduleSource>>) {
    let mut mis = MisRegistry::default();
    let mut sources: Vec<Arc<dyn ScheduleSource>> = Vec::new();
    if let Some(e) = &settings.emias {
        let client = Arc::new(
            EmiasClient::new(&e.url, Duration::from_secs(e.timeout_secs), txlog.clone())
                .with_partners(partners.clone()),
        );
        mis.insert(crate::adapters::emias::SOURCE, client.clone());
        sources.push(client);
    }
    if let Some(e) = &settings.fhir_mis {
        let client = Arc::new(
            FhirMisClient::new(&e.url, Duration::from_secs(e.timeout_secs), txlog.clone())
                .with_partners(partners.clone()),
        );
        mis.insert(crate::adapters::fhir_mis::SOURCE, client.clone());
        sources.push(client);
    }
    (mis, sources)
}

/// The services whose background work runs as jobs.
struct Services<'a> {
    booking: &'a Booking,
    documents: &'a Documents,
    referrals: &'a Referrals,
    reference_books: &'a ReferenceBooks,
    appeals: &'a Appeals,
}

/// The appeals service: its calendar in the jobs' time zone, answers back to each channel's
/// webhook, overdue appeals to the operator's.
pub fn appeals_service(
    settings: &Settings,
    store: &Store,
    clock: &SharedClock,
) -> Result<Appeals, AppError> {
    let a = &settings.appeals;
    let timeout = Duration::from_secs(a.timeout_secs);
    let replies = a
        .reply_urls
        .iter()
        .filter_map(|(channel, url)| {
            let channel = crate::model::appeal::AppealChannel::parse(channel)?;
            Some((
                channel,
                Arc::new(WebhookNotifier::new(url, timeout)) as Arc<dyn Notifier>,
            ))
        })
        .collect();
    let operator = a
        .notify_url
        .as_ref()
        .map(|url| Arc::new(WebhookNotifier::new(url, timeout)) as Arc<dyn Notifier>);
    Appeals::new(
        store.clone(),
        a,
        settings.jobs.tz(),
        replies,
        operator,
        clock.clone(),
    )
    .map_err(|(key, why)| AppError::Keys(format!("{key}: {why}")))
}

/// How long a delivery to a clinic system holds its claim: three of the slowest clinic
/// system's timeouts and a margin, so an effect in flight in a process that died is taken
/// over soon, never while its call may still be answered.
fn mis_lease(settings: &Settings) -> Duration {
    let timeout = [&settings.emias, &settings.fhir_mis]
        .into_iter()
        .flatten()
        .map(|m| m.timeout_secs)
        .max()
        .unwrap_or(30);
    Duration::from_secs(timeout * 3 + 5)
}

/// Every background job this configuration asks for.
fn background_jobs(
    settings: &Settings,
    store: &Store,
    clock: &SharedClock,
    services: Services<'_>,
    sources: Vec<Arc<dyn ScheduleSource>>,
    partners: &Partners,
) -> Vec<Arc<dyn Job>> {
    let Services {
        booking,
        documents,
        referrals,
        reference_books,
        appeals,
    } = services;
    let deliver = |destination: &str,
                   concurrency: usize,
                   lease: Duration,
                   schedule: &[u64],
                   handler: Handler,
                   wake| {
        let config = WorkerConfig {
            destination: destination.into(),
            concurrency,
            lease,
            max_attempts: i32::try_from(schedule.len() + 1).unwrap_or(i32::MAX),
            patience: Duration::from_secs(schedule.iter().sum()),
        };
        let worker = Worker::new(
            store.clone(),
            config,
            handler,
            clock.clone(),
            partners.clone(),
        );
        Arc::new(Delivery::new(worker, wake, IDLE_POLL)) as Arc<dyn Job>
    };
    let mut jobs: Vec<Arc<dyn Job>> = vec![
        Arc::new(Retention::new(
            store.clone(),
            settings.retention.clone(),
            clock.clone(),
        )),
        Arc::new(crate::jobs::stats::DailyStats::new(
            store.clone(),
            settings.jobs.tz(),
            clock.clone(),
        )),
        Arc::new(HoldSweeper::new(booking.clone())),
        Arc::new(ReferralUpkeep::new(
            referrals.clone(),
            booking.referral_visit_cancelled(),
        )),
    ];
    if reference_books.syncs() {
        jobs.push(Arc::new(crate::jobs::nsi::NsiSync::new(
            reference_books.clone(),
        )));
    }
    // Notices wait in the outbox until a receiver is configured.
    if settings.referrals.notify_url.is_some() {
        let svc = referrals.clone();
        let handler: Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver_notice(item).await })
        });
        jobs.push(deliver(
            REFERRAL_NOTIFY_DESTINATION,
            4,
            Duration::from_secs(settings.referrals.notify_timeout_secs * 3 + 5),
            &settings.referrals.notify_retry_schedule_secs,
            handler,
            referrals.notice_queued(),
        ));
    }
    if let Some(f) = &settings.federation {
        let svc = referrals.clone();
        let handler: Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver_to_peer(item).await })
        });
        jobs.push(deliver(
            PEER_DESTINATION,
            8,
            Duration::from_secs(f.timeout_secs * 3 + 5),
            &f.retry_schedule_secs,
            handler,
            referrals.peer_item_queued(),
        ));
    }
    let svc = booking.clone();
    let handler: Handler = Arc::new(move |item| {
        let svc = svc.clone();
        Box::pin(async move { svc.deliver_cancel(item).await })
    });
    jobs.push(deliver(
        MIS_DESTINATION,
        8,
        mis_lease(settings),
        &settings.booking.mis_retry_schedule_secs,
        handler,
        booking.mis_queued(),
    ));
    if booking.notifies() {
        let svc = booking.clone();
        let handler: Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver_notice(item).await })
        });
        let lease = Duration::from_secs(settings.booking.notify_timeout_secs * 3 + 5);
        jobs.push(deliver(
            NOTIFY_DESTINATION,
            8,
            lease,
            &settings.booking.notify_retry_schedule_secs,
            handler,
            booking.notice_queued(),
        ));
    }
    if let (Some(r), true) = (&settings.remd, documents.delivers()) {
        let svc = documents.clone();
        let handler: Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver(item).await })
        });
        let lease = Duration::from_secs(r.timeout_secs * 3 + 5);
        jobs.push(deliver(
            REMD_DESTINATION,
            r.workers,
            lease,
            &r.retry_schedule_secs,
            handler,
            documents.wake(),
        ));
        let period = Duration::from_secs((r.callback_timeout_secs / 4).clamp(1, 60));
        jobs.push(Arc::new(VerdictPoll::new(documents.clone(), period)));
        jobs.push(Arc::new(DocumentReconciliation::new(documents.clone())));
    }
    jobs.push(Arc::new(AppealDeadlines::new(appeals.clone())));
    let svc = appeals.clone();
    let handler: Handler = Arc::new(move |item| {
        let svc = svc.clone();
        Box::pin(async move { svc.deliver_reply(item).await })
    });
    let appeal_lease = Duration::from_secs(settings.appeals.timeout_secs * 3 + 5);
    jobs.push(deliver(
        APPEAL_REPLY_DESTINATION,
        4,
        appeal_lease,
        &settings.appeals.retry_schedule_secs,
        handler,
        appeals.queued(),
    ));
    // Notices wait in the outbox until the operator's receiver is configured.
    if appeals.notifies() {
        let svc = appeals.clone();
        let handler: Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver_notice(item).await })
        });
        jobs.push(deliver(
            APPEAL_NOTIFY_DESTINATION,
            2,
            appeal_lease,
            &settings.appeals.retry_schedule_secs,
            handler,
            appeals.queued(),
        ));
    }
    if !sources.is_empty() {
        jobs.push(Arc::new(ScheduleReconciliationJob::new(
            ScheduleReconciliation::new(
                store.clone(),
                booking.clone(),
                settings.jobs.reconcile_days,
                clock.clone(),
            ),
            sources.clone(),
        )));
    }
    // With no interval the rounds run only when asked (`Gateway::job`).
    jobs.push(Arc::new(ScheduleRound::new(
        store.clone(),
        booking.clone(),
        sources,
        Duration::from_secs(settings.booking.sync_interval_secs),
        clock.clone(),
    )));
    jobs
}
