//! Medical documents: intake (validate, verify or make signatures, store, queue), delivery
//! to the registry with retries, the registry's verdicts, recovery of lost verdicts,
//! operator reruns, and the reads clinics and operators make.
//!
//! A document accepted here is never lost (it is stored with its registration queued in one
//! transaction) and never registered twice (one local UID, one registration at a time; a
//! duplicate answer from the registry is resolved by asking it what it holds).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::registry::{ItemStatus, Registry, RegistryCallError};
use super::{audit_event, Caller};
use crate::auth::Client;
use crate::codec::cda;
use crate::codec::remd::{
    sha256_hex, RegisterDocument, RegisterResult, RegistryItem, SignatureRef,
};
use crate::codec::xml::Limits;
use crate::config::{KeyRole, RemdSettings};
use crate::exchange::delivery::{next_attempt, Outcome};
use crate::model::audit::{AuditAction, AuditEntity, AuditEvent};
use crate::model::document::{Document, DocumentStatus, Submission};
use crate::model::remd::{classify_all, ErrorClass};
use crate::model::time::SharedClock;
use crate::model::{Oid, Snils};
use crate::sign::{self, DigestAlgorithm, KeyRing, SignError, Signer};
pub use crate::store::documents::{DocumentEvent, DocumentFilter};
use crate::store::documents::{Inserted, Intake, StatusChange};
use crate::store::group_commit::IntakeWriter;
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::{Store, StoreError};

/// Outbox destination of registrations.
pub const DESTINATION: &str = "remd";
/// Overdue documents asked about per batch.
const OVERDUE_BATCH: u32 = 200;

/// What a batch of the overdue-verdict poll did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverduePoll {
    /// Documents asked about.
    pub asked: usize,
    /// Of those, resolved (a verdict recorded) or requeued (the registry did not know them).
    pub resolved: usize,
    /// The batch was full: more may be overdue.
    pub full: bool,
}

pub use crate::store::documents::DeadLetters;

/// Outbox kind of a registration.
pub const KIND_REGISTER: &str = "register-document";

/// Logical fields of a submission, mapped to protocol paths by the HTTP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The local UID.
    LocalUid,
    /// Document kind (code and version).
    Kind,
    /// Submitting organization.
    Organization,
    /// Patient SNILS.
    Patient,
    /// Author SNILS.
    Author,
    /// The document bytes.
    Content,
    /// The organization's signature.
    OrgSignature,
    /// The doctor's signature.
    DoctorSignature,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Invalid metadata or document content; `path` names the CDA element when known.
    #[error("{message}")]
    Invalid {
        /// Machine code.
        code: &'static str,
        /// Logical field.
        field: Field,
        /// CDA path inside the document, when the problem is inside it.
        path: Option<String>,
        /// Message.
        message: String,
    },
    /// The client may not submit documents for this organization.
    #[error("client may not submit documents for organization {0}")]
    Forbidden(Oid),
    /// No document with this local UID.
    #[error("no document with local UID {0}")]
    NotFound(String),
    /// An operator rerun of a document that is neither rejected nor dead-lettered.
    #[error("document is {0}; only rejected or dead-lettered documents are rerun")]
    NotRerunnable(DocumentStatus),
    /// A different document was already accepted under this UID.
    #[error("a different document was already accepted with local UID {0}")]
    Duplicate(String),
    /// Registration is not configured on this gateway.
    #[error("document registration is not configured on this gateway")]
    NotConfigured,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failure of the gateway's own keys.
    #[error("gateway signing failed: {0}")]
    Signing(SignError),
}

impl DocumentError {
    /// Stable machine code (for the audit trail and the edges).
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::Invalid { code, .. } => code,
            DocumentError::Forbidden(_) => "FORBIDDEN",
            DocumentError::NotFound(_) => "DOCUMENT_NOT_FOUND",
            DocumentError::NotRerunnable(_) => "NOT_RERUNNABLE",
            DocumentError::Duplicate(_) => "NOT_UNIQUE_PROVIDED_ID",
            DocumentError::NotConfigured => "REGISTRATION_NOT_CONFIGURED",
            DocumentError::Store(_) => "STORAGE_ERROR",
            DocumentError::Signing(_) => "SIGNING_FAILED",
        }
    }
}

fn invalid(code: &'static str, field: Field, message: impl Into<String>) -> DocumentError {
    DocumentError::Invalid {
        code,
        field,
        path: None,
        message: message.into(),
    }
}

/// A document kind the reference book refuses, as an invalid submission naming the kind
/// (with the registry's own error codes: the registry would refuse it alike).
fn kind_refused(e: super::nsi::CodeRefusal) -> DocumentError {
    use super::nsi::CodeRefusal;
    let (code, path) = match &e {
        CodeRefusal::Store(_) => ("", ""),
        CodeRefusal::Version { .. } => (
            "INVALID_DICTIONARY_VERSION",
            "ClinicalDocument/code/@codeSystemVersion",
        ),
        CodeRefusal::Code { .. } => ("INVALID_ELEMENT_VALUE_CODE", "ClinicalDocument/code/@code"),
    };
    match e {
        CodeRefusal::Store(inner) => DocumentError::Store(inner),
        refusal => DocumentError::Invalid {
            code,
            field: Field::Kind,
            path: Some(path.to_string()),
            message: format!("document kind: {refusal}"),
        },
    }
}

