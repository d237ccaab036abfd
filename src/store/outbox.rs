//! The outbox table: durable outbound effects, claimed safely by several workers and
//! several gateway processes.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, Store, StoreError};

/// One queued outbound effect.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxItem {
    /// Item id (UUIDv7).
    pub id: String,
    /// Destination system, e.g. `remd`.
    pub destination: String,
    /// What to do, e.g. `register-document`.
    pub kind: String,
    /// The aggregate the effect belongs to (e.g. the document id).
    pub aggregate_id: String,
    /// Effect-specific JSON.
    pub payload: String,
    /// `pending`, `inflight`, `done` or `dead`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Earliest time of the next attempt (epoch ms).
    pub next_attempt_at: i64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// When it was queued (epoch ms).
    pub created_at: i64,
    /// The W3C trace of the request that queued it, continued by its delivery.
    pub traceparent: Option<String>,
}

/// An outbox item as operators see it (without its payload).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEntry {
    /// Item id.
    pub id: String,
    /// Destination system.
    pub destination: String,
    /// What it does.
    pub kind: String,
    /// The appointment or document it belongs to.
    pub aggregate_id: String,
    /// `pending`, `inflight`, `done` or `dead`.
    pub status: String,
    /// Delivery attempts made.
    pub attempts: i32,
    /// Why the last attempt failed (for a dead letter: why it was given up).
    pub last_error: Option<String>,
    /// Queued at (epoch ms).
    pub created_at: i64,
    /// Last changed at (epoch ms).
    pub updated_at: i64,
    /// The organization of its appointment or document, if known.
    pub org: Option<String>,
}

/// A new item to enqueue.
#[derive(Debug, Clone)]
pub struct NewOutboxItem {
    /// Destination system.
    pub destination: String,
    /// What to do.
    pub kind: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// JSON payload.
    pub payload: String,
    /// When it becomes due (epoch ms).
    pub due_at: i64,
    /// Attempts already made at this effect by earlier items (a retry the partner asked
    /// for in a later answer continues the count; a fresh effect starts at 0).
    pub attempts: i32,
    /// The object the effect is on (a slot, a document): items with the same key are
    /// delivered one after the other, in the order they were queued.
    pub ordering_key: Option<String>,
}

const COLUMNS: &str = "id, destination, kind, aggregate_id, payload, status, attempts, \
    next_attempt_at, last_error, created_at, traceparent";

/// Enqueues an item inside the caller's transaction (same transaction as the state change).
pub async fn enqueue(
    tx: &mut Transaction<'_, Any>,
    item: &NewOutboxItem,
    now: i64,
) -> Result<String, StoreError> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO outbox (id, destination, kind, aggregate_id, payload, status, attempts, \
         next_attempt_at, created_at, updated_at, ordering_key, traceparent) \
         VALUES ($1,$2,$3,$4,$5,'pending',$8,$6,$7,$7,$9,$10)",
    )
    .bind(id.clone())
    .bind(item.destination.clone())
    .bind(item.kind.clone())
    .bind(item.aggregate_id.clone())
    .bind(item.payload.clone())
    .bind(item.due_at)
    .bind(now)
    .bind(item.attempts)
    .bind(item.ordering_key.clone())
    .bind(crate::context::trace().map(|t| t.header()))
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

