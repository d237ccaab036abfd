//! Medical documents: intake (validate, verify or make signatures, store, queue), delivery
//! to the registry with retries, the registry's verdicts, and recovery of lost verdicts.
//!
//! A document accepted here is never lost (it is stored with its registration queued in one
//! transaction) and never registered twice (one local UID, one registration at a time; a
//! duplicate answer from the registry is resolved by asking it what it holds).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::adapters::remd::{ItemStatus, RemdCallError, RemdClient};
use crate::codec::cda;
use crate::codec::remd::{sha256_hex, RegisterDocument, RegisterResult, SignatureRef};
use crate::codec::xml::Limits;
use crate::config::{KeyRole, RemdSettings};
use crate::exchange::delivery::{next_attempt, Outcome};
use crate::model::remd::{classify_all, ErrorClass};
use crate::model::{Oid, Snils};
use crate::sign::{self, DigestAlgorithm, KeyRing, SignError};
use crate::store::documents::{Inserted, StatusChange, StoredDocument};
use crate::store::group_commit::IntakeWriter;
use crate::store::outbox::{NewOutboxItem, OutboxItem};
use crate::store::{now_ms, Store, StoreError};

/// Outbox destination of registrations.
pub const DESTINATION: &str = "remd";
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
    /// The client may not submit for this organization.
    #[error("client may not submit documents for organization {0}")]
    Forbidden(String),
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

fn invalid(code: &'static str, field: Field, message: impl Into<String>) -> DocumentError {
    DocumentError::Invalid {
        code,
        field,
        path: None,
        message: message.into(),
    }
}

/// A document as submitted by a clinic.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Local UID (UUID).
    pub local_uid: String,
    /// Kind code from book 1522.
    pub kind_code: String,
    /// Version of book 1522.
    pub kind_version: String,
    /// Organization OID.
    pub org_oid: String,
    /// Patient SNILS.
    pub patient_snils: String,
    /// Author SNILS.
    pub author_snils: String,
    /// The document bytes.
    pub content: Vec<u8>,
    /// Media type.
    pub content_type: String,
    /// The organization's detached CMS, if the clinic signed.
    pub org_signature: Option<Vec<u8>>,
    /// The doctor's detached CMS, if the clinic signed.
    pub doctor_signature: Option<Vec<u8>>,
}

/// Payload of a registration outbox item.
#[derive(Debug, Serialize, Deserialize)]
struct RegistrationPayload {
    message_id: String,
}

/// The documents service.
#[derive(Clone)]
pub struct Documents {
    store: Store,
    keys: KeyRing,
    remd: Option<(RemdSettings, RemdClient)>,
    wake: Arc<Notify>,
    intake: IntakeWriter,
}