/// Payload of a registration outbox item.
#[derive(Debug, Serialize, Deserialize)]
struct RegistrationPayload {
    message_id: String,
}

/// Port: the keys the gateway signs with, by role and owner (an organization's OID, a
/// doctor's SNILS digits); local keys or a signing service holding them in a token.
pub trait SigningKeys: Send + Sync {
    /// The key of `owner` in `role`, if the gateway holds one.
    fn key(&self, role: KeyRole, owner: &str) -> Option<Arc<dyn Signer>>;
}

impl SigningKeys for KeyRing {
    fn key(&self, role: KeyRole, owner: &str) -> Option<Arc<dyn Signer>> {
        self.get(role, owner)
    }
}

/// What an operator rerun did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// The document is queued for registration again.
    Queued,
    /// Another rerun queued it a moment ago; nothing more was queued.
    AlreadyQueued,
}

/// The registry and how to talk to it.
#[derive(Clone)]
pub struct RegistryLink {
    /// Settings of the link (retry schedule, file URL, limits, ...).
    pub settings: RemdSettings,
    /// The registry.
    pub registry: Arc<dyn Registry>,
}

/// The documents service.
#[derive(Clone)]
pub struct Documents {
    store: Store,
    keys: Arc<dyn SigningKeys>,
    remd: Option<RegistryLink>,
    clock: SharedClock,
    wake: Arc<Notify>,
    intake: IntakeWriter,
    books: Option<super::nsi::ReferenceBooks>,
}

impl Documents {
    /// Builds the service: documents in `store`, signed with `keys`, registered through
    /// `remd` when configured; time from `clock`.
    pub fn new(
        store: Store,
        keys: Arc<dyn SigningKeys>,
        remd: Option<RegistryLink>,
        clock: SharedClock,
    ) -> Documents {
        Documents {
            intake: IntakeWriter::new(store.clone()),
            store,
            keys,
            remd,
            clock,
            wake: Arc::new(Notify::new()),
            books: None,
        }
    }

