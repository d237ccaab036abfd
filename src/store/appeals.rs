//! Appeals and their events: intake (once per channel id), routing and rerouting,
//! extension, escalation and answer, each a conditional change recorded with its event and
//! the outbox items it causes in one transaction; searches and the rows statistics count.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::outbox::{enqueue, NewOutboxItem};
use super::{corrupt, Store, StoreError};
use crate::model::appeal::{
    Answer, Appeal, AppealChannel, AppealEvent, AppealKind, AppealStatus, AppealTopic,
};
use crate::model::{Oid, PolicyNumber, Snils};

const COLUMNS: &str = "id, channel, external_id, kind, district, org_oid, topic, body, contact, \
    snils, policy, status, received_at, due_at, extended_at, extension_reason, escalated_at, \
    answered_at, answer, answered_by, linked_kind, linked_id, client_id, updated_at";

/// Filters of an appeal search.
#[derive(Debug, Clone, Default)]
pub struct AppealQuery {
    /// Only these organizations' appeals (`None`: every appeal, operators).
    pub orgs: Option<Vec<Oid>>,
    /// State.
    pub status: Option<AppealStatus>,
    /// District.
    pub district: Option<String>,
    /// Not answered and due before this instant (epoch ms).
    pub overdue_at: Option<i64>,
    /// Received at or after (epoch ms).
    pub from: Option<i64>,
    /// Received before (epoch ms).
    pub to: Option<i64>,
}

/// What statistics count of one appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppealFacts {
    /// District.
    pub district: String,
    /// The organization responsible (empty when unrouted).
    pub org: String,
    /// Topic.
    pub topic: AppealTopic,
    /// Received (epoch ms).
    pub received_at: i64,
    /// Due (epoch ms).
    pub due_at: i64,
    /// Answered (epoch ms).
    pub answered_at: Option<i64>,
}

