//! The gateway process: connect, migrate, start background tasks and the HTTP server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::ClientRegistry;
use crate::config::Settings;
use crate::exchange::{TxLog, TxLogHandle};
use crate::http::{self, AppState, Metrics};
use crate::store::{Store, StoreError};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Database connection or migration.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A signing key could not be loaded.
    #[error("{0}")]
    Keys(String),
    /// Could not bind the listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running gateway: its address, state and server handle.
pub struct Gateway {
    /// The address the HTTP server listens on.
    pub addr: SocketAddr,
    /// Shared state (store, transaction log, ...).
    pub state: Arc<AppState>,
    server: actix_web::dev::ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    txlog_task: TxLogHandle,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Connects to the database, migrates if configured, and starts serving.
    pub async fn start(settings: Settings) -> Result<Gateway, AppError> {
        let started = Instant::now();
        let store = Store::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            store.migrate().await?;
        }
        let listener = TcpListener::bind(&settings.http.bind).map_err(|source| AppError::Bind {
            addr: settings.http.bind.clone(),
            source,
        })?;
        Self::start_on(settings, store, listener, started).await
    }

    /// Starts on an existing store and listener (tests bind port 0).
    pub async fn start_on(
        settings: Settings,
        store: Store,
        listener: TcpListener,
        started: Instant,
    ) -> Result<Gateway, AppError> {
        let addr = listener.local_addr().map_err(|source| AppError::Bind {
            addr: settings.http.bind.clone(),
            source,
        })?;
        let (txlog, txlog_task) = TxLog::start(store.clone(), settings.transaction_log.clone());
        crate::sign::init_crypto();
        let key_settings = settings.signing.keys.clone();
        let keys = tokio::task::spawn_blocking(move || crate::sign::KeyRing::load(&key_settings))
            .await
            .map_err(|e| AppError::Keys(e.to_string()))?
            .map_err(AppError::Keys)?;
        let remd = match settings.remd.as_ref() {
            None => None,
            Some(r) => {
                let mut client = crate::adapters::remd::RemdClient::new(
                    &r.url,
                    &r.client_entity_id,
                    &r.callback_url,
                    Duration::from_secs(r.timeout_secs),
                    txlog.clone(),
                );
                if let Some(owner) = &r.message_key {
                    let key = keys
                        .get(crate::config::KeyRole::Organization, owner)
                        .ok_or_else(|| {
                            AppError::Keys(format!(
                            "remd.message_key: no organization key for {owner} in [[signing.keys]]"
                        ))
                        })?;
                    client = client.with_message_signer(key);
                }
                Some((r.clone(), client))
            }
        };
        let documents = crate::services::documents::Documents::new(store.clone(), keys, remd);
        let mut mis = crate::services::mis::MisRegistry::default();
        let emias = settings.emias.as_ref().map(|e| {
            crate::adapters::emias::EmiasClient::new(
                &e.url,
                Duration::from_secs(e.timeout_secs),
                txlog.clone(),
            )
        });
        let fhir_mis = settings.fhir_mis.as_ref().map(|e| {
            crate::adapters::fhir_mis::FhirMisClient::new(
                &e.url,
                Duration::from_secs(e.timeout_secs),
                txlog.clone(),
            )
        });
        let mut sources: Vec<Arc<dyn crate::services::schedule_sync::ScheduleSource>> = Vec::new();
        if let Some(client) = &emias {
            mis.insert(crate::adapters::emias::SOURCE, Arc::new(client.clone()));
            sources.push(Arc::new(client.clone()));
        }
        if let Some(client) = &fhir_mis {
            mis.insert(crate::adapters::fhir_mis::SOURCE, Arc::new(client.clone()));
            sources.push(Arc::new(client.clone()));
        }
        let booking =
            crate::services::booking::Booking::new(store.clone(), mis, settings.booking.clone());
        let sync_every = settings.booking.sync_interval_secs;
        let state = Arc::new(AppState {
            booking: booking.clone(),
            documents: documents.clone(),
            clients: ClientRegistry::from_settings(&settings.clients),
            settings: Arc::new(settings),
            store: store.clone(),
            txlog,
            metrics: Metrics::new(),
            started,
        });
        let server = http::serve(state.clone(), listener).map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let handle = server.handle();
        let server_task = tokio::spawn(server);
        let mut background = vec![tokio::spawn(prune_loop(store))];
        background.extend(documents.spawn_workers());
        background.extend(booking.spawn_workers());
        if sync_every > 0 {
            background.push(tokio::spawn(schedule_loop(
                booking,
                sources,
                Duration::from_secs(sync_every),
            )));
        }
        tracing::info!(%addr, database = state.store.backend().name(), "medgate listening");
        Ok(Gateway {
            addr,
            state,
            server: handle,
            server_task,
            txlog_task,
            background,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the server stops (Ctrl-C / SIGTERM), then drains background work.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = match self.server_task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        for b in &self.background {
            b.abort();
        }
        drop(self.state);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.txlog_task).await;
        result
    }

    /// Stops gracefully (used by tests and the demo).
    pub async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.server_task.await;
        for b in &self.background {
            b.abort();
        }
        self.state.txlog.flush().await;
    }
}

/// Deletes transaction log records whose retention ended, once an hour.
async fn prune_loop(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match store.prune_transactions(crate::store::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "transaction log pruned"),
            Err(e) => tracing::warn!(error = %e, "transaction log prune failed"),
        }
    }
}

/// Rounds between checks of every active appointment against its slot.
const FULL_SLOT_CHECK_EVERY: u64 = 60;

/// Applies the clinic systems' slot changes, ends appointments on withdrawn slots and moves
/// appointments on moved slots (with a patient notification each), every `period`. A round
/// looks only at the slots its sync changed; the first round, a round after a full sync
/// (`medgate sync schedules`) and every [`FULL_SLOT_CHECK_EVERY`]th look at every active
/// appointment, the last as a backstop for a failed round.
async fn schedule_loop(
    booking: crate::services::booking::Booking,
    sources: Vec<Arc<dyn crate::services::schedule_sync::ScheduleSource>>,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    let mut round: u64 = 0;
    let mut full_seen = booking
        .store()
        .latest_full_sync()
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    loop {
        tick.tick().await;
        let mut changed = Vec::new();
        for client in &sources {
            match crate::services::schedule_sync::incremental_sync(booking.store(), client.as_ref())
                .await
            {
                Ok(r) => changed.extend(r.changed),
                Err(e) => {
                    tracing::warn!(source = client.source(), error = %e, "incremental schedule sync failed")
                }
            }
        }
        // A full sync since the last round (`medgate sync schedules`, e.g. the nightly
        // timer) changed slots outside the change feed: look at everything once.
        let full_sync = match booking.store().latest_full_sync().await {
            Ok(Some(at)) if at > full_seen => {
                full_seen = at;
                true
            }
            _ => false,
        };
        let scope =
            (round % FULL_SLOT_CHECK_EVERY != 0 && !full_sync).then_some(changed.as_slice());
        round += 1;
        match booking.handle_withdrawn_slots(scope).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                appointments = n,
                "appointments on withdrawn slots ended, patients notified"
            ),
            Err(e) => tracing::warn!(error = %e, "withdrawn slot check failed"),
        }
        match booking.handle_moved_slots(scope).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                appointments = n,
                "appointments on moved slots follow the new times, patients notified"
            ),
            Err(e) => tracing::warn!(error = %e, "moved slot check failed"),
        }
    }
}