    /// The same service checking each document's kind against the reference books kept.
    pub fn with_reference_books(mut self, books: super::nsi::ReferenceBooks) -> Documents {
        self.books = Some(books);
        self
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Notified whenever a registration is queued (wakes the delivery workers).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The registry settings, when registration is configured.
    pub fn settings(&self) -> Option<&RemdSettings> {
        self.remd.as_ref().map(|r| &r.settings)
    }

    /// A fresh registration of `local_uid`, due now.
    fn registration(&self, local_uid: &str) -> NewOutboxItem {
        self.registration_after(local_uid, 0, self.now())
    }

    /// A registration of `local_uid` that continues after `attempts` made, due at `due_at`.
    fn registration_after(&self, local_uid: &str, attempts: i32, due_at: i64) -> NewOutboxItem {
        let payload = RegistrationPayload {
            message_id: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
        };
        NewOutboxItem {
            destination: DESTINATION.into(),
            kind: KIND_REGISTER.into(),
            aggregate_id: local_uid.to_string(),
            payload: serde_json::to_string(&payload).unwrap_or_default(),
            due_at,
            attempts,
            ordering_key: Some(local_uid.to_string()),
        }
    }

    /// After a failed attempt the registry told of later (a verdict asking to retry, a
    /// document it never received): the next registration on the retry schedule, counting
    /// on from the last attempt, or, the schedule exhausted, `dead` (its detail filled in).
    async fn retry_later(
        &self,
        link: &RegistryLink,
        id: &str,
        why: &str,
        dead: StatusChange,
    ) -> Result<(), DocumentError> {
        let attempts = self.store.latest_attempts(DESTINATION, id).await?.max(1);
        match next_attempt(&link.settings.retry_schedule_secs, attempts, self.now()) {
            Some(at) => {
                let detail = format!(
                    "attempt {attempts}: {why}; attempt {} at {}",
                    attempts + 1,
                    crate::model::time::instant_millis(at)
                );
                let registration = self.registration_after(id, attempts, at);
                self.store
                    .requeue_document(id, NOT_REGISTERED, &detail, &registration, self.now(), None)
                    .await?;
                self.wake.notify_one();
            }
            None => {
                let dead = StatusChange {
                    detail: format!("gave up after {attempts} attempts: {why}"),
                    ..dead
                };
                self.store
                    .update_document_status(id, &dead, self.now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Validates, signs or verifies, stores and queues a document. Returns the stored
    /// document and whether it was new (a replay returns the first result).
    pub async fn submit(
        &self,
        client: &Client,
        s: Submission,
    ) -> Result<(Document, bool), DocumentError> {
        let event = self.event(Caller::of(client), AuditAction::Create);
        let result = self.submit_audited(client, s, &event).await;
        // A new document was audited with its insert; a replay reads the first one back.
        self.settle(event, result, |(doc, new), e| {
            (!new).then(|| read_of(e, doc))
        })
        .await
    }

    async fn submit_audited(
        &self,
        client: &Client,
        s: Submission,
        event: &AuditEvent,
    ) -> Result<(Document, bool), DocumentError> {
        let settings = self.settings().ok_or(DocumentError::NotConfigured)?;
        let uid = uuid::Uuid::parse_str(s.local_uid.trim_start_matches("urn:uuid:"))
            .map_err(|_| {
                invalid(
                    "INVALID_LOCAL_UID",
                    Field::LocalUid,
                    "local UID must be a UUID",
                )
            })?
            .to_string();
        let org = Oid::parse_organization(&s.org_oid)
            .map_err(|e| invalid("INVALID_ORGANIZATION", Field::Organization, e.to_string()))?;
        if !client.may_act_for(&org) {
            return Err(DocumentError::Forbidden(org));
        }
        let patient = Snils::parse(&s.patient_snils)
            .map_err(|e| invalid("INVALID_SNILS", Field::Patient, e.to_string()))?;
        let author = Snils::parse(&s.author_snils)
            .map_err(|e| invalid("INVALID_SNILS", Field::Author, e.to_string()))?;
        if s.content.is_empty() {
            return Err(invalid(
                "EMPTY_DOCUMENT",
                Field::Content,
                "the document is empty",
            ));
        }
        if s.content.len() > settings.max_document_bytes {
            return Err(invalid(
                "DOCUMENT_TOO_LARGE",
                Field::Content,
                format!("document exceeds {} bytes", settings.max_document_bytes),
            ));
        }
        let limits = Limits {
            max_bytes: settings.max_document_bytes,
            ..Limits::default()
        };
        let header = cda::read_header(&s.content, &limits).map_err(|e| DocumentError::Invalid {
            code: e.code,
            field: Field::Content,
            path: Some(e.path.clone()),
            message: e.to_string(),
        })?;
        let mismatch = |field: Field, what: &str, cda_path: &str| DocumentError::Invalid {
            code: "METADATA_MISMATCH",
            field,
            path: Some(cda_path.to_string()),
            message: format!(
                "{what} in the metadata differs from the document header ({cda_path})"
            ),
        };
        if header.custodian != org {
            return Err(mismatch(Field::Organization, "organization", "ClinicalDocument/custodian/assignedCustodian/representedCustodianOrganization/id/@root"));
        }
        if header.kind.code != s.kind_code.trim() || header.kind.version != s.kind_version.trim() {
            return Err(mismatch(
                Field::Kind,
                "document kind or its version",
                "ClinicalDocument/code",
            ));
        }
        if let Some(books) = &self.books {
            books
                .check(
                    crate::model::nsi::BOOK_DOCUMENT_KINDS,
                    Some(&header.kind.version),
                    &header.kind.code,
                )
                .await
                .map_err(kind_refused)?;
        }
        if header.patient_snils != patient {
            return Err(mismatch(
                Field::Patient,
                "patient SNILS",
                "ClinicalDocument/recordTarget/patientRole/id",
            ));
        }
        if header.author_snils != author {
            return Err(mismatch(
                Field::Author,
                "author SNILS",
                "ClinicalDocument/author/assignedAuthor/id",
            ));
        }

        let provided = (s.org_signature.clone(), s.doctor_signature.clone());
        let request_hash = {
            let mut h = openssl::sha::Sha256::new();
            for part in [
                uid.as_bytes(),
                org.as_str().as_bytes(),
                s.kind_code.as_bytes(),
                s.kind_version.as_bytes(),
                &s.content,
            ] {
                h.update(&(part.len() as u64).to_be_bytes());
                h.update(part);
            }
            for sig in [&provided.0, &provided.1] {
                h.update(sig.as_deref().unwrap_or(b"gateway"));
            }
            hex::encode(h.finish())
        };

        let content = Arc::new(s.content);
        let sha256 = openssl::sha::sha256(&content).to_vec();
        let streebog256 =
            sign::digest(DigestAlgorithm::Streebog256, &content).map_err(DocumentError::Signing)?;
        let (org_signature, doctor_signature, signed_by_gateway) = match provided {
            (Some(o), Some(d)) => {
                let c = content.clone();
                let (o2, d2) = (o.clone(), d.clone());
                let author_digits = author.digits();
                tokio::task::spawn_blocking(move || verify_pair(&c, &o2, &d2, &author_digits))
                    .await
                    .map_err(|e| invalid("INTERNAL", Field::Content, e.to_string()))??;
                (o, d, false)
            }
            (None, None) => {
                let org_key = self.keys.key(KeyRole::Organization, org.as_str());
                let doc_key = self.keys.key(KeyRole::Doctor, &author.digits());
                // A replay is answered from the stored document; the insert recognizes it
                // by its UID anyway. Looking first pays off only when signing would cost
                // more than the lookup (a signing service) or cannot happen (no key).
                let local = matches!((&org_key, &doc_key), (Some(o), Some(d)) if o.is_local() && d.is_local());
                if !local {
                    if let Some(existing) = self.store.get_document(&uid).await? {
                        return replayed(existing, &request_hash, uid);
                    }
                }
                let org_key = org_key.ok_or_else(|| {
                    invalid("NO_SIGNATURE", Field::OrgSignature, format!("no signatures were given and the gateway holds no key for organization {org}"))
                })?;
                let doc_key = doc_key.ok_or_else(|| {
                    invalid(
                        "NO_SIGNATURE",
                        Field::DoctorSignature,
                        "no signatures were given and the gateway holds no key for the author",
                    )
                })?;
                let c = content.clone();
                let (sha, gost) = (sha256.clone(), streebog256.clone());
                // The content is hashed once: both signatures reuse the stored digests.
                let sign = move || -> Result<(Vec<u8>, Vec<u8>), SignError> {
                    let digested = |key: &dyn sign::Signer| -> Result<Vec<u8>, SignError> {
                        match key.algorithm().digest() {
                            DigestAlgorithm::Sha256 => key.sign_detached_cms_digested(&c, &sha),
                            DigestAlgorithm::Streebog256 => {
                                key.sign_detached_cms_digested(&c, &gost)
                            }
                            DigestAlgorithm::Streebog512 => key.sign_detached_cms(&c),
                        }
                    };
                    Ok((digested(org_key.as_ref())?, digested(doc_key.as_ref())?))
                };
                // Local keys sign in well under a millisecond: in place, without a thread
                // hop. A signing service answers over the network: on a blocking thread.
                if local {
                    sign()
                } else {
                    tokio::task::spawn_blocking(sign)
                        .await
                        .map_err(|e| invalid("INTERNAL", Field::Content, e.to_string()))?
                }
                .map(|(o, d)| (o, d, true))
                .map_err(DocumentError::Signing)?
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "MISSING_SIGNATURE",
                    Field::OrgSignature,
                    "the organization's signature is missing",
                ))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "MISSING_SIGNATURE",
                    Field::DoctorSignature,
                    "the doctor's signature is missing",
                ))
            }
        };
        let now = self.now();
        let doc = Document {
            id: uid.clone(),
            org,
            kind_code: header.kind.code.clone(),
            kind_version: header.kind.version.clone(),
            patient,
            author,
            submitted_by: client.id.clone(),
            request_hash,
            content: Arc::try_unwrap(content).unwrap_or_else(|c| (*c).clone()),
            content_type: s.content_type,
            sha256: hex::encode(&sha256),
            streebog256: hex::encode(&streebog256),
            org_signature,
            doctor_signature,
            signed_by_gateway,
            status: DocumentStatus::Queued,
            emdr_id: None,
            registered_at: None,
            message_id: None,
            error_class: None,
            error_codes: None,
            error_message: None,
            rerun_of: None,
            created_at: now,
            updated_at: now,
        };
        let intake = Intake {
            registration: self.registration(&uid),
            audit: event.clone(),
        };
        match self.intake.insert(doc, intake).await? {
            (doc, Inserted::New) => {
                self.wake.notify_one();
                Ok((doc, true))
            }
            (doc, Inserted::Existing(existing)) => replayed(*existing, &doc.request_hash, uid),
        }
    }

    /// Delivers one registration outbox item; a retry beyond the schedule dead-letters the
    /// document with the reason.
    pub async fn deliver(&self, item: OutboxItem) -> Outcome {
        let (id, attempts) = (item.aggregate_id.clone(), item.attempts);
        let outcome = self.attempt(item).await;
        let Some(link) = &self.remd else {
            return outcome;
        };
        match outcome {
            Outcome::RetryAt(_, err)
                if next_attempt(&link.settings.retry_schedule_secs, attempts, self.now())
                    .is_none() =>
            {
                let reason = format!("gave up after {attempts} attempts: {err}");
                let dead = StatusChange {
                    error_class: Some(ErrorClass::Retryable),
                    error_message: Some(err),
                    ..StatusChange::to(DocumentStatus::DeadLettered, reason.clone())
                };
                let _ = self
                    .store
                    .update_document_status(&id, &dead, self.now())
                    .await;
                Outcome::Dead(reason)
            }
            o => o,
        }
    }

    async fn attempt(&self, item: OutboxItem) -> Outcome {
        let Some(link) = &self.remd else {
            return Outcome::RetryAt(self.now() + 60_000, "registration not configured".into());
        };
        let doc = match self.store.get_document(&item.aggregate_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return Outcome::Dead(format!("document {} not found", item.aggregate_id)),
            Err(e) => return Outcome::RetryAt(self.now() + 5_000, e.to_string()),
        };
        if matches!(
            doc.status,
            DocumentStatus::Registered | DocumentStatus::Rejected
        ) {
            return Outcome::Delivered;
        }
        let payload: RegistrationPayload = match serde_json::from_str(&item.payload) {
            Ok(p) => p,
            Err(e) => return Outcome::Dead(format!("bad outbox payload: {e}")),
        };
        if let Err(e) = self
            .store
            .set_document_message(&doc.id, &payload.message_id)
            .await
        {
            return Outcome::RetryAt(self.now() + 5_000, e.to_string());
        }
        let request = register_request(&doc, &link.settings.file_url);
        match link.registry.register(&request, &payload.message_id).await {
            Ok(()) => {
                let mut change = StatusChange::to(
                    DocumentStatus::Sent,
                    format!("acknowledged by the registry (attempt {})", item.attempts),
                );
                change.message_id = Some(payload.message_id);
                self.apply(&doc.id, change).await
            }
            Err(e) => self.after_refusal(link, &doc, &item, e).await,
        }
    }

    async fn apply(&self, id: &str, change: StatusChange) -> Outcome {
        match self
            .store
            .update_document_status(id, &change, self.now())
            .await
        {
            Ok(_) => Outcome::Delivered,
            Err(e) => Outcome::RetryAt(self.now() + 5_000, e.to_string()),
        }
    }

    async fn after_refusal(
        &self,
        link: &RegistryLink,
        doc: &Document,
        item: &OutboxItem,
        e: RegistryCallError,
    ) -> Outcome {
        let codes = e.codes();
        if codes.iter().any(|c| c == "NOT_UNIQUE_PROVIDED_ID") {
            // Our earlier attempt may have reached the registry: ask what it holds.
            match link.registry.registry_item(&doc.id).await {
                Ok(ItemStatus::Registered(found)) => {
                    let change = match same_document(doc, &found) {
                        Ok(()) => registered_change(
                            &found.emdr_id,
                            &found.registration_date_time,
                            "registered (found in the registry after a duplicate answer)",
                            self.now(),
                        ),
                        Err(why) => conflict(&found, why),
                    };
                    return self.apply(&doc.id, change).await;
                }
                Ok(ItemStatus::InProgress) => {
                    return self
                        .apply(
                            &doc.id,
                            StatusChange::to(
                                DocumentStatus::Sent,
                                "registry already processing this document",
                            ),
                        )
                        .await;
                }
                Ok(ItemStatus::NotFound) => {}
                Err(err) => {
                    return Outcome::RetryAt(
                        self.now() + 10_000,
                        format!("duplicate answer, lookup failed: {err}"),
                    );
                }
            }
        }
        let class = classify_all(codes.iter().map(String::as_str));
        let failed = |status, detail: String| StatusChange {
            error_class: Some(class),
            error_codes: Some(codes.join(",")),
            error_message: Some(e.to_string()),
            ..StatusChange::to(status, detail)
        };
        if class == ErrorClass::Retryable {
            let detail = format!("attempt {} failed: {e}", item.attempts);
            let _ = self
                .store
                .update_document_status(
                    &doc.id,
                    &failed(DocumentStatus::Queued, detail.clone()),
                    self.now(),
                )
                .await;
            return match next_attempt(
                &link.settings.retry_schedule_secs,
                item.attempts,
                self.now(),
            ) {
                Some(at) => Outcome::RetryAt(at, detail),
                None => {
                    let dead = failed(
                        DocumentStatus::DeadLettered,
                        format!("gave up after {} attempts: {e}", item.attempts),
                    );
                    let _ = self
                        .store
                        .update_document_status(&doc.id, &dead, self.now())
                        .await;
                    Outcome::Dead(detail)
                }
            };
        }
        let change = failed(
            DocumentStatus::Rejected,
            format!(
                "refused by the registry; to be fixed by {}: {e}",
                class.who_fixes()
            ),
        );
        self.apply(&doc.id, change).await
    }

    /// Applies the registry's asynchronous verdict.
    pub async fn apply_result(&self, r: &RegisterResult) -> Result<Document, DocumentError> {
        let by_message = self
            .store
            .document_by_message(&r.relates_to_message)
            .await?;
        let unknown = || {
            invalid(
                "UNKNOWN_MESSAGE",
                Field::LocalUid,
                format!("no document for message {}", r.relates_to_message),
            )
        };
        let doc = match (by_message, &r.item) {
            (Some(d), _) => d,
            (None, Some(item)) => self
                .store
                .get_document(&item.local_uid)
                .await?
                .ok_or_else(unknown)?,
            (None, None) => return Err(unknown()),
        };
        if r.status == "success" {
            let item = r.item.as_ref().ok_or_else(|| {
                invalid(
                    "MALFORMED_RESULT",
                    Field::LocalUid,
                    "success without registryItem",
                )
            })?;
            self.store
                .update_document_status(
                    &doc.id,
                    &registered_change(
                        &item.emdr_id,
                        &item.registration_date_time,
                        "registered",
                        self.now(),
                    ),
                    self.now(),
                )
                .await?;
        } else {
            let codes: Vec<&str> = r.errors.iter().map(|e| e.code.as_str()).collect();
            let class = classify_all(codes.iter().copied());
            let message = r
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            if let (Some(link), ErrorClass::Retryable) = (&self.remd, class) {
                let failure = StatusChange {
                    error_class: Some(class),
                    error_codes: Some(codes.join(",")),
                    error_message: Some(message.clone()),
                    ..StatusChange::to(DocumentStatus::DeadLettered, String::new())
                };
                let why = format!("registry asked to retry: {message}");
                self.retry_later(link, &doc.id, &why, failure).await?;
            } else {
                let change = StatusChange {
                    error_class: Some(class),
                    error_codes: Some(codes.join(",")),
                    error_message: Some(message.clone()),
                    ..StatusChange::to(
                        DocumentStatus::Rejected,
                        format!(
                            "rejected by the registry; to be fixed by {}: {message}",
                            class.who_fixes()
                        ),
                    )
                };
                self.store
                    .update_document_status(&doc.id, &change, self.now())
                    .await?;
            }
        }
        Ok(self.store.get_document(&doc.id).await?.unwrap_or(doc))
    }

    /// Asks the registry about documents whose verdict is overdue; returns how many were
    /// resolved or requeued.
    pub async fn poll_overdue(&self) -> Result<usize, DocumentError> {
        Ok(self.poll_overdue_batch().await?.resolved)
    }

    /// Documents refused for good or out of retries, counted by organization, status and
    /// error class (who must act): what the document reconciliation reports.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetters>, DocumentError> {
        Ok(self.store.dead_letter_summary().await?)
    }

