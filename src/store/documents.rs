//! Stored medical documents, their status history, and the registration outbox entry that
//! is written in the same transaction as the document.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{insert_audit_in, AUDIT_COLUMNS};
use super::outbox::{enqueue, NewOutboxItem};
use super::{corrupt, Backend, Store, StoreError};
use crate::model::audit::AuditEvent;
use crate::model::document::{Document, DocumentStatus};
use crate::model::remd::ErrorClass;
use crate::model::time::now_ms;
use crate::model::{Oid, Snils};

/// What is written with a new document: its registration, and the audit row of its intake
/// (the document's id, organization and patient are taken from the document itself).
#[derive(Debug, Clone)]
pub struct Intake {
    /// The registration queued in the outbox.
    pub registration: NewOutboxItem,
    /// The intake's audit event.
    pub audit: AuditEvent,
}

/// One entry of a document's history.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentEvent {
    /// When (epoch ms).
    pub at: i64,
    /// Status entered.
    pub status: String,
    /// What happened.
    pub detail: String,
}

/// Outcome of an insert: new, or the earlier document with the same UID.
#[derive(Debug)]
pub enum Inserted {
    /// Stored and queued.
    New,
    /// A document with this UID already exists.
    Existing(Box<Document>),
}

/// Filters for listing documents.
#[derive(Debug, Default, Clone)]
pub struct DocumentFilter {
    /// Exact status.
    pub status: Option<DocumentStatus>,
    /// Organization.
    pub org: Option<Oid>,
    /// Only documents of these organizations (a client's), when given.
    pub orgs: Option<Vec<Oid>>,
    /// Kind code.
    pub kind_code: Option<String>,
    /// Error class.
    pub error_class: Option<ErrorClass>,
    /// Keyset cursor: ids greater than this.
    pub after_id: Option<String>,
}

const COLUMNS: &str = "id, org_oid, kind_code, kind_version, patient_snils, author_snils, \
    submitted_by, request_hash, content, content_type, sha256, streebog256, org_signature, \
    doctor_signature, signed_by_gateway, status, emdr_id, registered_at, message_id, \
    error_class, error_codes, error_message, rerun_of, created_at, updated_at";

/// Documents refused for good or out of retries of one organization, status and error
/// class, and how many.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetters {
    /// The organization.
    pub org: String,
    /// `rejected` or `dead-lettered`.
    pub status: String,
    /// Who must act (`data`: the clinic, `gateway`: the operator, ...); empty when unknown.
    pub error_class: String,
    /// How many.
    pub count: i64,
}

