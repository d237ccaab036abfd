//! Appointments, idempotency keys and booking restrictions.
//!
//! "One slot, at most one active appointment" is the partial unique index
//! `appointments_one_active_per_slot`: a hold is an `INSERT ... ON CONFLICT DO NOTHING`, and
//! the loser of any race sees zero rows inserted, on PostgreSQL and on SQLite alike.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{audit_from_row, bind_from_row, insert_audit_in};
use super::outbox::{enqueue, NewOutboxItem};
use super::schedules::organization;
use super::{corrupt, Store, StoreError};
use crate::model::audit::AuditEvent;
use crate::model::booking::{Appointment, AppointmentStatus, Patient, Restriction, Transition};
use crate::model::schedule::{Channel, Channels, Slot};
use crate::model::{Oid, PolicyNumber, Snils};

/// Filters of an appointment search.
#[derive(Debug, Clone, Default)]
pub struct AppointmentQuery {
    /// Patient policy number.
    pub policy: Option<PolicyNumber>,
    /// Patient SNILS.
    pub snils: Option<Snils>,
    /// Organization.
    pub org: Option<Oid>,
    /// Status.
    pub status: Option<AppointmentStatus>,
    /// Slot.
    pub slot_id: Option<String>,
}

/// A hold about to be taken: what the request brings; the slot brings the rest.
#[derive(Debug, Clone)]
pub struct NewHold {
    /// The appointment id (UUIDv7).
    pub id: String,
    /// The slot.
    pub slot_id: String,
    /// The patient, as far as known.
    pub patient: Patient,
    /// Booking channel.
    pub channel: Channel,
    /// When the hold lapses (epoch ms).
    pub expires_at: i64,
    /// The API client.
    pub client_id: String,
    /// The appointment this one replaces (reschedule).
    pub replaces: Option<String>,
}

