//! The audit trail's rows: one per access to personal data, inserted on its own (reads,
//! refusals) or inside the transaction (or statement) of the change it records.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::schedules::organization;
use super::{corrupt, Store, StoreError};
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
use crate::model::{Oid, PolicyNumber, Snils};

/// The audit columns, in the order [`bind_audit`] binds them.
pub(crate) const AUDIT_COLUMNS: &str = "id, at, request_id, client_id, org_oid, action, entity, \
    entity_id, patient_snils, patient_policy, outcome, detail";

/// Filters of an audit search; all optional.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The patient's SNILS.
    pub snils: Option<Snils>,
    /// The patient's policy number.
    pub policy: Option<PolicyNumber>,
    /// The client.
    pub client_id: Option<String>,
    /// The request.
    pub request_id: Option<String>,
    /// At or after (epoch ms).
    pub from: Option<i64>,
    /// Before (epoch ms).
    pub to: Option<i64>,
    /// Only events of these organizations, when given.
    pub orgs: Option<Vec<Oid>>,
}

/// An `INSERT` of the audit row of a change to the row `alias` (an appointment or a
/// document: its id, organization and patient come from that row), parameters from `$n`:
/// id, at, request id, client, action, entity, outcome, detail.
pub(crate) fn audit_from_row(alias: &str, n: usize, has_policy: bool) -> String {
    let policy = if has_policy {
        format!("{alias}.patient_policy")
    } else {
        "NULL".into()
    };
    format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) SELECT ${n}, ${}, ${}, ${}, {alias}.org_oid, ${}, ${}, \
         {alias}.id, {alias}.patient_snils, {policy}, ${}, ${} FROM {alias}",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        n + 6,
        n + 7
    )
}

/// Binds what [`audit_from_row`] takes from the event (8 parameters).
pub(crate) fn bind_from_row<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    e: &AuditEvent,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(e.id.clone())
        .bind(e.at)
        .bind(e.request_id.clone())
        .bind(e.client_id.clone())
        .bind(e.action.as_str())
        .bind(e.entity.as_str())
        .bind(outcome(e))
        .bind(e.detail.clone())
}

fn outcome(e: &AuditEvent) -> &'static str {
    if e.success {
        "success"
    } else {
        "refused"
    }
}

/// Inserts `e` inside the caller's transaction.
pub(crate) async fn insert_audit_in(
    tx: &mut Transaction<'_, Any>,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
    );
    bind_audit(sqlx::query(&sql), e).execute(&mut **tx).await?;
    Ok(())
}

fn bind_audit<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    e: &AuditEvent,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    q.bind(e.id.clone())
        .bind(e.at)
        .bind(e.request_id.clone())
        .bind(e.client_id.clone())
        .bind(e.org.as_ref().map(Oid::to_string))
        .bind(e.action.as_str())
        .bind(e.entity.as_str())
        .bind(e.entity_id.clone())
        .bind(e.snils.as_ref().map(Snils::digits))
        .bind(e.policy.as_ref().map(|p| p.digits().to_string()))
        .bind(outcome(e))
        .bind(e.detail.clone())
}

impl Store {
    /// Inserts one audit event on its own (a read, a refusal).
    pub async fn insert_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        );
        bind_audit(sqlx::query(&sql), e)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Audit events matching `q`, newest first, at most `limit`.
    pub async fn audit_events(
        &self,
        q: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        for (col, v) in [
            ("patient_snils", q.snils.as_ref().map(Snils::digits)),
            (
                "patient_policy",
                q.policy.as_ref().map(|p| p.digits().to_string()),
            ),
            ("client_id", q.client_id.clone()),
            ("request_id", q.request_id.clone()),
        ] {
            if let Some(v) = v {
                args.push(v);
                sql.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        if let Some(orgs) = &q.orgs {
            if orgs.is_empty() {
                return Ok(Vec::new());
            }
            let marks: Vec<String> = orgs
                .iter()
                .map(|o| {
                    args.push(o.to_string());
                    format!("${}", args.len())
                })
                .collect();
            sql.push_str(&format!(" AND org_oid IN ({})", marks.join(",")));
        }
        let n = args.len();
        if q.from.is_some() {
            sql.push_str(&format!(" AND at >= ${}", n + 1));
        }
        if q.to.is_some() {
            let i = n + 1 + usize::from(q.from.is_some());
            sql.push_str(&format!(" AND at < ${i}"));
        }
        sql.push_str(&format!(
            " ORDER BY at DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        ));
        let mut query = sqlx::query(&sql);
        for a in args {
            query = query.bind(a);
        }
        for t in [q.from, q.to].into_iter().flatten() {
            query = query.bind(t);
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }
}

fn decode(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    let action: String = r.try_get("action")?;
    let entity: String = r.try_get("entity")?;
    let outcome: String = r.try_get("outcome")?;
    let org: Option<String> = r.try_get("org_oid")?;
    let snils: Option<String> = r.try_get("patient_snils")?;
    let policy: Option<String> = r.try_get("patient_policy")?;
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        request_id: r.try_get("request_id")?,
        client_id: r.try_get("client_id")?,
        org: match org {
            Some(_) => Some(organization(r, "audit_events.org_oid")?),
            None => None,
        },
        action: AuditAction::parse(&action)
            .ok_or_else(|| corrupt("audit_events.action", &action))?,
        entity: AuditEntity::parse(&entity)
            .ok_or_else(|| corrupt("audit_events.entity", &entity))?,
        entity_id: r.try_get("entity_id")?,
        snils: snils
            .map(|s| {
                Snils::parse(&s).map_err(|_| corrupt("audit_events.patient_snils", "(masked)"))
            })
            .transpose()?,
        policy: policy
            .map(|p| {
                PolicyNumber::parse(&p)
                    .map_err(|_| corrupt("audit_events.patient_policy", "(masked)"))
            })
            .transpose()?,
        success: match outcome.as_str() {
            "success" => true,
            "refused" => false,
            other => return Err(corrupt("audit_events.outcome", other)),
        },
        detail: r.try_get("detail")?,
    })
}