impl Store {
    /// Rejected and dead-lettered documents counted by organization, status and error class.
    pub async fn dead_letter_summary(&self) -> Result<Vec<DeadLetters>, StoreError> {
        let rows = sqlx::query(
            "SELECT org_oid, status, COALESCE(error_class, '') AS class, COUNT(*) AS n FROM documents \
             WHERE status IN ('rejected', 'dead-lettered') GROUP BY org_oid, status, error_class \
             ORDER BY org_oid, status, class",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetters {
                    org: r.try_get("org_oid")?,
                    status: r.try_get("status")?,
                    error_class: r.try_get("class")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// Stores a document and enqueues its registration, atomically. A document whose UID
    /// exists already is not touched; the existing one is returned.
    pub async fn insert_document(
        &self,
        d: &Document,
        registration: &Intake,
    ) -> Result<Inserted, StoreError> {
        let inserted = self.insert_document_row(d, registration).await?;
        self.inserted_or_existing(&d.id, inserted).await
    }

    /// `New` when `inserted`, else the stored document with this UID.
    pub async fn inserted_or_existing(
        &self,
        id: &str,
        inserted: bool,
    ) -> Result<Inserted, StoreError> {
        if inserted {
            return Ok(Inserted::New);
        }
        let existing = self.get_document(id).await?.ok_or(StoreError::Corrupt {
            what: "documents.id",
            detail: "conflicting row vanished".into(),
        })?;
        Ok(Inserted::Existing(Box::new(existing)))
    }

    /// Inserts one document with its first event and outbox item; false when the UID
    /// exists already.
    async fn insert_document_row(&self, d: &Document, intake: &Intake) -> Result<bool, StoreError> {
        let now = if d.created_at > 0 {
            d.created_at
        } else {
            now_ms()
        };
        Ok(match self.backend() {
            // One statement: the document, its first history event and its outbox item are
            // written atomically in a single round trip (the batched statement, for one row).
            Backend::Postgres => !batch_insert(std::iter::once((d, intake)))
                .fetch_all(self.pool())
                .await?
                .is_empty(),
            Backend::Sqlite => {
                let mut tx = self.pool().begin().await?;
                let sql = format!(
                    "INSERT INTO documents ({COLUMNS}) VALUES \
                     ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$24) \
                     ON CONFLICT (id) DO NOTHING RETURNING id"
                );
                let done: Option<String> = bind_document(sqlx::query_scalar(&sql), d, now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if done.is_some() {
                    add_event(
                        &mut tx,
                        &d.id,
                        now,
                        d.status,
                        "accepted and queued for registration",
                    )
                    .await?;
                    enqueue(&mut tx, &intake.registration, now).await?;
                    let audit = intake.audit.clone().record(&d.org, &d.id);
                    insert_audit_in(
                        &mut tx,
                        &AuditEvent {
                            snils: Some(d.patient.clone()),
                            ..audit
                        },
                    )
                    .await?;
                    tx.commit().await?;
                    true
                } else {
                    tx.rollback().await?;
                    false
                }
            }
        })
    }

    /// Stores several new documents and enqueues their registrations in one statement and
    /// one commit (PostgreSQL group commit). Returns, per document, whether it was inserted
    /// (`false`: its UID exists already). The UIDs of a batch must be distinct. On SQLite
    /// the documents are inserted one by one.
    pub async fn insert_documents(
        &self,
        batch: &[(Document, Intake)],
    ) -> Result<Vec<bool>, StoreError> {
        if self.backend() == Backend::Sqlite {
            let mut out = Vec::with_capacity(batch.len());
            for (d, r) in batch {
                out.push(self.insert_document_row(d, r).await?);
            }
            return Ok(out);
        }
        // A group larger than one shape is written as several statements in one
        // transaction: still one commit.
        let chunks = super::power_of_two_chunks(batch, MAX_BATCH_ROWS);
        let mut inserted = std::collections::HashSet::new();
        if let [only] = chunks.as_slice() {
            inserted.extend(batch_insert(rows_of(only)).fetch_all(self.pool()).await?);
        } else {
            let mut tx = self.pool().begin().await?;
            for chunk in chunks {
                inserted.extend(batch_insert(rows_of(chunk)).fetch_all(&mut *tx).await?);
            }
            tx.commit().await?;
        }
        Ok(batch
            .iter()
            .map(|(d, _)| inserted.contains(&d.id))
            .collect())
    }

    /// One document by local UID.
    pub async fn get_document(&self, id: &str) -> Result<Option<Document>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM documents WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The document a registration message was about.
    pub async fn document_by_message(
        &self,
        message_id: &str,
    ) -> Result<Option<Document>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM documents WHERE message_id = $1"
        ))
        .bind(message_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Documents matching the filter, in id order, at most `limit`.
    pub async fn list_documents(
        &self,
        f: &DocumentFilter,
        limit: u32,
    ) -> Result<Vec<Document>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM documents WHERE 1=1");
        let mut args: Vec<String> = Vec::new();
        for (col, v) in [
            ("status", f.status.map(|s| s.as_str().to_string())),
            ("org_oid", f.org.as_ref().map(Oid::to_string)),
            ("kind_code", f.kind_code.clone()),
            ("error_class", f.error_class.map(|c| c.as_str().to_string())),
        ] {
            if let Some(v) = v {
                args.push(v);
                sql.push_str(&format!(" AND {col} = ${}", args.len()));
            }
        }
        if let Some(orgs) = &f.orgs {
            sql.push_str(&in_list("org_oid", orgs, &mut args));
        }
        if let Some(v) = &f.after_id {
            args.push(v.clone());
            sql.push_str(&format!(" AND id > ${}", args.len()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", limit.clamp(1, 1000)));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    /// History of a document, oldest first.
    pub async fn document_events(&self, id: &str) -> Result<Vec<DocumentEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, status, detail FROM document_events WHERE document_id = $1 ORDER BY at, id",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DocumentEvent {
                    at: r.try_get("at")?,
                    status: r.try_get("status")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Moves a document to a new status and records why. Final states (`registered`,
    /// `rejected`) are not left again except by `allow_from_final`.
    pub async fn update_document_status(
        &self,
        id: &str,
        change: &StatusChange,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let guard = if change.allow_from_final {
            ""
        } else {
            " AND status NOT IN ('registered', 'rejected')"
        };
        let done = sqlx::query(&format!(
            "UPDATE documents SET status = $2, updated_at = $3, \
             emdr_id = COALESCE($4, emdr_id), registered_at = COALESCE($5, registered_at), \
             message_id = COALESCE($6, message_id), error_class = $7, error_codes = $8, \
             error_message = $9 WHERE id = $1{guard}"
        ))
        .bind(id.to_string())
        .bind(change.status.as_str())
        .bind(now)
        .bind(change.emdr_id.clone())
        .bind(change.registered_at)
        .bind(change.message_id.clone())
        .bind(change.error_class.map(ErrorClass::as_str))
        .bind(change.error_codes.clone())
        .bind(change.error_message.clone())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            add_event(&mut tx, id, now, change.status, &change.detail).await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the WS-Addressing MessageID a registration is sent with.
    pub async fn set_document_message(&self, id: &str, message_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE documents SET message_id = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(message_id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Queues a document for registration again, atomically with the new outbox item,
    /// if its status is one of `from` (the registry lost it or asked us to retry: anything
    /// but registered; an operator rerun: rejected or dead-lettered). False when it was in
    /// another state: of two concurrent requeues, exactly one succeeds.
    pub async fn requeue_document(
        &self,
        id: &str,
        from: &[DocumentStatus],
        detail: &str,
        registration: &NewOutboxItem,
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let states = (0..from.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "UPDATE documents SET status = 'queued', updated_at = $2, error_class = NULL, \
             error_codes = NULL, error_message = NULL WHERE id = $1 AND status IN ({states}) RETURNING id"
        );
        let mut q = sqlx::query_as::<_, (String,)>(&sql)
            .bind(id.to_string())
            .bind(now);
        for s in from {
            q = q.bind(s.as_str());
        }
        if q.fetch_optional(&mut *tx).await?.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        add_event(&mut tx, id, now, DocumentStatus::Queued, detail).await?;
        enqueue(&mut tx, registration, now).await?;
        if let Some(e) = audit {
            insert_audit_in(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Marks a sent document as still awaited (after polling), without changing its status.
    pub async fn touch_document(&self, id: &str, detail: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE documents SET updated_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        add_event(&mut tx, id, now, DocumentStatus::Sent, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts documents by status, of the given organizations only when `orgs` is given.
    pub async fn document_counts(
        &self,
        orgs: Option<&[Oid]>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut args = Vec::new();
        let filter = orgs
            .map(|o| in_list("org_oid", o, &mut args))
            .unwrap_or_default();
        let sql = format!(
            "SELECT status, COUNT(*) AS n FROM documents WHERE 1=1{filter} GROUP BY status ORDER BY status"
        );
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(a);
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Documents sent before `sent_before` (epoch ms) still awaiting the registry's answer.
    pub async fn documents_awaiting_result(
        &self,
        sent_before: i64,
        limit: u32,
    ) -> Result<Vec<Document>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM documents WHERE status = 'sent' AND updated_at < $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(sent_before)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }
}

/// ` AND col IN ($n, ...)` for `values` appended to `args`; an empty list matches nothing.
fn in_list(col: &str, values: &[Oid], args: &mut Vec<String>) -> String {
    if values.is_empty() {
        return " AND 1=0".into();
    }
    let marks: Vec<String> = values
        .iter()
        .map(|v| {
            args.push(v.to_string());
            format!("${}", args.len())
        })
        .collect();
    format!(" AND {col} IN ({})", marks.join(","))
}

/// A status change with its details.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// New status.
    pub status: DocumentStatus,
    /// History text.
    pub detail: String,
    /// Registry number.
    pub emdr_id: Option<String>,
    /// Registration time.
    pub registered_at: Option<i64>,
    /// Message id of the request sent.
    pub message_id: Option<String>,
    /// Error class.
    pub error_class: Option<ErrorClass>,
    /// Error codes.
    pub error_codes: Option<String>,
    /// Error message.
    pub error_message: Option<String>,
    /// Permit leaving a final state (operator rerun).
    pub allow_from_final: bool,
}

impl StatusChange {
    /// A change to `status` recorded with `detail`, touching nothing else.
    pub fn to(status: DocumentStatus, detail: impl Into<String>) -> StatusChange {
        StatusChange {
            status,
            detail: detail.into(),
            emdr_id: None,
            registered_at: None,
            message_id: None,
            error_class: None,
            error_codes: None,
            error_message: None,
            allow_from_final: false,
        }
    }
}

async fn add_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    now: i64,
    status: DocumentStatus,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO document_events (id, document_id, at, status, detail) VALUES ($1,$2,$3,$4,$5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(id.to_string())
    .bind(now)
    .bind(status.as_str())
    .bind(detail.chars().take(2000).collect::<String>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Most documents one statement of a batched insert writes.
const MAX_BATCH_ROWS: usize = 64;

/// The statement inserting `n` documents with their first events and outbox items.
fn batch_sql(n: usize) -> String {
    // Each row: the 24 document columns, then event id, outbox id, destination, kind,
    // payload, due time, audit id, request id (32 parameters).
    let mut values = String::with_capacity(n * 260);
    for i in 0..n {
        let b = i * 32;
        if i > 0 {
            values.push(',');
        }
        values.push('(');
        for (c, cast) in BATCH_CASTS.iter().enumerate() {
            if c > 0 {
                values.push(',');
            }
            values.push_str(&format!("${}::{cast}", b + c + 1));
        }
        values.push(')');
    }
    format!(
        "WITH v (id, org_oid, kind_code, kind_version, patient_snils, author_snils, \
         submitted_by, request_hash, content, content_type, sha256, streebog256, org_signature, \
         doctor_signature, signed_by_gateway, status, emdr_id, registered_at, message_id, \
         error_class, error_codes, error_message, rerun_of, created_at, event_id, outbox_id, \
         destination, kind, payload, due_at, audit_id, request_id) AS (VALUES {values}), \
         d AS (INSERT INTO documents ({COLUMNS}) SELECT id, org_oid, kind_code, kind_version, \
           patient_snils, author_snils, submitted_by, request_hash, content, content_type, \
           sha256, streebog256, org_signature, doctor_signature, signed_by_gateway, status, \
           emdr_id, registered_at, message_id, error_class, error_codes, error_message, \
           rerun_of, created_at, created_at FROM v ON CONFLICT (id) DO NOTHING RETURNING id), \
         e AS (INSERT INTO document_events (id, document_id, at, status, detail) \
           SELECT v.event_id, v.id, v.created_at, v.status, 'accepted and queued for registration' \
           FROM v JOIN d ON d.id = v.id), \
         o AS (INSERT INTO outbox (id, destination, kind, aggregate_id, payload, status, attempts, \
           next_attempt_at, created_at, updated_at, ordering_key) \
           SELECT v.outbox_id, v.destination, v.kind, v.id, v.payload, 'pending', 0, v.due_at, \
           v.created_at, v.created_at, v.id FROM v JOIN d ON d.id = v.id), \
         a AS (INSERT INTO audit_events ({AUDIT_COLUMNS}) \
           SELECT v.audit_id, v.created_at, v.request_id, v.submitted_by, v.org_oid, 'create', \
           'document', v.id, v.patient_snils, NULL, 'success', '' FROM v JOIN d ON d.id = v.id) \
         SELECT id FROM d"
    )
}

/// The rows of a batch as the references [`batch_insert`] binds.
fn rows_of(batch: &[(Document, Intake)]) -> impl ExactSizeIterator<Item = (&Document, &Intake)> {
    batch.iter().map(|(d, r)| (d, r))
}

/// The statements of each batch size, built once.
static BATCH_SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// A batched insert of `rows` (at most [`MAX_BATCH_ROWS`]), bound; yields inserted UIDs.
fn batch_insert<'a>(
    rows: impl ExactSizeIterator<Item = (&'a Document, &'a Intake)>,
) -> sqlx::query::QueryScalar<'static, sqlx::Any, String, sqlx::any::AnyArguments<'static>> {
    let sql = &BATCH_SQL.get_or_init(|| (0..=MAX_BATCH_ROWS).map(batch_sql).collect())[rows.len()];
    let mut q = sqlx::query_scalar::<_, String>(sql.as_str());
    for (d, r) in rows {
        let now = if d.created_at > 0 {
            d.created_at
        } else {
            now_ms()
        };
        q = bind_document(q, d, now)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(r.registration.destination.clone())
            .bind(r.registration.kind.clone())
            .bind(r.registration.payload.clone())
            .bind(r.registration.due_at)
            .bind(r.audit.id.clone())
            .bind(r.audit.request_id.clone());
    }
    q
}

/// SQL types of the 32 parameters of one row of a batched insert.
const BATCH_CASTS: [&str; 32] = [
    "text", "text", "text", "text", "text", "text", "text", "text", "bytea", "text", "text",
    "text", "bytea", "bytea", "smallint", "text", "text", "bigint", "text", "text", "text", "text",
    "text", "bigint", "text", "text", "text", "text", "text", "bigint", "text", "text",
];

/// Binds the 24 document columns ($1..$24, `created_at` and `updated_at` both `now`).
fn bind_document<'q, O>(
    q: sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    d: &Document,
    now: i64,
) -> sqlx::query::QueryScalar<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    q.bind(d.id.clone())
        .bind(d.org.to_string())
        .bind(d.kind_code.clone())
        .bind(d.kind_version.clone())
        .bind(d.patient.digits())
        .bind(d.author.digits())
        .bind(d.submitted_by.clone())
        .bind(d.request_hash.clone())
        .bind(d.content.clone())
        .bind(d.content_type.clone())
        .bind(d.sha256.clone())
        .bind(d.streebog256.clone())
        .bind(d.org_signature.clone())
        .bind(d.doctor_signature.clone())
        .bind(i32::from(d.signed_by_gateway))
        .bind(d.status.as_str())
        .bind(d.emdr_id.clone())
        .bind(d.registered_at)
        .bind(d.message_id.clone())
        .bind(d.error_class.map(ErrorClass::as_str))
        .bind(d.error_codes.clone())
        .bind(d.error_message.clone())
        .bind(d.rerun_of.clone())
        .bind(now)
}

/// A document from its row; an unknown state, error class or malformed identifier is a
/// corruption.
fn decode(row: &AnyRow) -> Result<Document, StoreError> {
    let snils = |col: &'static str, what: &'static str| -> Result<Snils, StoreError> {
        let raw: String = row.try_get(col)?;
        Snils::parse(&raw).map_err(|_| corrupt(what, "(masked)"))
    };
    let status: String = row.try_get("status")?;
    let class: Option<String> = row.try_get("error_class")?;
    Ok(Document {
        id: row.try_get("id")?,
        org: super::schedules::organization(row, "documents.org_oid")?,
        kind_code: row.try_get("kind_code")?,
        kind_version: row.try_get("kind_version")?,
        patient: snils("patient_snils", "documents.patient_snils")?,
        author: snils("author_snils", "documents.author_snils")?,
        submitted_by: row.try_get("submitted_by")?,
        request_hash: row.try_get("request_hash")?,
        content: row.try_get("content")?,
        content_type: row.try_get("content_type")?,
        sha256: row.try_get("sha256")?,
        streebog256: row.try_get("streebog256")?,
        org_signature: row.try_get("org_signature")?,
        doctor_signature: row.try_get("doctor_signature")?,
        signed_by_gateway: row.try_get::<i32, _>("signed_by_gateway")? != 0,
        status: DocumentStatus::parse(&status)
            .ok_or_else(|| corrupt("documents.status", &status))?,
        emdr_id: row.try_get("emdr_id")?,
        registered_at: row.try_get("registered_at")?,
        message_id: row.try_get("message_id")?,
        error_class: class
            .map(|c| ErrorClass::parse(&c).ok_or_else(|| corrupt("documents.error_class", &c)))
            .transpose()?,
        error_codes: row.try_get("error_codes")?,
        error_message: row.try_get("error_message")?,
        rerun_of: row.try_get("rerun_of")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
