//! The only place with SQL. One logical schema on PostgreSQL (production) and SQLite (embedded).
//!
//! Queries go through `sqlx::Any` with portable SQL and `$n` placeholders, so one code path
//! serves both backends; the few statements that must differ (row locking, batched inserts)
//! branch on [`Backend`]. Times are stored as BIGINT epoch milliseconds, identifiers as TEXT
//! and flags as small integers, which `Any` decodes identically on both backends.

pub mod appeals;
pub mod appointments;
pub mod audit;
pub mod documents;
pub mod group_commit;
pub mod jobs;
pub mod nsi;
pub mod organizations;
pub mod outbox;
pub mod referrals;
pub mod schedules;
pub mod sessions;
pub mod stats;
pub mod transactions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

use crate::config::DatabaseSettings;

/// Migrations for PostgreSQL, embedded in the binary.
pub static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");
/// Migrations for SQLite, embedded in the binary.
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Which database engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production.
    Postgres,
    /// SQLite: embedded default and demo.
    Sqlite,
}

impl Backend {
    /// Picks the backend from a database URL.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    /// Lower-case name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names no supported backend.
    #[error("unsupported database URL (expected postgres:// or sqlite:)")]
    UnsupportedUrl,
    /// The database could not be reached or a query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded into the model.
    #[error("corrupt stored value in {what}: {detail}")]
    Corrupt {
        /// Table and column.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// A stored value that does not decode into the model.
pub(crate) fn corrupt(what: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: format!(
            "unknown value {:?}",
            value.chars().take(80).collect::<String>()
        ),
    }
}

impl StoreError {
    /// True when the database could not be used right now (unreachable, restarting, its
    /// connection dropped, the pool exhausted) rather than refusing the request: a retry
    /// may succeed, and nothing was written.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                // SQLSTATE classes 08 (connection exception), 53 (insufficient resources),
                // 57 (operator intervention: shutdown, terminated backend).
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("53") || c.starts_with("57")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// A connection pool to the gateway database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL only: how to open a native connection for COPY (the transaction log).
    pg_options: Option<std::sync::Arc<sqlx::postgres::PgConnectOptions>>,
}

impl Store {
    /// Connects using the settings; the password is added to the URL only in memory.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&settings.url).ok_or(StoreError::UnsupportedUrl)?;
        let mut url = settings.url.clone();
        if let (Backend::Postgres, Some(pw)) = (backend, &settings.password) {
            if let Ok(mut u) = url::Url::parse(&url) {
                if u.set_password(Some(pw.expose())).is_ok() {
                    url = u.to_string();
                }
            }
        }
        if backend == Backend::Sqlite && !url.contains("mode=") {
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str("mode=rwc");
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pg_options = match backend {
            Backend::Postgres => Some(std::sync::Arc::new(
                sqlx::postgres::PgConnectOptions::from_str(&url)?,
            )),
            Backend::Sqlite => None,
        };
        let ping_idle = Duration::from_secs(settings.ping_idle_secs);
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(settings.acquire_timeout_secs))
            // No ping before every checkout (a round trip per statement under load); only a
            // connection that sat idle for a while is pinged first, so one the server
            // dropped during a quiet spell (a restart) is replaced unnoticed. A connection
            // dropped while busy fails its next statement, is discarded, and that request
            // is answered 503 without having changed anything.
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > ping_idle {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            });
        if backend == Backend::Sqlite {
            pool_options = pool_options
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                             PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .min_connections(1);
        }
        let pool = pool_options.connect_with(options).await?;
        Ok(Store {
            pool,
            backend,
            pg_options,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (for modules of this layer).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Postgres => &PG_MIGRATOR,
            Backend::Sqlite => &SQLITE_MIGRATOR,
        }
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Readiness: the database answers and the newest embedded migration is applied.
    pub async fn check_ready(&self) -> Result<(), String> {
        let latest = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| format!("database not reachable or not migrated: {e}"))?;
        match applied {
            Some(v) if v >= latest => Ok(()),
            Some(v) => Err(format!("migrations pending: applied {v}, latest {latest}")),
            None => Err("no migrations applied".into()),
        }
    }

    /// Pool statistics: (open connections, idle connections).
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Splits `items` into chunks whose lengths are powers of two of at most `max` (itself a
/// power of two), largest first: 45 items are written as 32 + 8 + 4 + 1. A multi-row
/// statement is prepared once per shape and connection; with a handful of shapes the
/// prepared statements stay cached instead of being parsed and planned for every batch.
pub fn power_of_two_chunks<T>(items: &[T], max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = items;
    let mut size = max.max(1).next_power_of_two();
    while !rest.is_empty() {
        while size > rest.len() {
            size /= 2;
        }
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod chunk_tests {
    use super::power_of_two_chunks;

    #[test]
    fn chunks_are_powers_of_two_largest_first() {
        let items: Vec<u32> = (0..45).collect();
        let sizes: Vec<usize> = power_of_two_chunks(&items, 32)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![32, 8, 4, 1]);
        let sizes: Vec<usize> = power_of_two_chunks(&items, 16)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, vec![16, 16, 8, 4, 1]);
        let joined: Vec<u32> = power_of_two_chunks(&items, 16).concat();
        assert_eq!(joined, items);
        assert!(power_of_two_chunks::<u32>(&[], 8).is_empty());
    }
}