    /// One batch of the overdue-verdict poll: how many were asked about and how many of
    /// those were resolved or requeued.
    pub async fn poll_overdue_batch(&self) -> Result<OverduePoll, DocumentError> {
        let Some(link) = &self.remd else {
            return Ok(OverduePoll::default());
        };
        let cutoff = self.now() - (link.settings.callback_timeout_secs as i64) * 1000;
        let overdue = self
            .store
            .documents_awaiting_result(cutoff, OVERDUE_BATCH)
            .await?;
        let asked = overdue.len();
        let mut handled = 0;
        for doc in overdue {
            match link.registry.registry_item(&doc.id).await {
                Ok(ItemStatus::Registered(item)) => {
                    let change = match same_document(&doc, &item) {
                        Ok(()) => registered_change(
                            &item.emdr_id,
                            &item.registration_date_time,
                            "registered (verdict recovered by polling)",
                            self.now(),
                        ),
                        Err(why) => conflict(&item, why),
                    };
                    self.store
                        .update_document_status(&doc.id, &change, self.now())
                        .await?;
                    handled += 1;
                }
                Ok(ItemStatus::InProgress) => {
                    self.store
                        .touch_document(
                            &doc.id,
                            "verdict overdue; registry still processing",
                            self.now(),
                        )
                        .await?;
                }
                Ok(ItemStatus::NotFound) => {
                    // The lost attempt counts: sending again follows the schedule.
                    let why = "verdict overdue and the registry does not know the document";
                    let failure = StatusChange::to(DocumentStatus::DeadLettered, String::new());
                    self.retry_later(link, &doc.id, why, failure).await?;
                    handled += 1;
                }
                Err(e) => {
                    tracing::warn!(document = %doc.id, error = %e, "overdue verdict poll failed")
                }
            }
        }
        Ok(OverduePoll {
            asked,
            resolved: handled,
            full: asked == OVERDUE_BATCH as usize,
        })
    }

