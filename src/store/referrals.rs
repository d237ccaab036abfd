//! Referral rows and their transition history: insert with the first event and its notice,
//! conditional transitions (a referral moves only from the state the caller saw), searches
//! kept to the caller's organizations, and the open referrals whose validity ended.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::appointments::{birth, decode_patient, policy, snils};
use super::outbox::{enqueue, NewOutboxItem};
use super::{corrupt, Store, StoreError};
use crate::model::referral::{
    Referral, ReferralEvent, ReferralKind, ReferralStatus, RemoteDocument, Urgency,
};
use crate::model::{Icd10, Oid, PolicyNumber, Snils};

const COLUMNS: &str = "id, patient_policy, patient_birth, patient_snils, diagnosis, reason, \
    requester_org, requester_snils, profile, target_org, urgency, kind, valid_until, documents, \
    status, status_reason, appointment_id, conclusion_id, client_id, created_at, updated_at, \
    answer_due, escalated_at, video_url, document_kinds, origin_peer, peer, forwarded_at, \
    conclusion";

/// Filters of a referral search; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct ReferralQuery {
    /// Only referrals involving one of these organizations (as requester or target);
    /// `None`: every organization (operators).
    pub visible_to: Option<Vec<Oid>>,
    /// The patient's policy number.
    pub patient_policy: Option<PolicyNumber>,
    /// The patient's SNILS.
    pub patient_snils: Option<Snils>,
    /// The referring organization.
    pub requester: Option<Oid>,
    /// The target organization.
    pub target: Option<Oid>,
    /// State.
    pub status: Option<ReferralStatus>,
    /// Created at or after (epoch ms).
    pub from: Option<i64>,
    /// Created before (epoch ms).
    pub to: Option<i64>,
    /// Only unanswered referrals escalated to the region's operator.
    pub escalated: bool,
}

/// A transition to make: the state it starts from and what it sets.
#[derive(Debug, Clone)]
pub struct Move<'a> {
    /// The state the caller saw.
    pub from: ReferralStatus,
    /// The event recording it (its status is the new state).
    pub event: &'a ReferralEvent,
    /// Sets the appointment (booked), or clears it (`Some(None)`: back to accepted).
    pub appointment_id: Option<Option<&'a str>>,
    /// Sets the conclusion (completed).
    pub conclusion_id: Option<&'a str>,
    /// Sets the video-visit link (accepted).
    pub video_url: Option<&'a str>,
    /// Sets the conclusion that came back from a peer gateway (completed there).
    pub remote_conclusion: Option<&'a RemoteDocument>,
    /// What the move tells others: the organization's notice, the linked peer gateways.
    pub outbox: &'a [NewOutboxItem],
}

