//! Sessions of the operators' dashboard: created at login, found by the hash of their id
//! while unexpired, ended at logout; expired ones are removed as new ones begin.

use sqlx::Row;

use super::{Store, StoreError};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The operator's login.
    pub login: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// When it ends (epoch ms).
    pub expires_at: i64,
}

impl Store {
    /// Stores a new session (and removes the expired ones).
    pub async fn insert_session(
        &self,
        id_hash: &str,
        row: &SessionRow,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, login, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash.to_string())
        .bind(row.login.clone())
        .bind(row.csrf.clone())
        .bind(now)
        .bind(row.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The unexpired session with this id hash.
    pub async fn session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT login, csrf, expires_at FROM dashboard_sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash.to_string())
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(SessionRow {
                login: r.try_get("login")?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session.
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