impl Documents {
    /// Builds the service.
    pub fn new(store: Store, keys: KeyRing, remd: Option<(RemdSettings, RemdClient)>) -> Documents {
        Documents {
            intake: IntakeWriter::new(store.clone()),
            store,
            keys,
            remd,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever a registration is queued (wakes the delivery workers).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The registry settings, when registration is configured.
    pub fn settings(&self) -> Option<&RemdSettings> {
        self.remd.as_ref().map(|(s, _)| s)
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn registration(local_uid: &str) -> NewOutboxItem {
        let payload = RegistrationPayload {
            message_id: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
        };
        NewOutboxItem {
            destination: DESTINATION.into(),
            kind: KIND_REGISTER.into(),
            aggregate_id: local_uid.to_string(),
            payload: serde_json::to_string(&payload).unwrap_or_default(),
            due_at: now_ms(),
        }
    }

    /// Validates, signs or verifies, stores and queues a document. Returns the stored
    /// document and whether it was new (a replay returns the first result).
    pub async fn submit(
        &self,
        client: &crate::auth::Client,
        s: Submission,
    ) -> Result<(StoredDocument, bool), DocumentError> {
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
            return Err(DocumentError::Forbidden(org.to_string()));
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
                let org_key = self.keys.get(KeyRole::Organization, org.as_str());
                let doc_key = self.keys.get(KeyRole::Doctor, &author.digits());
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
        let doc = StoredDocument {
            id: uid.clone(),
            org_oid: org.to_string(),
            kind_code: header.kind.code.clone(),
            kind_version: header.kind.version.clone(),
            patient_snils: patient.digits(),
            author_snils: author.digits(),
            submitted_by: client.id.clone(),
            request_hash,
            content: Arc::try_unwrap(content).unwrap_or_else(|c| (*c).clone()),
            content_type: s.content_type,
            sha256: hex::encode(&sha256),
            streebog256: hex::encode(&streebog256),
            org_signature,
            doctor_signature,
            signed_by_gateway,
            status: "queued".into(),
            emdr_id: None,
            registered_at: None,
            message_id: None,
            error_class: None,
            error_codes: None,
            error_message: None,
            rerun_of: None,
            created_at: now_ms(),
            updated_at: 0,
        };
        let doc = StoredDocument {
            updated_at: doc.created_at,
            ..doc
        };
        let registration = Self::registration(&uid);
        match self.intake.insert(doc, registration).await? {
            (doc, Inserted::New) => {
                self.wake.notify_waiters();
                Ok((doc, true))
            }
            (doc, Inserted::Existing(existing)) => replayed(*existing, &doc.request_hash, uid),
        }
    }

    /// Delivers one registration outbox item.
    pub async fn deliver(&self, item: OutboxItem) -> Outcome {
        let Some((settings, client)) = &self.remd else {
            return Outcome::RetryAt(now_ms() + 60_000, "registration not configured".into());
        };
        let doc = match self.store.get_document(&item.aggregate_id).await {
            Ok(Some(d)) => d,
            Ok(None) => return Outcome::Dead(format!("document {} not found", item.aggregate_id)),
            Err(e) => return Outcome::RetryAt(now_ms() + 5_000, e.to_string()),
        };
        if matches!(doc.status.as_str(), "registered" | "rejected") {
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
            return Outcome::RetryAt(now_ms() + 5_000, e.to_string());
        }
        let request = register_request(&doc, &settings.file_url);
        match client.register(&request, &payload.message_id).await {
            Ok(()) => {
                let change = StatusChange {
                    status: "sent".into(),
                    detail: format!("acknowledged by the registry (attempt {})", item.attempts),
                    message_id: Some(payload.message_id),
                    ..StatusChange::default()
                };
                self.apply(&doc.id, change).await
            }
            Err(e) => self.after_refusal(settings, client, &doc, &item, e).await,
        }
    }

    async fn apply(&self, id: &str, change: StatusChange) -> Outcome {
        match self.store.update_document_status(id, &change).await {
            Ok(_) => Outcome::Delivered,
            Err(e) => Outcome::RetryAt(now_ms() + 5_000, e.to_string()),
        }
    }

    async fn after_refusal(
        &self,
        settings: &RemdSettings,
        client: &RemdClient,
        doc: &StoredDocument,
        item: &OutboxItem,
        e: RemdCallError,
    ) -> Outcome {
        let codes = e.codes();
        if codes.iter().any(|c| c == "NOT_UNIQUE_PROVIDED_ID") {
            // Our earlier attempt may have reached the registry: ask what it holds.
            match client.get_registry_item(&doc.id).await {
                Ok(ItemStatus::Registered(found)) => {
                    return self
                        .apply(
                            &doc.id,
                            registered_change(
                                &found.emdr_id,
                                &found.registration_date_time,
                                "registered (found in the registry after a duplicate answer)",
                            ),
                        )
                        .await;
                }
                Ok(ItemStatus::InProgress) => {
                    return self
                        .apply(
                            &doc.id,
                            StatusChange {
                                status: "sent".into(),
                                detail: "registry already processing this document".into(),
                                ..StatusChange::default()
                            },
                        )
                        .await;
                }
                Ok(ItemStatus::NotFound) => {}
                Err(err) => {
                    return Outcome::RetryAt(
                        now_ms() + 10_000,
                        format!("duplicate answer, lookup failed: {err}"),
                    );
                }
            }
        }
        let class = classify_all(codes.iter().map(String::as_str));
        let now = now_ms();
        if class == ErrorClass::Retryable {
            let detail = format!("attempt {} failed: {e}", item.attempts);
            let _ = self
                .store
                .update_document_status(
                    &doc.id,
                    &StatusChange {
                        status: "queued".into(),
                        detail: detail.clone(),
                        error_class: Some(class.as_str().into()),
                        error_codes: Some(codes.join(",")),
                        error_message: Some(e.to_string()),
                        ..StatusChange::default()
                    },
                )
                .await;
            return match next_attempt(&settings.retry_schedule_secs, item.attempts, now) {
                Some(at) => Outcome::RetryAt(at, detail),
                None => {
                    let _ = self
                        .store
                        .update_document_status(
                            &doc.id,
                            &StatusChange {
                                status: "dead-lettered".into(),
                                detail: format!("gave up after {} attempts: {e}", item.attempts),
                                error_class: Some(class.as_str().into()),
                                error_codes: Some(codes.join(",")),
                                error_message: Some(e.to_string()),
                                ..StatusChange::default()
                            },
                        )
                        .await;
                    Outcome::Dead(detail)
                }
            };
        }
        let change = StatusChange {
            status: "rejected".into(),
            detail: format!(
                "refused by the registry; to be fixed by {}: {e}",
                class.who_fixes()
            ),
            error_class: Some(class.as_str().into()),
            error_codes: Some(codes.join(",")),
            error_message: Some(e.to_string()),
            ..StatusChange::default()
        };
        self.apply(&doc.id, change).await
    }

    /// Applies the registry's asynchronous verdict.
    pub async fn apply_result(&self, r: &RegisterResult) -> Result<StoredDocument, DocumentError> {
        let by_message = self
            .store
            .document_by_message(&r.relates_to_message)
            .await?;
        let doc = match by_message {
            Some(d) => d,
            None => match &r.item {
                Some(item) => self
                    .store
                    .get_document(&item.local_uid)
                    .await?
                    .ok_or_else(|| {
                        invalid(
                            "UNKNOWN_MESSAGE",
                            Field::LocalUid,
                            format!("no document for message {}", r.relates_to_message),
                        )
                    })?,
                None => {
                    return Err(invalid(
                        "UNKNOWN_MESSAGE",
                        Field::LocalUid,
                        format!("no document for message {}", r.relates_to_message),
                    ))
                }
            },
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
                    &registered_change(&item.emdr_id, &item.registration_date_time, "registered"),
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
            if class == ErrorClass::Retryable {
                self.store
                    .requeue_document(
                        &doc.id,
                        &format!("registry asked to retry: {message}"),
                        &Self::registration(&doc.id),
                    )
                    .await?;
                self.wake.notify_waiters();
            } else {
                self.store
                    .update_document_status(
                        &doc.id,
                        &StatusChange {
                            status: "rejected".into(),
                            detail: format!(
                                "rejected by the registry; to be fixed by {}: {message}",
                                class.who_fixes()
                            ),
                            error_class: Some(class.as_str().into()),
                            error_codes: Some(codes.join(",")),
                            error_message: Some(message),
                            ..StatusChange::default()
                        },
                    )
                    .await?;
            }
        }
        Ok(self.store.get_document(&doc.id).await?.unwrap_or(doc))
    }

    /// Asks the registry about documents whose verdict is overdue; returns how many were
    /// resolved or requeued.
    pub async fn poll_overdue(&self) -> Result<usize, DocumentError> {
        let Some((settings, client)) = &self.remd else {
            return Ok(0);
        };
        let cutoff = now_ms() - (settings.callback_timeout_secs as i64) * 1000;
        let overdue = self.store.documents_awaiting_result(cutoff, 200).await?;
        let mut handled = 0;
        for doc in overdue {
            match client.get_registry_item(&doc.id).await {
                Ok(ItemStatus::Registered(item)) => {
                    self.store
                        .update_document_status(
                            &doc.id,
                            &registered_change(
                                &item.emdr_id,
                                &item.registration_date_time,
                                "registered (verdict recovered by polling)",
                            ),
                        )
                        .await?;
                    handled += 1;
                }
                Ok(ItemStatus::InProgress) => {
                    self.store
                        .touch_document(&doc.id, "verdict overdue; registry still processing")
                        .await?;
                }
                Ok(ItemStatus::NotFound) => {
                    self.store
                        .requeue_document(&doc.id, "verdict overdue and the registry does not know the document; sending again", &Self::registration(&doc.id))
                        .await?;
                    self.wake.notify_waiters();
                    handled += 1;
                }
                Err(e) => {
                    tracing::warn!(document = %doc.id, error = %e, "overdue verdict poll failed")
                }
            }
        }
        Ok(handled)
    }

    /// Operator rerun of a rejected or dead-lettered document.
    pub async fn rerun(&self, id: &str, operator: &str) -> Result<bool, DocumentError> {
        let ok = self
            .store
            .requeue_document(
                id,
                &format!("rerun requested by {operator}"),
                &Self::registration(id),
            )
            .await?;
        if ok {
            self.wake.notify_waiters();
        }
        Ok(ok)
    }

    /// Starts the delivery workers and the overdue-verdict poller.
    pub fn spawn_workers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let Some((settings, _)) = &self.remd else {
            return Vec::new();
        };
        if !settings.deliver {
            return Vec::new();
        }
        let svc = self.clone();
        let handler: crate::exchange::delivery::Handler = Arc::new(move |item| {
            let svc = svc.clone();
            Box::pin(async move { svc.deliver(item).await })
        });
        let config = crate::exchange::delivery::WorkerConfig {
            destination: DESTINATION.into(),
            concurrency: settings.workers,
            lease: Duration::from_secs(settings.timeout_secs * 3 + 5),
            idle_poll: Duration::from_millis(500),
        };
        let worker = tokio::spawn(crate::exchange::delivery::run(
            self.store.clone(),
            config,
            handler,
            self.wake.clone(),
        ));
        let svc = self.clone();
        let period = Duration::from_secs((settings.callback_timeout_secs / 4).clamp(1, 60));
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = svc.poll_overdue().await {
                    tracing::warn!(error = %e, "overdue verdict poll failed");
                }
            }
        });
        vec![worker, poller]
    }
}