impl NewHold {
    /// The held appointment on `slot`, created `now`.
    pub fn on(&self, slot: Slot, now: i64) -> Appointment {
        Appointment {
            id: self.id.clone(),
            slot_id: Some(slot.id),
            org: slot.org,
            practitioner_id: slot.practitioner_id,
            specialty_code: slot.specialty_code,
            start_at: slot.start_at,
            end_at: slot.end_at,
            source: slot.source,
            patient: self.patient.clone(),
            channel: self.channel,
            status: AppointmentStatus::Held,
            hold_expires_at: Some(self.expires_at),
            external_id: None,
            client_id: self.client_id.clone(),
            reason: String::new(),
            replaces: self.replaces.clone(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// The state of an idempotency key when a create begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// First use: the caller performs the create and then completes or abandons the key.
    Fresh,
    /// A completed create with this key and the same request: its stored result.
    Replay(String),
    /// The same key with a different request.
    Mismatch,
    /// The first request with this key is still running.
    InProgress,
}

const COLUMNS: &str =
    "id, slot_id, org_oid, practitioner_id, specialty_code, start_at, end_at, source, \
     patient_policy, patient_snils, patient_birth, channel, status, hold_expires_at, external_id, \
     client_id, reason, replaces, created_at, updated_at";

/// Completes idempotency key ($1 client, $2 key) with the appointment ($3) it produced.
const COMPLETE_KEY: &str =
    "UPDATE idempotency_keys SET response = $3 WHERE client_id = $1 AND key = $2";

impl Store {
    /// Inserts `a` (status `held`) with the audit row of the insert, in one transaction,
    /// unless the slot has an active appointment (a lapsed hold counts until it is
    /// expired); false when the slot is taken.
    pub async fn insert_hold(
        &self,
        a: &Appointment,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO appointments ({COLUMNS}) VALUES \
             ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20) \
             ON CONFLICT DO NOTHING"
        );
        let mut tx = self.pool().begin().await?;
        if bind_all(sqlx::query(&sql), a)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            != 1
        {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(e) = audit {
            insert_audit_in(
                &mut tx,
                &e.clone().record(&a.org, &a.id).patient(&a.patient),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The fast path of a hold: inserts `a` (its slot fields are taken from the slot) in
    /// one statement if the slot is free, starts after `now`, accepts a channel of
    /// `channel_bit`, no restriction of the organization covers it for `restricted`, and no
    /// active appointment holds it. `None` when any of that fails; the caller then finds out
    /// which rule refused.
    pub async fn hold_if_bookable(
        &self,
        a: &NewHold,
        channels: Channels,
        restricted: Channels,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<Option<Appointment>, StoreError> {
        let insert = format!(
            "INSERT INTO appointments ({COLUMNS}) SELECT $1, s.id, s.org_oid, s.practitioner_id, \
             s.specialty_code, s.start_at, s.end_at, s.source, $3, $4, $5, $6, 'held', $7, NULL, $8, '', \
             $9, $10, $10 FROM slots s WHERE s.id = $2 AND s.status = 'free' AND s.start_at > $10 \
             AND (s.channels & $11) <> 0 AND NOT EXISTS (SELECT 1 FROM booking_restrictions x \
             WHERE x.org_oid = s.org_oid AND x.from_at <= s.start_at AND s.start_at < x.to_at \
             AND (x.channels & $12) <> 0) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
        );
        // PostgreSQL: the audit row rides in the same statement; SQLite: the same transaction.
        let postgres = self.backend() == super::Backend::Postgres;
        let sql = if postgres && audit.is_some() {
            format!(
                "WITH a AS ({insert}), e AS ({}) SELECT * FROM a",
                audit_from_row("a", 13, true)
            )
        } else {
            insert
        };
        let q = sqlx::query(&sql)
            .bind(a.id.clone())
            .bind(a.slot_id.clone())
            .bind(policy(&a.patient))
            .bind(snils(&a.patient))
            .bind(birth(&a.patient))
            .bind(a.channel.as_str())
            .bind(a.expires_at)
            .bind(a.client_id.clone())
            .bind(a.replaces.clone())
            .bind(now)
            .bind(channels.0)
            .bind(restricted.0);
        let audit = match audit {
            Some(e) if postgres => {
                let row = bind_from_row(q, e).fetch_optional(self.pool()).await?;
                return row.as_ref().map(decode).transpose();
            }
            None => {
                let row = q.fetch_optional(self.pool()).await?;
                return row.as_ref().map(decode).transpose();
            }
            Some(e) => e,
        };
        let mut tx = self.pool().begin().await?;
        let Some(held) = q
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(decode)
            .transpose()?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        insert_audit_in(
            &mut tx,
            &audit
                .clone()
                .record(&held.org, &held.id)
                .patient(&held.patient),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(held))
    }

    /// Inserts an appointment that takes no slot (an urgent visit), with its audit row.
    pub async fn insert_unslotted(
        &self,
        a: &Appointment,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        bind_all(
            sqlx::query(&format!(
                "INSERT INTO appointments ({COLUMNS}) VALUES \
                 ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)"
            )),
            a,
        )
        .execute(&mut *tx)
        .await?;
        insert_audit_in(
            &mut tx,
            &audit.clone().record(&a.org, &a.id).patient(&a.patient),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One appointment.
    pub async fn appointment(&self, id: &str) -> Result<Option<Appointment>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM appointments WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Appointments matching the query, newest first, at most `limit`.
    pub async fn search_appointments(
        &self,
        q: &AppointmentQuery,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM appointments WHERE 1=1");
        let mut args = Vec::new();
        for (col, v) in [
            (
                "patient_policy",
                q.policy.as_ref().map(|p| p.digits().to_string()),
            ),
            ("patient_snils", q.snils.as_ref().map(Snils::digits)),
            ("org_oid", q.org.as_ref().map(Oid::to_string)),
            ("status", q.status.map(|s| s.as_str().to_string())),
            ("slot_id", q.slot_id.clone()),
        ] {
            if let Some(v) = v {
                args.push(v);
                sql.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = query.bind(a);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// Moves a live hold's expiry to `until` (while the clinic system is asked to book).
    /// False when the hold is gone or already expired at `now`.
    pub async fn extend_hold(&self, id: &str, until: i64, now: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE appointments SET hold_expires_at = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'held' AND hold_expires_at >= $3",
        )
        .bind(id.to_string())
        .bind(until)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// Sets the patient of a held appointment (a hold may be taken before the patient is
    /// known, as `$hold` allows).
    pub async fn set_hold_patient(
        &self,
        id: &str,
        patient: &Patient,
        now: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE appointments SET patient_policy = $2, patient_snils = $3, patient_birth = $4, \
             updated_at = $5 WHERE id = $1 AND status = 'held'",
        )
        .bind(id.to_string())
        .bind(policy(patient))
        .bind(snils(patient))
        .bind(birth(patient))
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// A held appointment becomes booked with the clinic system's id, and its slot busy;
    /// returns it, or `None` when it is no longer held (it expired meanwhile). One statement
    /// on PostgreSQL.
    pub async fn confirm_booking(
        &self,
        id: &str,
        external_id: &str,
        now: i64,
        audit: Option<&AuditEvent>,
        key: Option<&(String, String)>,
    ) -> Result<Option<Appointment>, StoreError> {
        let update = format!(
            "UPDATE appointments SET status = 'booked', external_id = $2, hold_expires_at = NULL, \
             reason = '', updated_at = $3 WHERE id = $1 AND status = 'held' RETURNING {COLUMNS}"
        );
        let (key_client, key) = key.cloned().unzip();
        if self.backend() == super::Backend::Postgres {
            let audit_cte = match audit {
                Some(_) => format!(", e AS ({})", audit_from_row("a", 6, true)),
                None => String::new(),
            };
            // The request's idempotency key is completed with the booking: a retry after a
            // crash replays it instead of booking again.
            let sql = format!(
                "WITH a AS ({update}), s AS (UPDATE slots SET status = 'busy' \
                 WHERE id = (SELECT slot_id FROM a) AND status = 'free'), \
                 k AS (UPDATE idempotency_keys SET response = (SELECT id FROM a) \
                 WHERE client_id = $4 AND key = $5 AND EXISTS (SELECT 1 FROM a)){audit_cte} SELECT * FROM a"
            );
            let mut q = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(external_id.to_string())
                .bind(now)
                .bind(key_client.clone())
                .bind(key.clone());
            if let Some(e) = audit {
                q = bind_from_row(q, e);
            }
            let row = q.fetch_optional(self.pool()).await?;
            return row.as_ref().map(decode).transpose();
        }
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(&update)
            .bind(id.to_string())
            .bind(external_id.to_string())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(a) = row.as_ref().map(decode).transpose()? else {
            return Ok(None);
        };
        sqlx::query("UPDATE slots SET status = 'busy' WHERE id = $1 AND status = 'free'")
            .bind(a.slot_id.clone().unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        if let (Some(client), Some(key)) = (key_client, key) {
            sqlx::query(COMPLETE_KEY)
                .bind(client)
                .bind(key)
                .bind(a.id.clone())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(e) = audit {
            insert_audit_in(
                &mut tx,
                &e.clone().record(&a.org, &a.id).patient(&a.patient),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(a))
    }

    /// Applies `change` to appointment `id` if it is in one of the transition's `from`
    /// states: its status and reason, its slot's status when the transition names one, and
    /// `effect` enqueued, all in one transaction. Returns the appointment as changed, or
    /// `None` when it was not in a `from` state. The transaction begins with the write, so
    /// SQLite takes its write lock at once (waiting for it) instead of failing a lock
    /// upgrade.
    pub async fn transition_appointment(
        &self,
        id: &str,
        change: &Transition,
        effect: Option<&NewOutboxItem>,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<Option<Appointment>, StoreError> {
        let states = (0..change.from.len())
            .map(|i| format!("${}", i + 5))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "UPDATE appointments SET status = $2, reason = $3, hold_expires_at = NULL, updated_at = $4 \
             WHERE id = $1 AND status IN ({states}) RETURNING {COLUMNS}"
        );
        let mut q = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(change.to.as_str())
            .bind(change.reason.clone())
            .bind(now);
        for f in change.from {
            q = q.bind(f.as_str());
        }
        let mut tx = self.pool().begin().await?;
        let Some(after) = q
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(decode)
            .transpose()?
        else {
            return Ok(None);
        };
        if let (Some(s), Some(slot)) = (change.slot, &after.slot_id) {
            sqlx::query("UPDATE slots SET status = $2 WHERE id = $1 AND status <> 'withdrawn'")
                .bind(slot.clone())
                .bind(s.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(item) = effect {
            enqueue(&mut tx, item, now).await?;
        }
        if let Some(e) = audit {
            let e = e
                .clone()
                .record(&after.org, &after.id)
                .patient(&after.patient);
            insert_audit_in(&mut tx, &e).await?;
        }
        tx.commit().await?;
        Ok(Some(after))
    }

    /// A booked appointment the clinic system lost, booked there again under `external_id`:
    /// its new id is kept (and any earlier attention mark cleared).
    pub async fn rebooked(
        &self,
        id: &str,
        external_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE appointments SET external_id = $2, attention = NULL, updated_at = $3 \
             WHERE id = $1 AND status = 'booked'",
        )
        .bind(id.to_string())
        .bind(external_id.to_string())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Marks a booked appointment for a person's attention with the reason (the clinic lost
    /// it and would not book it again).
    pub async fn mark_attention(
        &self,
        id: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE appointments SET attention = $2, updated_at = $3 WHERE id = $1 AND status = 'booked'",
        )
        .bind(id.to_string())
        .bind(reason.to_string())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Booked appointments marked for a person's attention (of `org` when given), with the
    /// reasons, at most `limit`.
    pub async fn needing_attention(
        &self,
        org: Option<&Oid>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id, attention FROM appointments WHERE attention IS NOT NULL AND status = 'booked' \
             AND ($1 = '' OR org_oid = $1) ORDER BY updated_at LIMIT {}",
            limit.clamp(1, 10_000)
        ))
        .bind(org.map(|o| o.to_string()).unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("attention")?)))
            .collect()
    }

    /// Marks `slot` free if it is busy and no appointment holds or books it.
    pub async fn free_slot_if_unheld(&self, slot: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE slots SET status = 'free' WHERE id = $1 AND status = 'busy' AND NOT EXISTS \
             (SELECT 1 FROM appointments WHERE slot_id = $1 AND status IN ('held', 'booked'))",
        )
        .bind(slot.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Holds that ended before `now` (only on `slot` when given), oldest first, at most
    /// `limit`.
    pub async fn lapsed_holds(
        &self,
        now: i64,
        slot: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM appointments WHERE status = 'held' AND hold_expires_at < $1 \
             AND ($2 IS NULL OR slot_id = $2) ORDER BY hold_expires_at LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(slot.map(str::to_string))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Active (held or booked) appointments on any of `slot_ids`.
    pub async fn active_on_slots(
        &self,
        slot_ids: &[String],
    ) -> Result<Vec<Appointment>, StoreError> {
        let mut out = Vec::new();
        for chunk in slot_ids.chunks(500) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT {COLUMNS} FROM appointments WHERE status IN ('held','booked') AND slot_id IN ({list})"
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for r in q.fetch_all(self.pool()).await? {
                out.push(decode(&r)?);
            }
        }
        Ok(out)
    }

    /// Active appointments whose slot the clinic system withdrew, at most `limit`; only on
    /// the given slots when `slots` is `Some`.
    pub async fn active_on_withdrawn_slots(
        &self,
        slots: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<Appointment>, StoreError> {
        let rows = self
            .active_joined("s.status = 'withdrawn'", "", slots, limit)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Active appointments whose slot the clinic system moved (its times differ from the
    /// appointment's), with the slot's new start and end; at most `limit`, only on the given
    /// slots when `slots` is `Some`.
    pub async fn active_on_moved_slots(
        &self,
        slots: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<(Appointment, i64, i64)>, StoreError> {
        let rows = self
            .active_joined(
                "s.status <> 'withdrawn' AND (s.start_at <> a.start_at OR s.end_at <> a.end_at)",
                ", s.start_at AS slot_start, s.end_at AS slot_end",
                slots,
                limit,
            )
            .await?;
        rows.iter()
            .map(|r| Ok((decode(r)?, r.try_get("slot_start")?, r.try_get("slot_end")?)))
            .collect()
    }

    /// Active appointments joined with their slots where `condition` holds. Given slot ids,
    /// the lookup goes through the one-active-appointment-per-slot index for those slots
    /// only, in chunks; without, every active appointment is examined.
    async fn active_joined(
        &self,
        condition: &str,
        extra: &str,
        slots: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let limit = limit.clamp(1, 10_000) as usize;
        let cols = columns_of("a");
        let sql = |filter: &str| {
            format!(
                "SELECT {cols}{extra} FROM appointments a JOIN slots s ON s.id = a.slot_id \
                 WHERE a.status IN ('held','booked'){filter} AND {condition} ORDER BY a.id LIMIT {limit}"
            )
        };
        let Some(ids) = slots else {
            return Ok(sqlx::query(&sql("")).fetch_all(self.pool()).await?);
        };
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            if out.len() >= limit {
                break;
            }
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let text = sql(&format!(" AND a.slot_id IN ({marks})"));
            let mut q = sqlx::query(&text);
            for id in chunk {
                q = q.bind(id.clone());
            }
            out.extend(q.fetch_all(self.pool()).await?);
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Moves an active appointment that still starts at `was` to the slot's new times,
    /// with reason `SLOT_MOVED`, and queues `effect` in the same transaction. `None` when
    /// it is no longer active or was moved meanwhile.
    pub async fn move_appointment(
        &self,
        id: &str,
        was: i64,
        start: i64,
        end: i64,
        effect: Option<&NewOutboxItem>,
        now: i64,
    ) -> Result<Option<Appointment>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let Some(after) = sqlx::query(&format!(
            "UPDATE appointments SET start_at = $2, end_at = $3, reason = 'SLOT_MOVED', updated_at = $4 \
             WHERE id = $1 AND status IN ('held','booked') AND start_at = $5 RETURNING {COLUMNS}"
        ))
        .bind(id.to_string())
        .bind(start)
        .bind(end)
        .bind(now)
        .bind(was)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(decode)
        .transpose()?
        else {
            return Ok(None);
        };
        if let Some(item) = effect {
            enqueue(&mut tx, item, now).await?;
        }
        tx.commit().await?;
        Ok(Some(after))
    }

    /// Claims an idempotency key for a create by `client` with request digest `hash`.
    pub async fn claim_idempotency_key(
        &self,
        client: &str,
        key: &str,
        hash: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<KeyClaim, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (client_id, key, request_hash, response, created_at) \
             VALUES ($1,$2,$3,'',$4) ON CONFLICT DO NOTHING",
        )
        .bind(client.to_string())
        .bind(key.to_string())
        .bind(hash.to_string())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        if inserted {
            return Ok(KeyClaim::Fresh);
        }
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE client_id = $1 AND key = $2",
        )
        .bind(client.to_string())
        .bind(key.to_string())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            // Abandoned between our insert attempt and this read: the caller may retry.
            return Ok(KeyClaim::InProgress);
        };
        let (stored_hash, response): (String, String) =
            (row.try_get("request_hash")?, row.try_get("response")?);
        Ok(if stored_hash != hash {
            KeyClaim::Mismatch
        } else if response.is_empty() {
            // Its first request died with its process: the first retry after
            // `stale_before` takes the key over (one wins the conditional update).
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET created_at = $3 WHERE client_id = $1 AND key = $2 \
                 AND response = '' AND created_at < $4",
            )
            .bind(client.to_string())
            .bind(key.to_string())
            .bind(now)
            .bind(stale_before)
            .execute(self.pool())
            .await?
            .rows_affected()
                == 1;
            if taken {
                KeyClaim::Fresh
            } else {
                KeyClaim::InProgress
            }
        } else {
            KeyClaim::Replay(response)
        })
    }

    /// Stores the result of the create that claimed the key.
    pub async fn complete_idempotency_key(
        &self,
        client: &str,
        key: &str,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(COMPLETE_KEY)
            .bind(client.to_string())
            .bind(key.to_string())
            .bind(response.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Releases a key whose create failed, so that a retry with it runs again.
    pub async fn abandon_idempotency_key(&self, client: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE client_id = $1 AND key = $2 AND response = ''",
        )
        .bind(client.to_string())
        .bind(key.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Adds a restriction.
    pub async fn add_restriction(&self, r: &Restriction) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO booking_restrictions (id, org_oid, channels, from_at, to_at, reason) \
             VALUES ($1,$2,$3,$4,$5,$6)",
        )
        .bind(r.id.clone())
        .bind(r.org.to_string())
        .bind(r.channels.0)
        .bind(r.from_at)
        .bind(r.to_at)
        .bind(r.reason.clone())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One restriction.
    pub async fn restriction(&self, id: &str) -> Result<Option<Restriction>, StoreError> {
        let row = sqlx::query(
            "SELECT id, org_oid, channels, from_at, to_at, reason FROM booking_restrictions WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(Restriction {
                id: r.try_get("id")?,
                org: organization(&r, "booking_restrictions.org_oid")?,
                channels: Channels(r.try_get("channels")?),
                from_at: r.try_get("from_at")?,
                to_at: r.try_get("to_at")?,
                reason: r.try_get("reason")?,
            })
        })
        .transpose()
    }

    /// Removes a restriction; false when there was none.
    pub async fn delete_restriction(&self, id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM booking_restrictions WHERE id = $1")
                .bind(id.to_string())
                .execute(self.pool())
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Restrictions of an organization (or all) ordered by start.
    pub async fn restrictions(&self, org: Option<&Oid>) -> Result<Vec<Restriction>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, org_oid, channels, from_at, to_at, reason FROM booking_restrictions \
             WHERE ($1 = '' OR org_oid = $1) ORDER BY from_at, id",
        )
        .bind(org.map(Oid::to_string).unwrap_or_default())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Restriction {
                    id: r.try_get("id")?,
                    org: organization(r, "booking_restrictions.org_oid")?,
                    channels: Channels(r.try_get("channels")?),
                    from_at: r.try_get("from_at")?,
                    to_at: r.try_get("to_at")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// A slot and, when `channels` (a mask) is restricted for the slot's time at its
    /// organization, the restriction: one round trip.
    pub async fn slot_for_booking(
        &self,
        slot_id: &str,
        channels: Channels,
    ) -> Result<Option<(Slot, Option<Restriction>)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.org_oid, s.practitioner_id, s.specialty_code, s.start_at, s.end_at, s.status, \
             s.channels, s.source, r.id AS r_id, r.channels AS r_channels, r.from_at AS r_from, \
             r.to_at AS r_to, r.reason AS r_reason FROM slots s LEFT JOIN booking_restrictions r \
             ON r.id = (SELECT x.id FROM booking_restrictions x WHERE x.org_oid = s.org_oid \
             AND x.from_at <= s.start_at AND s.start_at < x.to_at AND (x.channels & $2) <> 0 \
             ORDER BY x.from_at LIMIT 1) WHERE s.id = $1",
        )
        .bind(slot_id.to_string())
        .bind(channels.0)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let slot = super::schedules::decode_slot(&r)?;
        let restriction = match r.try_get::<Option<String>, _>("r_id")? {
            None => None,
            Some(id) => Some(Restriction {
                id,
                org: slot.org.clone(),
                channels: Channels(r.try_get("r_channels")?),
                from_at: r.try_get("r_from")?,
                to_at: r.try_get("r_to")?,
                reason: r.try_get("r_reason")?,
            }),
        };
        Ok(Some((slot, restriction)))
    }
}

pub(super) fn policy(p: &Patient) -> Option<String> {
    p.policy.as_ref().map(|x| x.digits().to_string())
}

pub(super) fn snils(p: &Patient) -> Option<String> {
    p.snils.as_ref().map(Snils::digits)
}

pub(super) fn birth(p: &Patient) -> Option<String> {
    p.birth_date.map(|d| d.to_string())
}

fn bind_all<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    a: &Appointment,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(a.id.clone())
        .bind(a.slot_id.clone().unwrap_or_default())
        .bind(a.org.to_string())
        .bind(a.practitioner_id.clone())
        .bind(a.specialty_code.clone())
        .bind(a.start_at)
        .bind(a.end_at)
        .bind(a.source.clone())
        .bind(policy(&a.patient))
        .bind(snils(&a.patient))
        .bind(birth(&a.patient))
        .bind(a.channel.as_str())
        .bind(a.status.as_str())
        .bind(a.hold_expires_at)
        .bind(a.external_id.clone())
        .bind(a.client_id.clone())
        .bind(a.reason.clone())
        .bind(a.replaces.clone())
        .bind(a.created_at)
        .bind(a.updated_at)
}

/// The appointment columns qualified by a table alias, for joins.
fn columns_of(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An appointment from its row; unknown states, channels or malformed patient identifiers
/// are corruptions.
/// The patient of a row with `patient_policy`, `patient_snils` and `patient_birth`;
/// `what` names the three columns in a corruption error.
pub(super) fn decode_patient(r: &AnyRow, what: [&'static str; 3]) -> Result<Patient, StoreError> {
    let policy: Option<String> = r.try_get("patient_policy")?;
    let snils: Option<String> = r.try_get("patient_snils")?;
    let birth: Option<String> = r.try_get("patient_birth")?;
    Ok(Patient {
        policy: policy
            .map(|p| PolicyNumber::parse(&p).map_err(|_| corrupt(what[0], "(masked)")))
            .transpose()?,
        snils: snils
            .map(|s| Snils::parse(&s).map_err(|_| corrupt(what[1], "(masked)")))
            .transpose()?,
        birth_date: birth
            .map(|b| {
                chrono::NaiveDate::parse_from_str(&b, "%Y-%m-%d").map_err(|_| corrupt(what[2], &b))
            })
            .transpose()?,
    })
}

fn decode(r: &AnyRow) -> Result<Appointment, StoreError> {
    let status: String = r.try_get("status")?;
    let channel: String = r.try_get("channel")?;
    let slot_id: String = r.try_get("slot_id")?;
    let patient = decode_patient(
        r,
        [
            "appointments.patient_policy",
            "appointments.patient_snils",
            "appointments.patient_birth",
        ],
    )?;
    Ok(Appointment {
        id: r.try_get("id")?,
        slot_id: Some(slot_id).filter(|s| !s.is_empty()),
        org: organization(r, "appointments.org_oid")?,
        practitioner_id: r.try_get("practitioner_id")?,
        specialty_code: r.try_get("specialty_code")?,
        start_at: r.try_get("start_at")?,
        end_at: r.try_get("end_at")?,
        source: r.try_get("source")?,
        patient,
        channel: Channel::parse(&channel)
            .ok_or_else(|| corrupt("appointments.channel", &channel))?,
        status: AppointmentStatus::parse(&status)
            .ok_or_else(|| corrupt("appointments.status", &status))?,
        hold_expires_at: r.try_get("hold_expires_at")?,
        external_id: r.try_get("external_id")?,
        client_id: r.try_get("client_id")?,
        reason: r.try_get("reason")?,
        replaces: r.try_get("replaces")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}