impl Store {
    /// Stores a new appeal with its first events and outbox items; when its channel id was
    /// taken in before, nothing is written and the stored appeal is returned (`false`).
    pub async fn insert_appeal(
        &self,
        a: &Appeal,
        events: &[AppealEvent],
        outbox: &[NewOutboxItem],
    ) -> Result<(Appeal, bool), StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(&format!(
            "INSERT INTO appeals ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,\
             $15,$16,$17,$18,$19,$20,$21,$22,$23,$24) ON CONFLICT (channel, external_id) DO NOTHING"
        ))
        .bind(a.id.clone())
        .bind(a.channel.as_str())
        .bind(a.external_id.clone())
        .bind(a.kind.as_str())
        .bind(a.district.clone())
        .bind(a.org.as_ref().map(Oid::to_string))
        .bind(a.topic.as_str())
        .bind(a.text.clone())
        .bind(a.contact.clone())
        .bind(a.snils.as_ref().map(Snils::digits))
        .bind(a.policy.as_ref().map(|p| p.digits().to_string()))
        .bind(a.status.as_str())
        .bind(a.received_at)
        .bind(a.due_at)
        .bind(a.extension.as_ref().map(|e| e.0))
        .bind(a.extension.as_ref().map(|e| e.1.clone()))
        .bind(a.escalated_at)
        .bind(a.answer.as_ref().map(|x| x.at))
        .bind(a.answer.as_ref().map(|x| x.text.clone()))
        .bind(a.answer.as_ref().map(|x| x.by.clone()))
        .bind(a.linked.as_ref().map(|l| l.0.clone()))
        .bind(a.linked.as_ref().map(|l| l.1.clone()))
        .bind(a.client_id.clone())
        .bind(a.updated_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            let sql =
                format!("SELECT {COLUMNS} FROM appeals WHERE channel = $1 AND external_id = $2");
            let row = sqlx::query(&sql)
                .bind(a.channel.as_str())
                .bind(a.external_id.clone())
                .fetch_one(self.pool())
                .await?;
            return Ok((decode(&row)?, false));
        }
        record(&mut tx, events, outbox, a.updated_at).await?;
        tx.commit().await?;
        Ok((a.clone(), true))
    }

    /// The appeal with this id.
    pub async fn appeal(&self, id: &str) -> Result<Option<Appeal>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM appeals WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// What happened to an appeal, oldest first.
    pub async fn appeal_events(&self, id: &str) -> Result<Vec<AppealEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, appeal_id, at, action, org_oid, detail, client_id FROM appeal_events \
             WHERE appeal_id = $1 ORDER BY at, id",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AppealEvent {
                    id: r.try_get("id")?,
                    appeal_id: r.try_get("appeal_id")?,
                    at: r.try_get("at")?,
                    action: r.try_get("action")?,
                    org: r.try_get("org_oid")?,
                    detail: r.try_get("detail")?,
                    client_id: r.try_get("client_id")?,
                })
            })
            .collect()
    }

    /// Appeals matching `q`, newest first, at most `limit`.
    pub async fn search_appeals(
        &self,
        q: &AppealQuery,
        limit: u32,
    ) -> Result<Vec<Appeal>, StoreError> {
        enum A {
            T(String),
            I(i64),
        }
        let mut sql = format!("SELECT {COLUMNS} FROM appeals WHERE 1=1");
        let mut args = Vec::new();
        let mut push = |sql: &mut String, cond: &str, a: A| {
            args.push(a);
            sql.push_str(&cond.replace('?', &format!("${}", args.len())));
        };
        if let Some(orgs) = &q.orgs {
            if orgs.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND org_oid IN (");
            for (i, o) in orgs.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                push(&mut sql, "?", A::T(o.to_string()));
            }
            sql.push(')');
        }
        if let Some(s) = q.status {
            push(&mut sql, " AND status = ?", A::T(s.as_str().into()));
        }
        if let Some(d) = &q.district {
            push(&mut sql, " AND district = ?", A::T(d.clone()));
        }
        if let Some(at) = q.overdue_at {
            push(
                &mut sql,
                " AND status <> 'answered' AND due_at <= ?",
                A::I(at),
            );
        }
        if let Some(f) = q.from {
            push(&mut sql, " AND received_at >= ?", A::I(f));
        }
        if let Some(t) = q.to {
            push(&mut sql, " AND received_at < ?", A::I(t));
        }
        sql.push_str(&format!(
            " ORDER BY received_at DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                A::T(t) => query.bind(t),
                A::I(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// Routes or reroutes an appeal not yet answered to `org`, with its event; `false` when
    /// it was answered meanwhile.
    pub async fn route_appeal(
        &self,
        id: &str,
        org: &Oid,
        event: &AppealEvent,
    ) -> Result<bool, StoreError> {
        self.change_appeal(
            "UPDATE appeals SET org_oid = $3, status = 'open', updated_at = $2 \
             WHERE id = $1 AND status <> 'answered'",
            id,
            &[Arg::T(org.to_string())],
            event,
            &[],
        )
        .await
    }

    /// Extends a general appeal's deadline once, to `due`, with the reason; `false` when it
    /// is answered, not general, or was extended before.
    pub async fn extend_appeal(
        &self,
        id: &str,
        due: i64,
        reason: &str,
        event: &AppealEvent,
    ) -> Result<bool, StoreError> {
        self.change_appeal(
            "UPDATE appeals SET due_at = $3, extended_at = $2, extension_reason = $4, \
             updated_at = $2 WHERE id = $1 AND status <> 'answered' AND kind = 'general' \
             AND extended_at IS NULL",
            id,
            &[Arg::I(due), Arg::T(reason.to_string())],
            event,
            &[],
        )
        .await
    }

    /// Records an appeal's answer and queues its return to the channel; `false` when it was
    /// answered meanwhile (or is not routed).
    pub async fn answer_appeal(
        &self,
        id: &str,
        answer: &Answer,
        event: &AppealEvent,
        reply: &NewOutboxItem,
    ) -> Result<bool, StoreError> {
        self.change_appeal(
            "UPDATE appeals SET status = 'answered', answered_at = $2, answer = $3, answered_by = $4, \
             updated_at = $2 WHERE id = $1 AND status = 'open'",
            id,
            &[Arg::T(answer.text.clone()), Arg::T(answer.by.clone())],
            event,
            std::slice::from_ref(reply),
        )
        .await
    }

    /// Marks an overdue appeal escalated and queues the operator's notice; `false` when it
    /// was answered or escalated meanwhile.
    pub async fn escalate_appeal(
        &self,
        id: &str,
        event: &AppealEvent,
        notice: Option<&NewOutboxItem>,
    ) -> Result<bool, StoreError> {
        self.change_appeal(
            "UPDATE appeals SET escalated_at = $2, updated_at = $2 \
             WHERE id = $1 AND status <> 'answered' AND escalated_at IS NULL",
            id,
            &[],
            event,
            notice.map_or(&[], std::slice::from_ref),
        )
        .await
    }

    /// Links an appeal to the appointment or referral it concerns.
    pub async fn link_appeal(&self, id: &str, kind: &str, target: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE appeals SET linked_kind = $2, linked_id = $3 WHERE id = $1")
            .bind(id.to_string())
            .bind(kind.to_string())
            .bind(target.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Appeals not answered whose deadline passed before `now` and not yet escalated, most
    /// overdue first, at most `limit`.
    pub async fn overdue_appeals(&self, now: i64, limit: u32) -> Result<Vec<Appeal>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM appeals WHERE status <> 'answered' AND due_at <= $1 \
             AND escalated_at IS NULL ORDER BY due_at LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let rows = sqlx::query(&sql).bind(now).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// What statistics count of the appeals received in `[from, to)` (of `orgs` when
    /// given), at most `limit`.
    pub async fn appeal_facts(
        &self,
        from: i64,
        to: i64,
        orgs: Option<&[Oid]>,
        limit: u32,
    ) -> Result<Vec<AppealFacts>, StoreError> {
        let mut sql = String::from(
            "SELECT district, COALESCE(org_oid, '') AS org, topic, received_at, due_at, answered_at \
             FROM appeals WHERE received_at >= $1 AND received_at < $2",
        );
        if let Some(orgs) = orgs {
            if orgs.is_empty() {
                return Ok(Vec::new());
            }
            let marks = (0..orgs.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(",");
            sql.push_str(&format!(" AND org_oid IN ({marks})"));
        }
        sql.push_str(&format!(" ORDER BY received_at LIMIT {limit}"));
        let mut q = sqlx::query(&sql).bind(from).bind(to);
        for o in orgs.unwrap_or(&[]) {
            q = q.bind(o.to_string());
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let topic: String = r.try_get("topic")?;
                Ok(AppealFacts {
                    district: r.try_get("district")?,
                    org: r.try_get("org")?,
                    topic: AppealTopic::parse(&topic)
                        .ok_or_else(|| corrupt("appeals.topic", &topic))?,
                    received_at: r.try_get("received_at")?,
                    due_at: r.try_get("due_at")?,
                    answered_at: r.try_get("answered_at")?,
                })
            })
            .collect()
    }

    /// One conditional change of an appeal (`$1` its id, `$2` the event's time, `args`
    /// from `$3` on), recorded with its event and outbox items.
    async fn change_appeal(
        &self,
        sql: &str,
        id: &str,
        args: &[Arg],
        event: &AppealEvent,
        outbox: &[NewOutboxItem],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut q = sqlx::query(sql).bind(id.to_string()).bind(event.at);
        for a in args {
            q = match a {
                Arg::T(t) => q.bind(t.clone()),
                Arg::I(i) => q.bind(*i),
            };
        }
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        record(&mut tx, std::slice::from_ref(event), outbox, event.at).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A bound value of a change.
enum Arg {
    T(String),
    I(i64),
}

/// Records events and queues outbox items in the change's transaction.
async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    events: &[AppealEvent],
    outbox: &[NewOutboxItem],
    now: i64,
) -> Result<(), StoreError> {
    for e in events {
        sqlx::query(
            "INSERT INTO appeal_events (id, appeal_id, at, action, org_oid, detail, client_id) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(e.id.clone())
        .bind(e.appeal_id.clone())
        .bind(e.at)
        .bind(e.action.clone())
        .bind(e.org.clone())
        .bind(e.detail.clone())
        .bind(e.client_id.clone())
        .execute(&mut **tx)
        .await?;
    }
    for item in outbox {
        enqueue(tx, item, now).await?;
    }
    Ok(())
}

fn decode(r: &AnyRow) -> Result<Appeal, StoreError> {
    let text = |c: &str| -> Result<String, StoreError> { Ok(r.try_get::<String, _>(c)?) };
    let channel = text("channel")?;
    let kind = text("kind")?;
    let topic = text("topic")?;
    let status = text("status")?;
    let org: Option<String> = r.try_get("org_oid")?;
    let snils: Option<String> = r.try_get("snils")?;
    let policy: Option<String> = r.try_get("policy")?;
    let answered_at: Option<i64> = r.try_get("answered_at")?;
    let extended_at: Option<i64> = r.try_get("extended_at")?;
    let linked_kind: Option<String> = r.try_get("linked_kind")?;
    let linked_id: Option<String> = r.try_get("linked_id")?;
    Ok(Appeal {
        id: text("id")?,
        channel: AppealChannel::parse(&channel)
            .ok_or_else(|| corrupt("appeals.channel", &channel))?,
        external_id: text("external_id")?,
        kind: AppealKind::parse(&kind).ok_or_else(|| corrupt("appeals.kind", &kind))?,
        district: text("district")?,
        org: org
            .map(|o| Oid::parse(&o).map_err(|_| corrupt("appeals.org_oid", &o)))
            .transpose()?,
        topic: AppealTopic::parse(&topic).ok_or_else(|| corrupt("appeals.topic", &topic))?,
        text: text("body")?,
        contact: text("contact")?,
        snils: snils
            .map(|s| Snils::parse(&s).map_err(|_| corrupt("appeals.snils", "?")))
            .transpose()?,
        policy: policy
            .map(|p| PolicyNumber::parse(&p).map_err(|_| corrupt("appeals.policy", "?")))
            .transpose()?,
        status: AppealStatus::parse(&status).ok_or_else(|| corrupt("appeals.status", &status))?,
        received_at: r.try_get("received_at")?,
        due_at: r.try_get("due_at")?,
        extension: match extended_at {
            Some(at) => Some((
                at,
                r.try_get::<Option<String>, _>("extension_reason")?
                    .unwrap_or_default(),
            )),
            None => None,
        },
        escalated_at: r.try_get("escalated_at")?,
        answer: match answered_at {
            Some(at) => Some(Answer {
                at,
                text: r
                    .try_get::<Option<String>, _>("answer")?
                    .unwrap_or_default(),
                by: r
                    .try_get::<Option<String>, _>("answered_by")?
                    .unwrap_or_default(),
            }),
            None => None,
        },
        linked: linked_kind.zip(linked_id),
        client_id: text("client_id")?,
        updated_at: r.try_get("updated_at")?,
    })
}