fn registered_change(emdr_id: &str, when: &str, detail: &str) -> StatusChange {
    StatusChange {
        status: "registered".into(),
        detail: format!("{detail}: {emdr_id}"),
        emdr_id: Some(emdr_id.to_string()),
        registered_at: Some(
            chrono::DateTime::parse_from_rfc3339(when)
                .map(|t| t.timestamp_millis())
                .unwrap_or_else(|_| now_ms()),
        ),
        ..StatusChange::default()
    }
}

/// The `registerDocument` request for a stored document.
pub fn register_request(doc: &StoredDocument, file_url: &str) -> RegisterDocument {
    RegisterDocument {
        local_uid: doc.id.clone(),
        kind: doc.kind_code.clone(),
        kind_version: doc.kind_version.clone(),
        organization: doc.org_oid.clone(),
        patient_snils: doc.patient_snils.clone(),
        creation_date_time: crate::store::from_ms(doc.created_at).to_rfc3339(),
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
                signer_snils: doc.author_snils.clone(),
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
    existing: StoredDocument,
    request_hash: &str,
    uid: String,
) -> Result<(StoredDocument, bool), DocumentError> {
    if existing.request_hash == request_hash {
        Ok((existing, false))
    } else {
        Err(DocumentError::Duplicate(uid))
    }
}