    /// Rerun of a rejected or dead-lettered document of the caller's organizations: of two
    /// concurrent reruns exactly one queues a registration; the other is told it is queued
    /// already.
    pub async fn rerun(&self, caller: Caller<'_>, id: &str) -> Result<Rerun, DocumentError> {
        let mut event = self.event(caller, AuditAction::Update);
        event.entity_id = Some(id.to_string());
        let result = self.rerun_audited(caller, id, &event).await;
        // A rerun queued was audited with the requeue.
        self.settle(event, result, |r, e| {
            (*r == Rerun::AlreadyQueued).then_some(e)
        })
        .await
    }

    async fn rerun_audited(
        &self,
        caller: Caller<'_>,
        id: &str,
        event: &AuditEvent,
    ) -> Result<Rerun, DocumentError> {
        let doc = self.lookup(caller, id).await?;
        let operator = caller.client_id;
        let audit = event.clone().record(&doc.org, &doc.id);
        let audit = AuditEvent {
            snils: Some(doc.patient.clone()),
            ..audit
        };
        let queued = self
            .store
            .requeue_document(
                id,
                RERUNNABLE,
                &format!("rerun requested by {operator}"),
                &self.registration(id),
                self.now(),
                Some(&audit),
            )
            .await?;
        if queued {
            self.wake.notify_one();
            return Ok(Rerun::Queued);
        }
        let doc = self
            .store
            .get_document(id)
            .await?
            .ok_or_else(|| DocumentError::NotFound(id.into()))?;
        match doc.status {
            DocumentStatus::Queued => Ok(Rerun::AlreadyQueued),
            other => Err(DocumentError::NotRerunnable(other)),
        }
    }

