//! Practitioners and slots synchronized from clinic systems: bulk upserts, withdrawal of
//! slots that vanished from the source, and keyset-paged slot search.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{corrupt, Store, StoreError};
use crate::model::schedule::{Channels, Practitioner, Slot, SlotStatus};
use crate::model::Oid;

/// Filters of a slot search; all optional.
#[derive(Debug, Clone, Default)]
pub struct SlotQuery {
    /// Organization.
    pub org: Option<Oid>,
    /// Practitioner id.
    pub practitioner_id: Option<String>,
    /// Specialty code.
    pub specialty_code: Option<String>,
    /// Status.
    pub status: Option<SlotStatus>,
    /// Start at or after (epoch ms).
    pub start_from: Option<i64>,
    /// Start before (epoch ms).
    pub start_to: Option<i64>,
    /// Keyset cursor: after (start_at, id).
    pub after: Option<(i64, String)>,
}

const CHUNK: usize = 500;

impl Store {
    /// Inserts or updates practitioners in multi-row statements.
    pub async fn upsert_practitioners(
        &self,
        rows: &[Practitioner],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in rows.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO practitioners (id, org_oid, source, external_id, snils, family, given, \
                 specialty_code, specialty_version, position_code, room, active, updated_at) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 13);
            sql.push_str(
                " ON CONFLICT (id) DO UPDATE SET org_oid = excluded.org_oid, snils = excluded.snils, \
                 family = excluded.family, given = excluded.given, specialty_code = excluded.specialty_code, \
                 specialty_version = excluded.specialty_version, position_code = excluded.position_code, \
                 room = excluded.room, active = 1, updated_at = excluded.updated_at",
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = q
                    .bind(p.id.clone())
                    .bind(p.org.to_string())
                    .bind(p.source.clone())
                    .bind(p.external_id.clone())
                    .bind(p.snils.clone())
                    .bind(p.family.clone())
                    .bind(p.given.clone())
                    .bind(p.specialty_code.clone())
                    .bind(p.specialty_version.clone())
                    .bind(p.position_code.clone())
                    .bind(p.room.clone())
                    .bind(1i32)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts or updates slots in multi-row statements, stamping them with `synced_at`.
    pub async fn upsert_slots(&self, rows: &[Slot], synced_at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for chunk in rows.chunks(CHUNK) {
            let mut sql = String::from(
                "INSERT INTO slots (id, org_oid, practitioner_id, specialty_code, start_at, end_at, \
                 status, channels, source, synced_at) VALUES ",
            );
            push_placeholders(&mut sql, chunk.len(), 10);
            sql.push_str(
                " ON CONFLICT (id) DO UPDATE SET start_at = excluded.start_at, end_at = excluded.end_at, \
                 status = excluded.status, channels = excluded.channels, synced_at = excluded.synced_at",
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q
                    .bind(s.id.clone())
                    .bind(s.org.to_string())
                    .bind(s.practitioner_id.clone())
                    .bind(s.specialty_code.clone())
                    .bind(s.start_at)
                    .bind(s.end_at)
                    .bind(s.status.as_str())
                    .bind(s.channels.0)
                    .bind(s.source.clone())
                    .bind(synced_at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks withdrawn the slots of `org` in `[from, to)` that a full sync at `synced_at`
    /// did not see; returns their ids.
    pub async fn withdraw_unseen_slots(
        &self,
        source: &str,
        org: &Oid,
        from: i64,
        to: i64,
        synced_at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE slots SET status = 'withdrawn', synced_at = $5 WHERE source = $1 AND org_oid = $2 \
             AND start_at >= $3 AND start_at < $4 AND synced_at < $5 AND status <> 'withdrawn' RETURNING id",
        )
        .bind(source.to_string())
        .bind(org.to_string())
        .bind(from)
        .bind(to)
        .bind(synced_at)
        .fetch_all(self.pool())
        .await?;
        Ok(ids)
    }

    /// Slots matching the query, ordered by (start, id), at most `limit`.
    pub async fn search_slots(&self, q: &SlotQuery, limit: u32) -> Result<Vec<Slot>, StoreError> {
        let mut sql = String::from(
            "SELECT id, org_oid, practitioner_id, specialty_code, start_at, end_at, status, channels, source \
             FROM slots WHERE 1=1",
        );
        enum A {
            T(String),
            I(i64),
        }
        let mut args: Vec<A> = Vec::new();
        for (col, v) in [
            ("org_oid", q.org.as_ref().map(Oid::as_str)),
            ("practitioner_id", q.practitioner_id.as_deref()),
            ("specialty_code", q.specialty_code.as_deref()),
            ("status", q.status.map(SlotStatus::as_str)),
        ] {
            if let Some(v) = v {
                args.push(A::T(v.to_string()));
                sql.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        if let Some(v) = q.start_from {
            args.push(A::I(v));
            sql.push_str(&format!(" AND start_at >= ${}", args.len()));
        }
        if let Some(v) = q.start_to {
            args.push(A::I(v));
            sql.push_str(&format!(" AND start_at < ${}", args.len()));
        }
        if let Some((start, id)) = &q.after {
            args.push(A::I(*start));
            let a = args.len();
            args.push(A::T(id.clone()));
            let b = args.len();
            sql.push_str(&format!(
                " AND (start_at > ${a} OR (start_at = ${a} AND id > ${b}))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY start_at, id LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                A::T(s) => query.bind(s),
                A::I(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(decode_slot).collect()
    }

    /// Free slots of an organization starting at or after `from` that accept one of
    /// `channels`, counted by specialty (`by_practitioner` false) or by practitioner
    /// (optionally of one specialty).
    pub async fn free_slot_counts(
        &self,
        org: &Oid,
        from: i64,
        channels: Channels,
        by_practitioner: bool,
        specialty: Option<&str>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let key = if by_practitioner {
            "practitioner_id"
        } else {
            "specialty_code"
        };
        let rows = sqlx::query(&format!(
            "SELECT {key} AS k, COUNT(*) AS n FROM slots WHERE org_oid = $1 AND status = 'free' \
             AND start_at >= $2 AND (channels & $3) <> 0 AND ($4 = '' OR specialty_code = $4) \
             GROUP BY {key} ORDER BY {key}"
        ))
        .bind(org.to_string())
        .bind(from)
        .bind(channels.0)
        .bind(specialty.unwrap_or("").to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("k")?, r.try_get("n")?)))
            .collect()
    }

    /// One slot.
    pub async fn slot(&self, id: &str) -> Result<Option<Slot>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_oid, practitioner_id, specialty_code, start_at, end_at, status, channels, source \
             FROM slots WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_slot).transpose()
    }

    /// One practitioner.
    pub async fn get_practitioner(&self, id: &str) -> Result<Option<Practitioner>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_oid, source, external_id, snils, family, given, specialty_code, specialty_version, \
             position_code, room FROM practitioners WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode_practitioner).transpose()
    }

    /// Practitioners of an organization (or all), ordered by id.
    pub async fn list_practitioners(
        &self,
        org: Option<&Oid>,
        limit: u32,
    ) -> Result<Vec<Practitioner>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_oid, source, external_id, snils, family, given, specialty_code, specialty_version, \
             position_code, room FROM practitioners WHERE ($1 = '' OR org_oid = $1) ORDER BY id LIMIT $2",
        )
        .bind(org.map(Oid::to_string).unwrap_or_default())
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_practitioner).collect()
    }

    /// The organizations each clinic system publishes schedules for, as (source, org): those
    /// whose practitioners the gateway keeps.
    pub async fn schedule_organizations(&self) -> Result<Vec<(String, Oid)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT source, org_oid FROM practitioners ORDER BY source, org_oid",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("source")?,
                    organization(r, "practitioners.org_oid")?,
                ))
            })
            .collect()
    }

    /// Every slot of `org` from `source` starting in `[from, to)` (epoch ms), withdrawn ones
    /// too: what a reconciliation compares with the clinic system.
    pub async fn slots_of(
        &self,
        source: &str,
        org: &Oid,
        from: i64,
        to: i64,
    ) -> Result<Vec<Slot>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_oid, practitioner_id, specialty_code, start_at, end_at, status, channels, source \
             FROM slots WHERE source = $1 AND org_oid = $2 AND start_at >= $3 AND start_at < $4",
        )
        .bind(source.to_string())
        .bind(org.to_string())
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode_slot).collect()
    }

    /// Sets the status of slots by id; returns how many changed.
    pub async fn set_slots_status(
        &self,
        ids: &[String],
        status: SlotStatus,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut tx = self.pool().begin().await?;
        // A statement per chunk of ids (of a few sizes, so their plans are reused).
        for chunk in super::power_of_two_chunks(ids, 256) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "UPDATE slots SET status = $1, synced_at = $2 WHERE status <> $1 AND id IN ({list})"
            );
            let mut q = sqlx::query(&sql).bind(status.as_str()).bind(now);
            for id in chunk {
                q = q.bind(id.clone());
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Sets the times of slots the clinic system moved: (id, start, end) in epoch ms. Only
    /// slots whose times differ change; returns their ids.
    pub async fn set_slots_times(
        &self,
        times: &[(String, i64, i64)],
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut moved = Vec::new();
        if times.is_empty() {
            return Ok(moved);
        }
        let mut tx = self.pool().begin().await?;
        for chunk in super::power_of_two_chunks(times, 128) {
            // Both backends name the columns of an unnamed VALUES list column1, column2, ...
            let values = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "UPDATE slots SET start_at = v.column2, end_at = v.column3, synced_at = $1 \
                 FROM (VALUES {values}) AS v WHERE slots.id = v.column1 \
                 AND (slots.start_at <> v.column2 OR slots.end_at <> v.column3) RETURNING slots.id"
            );
            let mut q = sqlx::query(&sql).bind(now);
            for (id, start, end) in chunk {
                q = q.bind(id.clone()).bind(*start).bind(*end);
            }
            for row in q.fetch_all(&mut *tx).await? {
                moved.push(row.try_get::<String, _>("id")?);
            }
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// The stored change token of a source and scope.
    pub async fn change_token(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT change_token FROM sync_state WHERE source = $1 AND scope = $2",
        )
        .bind(source.to_string())
        .bind(scope.to_string())
        .fetch_optional(self.pool())
        .await?)
    }

    /// Stores the change token of a source and scope.
    pub async fn set_change_token(
        &self,
        source: &str,
        scope: &str,
        token: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sync_state (source, scope, change_token, synced_at) VALUES ($1,$2,$3,$4)              ON CONFLICT (source, scope) DO UPDATE SET change_token = excluded.change_token, synced_at = excluded.synced_at",
        )
        .bind(source.to_string())
        .bind(scope.to_string())
        .bind(token.to_string())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// When the latest full sync of any organization finished (epoch ms), if any: full syncs
    /// record themselves under the scope `full:<org>`.
    pub async fn latest_full_sync(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MAX(synced_at) FROM sync_state WHERE scope LIKE 'full:%'")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Refreshes planner statistics of the schedule tables; run after bulk loads so that
    /// searches use the ordered indexes at once.
    pub async fn refresh_schedule_statistics(&self) -> Result<(), StoreError> {
        for table in ["slots", "practitioners"] {
            sqlx::query(&format!("ANALYZE {table}"))
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Counts slots by status for an organization (or all).
    pub async fn slot_counts(&self, org: Option<&Oid>) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM slots WHERE ($1 = '' OR org_oid = $1) GROUP BY status ORDER BY status",
        )
        .bind(org.map(Oid::to_string).unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}

/// Appends `rows` groups of `cols` numbered placeholders: `($1,$2),($3,$4)`.
pub(crate) fn push_placeholders(sql: &mut String, rows: usize, cols: usize) {
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
}

/// A slot from its row; an unknown organization, state or channel is a corruption.
pub(crate) fn decode_slot(r: &AnyRow) -> Result<Slot, StoreError> {
    let status: String = r.try_get("status")?;
    let channels: i32 = r.try_get("channels")?;
    Ok(Slot {
        id: r.try_get("id")?,
        org: organization(r, "slots.org_oid")?,
        practitioner_id: r.try_get("practitioner_id")?,
        specialty_code: r.try_get("specialty_code")?,
        start_at: r.try_get("start_at")?,
        end_at: r.try_get("end_at")?,
        status: SlotStatus::parse(&status).ok_or_else(|| corrupt("slots.status", &status))?,
        channels: Some(Channels(channels))
            .filter(|c| c.0 & !Channels::ALL.0 == 0)
            .ok_or_else(|| corrupt("slots.channels", &channels.to_string()))?,
        source: r.try_get("source")?,
    })
}

/// The organization OID in column `org_oid`.
pub(crate) fn organization(r: &AnyRow, what: &'static str) -> Result<Oid, StoreError> {
    let raw: String = r.try_get("org_oid")?;
    Oid::parse(&raw).map_err(|_| corrupt(what, &raw))
}

fn decode_practitioner(r: &AnyRow) -> Result<Practitioner, StoreError> {
    Ok(Practitioner {
        id: r.try_get("id")?,
        org: organization(r, "practitioners.org_oid")?,
        source: r.try_get("source")?,
        external_id: r.try_get("external_id")?,
        snils: r.try_get("snils")?,
        family: r.try_get("family")?,
        given: r.try_get("given")?,
        specialty_code: r.try_get("specialty_code")?,
        specialty_version: r.try_get("specialty_version")?,
        position_code: r.try_get("position_code")?,
        room: r.try_get("room")?,
    })
}
