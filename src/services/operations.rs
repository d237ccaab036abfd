//! What operators and orchestrators read about the gateway itself: the transaction log,
//! readiness of the database, connection pool figures.

use super::{audit_event, Caller};
pub use crate::exchange::txlog::{TransactionFilter, TransactionRecord};
use crate::exchange::TxLog;
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
pub use crate::store::audit::AuditQuery;
pub use crate::store::outbox::OutboxEntry;
use crate::store::{Store, StoreError};

/// Reads of the gateway's own state.
#[derive(Clone)]
pub struct Operations {
    store: Store,
    txlog: TxLog,
}

impl Operations {
    /// Reads over `store`, with the transaction log's writer `txlog`.
    pub fn new(store: Store, txlog: TxLog) -> Operations {
        Operations { store, txlog }
    }

    /// Transaction records matching `filter`, newest first, at most `limit`: a client's
    /// own, all for operators; everything recorded before the call is included.
    pub async fn transactions(
        &self,
        caller: Caller<'_>,
        filter: &TransactionFilter,
        limit: u32,
    ) -> Result<Vec<TransactionRecord>, StoreError> {
        let mut filter = filter.clone();
        if !caller.operator {
            if filter
                .client_id
                .as_deref()
                .is_some_and(|c| c != caller.client_id)
            {
                return Ok(Vec::new());
            }
            filter.client_id = Some(caller.client_id.to_string());
        }
        self.txlog.flush().await;
        self.store.list_transactions(&filter, limit).await
    }

    /// One transaction record, if it is the caller's (operators: any); reading its stored
    /// bodies (`with_bodies`), which carry personal data, is audited.
    pub async fn transaction(
        &self,
        caller: Caller<'_>,
        id: &str,
        with_bodies: bool,
    ) -> Result<Option<TransactionRecord>, StoreError> {
        self.txlog.flush().await;
        let record = self
            .store
            .get_transaction(id)
            .await?
            .filter(|r| caller.operator || r.client_id.as_deref() == Some(caller.client_id));
        if with_bodies {
            let mut event = audit_event(
                caller,
                AuditAction::Read,
                AuditEntity::TransactionBody,
                crate::model::time::now_ms(),
            );
            event.entity_id = Some(id.to_string());
            if record.is_none() {
                event = event.refused("TRANSACTION_NOT_FOUND");
            }
            self.store.insert_audit(&event).await?;
        }
        Ok(record)
    }

    /// Audit events matching `q` of the caller's organizations (operators: all), newest
    /// first.
    pub async fn audit_events(
        &self,
        caller: Caller<'_>,
        q: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut q = q.clone();
        if let Some(orgs) = caller.scope() {
            q.orgs = Some(orgs.to_vec());
        }
        self.store.audit_events(&q, limit).await
    }

    /// Ready when the database answers and every migration is applied; else why not.
    pub async fn readiness(&self) -> Result<(), String> {
        self.store.check_ready().await
    }

    /// Outbox items in `status` (e.g. `dead`: the dead letters with their reason), of the
    /// caller's organizations (operators: all), newest first.
    pub async fn outbox(
        &self,
        caller: Caller<'_>,
        status: &str,
        destination: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store
            .list_outbox(status, destination, caller.scope(), before, limit)
            .await
    }

    /// Outbox items by destination and status (pending, in flight, dead), for the metrics.
    pub async fn outbox_depths(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.store.outbox_depths().await
    }

    /// The database engine's name.
    pub fn database(&self) -> &'static str {
        self.store.backend().name()
    }

    /// Open and idle database connections.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.store.pool_stats()
    }

    /// Transaction records dropped because the log's queue was full.
    pub fn txlog_dropped(&self) -> u64 {
        self.txlog.dropped()
    }
}