    /// Reruns the caller's documents matching `filter` (its status must be rejected or
    /// dead-lettered); returns the ids queued.
    pub async fn rerun_matching(
        &self,
        caller: Caller<'_>,
        filter: &DocumentFilter,
        limit: u32,
    ) -> Result<Vec<String>, DocumentError> {
        if let Some(status) = filter.status.filter(|s| !s.is_rerunnable()) {
            return Err(DocumentError::NotRerunnable(status));
        }
        let mut ids = Vec::new();
        for d in self.documents(caller, filter, limit).await? {
            // One that moved on since the listing (queued, sent, registered) is skipped.
            match self.rerun(caller, &d.id).await {
                Ok(Rerun::Queued) => ids.push(d.id),
                Ok(Rerun::AlreadyQueued) | Err(DocumentError::NotRerunnable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ids)
    }

    /// A document of the caller's organizations (a read: audited); any other does not exist
    /// for it.
    pub async fn document(&self, caller: Caller<'_>, id: &str) -> Result<Document, DocumentError> {
        let mut event = self.event(caller, AuditAction::Read);
        event.entity_id = Some(id.to_string());
        let result = self.lookup(caller, id).await;
        self.settle(event, result, |d, e| Some(read_of(e, d))).await
    }

    /// The file the registry fetches to compare with what was registered (a read by the
    /// registry: audited).
    pub async fn registry_file(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<Document, DocumentError> {
        let mut event = self.event(caller, AuditAction::Read);
        event.entity_id = Some(id.to_string());
        let result = self
            .store
            .get_document(id)
            .await
            .map_err(DocumentError::from)
            .and_then(|d| d.ok_or_else(|| DocumentError::NotFound(id.into())));
        self.settle(event, result, |d, e| Some(read_of(e, d))).await
    }

    /// A document of the caller's organizations, unaudited (the caller audits the access).
    async fn lookup(&self, caller: Caller<'_>, id: &str) -> Result<Document, DocumentError> {
        let doc = self
            .store
            .get_document(id)
            .await?
            .ok_or_else(|| DocumentError::NotFound(id.into()))?;
        if !caller.acts_for(&doc.org) {
            return Err(DocumentError::NotFound(id.into()));
        }
        Ok(doc)
    }

    fn event(&self, caller: Caller<'_>, action: AuditAction) -> AuditEvent {
        audit_event(caller, action, AuditEntity::Document, self.now())
    }

    /// Writes the event of an access no change recorded: a read's success (as `success`
    /// says), or a refusal; a store failure leaves nothing to record.
    async fn settle<T>(
        &self,
        event: AuditEvent,
        result: Result<T, DocumentError>,
        success: impl FnOnce(&T, AuditEvent) -> Option<AuditEvent>,
    ) -> Result<T, DocumentError> {
        let event = match &result {
            Ok(value) => success(value, event),
            Err(DocumentError::Store(_)) => None,
            Err(e) => Some(event.refused(e.code())),
        };
        if let Some(e) = event {
            self.store.insert_audit(&e).await?;
        }
        result
    }

    /// The caller's documents matching the filter in id order, at most `limit`.
    pub async fn documents(
        &self,
        caller: Caller<'_>,
        filter: &DocumentFilter,
        limit: u32,
    ) -> Result<Vec<Document>, DocumentError> {
        let mut filter = filter.clone();
        if let Some(orgs) = caller.scope() {
            if filter.org.as_ref().is_some_and(|o| !orgs.contains(o)) {
                return Ok(Vec::new());
            }
            filter.orgs = Some(orgs.to_vec());
        }
        Ok(self.store.list_documents(&filter, limit).await?)
    }

    /// The caller's documents per status.
    pub async fn counts(&self, caller: Caller<'_>) -> Result<Vec<(String, i64)>, DocumentError> {
        Ok(self.store.document_counts(caller.scope()).await?)
    }

    /// The history and the deliveries of a document of the caller's, oldest first.
    pub async fn history(
        &self,
        caller: Caller<'_>,
        id: &str,
    ) -> Result<(Vec<DocumentEvent>, Vec<OutboxItem>), DocumentError> {
        self.lookup(caller, id).await?;
        Ok((
            self.store.document_events(id).await?,
            self.store.outbox_for(id).await?,
        ))
    }

    /// True when registrations are configured and this node delivers them.
    pub fn delivers(&self) -> bool {
        self.remd.as_ref().is_some_and(|r| r.settings.deliver)
    }
}

/// States a document can be sent again from, when the registry lost it or asked again.
const NOT_REGISTERED: &[DocumentStatus] = &[
    DocumentStatus::Queued,
    DocumentStatus::Sent,
    DocumentStatus::Rejected,
    DocumentStatus::DeadLettered,
];
/// States an operator may rerun.
const RERUNNABLE: &[DocumentStatus] = &[DocumentStatus::Rejected, DocumentStatus::DeadLettered];

/// The read of `doc` recorded by `event`.
fn read_of(event: AuditEvent, doc: &Document) -> AuditEvent {
    AuditEvent {
        action: AuditAction::Read,
        snils: Some(doc.patient.clone()),
        ..event.record(&doc.org, &doc.id)
    }
}

/// Whether the registry's record under the document's UID is this document: its content
/// digest must be the document's; a record that does not tell cannot be taken as ours.
fn same_document(doc: &Document, found: &RegistryItem) -> Result<(), String> {
    match &found.content_digest {
        Some(d) if d.eq_ignore_ascii_case(&doc.streebog256) => Ok(()),
        Some(d) => Err(format!(
            "the registry's record {} has digest {d}, this document {}",
            found.emdr_id, doc.streebog256
        )),
        None => Err(format!(
            "the registry's record {} does not give its digest, so it cannot be matched",
            found.emdr_id
        )),
    }
}

/// The rejection of a document whose UID the registry holds for another document.
fn conflict(found: &RegistryItem, why: String) -> StatusChange {
    let class = ErrorClass::Conflict;
    StatusChange {
        error_class: Some(class),
        error_codes: Some("NOT_UNIQUE_PROVIDED_ID".into()),
        error_message: Some(why.clone()),
        ..StatusChange::to(
            DocumentStatus::Rejected,
            format!(
                "conflict: the registry holds another document under this UID ({}); {why}; to be resolved by {}",
                found.emdr_id,
                class.who_fixes()
            ),
        )
    }
}

fn registered_change(emdr_id: &str, when: &str, detail: &str, now: i64) -> StatusChange {
    StatusChange {
        emdr_id: Some(emdr_id.to_string()),
        registered_at: Some(
            chrono::DateTime::parse_from_rfc3339(when)
                .map(|t| t.timestamp_millis())
                .unwrap_or(now),
        ),
        ..StatusChange::to(DocumentStatus::Registered, format!("{detail}: {emdr_id}"))
    }
}

/// The `registerDocument` request for a stored document.
pub fn register_request(doc: &Document, file_url: &str) -> RegisterDocument {
    RegisterDocument {
        local_uid: doc.id.clone(),
        kind: doc.kind_code.clone(),
        kind_version: doc.kind_version.clone(),
        organization: doc.org.to_string(),
        patient_snils: doc.patient.digits(),
        creation_date_time: crate::model::time::from_ms(doc.created_at).to_rfc3339(),
        content_digest: doc.streebog256.clone(),
        file_url: file_url.to_string(),
        signatures: vec![
            SignatureRef {
                role: "organization".into(),
                signer_snils: String::new(),
                checksum: sha256_hex(&doc.org_signature),
                cms: doc.org_signature.clone(),
            },
            SignatureRef {
                role: "doctor".into(),
                signer_snils: doc.author.digits(),
                checksum: sha256_hex(&doc.doctor_signature),
                cms: doc.doctor_signature.clone(),
            },
        ],
        associations: Vec::new(),
    }
}

fn verify_pair(
    content: &[u8],
    org: &[u8],
    doctor: &[u8],
    author_snils: &str,
) -> Result<(), DocumentError> {
    let sig_err = |field: Field, e: SignError| {
        let code = match e {
            SignError::MultipleSigners(_) => "MULTIPLE_SIGNERS",
            SignError::NoSignerCertificate => "SIGNER_CERTIFICATE_MISSING",
            SignError::NoSigningTime => "SIGNING_TIME_MISSING",
            SignError::Mismatch => "SIGNATURE_MISMATCH",
            SignError::GostUnavailable => "GOST_UNAVAILABLE",
            _ => "INVALID_SIGNATURE",
        };
        invalid(code, field, e.to_string())
    };
    sign::verify_detached_cms(content, org, None).map_err(|e| sig_err(Field::OrgSignature, e))?;
    let d = sign::verify_detached_cms(content, doctor, None)
        .map_err(|e| sig_err(Field::DoctorSignature, e))?;
    if let Some(snils) = d.snils {
        if snils != author_snils {
            return Err(invalid(
                "SIGNER_NOT_AUTHOR",
                Field::DoctorSignature,
                "the doctor's signature was made by someone other than the document's author",
            ));
        }
    }
    Ok(())
}

/// The answer to a submission whose UID is stored already: the stored document when it is
/// the same submission (a replay), else a duplicate-UID refusal.
fn replayed(
    existing: Document,
    request_hash: &str,
    uid: String,
) -> Result<(Document, bool), DocumentError> {
    if existing.request_hash == request_hash {
        Ok((existing, false))
    } else {
        Err(DocumentError::Duplicate(uid))
    }
}