impl Store {
    /// Enqueues an item on its own (no state change goes with it).
    pub async fn enqueue(&self, item: &NewOutboxItem, now: i64) -> Result<String, StoreError> {
        let mut tx = self.pool().begin().await?;
        let id = enqueue(&mut tx, item, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Claims up to `limit` due items for `worker` until `lease_until`. Items whose lease
    /// expired (their worker died) are due again. An item waits while an earlier one with
    /// its ordering key is unfinished, so effects on one object arrive in order. On
    /// PostgreSQL concurrent claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`);
    /// SQLite has a single writer.
    pub async fn claim_outbox(
        &self,
        destination: &str,
        worker: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // Items of dead workers first (few), then due ones in due order: two claims, each
        // an index range that stops after its batch (an OR of the two would read them all).
        let mut items = self
            .claim_where(
                "status = 'inflight' AND locked_until < $3",
                "locked_until",
                (destination, worker, now, lease_until, limit),
            )
            .await?;
        let left = limit.saturating_sub(items.len() as u32);
        if left > 0 {
            items.extend(
                self.claim_where(
                    "status = 'pending' AND next_attempt_at <= $3",
                    "next_attempt_at",
                    (destination, worker, now, lease_until, left),
                )
                .await?,
            );
        }
        Ok(items)
    }

    /// One claim of [`Store::claim_outbox`]: items of `destination` matching `due`, in
    /// `order`, whose ordering key has no earlier unfinished item.
    async fn claim_where(
        &self,
        due: &str,
        order: &str,
        (destination, worker, now, lease_until, limit): (&str, &str, i64, i64, u32),
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET status = 'inflight', locked_by = $1, locked_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM outbox o WHERE destination = $4 AND {due} \
               AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.destination = o.destination \
                 AND e.ordering_key = o.ordering_key AND e.id < o.id \
                 AND e.status IN ('pending', 'inflight')) \
               ORDER BY {order} LIMIT $5{lock}) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(worker.to_string())
            .bind(lease_until)
            .bind(now)
            .bind(destination.to_string())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Unfinished (pending or in-flight) items of `destination` with `ordering_key`, in
    /// queue order.
    pub async fn unfinished_effects(
        &self,
        destination: &str,
        ordering_key: &str,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE destination = $1 AND ordering_key = $2 \
             AND status IN ('pending', 'inflight') ORDER BY id"
        ))
        .bind(destination.to_string())
        .bind(ordering_key.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Claims item `id` for `worker` until `lease_until` if it is pending and due (or new),
    /// or in flight with its lease expired, and no earlier item with its ordering key is
    /// unfinished: a caller that needs the effect now delivers it itself.
    pub async fn claim_outbox_item(
        &self,
        id: &str,
        worker: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<OutboxItem>, StoreError> {
        let sql = format!(
            "UPDATE outbox SET status = 'inflight', locked_by = $1, locked_until = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = $4 AND ((status = 'pending' AND (next_attempt_at <= $3 OR attempts = 0)) \
               OR (status = 'inflight' AND locked_until < $3)) \
             AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.destination = outbox.destination \
               AND e.ordering_key = outbox.ordering_key AND e.id < outbox.id \
               AND e.status IN ('pending', 'inflight')) \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(worker.to_string())
            .bind(lease_until)
            .bind(now)
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Marks an item delivered, if `worker` still holds it.
    pub async fn complete_outbox(
        &self,
        id: &str,
        worker: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'done', locked_by = NULL, locked_until = NULL, \
             last_error = NULL, updated_at = $3 WHERE id = $1 AND locked_by = $2 AND status = 'inflight'",
        )
        .bind(id.to_string())
        .bind(worker.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Schedules another attempt, or dead-letters when `next_attempt_at` is `None`.
    pub async fn retry_outbox(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        next_attempt_at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (status, next) = match next_attempt_at {
            Some(t) => ("pending", t),
            None => ("dead", now),
        };
        let done = sqlx::query(
            "UPDATE outbox SET status = $3, next_attempt_at = $4, last_error = $5, locked_by = NULL, \
             locked_until = NULL, updated_at = $6 WHERE id = $1 AND locked_by = $2 AND status = 'inflight'",
        )
        .bind(id.to_string())
        .bind(worker.to_string())
        .bind(status)
        .bind(next)
        .bind(error.chars().take(1000).collect::<String>())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts an item back as it was before its claim, due at `at`: its attempt was not made
    /// (a partner's open circuit refused the call), so it is not counted.
    pub async fn postpone_outbox(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', next_attempt_at = $3, last_error = $4, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, locked_by = NULL, \
             locked_until = NULL, updated_at = $5 WHERE id = $1 AND locked_by = $2 AND status = 'inflight'",
        )
        .bind(id.to_string())
        .bind(worker.to_string())
        .bind(at)
        .bind(error.chars().take(1000).collect::<String>())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Items of one aggregate, oldest first (for history and reruns).
    pub async fn outbox_for(&self, aggregate_id: &str) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE aggregate_id = $1 ORDER BY id"
        ))
        .bind(aggregate_id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Attempts made by the newest item of `aggregate_id` for `destination` (0: none).
    pub async fn latest_attempts(
        &self,
        destination: &str,
        aggregate_id: &str,
    ) -> Result<i32, StoreError> {
        let row: Option<(i32,)> = sqlx::query_as(
            "SELECT attempts FROM outbox WHERE destination = $1 AND aggregate_id = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(destination.to_string())
        .bind(aggregate_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map_or(0, |r| r.0))
    }

    /// Outbox items in `status` (of `destination` when given; of the organizations `orgs`
    /// when given, by the appointment or document they belong to), newest first, ids
    /// before `before` when given, at most `limit`. Payloads are left out: notifications
    /// carry personal data.
    pub async fn list_outbox(
        &self,
        status: &str,
        destination: Option<&str>,
        orgs: Option<&[crate::model::Oid]>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.select_outbox(status, destination, orgs, before, None, limit)
            .await
    }

    /// Item `id` in `status`, if it is of `orgs` (all: `None`), with its organization.
    pub async fn outbox_entry(
        &self,
        id: &str,
        status: &str,
        orgs: Option<&[crate::model::Oid]>,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        Ok(self
            .select_outbox(status, None, orgs, None, Some(id), 1)
            .await?
            .pop())
    }

    async fn select_outbox(
        &self,
        status: &str,
        destination: Option<&str>,
        orgs: Option<&[crate::model::Oid]>,
        before: Option<&str>,
        id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let org_filter = match orgs {
            None => String::new(),
            Some([]) => " AND 1 = 0".into(),
            Some(list) => {
                let placeholders = (0..list.len())
                    .map(|i| format!("${}", i + 6))
                    .collect::<Vec<_>>()
                    .join(",");
                // A referral's notices belong to both of its organizations.
                format!(
                    " AND (COALESCE(a.org_oid, d.org_oid, r.requester_org, p.org_oid) IN ({placeholders}) \
                     OR r.target_org IN ({placeholders}))"
                )
            }
        };
        let sql = format!(
            "SELECT o.id, o.destination, o.kind, o.aggregate_id, o.status, o.attempts, o.last_error, \
             o.created_at, o.updated_at, \
             COALESCE(a.org_oid, d.org_oid, r.requester_org, p.org_oid) AS org_oid \
             FROM outbox o \
             LEFT JOIN appointments a ON a.id = o.aggregate_id \
             LEFT JOIN documents d ON d.id = o.aggregate_id \
             LEFT JOIN referrals r ON r.id = o.aggregate_id \
             LEFT JOIN appeals p ON p.id = o.aggregate_id \
             WHERE o.status = $1 AND ($2 IS NULL OR o.destination = $2) AND ($3 IS NULL OR o.id < $3) \
             AND ($5 IS NULL OR o.id = $5){org_filter} \
             ORDER BY o.id DESC LIMIT $4"
        );
        let mut q = sqlx::query(&sql)
            .bind(status.to_string())
            .bind(destination.map(str::to_string))
            .bind(before.map(str::to_string))
            .bind(i64::from(limit))
            .bind(id.map(str::to_string));
        for org in orgs.unwrap_or_default() {
            q = q.bind(org.to_string());
        }
        q.fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    destination: r.try_get("destination")?,
                    kind: r.try_get("kind")?,
                    aggregate_id: r.try_get("aggregate_id")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                    org: r.try_get("org_oid")?,
                })
            })
            .collect()
    }

    /// Puts a dead letter back in the queue, due now, its attempts counted afresh (an
    /// operator's rerun once the cause is fixed); `false` when it is not dead.
    pub async fn requeue_dead(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, \
             locked_by = NULL, locked_until = NULL, updated_at = $2 WHERE id = $1 AND status = 'dead'",
        )
        .bind(id.to_string())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Unfinished and dead items by destination and status (`pending`, `inflight`,
    /// `dead`): the queues' depth and their dead letters.
    pub async fn outbox_depths(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT destination, status, COUNT(*) AS n FROM outbox \
             WHERE status IN ('pending', 'inflight', 'dead') GROUP BY destination, status",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("destination")?,
                    r.try_get("status")?,
                    r.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Counts items by status for a destination.
    pub async fn outbox_counts(&self, destination: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM outbox WHERE destination = $1 GROUP BY status ORDER BY status",
        )
        .bind(destination.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

fn decode(row: &AnyRow) -> Result<OutboxItem, StoreError> {
    Ok(OutboxItem {
        id: row.try_get("id")?,
        destination: row.try_get("destination")?,
        kind: row.try_get("kind")?,
        aggregate_id: row.try_get("aggregate_id")?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}