impl Store {
    /// Stores a new referral with its first event and what it tells others, in one
    /// transaction; `false` (nothing written) when a referral with its id exists.
    pub async fn insert_referral(
        &self,
        r: &Referral,
        event: &ReferralEvent,
        outbox: &[NewOutboxItem],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let placeholders: Vec<String> = (1..=29).map(|i| format!("${i}")).collect();
        let inserted = sqlx::query(&format!(
            "INSERT INTO referrals ({COLUMNS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
            placeholders.join(",")
        ))
        .bind(r.id.clone())
        .bind(policy(&r.patient))
        .bind(birth(&r.patient))
        .bind(snils(&r.patient))
        .bind(r.diagnosis.to_string())
        .bind(r.reason.clone())
        .bind(r.requester_org.to_string())
        .bind(r.requester_snils.digits())
        .bind(r.profile.clone())
        .bind(r.target_org.to_string())
        .bind(r.urgency.as_str())
        .bind(r.kind.as_str())
        .bind(r.valid_until)
        .bind(r.documents.join(" "))
        .bind(r.status.as_str())
        .bind(r.status_reason.clone())
        .bind(r.appointment_id.clone())
        .bind(r.conclusion_id.clone())
        .bind(r.client_id.clone())
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.answer_due)
        .bind(r.escalated_at)
        .bind(r.video_url.clone())
        .bind(r.document_kinds.join(" "))
        .bind(r.origin_peer.clone())
        .bind(r.peer.clone())
        .bind(r.forwarded_at)
        .bind(r.conclusion.as_ref().map(encode_document))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(false);
        }
        record_move(&mut tx, event, outbox).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sends a patient's request the attending doctor confirmed: its documents, the target's
    /// answer time, and when a peer took it, with the event and what it tells others, in
    /// one transaction; `false` when it is no longer in `from`.
    pub async fn confirm_referral(
        &self,
        r: &Referral,
        from: ReferralStatus,
        event: &ReferralEvent,
        outbox: &[NewOutboxItem],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE referrals SET status = $3, status_reason = $4, updated_at = $5, \
             documents = $6, document_kinds = $7, answer_due = $8, forwarded_at = $9 \
             WHERE id = $1 AND status = $2",
        )
        .bind(r.id.clone())
        .bind(from.as_str())
        .bind(event.status.as_str())
        .bind(event.reason.clone())
        .bind(event.at)
        .bind(r.documents.join(" "))
        .bind(r.document_kinds.join(" "))
        .bind(r.answer_due)
        .bind(r.forwarded_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        record_move(&mut tx, event, outbox).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many referrals are in `status` (the benchmark's check that moves arrived).
    pub async fn count_referrals(&self, status: ReferralStatus) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM referrals WHERE status = $1")
                .bind(status.as_str())
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Records that the peer gateway took a forwarded referral; a forward still queued
    /// for it (`kind`, for peers) is done with.
    pub async fn mark_referral_forwarded(
        &self,
        id: &str,
        at: i64,
        kind: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE referrals SET forwarded_at = $2 WHERE id = $1 AND forwarded_at IS NULL",
        )
        .bind(id.to_string())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE outbox SET status = 'done', updated_at = $2 \
             WHERE aggregate_id = $1 AND kind = $3 AND status = 'pending'",
        )
        .bind(id.to_string())
        .bind(at)
        .bind(kind.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a referral the peer gateway refused before anyone saw it: its row, its
    /// history and what it queued.
    pub async fn remove_refused_referral(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for sql in [
            "DELETE FROM outbox WHERE aggregate_id = $1 AND status = 'pending'",
            "DELETE FROM referral_events WHERE referral_id = $1",
            "DELETE FROM referrals WHERE id = $1",
        ] {
            sqlx::query(sql)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One referral by id.
    pub async fn get_referral(&self, id: &str) -> Result<Option<Referral>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM referrals WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Referrals matching `q`, newest first, at most `limit`.
    pub async fn list_referrals(
        &self,
        q: &ReferralQuery,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM referrals WHERE 1=1");
        let mut texts: Vec<String> = Vec::new();
        let mut ints: Vec<(usize, i64)> = Vec::new();
        let cond = |sql: &mut String, texts: &mut Vec<String>, c: &str, v: String| {
            texts.push(v);
            sql.push_str(&format!(" AND {c} ${}", texts.len()));
        };
        if let Some(orgs) = &q.visible_to {
            if orgs.is_empty() {
                return Ok(Vec::new());
            }
            let mut list = Vec::new();
            for o in orgs {
                texts.push(o.to_string());
                list.push(format!("${}", texts.len()));
            }
            let list = list.join(",");
            sql.push_str(&format!(
                " AND (requester_org IN ({list}) OR target_org IN ({list}))"
            ));
        }
        if let Some(v) = &q.patient_policy {
            cond(
                &mut sql,
                &mut texts,
                "patient_policy =",
                v.digits().to_string(),
            );
        }
        if let Some(v) = &q.patient_snils {
            cond(&mut sql, &mut texts, "patient_snils =", v.digits());
        }
        if let Some(v) = &q.requester {
            cond(&mut sql, &mut texts, "requester_org =", v.to_string());
        }
        if let Some(v) = &q.target {
            cond(&mut sql, &mut texts, "target_org =", v.to_string());
        }
        if let Some(v) = q.status {
            cond(&mut sql, &mut texts, "status =", v.as_str().to_string());
        }
        if q.escalated {
            sql.push_str(" AND status = 'requested' AND escalated_at IS NOT NULL");
        }
        // Integer bounds come after the text parameters.
        for (column, bound) in [("created_at >=", q.from), ("created_at <", q.to)] {
            if let Some(v) = bound {
                ints.push((texts.len() + ints.len() + 1, v));
                sql.push_str(&format!(" AND {column} ${}", texts.len() + ints.len()));
            }
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for t in texts {
            query = query.bind(t);
        }
        for (_, v) in ints {
            query = query.bind(v);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// Moves a referral from `m.from` to `m.event.status`, records the event and queues the
    /// notice, in one transaction; `false` (nothing written) when it is no longer in
    /// `m.from`.
    pub async fn transition_referral(&self, id: &str, m: &Move<'_>) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        // Placeholders numbered as bound: the optional columns come last.
        let mut sql =
            String::from("UPDATE referrals SET status = $3, status_reason = $4, updated_at = $5");
        let mut n = 5;
        for (set, column) in [
            (m.appointment_id.is_some(), "appointment_id"),
            (m.conclusion_id.is_some(), "conclusion_id"),
            (m.video_url.is_some(), "video_url"),
            (m.remote_conclusion.is_some(), "conclusion"),
        ] {
            if set {
                n += 1;
                sql.push_str(&format!(", {column} = ${n}"));
            }
        }
        sql.push_str(" WHERE id = $1 AND status = $2");
        let mut q = sqlx::query(&sql)
            .bind(id.to_string())
            .bind(m.from.as_str())
            .bind(m.event.status.as_str())
            .bind(m.event.reason.clone())
            .bind(m.event.at);
        if let Some(a) = m.appointment_id {
            q = q.bind(a.map(str::to_string));
        }
        if let Some(c) = m.conclusion_id {
            q = q.bind(c.to_string());
        }
        if let Some(v) = m.video_url {
            q = q.bind(v.to_string());
        }
        if let Some(d) = m.remote_conclusion {
            q = q.bind(encode_document(d));
        }
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        record_move(&mut tx, m.event, m.outbox).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A referral's transitions, oldest first.
    pub async fn referral_events(&self, id: &str) -> Result<Vec<ReferralEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT referral_id, at, status, client_id, reason FROM referral_events \
             WHERE referral_id = $1 ORDER BY at, id",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(ReferralEvent {
                    referral_id: r.try_get("referral_id")?,
                    at: r.try_get("at")?,
                    status: ReferralStatus::parse(&status)
                        .ok_or_else(|| corrupt("referral_events.status", &status))?,
                    client_id: r.try_get("client_id")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Requested referrals whose answer is overdue and that were not escalated yet, at
    /// most `limit`.
    pub async fn unanswered_referrals(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        self.referrals_where(
            "status = 'requested' AND answer_due < $1 AND escalated_at IS NULL \
             AND peer IS NULL ORDER BY answer_due",
            Some(now),
            limit,
        )
        .await
    }

    /// Marks a still unanswered referral escalated, records the event and queues the
    /// operator's notice, in one transaction; `false` when it was answered or escalated
    /// meanwhile.
    pub async fn escalate_referral(
        &self,
        event: &ReferralEvent,
        notice: Option<&NewOutboxItem>,
    ) -> Result<bool, StoreError> {
        self.stamp_referral(
            "UPDATE referrals SET escalated_at = $2, updated_at = $2 \
             WHERE id = $1 AND status = 'requested' AND escalated_at IS NULL",
            event,
            notice,
        )
        .await
    }

    /// One conditional stamp of a referral (`$1` its id, `$2` the event's time) recorded
    /// with its event and notice in one transaction; `false` when the condition no longer
    /// held.
    async fn stamp_referral(
        &self,
        sql: &str,
        event: &ReferralEvent,
        notice: Option<&NewOutboxItem>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(sql)
            .bind(event.referral_id.clone())
            .bind(event.at)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        record_move(&mut tx, event, notice.map_or(&[], std::slice::from_ref)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Booked referrals whose appointment no longer stands (cancelled, lapsed, refused,
    /// withdrawn), at most `limit`.
    pub async fn referrals_with_ended_bookings(
        &self,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        self.referrals_where(
            "status = 'booked' AND peer IS NULL AND appointment_id IN (SELECT id FROM appointments \
             WHERE status NOT IN ('held', 'booked')) ORDER BY updated_at",
            None,
            limit,
        )
        .await
    }

    /// Accepted referrals, not booked and not yet reminded of, whose validity ends in
    /// `[now, until)`, at most `limit`.
    pub async fn expiring_unbooked(
        &self,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM referrals WHERE status = 'accepted' AND peer IS NULL \
             AND reminded_at IS NULL AND valid_until >= $1 AND valid_until < $2 \
             ORDER BY valid_until LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(until)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Marks an accepted referral reminded of, records the event and queues the reminder,
    /// in one transaction; `false` when it moved or was reminded of meanwhile.
    pub async fn remind_referral(
        &self,
        event: &ReferralEvent,
        notice: Option<&NewOutboxItem>,
    ) -> Result<bool, StoreError> {
        self.stamp_referral(
            "UPDATE referrals SET reminded_at = $2, updated_at = $2 \
             WHERE id = $1 AND status = 'accepted' AND reminded_at IS NULL",
            event,
            notice,
        )
        .await
    }

    /// Open referrals (not booked) whose validity ended before `now`, at most `limit`.
    pub async fn lapsed_referrals(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        self.referrals_where(
            "status IN ('proposed', 'requested', 'accepted') AND valid_until < $1 \
             AND (peer IS NULL OR status = 'proposed') ORDER BY valid_until",
            Some(now),
            limit,
        )
        .await
    }

    /// Referrals matching `condition` (with `$1` bound to `now` when given), at most
    /// `limit`: the batches of the upkeep job.
    async fn referrals_where(
        &self,
        condition: &str,
        now: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Referral>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM referrals WHERE {condition} LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let mut q = sqlx::query(&sql);
        if let Some(now) = now {
            q = q.bind(now);
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }
}

/// Records a move's event and queues what it tells others, in the move's transaction.
async fn record_move(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &ReferralEvent,
    outbox: &[NewOutboxItem],
) -> Result<(), StoreError> {
    insert_event(tx, event).await?;
    for n in outbox {
        enqueue(tx, n, event.at).await?;
    }
    Ok(())
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &ReferralEvent,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO referral_events (id, referral_id, at, status, client_id, reason) \
         VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(e.referral_id.clone())
    .bind(e.at)
    .bind(e.status.as_str())
    .bind(e.client_id.clone())
    .bind(e.reason.clone())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn decode(r: &AnyRow) -> Result<Referral, StoreError> {
    let text = |c: &str| -> Result<String, StoreError> { Ok(r.try_get::<String, _>(c)?) };
    let oid = |c: &str, what: &'static str| -> Result<Oid, StoreError> {
        let raw = text(c)?;
        Oid::parse(&raw).map_err(|_| corrupt(what, &raw))
    };
    let (diagnosis, snils_raw, urgency, kind, status, documents) = (
        text("diagnosis")?,
        text("requester_snils")?,
        text("urgency")?,
        text("kind")?,
        text("status")?,
        text("documents")?,
    );
    Ok(Referral {
        id: text("id")?,
        patient: decode_patient(
            r,
            [
                "referrals.patient_policy",
                "referrals.patient_snils",
                "referrals.patient_birth",
            ],
        )?,
        diagnosis: Icd10::parse(&diagnosis)
            .map_err(|_| corrupt("referrals.diagnosis", &diagnosis))?,
        reason: text("reason")?,
        requester_org: oid("requester_org", "referrals.requester_org")?,
        requester_snils: Snils::parse(&snils_raw)
            .map_err(|_| corrupt("referrals.requester_snils", "(masked)"))?,
        profile: text("profile")?,
        target_org: oid("target_org", "referrals.target_org")?,
        urgency: Urgency::parse(&urgency).ok_or_else(|| corrupt("referrals.urgency", &urgency))?,
        kind: ReferralKind::parse(&kind).ok_or_else(|| corrupt("referrals.kind", &kind))?,
        valid_until: r.try_get("valid_until")?,
        documents: documents.split_whitespace().map(str::to_string).collect(),
        status: ReferralStatus::parse(&status)
            .ok_or_else(|| corrupt("referrals.status", &status))?,
        status_reason: r.try_get("status_reason")?,
        appointment_id: r.try_get("appointment_id")?,
        conclusion_id: r.try_get("conclusion_id")?,
        client_id: text("client_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        answer_due: r.try_get("answer_due")?,
        escalated_at: r.try_get("escalated_at")?,
        video_url: r.try_get("video_url")?,
        document_kinds: text("document_kinds")?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        origin_peer: r.try_get("origin_peer")?,
        peer: r.try_get("peer")?,
        forwarded_at: r.try_get("forwarded_at")?,
        conclusion: r
            .try_get::<Option<String>, _>("conclusion")?
            .map(|raw| decode_document(&raw))
            .transpose()?,
    })
}

/// A peer's conclusion as stored: JSON with the content in base64.
fn encode_document(d: &RemoteDocument) -> String {
    use base64::Engine;
    serde_json::json!({
        "id": d.id,
        "kind": d.kind,
        "registry_number": d.registry_number,
        "content_type": d.content_type,
        "content": base64::engine::general_purpose::STANDARD.encode(&d.content),
    })
    .to_string()
}

fn decode_document(raw: &str) -> Result<RemoteDocument, StoreError> {
    use base64::Engine;
    let bad = || corrupt("referrals.conclusion", "(not a stored document)");
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|_| bad())?;
    let text = |k: &str| v[k].as_str().map(str::to_string).ok_or_else(bad);
    Ok(RemoteDocument {
        id: text("id")?,
        kind: text("kind")?,
        registry_number: v["registry_number"].as_str().map(str::to_string),
        content_type: text("content_type")?,
        content: base64::engine::general_purpose::STANDARD
            .decode(text("content")?)
            .map_err(|_| bad())?,
    })
}
