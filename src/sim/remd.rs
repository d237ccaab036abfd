//! A registry of electronic medical documents (REMD-style) simulator.
//!
//! SOAP 1.2 with WS-Addressing. `registerDocument` is acknowledged synchronously; the
//! verdict goes later to the request's `ReplyTo` as `registerDocumentResult`. Before deciding,
//! the simulator fetches the document bytes from the gateway (`getDocumentFile`) and runs the
//! configured checks (digest, signatures). It rejects duplicates, unknown organizations and
//! bad signatures; faults (rate limits, internal errors, timeouts, lost callbacks, latency)
//! can be injected at run time. It counts registrations per local UID so tests can prove
//! exactly-once delivery.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpResponse, HttpServer};
use base64::Engine;

use super::roll;
use crate::codec::remd::{
    errors_xml, Addressing, RegisterDocument, RegisterResult, RegistryError, RegistryItem,
    NS_CALLBACK, NS_SERVICE,
};
use crate::codec::soap::{self, SoapVersion};
use crate::codec::xml::{dom, Limits};

/// Checks the registry applies to a document and the bytes it fetched.
pub trait DocumentCheck: Send + Sync {
    /// Errors found; empty means the document is acceptable.
    fn check(&self, request: &RegisterDocument, file: &[u8]) -> Vec<RegistryError>;
}

/// Faults to inject; probabilities are in [0, 1].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added latency per request.
    pub latency: Duration,
    /// Probability of a synchronous `RATE_LIMIT` fault.
    pub rate_limit: f64,
    /// Probability of a synchronous `INTERNAL_ERROR` fault.
    pub internal_error: f64,
    /// Probability of not answering for `hang` (the client times out).
    pub timeout: f64,
    /// How long a timed-out request hangs.
    pub hang: Duration,
    /// Probability that the verdict is decided but its callback never sent.
    pub lost_callback: f64,
}

/// Simulator settings.
pub struct RemdSimConfig {
    /// Organizations the registry knows; `None` accepts every FRMO OID.
    pub known_orgs: Option<HashSet<String>>,
    /// Bearer token the simulator presents when calling the gateway.
    pub gateway_token: String,
    /// Delay between acknowledgement and verdict.
    pub verdict_delay: Duration,
    /// Fetch the document bytes from the gateway before deciding.
    pub fetch_file: bool,
    /// Extra checks (digests, signatures).
    pub check: Option<Arc<dyn DocumentCheck>>,
    /// Faults active from the start.
    pub faults: Faults,
    /// Refuse `registerDocument` messages without a valid XMLDSig signature.
    pub require_signed_messages: bool,
    /// Sign the verdict callbacks (WS-Security) with this key.
    pub callback_signer: Option<Arc<dyn crate::sign::Signer>>,
}

impl Default for RemdSimConfig {
    fn default() -> Self {
        RemdSimConfig {
            known_orgs: None,
            gateway_token: String::new(),
            verdict_delay: Duration::from_millis(20),
            fetch_file: true,
            check: None,
            faults: Faults::default(),
            require_signed_messages: false,
            callback_signer: None,
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    InProgress {
        message_id: String,
    },
    Registered {
        item: RegistryItem,
        organization: String,
    },
}

struct State {
    config: RemdSimConfig,
    faults: RwLock<Faults>,
    entries: Mutex<HashMap<String, Entry>>,
    registrations: Mutex<HashMap<String, u32>>,
    seq: AtomicU64,
    received: AtomicU64,
    signed_messages: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    callbacks_sent: AtomicU64,
    callbacks_lost: AtomicU64,
    http: reqwest::Client,
}

/// Counters of what the simulator saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// `registerDocument` requests received (including faulted ones).
    pub received: u64,
    /// Documents registered.
    pub registered: u64,
    /// Requests refused as duplicates.
    pub duplicates: u64,
    /// Verdicts with data errors.
    pub rejected: u64,
    /// Callbacks delivered.
    pub callbacks_sent: u64,
    /// Callbacks deliberately dropped.
    pub callbacks_lost: u64,
}

/// A running simulator.
pub struct RemdSim {
    /// Endpoint URL (`http://127.0.0.1:PORT/remd`).
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl RemdSim {
    /// Starts on a random loopback port.
    pub fn start(config: RemdSimConfig) -> std::io::Result<RemdSim> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            faults: RwLock::new(config.faults.clone()),
            config,
            entries: Mutex::new(HashMap::new()),
            registrations: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(14_000),
            received: AtomicU64::new(0),
            signed_messages: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            callbacks_sent: AtomicU64::new(0),
            callbacks_lost: AtomicU64::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        });
        let data = Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/remd", web::post().to(endpoint))
        })
        .workers(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(RemdSim {
            url: format!("http://{addr}/remd"),
            state,
            handle,
        })
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.state.faults.write() {
            *f = faults;
        }
    }

    /// Registers `local_uid` as if another system had, with a document of digest `digest`
    /// (hex): the gateway's own registration of that UID then meets a duplicate.
    pub fn preregister(&self, local_uid: &str, organization: &str, digest: &str) {
        let n = self.state.seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.state.entries.lock() {
            e.insert(
                local_uid.to_string(),
                Entry::Registered {
                    item: RegistryItem {
                        emdr_id: format!("16.62.23.09.{n:09}"),
                        local_uid: local_uid.to_string(),
                        registration_date_time: chrono::Utc::now().to_rfc3339(),
                        content_digest: Some(digest.to_ascii_lowercase()),
                    },
                    organization: organization.to_string(),
                },
            );
        }
    }

    /// How many times a local UID was registered (exactly-once means 1).
    pub fn registrations(&self, local_uid: &str) -> u32 {
        self.state
            .registrations
            .lock()
            .map(|r| r.get(local_uid).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Local UIDs registered more than once (must always be empty).
    pub fn registered_twice(&self) -> Vec<String> {
        self.state
            .registrations
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `registerDocument` messages whose XMLDSig signature verified.
    pub fn signed_messages(&self) -> u64 {
        self.state.signed_messages.load(Ordering::Relaxed)
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        let s = &self.state;
        Counters {
            received: s.received.load(Ordering::Relaxed),
            registered: s
                .registrations
                .lock()
                .map(|r| r.values().map(|n| u64::from(*n)).sum())
                .unwrap_or(0),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            callbacks_sent: s.callbacks_sent.load(Ordering::Relaxed),
            callbacks_lost: s.callbacks_lost.load(Ordering::Relaxed),
        }
    }

    /// Stops the simulator.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn reply(body: &str, relates_to: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(SoapVersion::V12.content_type())
        .body(Addressing::reply(relates_to, "remd-sim").envelope(body))
}

fn fault(code: &str, message: &str, server_side: bool) -> HttpResponse {
    let side = if server_side { "Receiver" } else { "Sender" };
    let body = format!(
        r#"<soap:Fault><soap:Code><soap:Value>soap:{side}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang="en">{}</soap:Text></soap:Reason><soap:Detail>{}</soap:Detail></soap:Fault>"#,
        dom::escape_text(message),
        errors_xml(&[RegistryError {
            code: code.into(),
            message: message.into(),
        }])
    );
    let status = if server_side { 500 } else { 400 };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type(SoapVersion::V12.content_type())
        .body(soap::envelope(SoapVersion::V12, "", &body))
}

async fn endpoint(state: Data<State>, body: Bytes) -> HttpResponse {
    let faults = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let req = match soap::parse_request(&body, &Limits::default()) {
        Ok(r) => r,
        Err(e) => return fault("SCHEMA_VALIDATION_ERROR", &e.to_string(), false),
    };
    let addressing = Addressing::from_header(req.header.as_ref());
    let signed = req
        .header
        .as_ref()
        .and_then(|h| h.child_ns(crate::codec::xml::dsig::NS_WSSE, "Security"))
        .is_some();
    let must =
        state.config.require_signed_messages && req.operation.name == "registerDocumentRequest";
    if signed || must {
        match crate::codec::xml::dsig::verify_envelope(&body, &Limits::default()) {
            Ok(_) => {
                state.signed_messages.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return fault("MESSAGE_SIGNATURE_INVALID", &e.to_string(), false),
        }
    }
    match req.operation.name.as_str() {
        "registerDocumentRequest" => register(state, faults, addressing, &req.operation).await,
        "getRegistryItemRequest" => {
            let uid = req
                .operation
                .child_text("localUid")
                .unwrap_or("")
                .to_string();
            let entry = state.entries.lock().ok().and_then(|e| e.get(&uid).cloned());
            let inner = match entry {
                Some(Entry::Registered { item, .. }) => {
                    format!("<status>registered</status>{}", item.to_xml())
                }
                Some(Entry::InProgress { .. }) => "<status>in-progress</status>".into(),
                None => "<status>not-found</status>".into(),
            };
            reply(
                &format!(
                    r#"<getRegistryItemResponse xmlns="{NS_SERVICE}">{inner}</getRegistryItemResponse>"#
                ),
                &addressing.message_id,
            )
        }
        "searchRegistryItemRequest" => {
            let org = req.operation.child_text("organization").map(str::to_string);
            let items: Vec<RegistryItem> = state
                .entries
                .lock()
                .map(|e| {
                    e.values()
                        .filter_map(|x| match x {
                            Entry::Registered { item, organization }
                                if org.as_ref().is_none_or(|o| o == organization) =>
                            {
                                Some(item.clone())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut out = format!(r#"<searchRegistryItemResponse xmlns="{NS_SERVICE}"><items>"#);
            for i in items {
                out.push_str(&i.to_xml());
            }
            out.push_str("</items></searchRegistryItemResponse>");
            reply(&out, &addressing.message_id)
        }
        other => fault(
            "SCHEMA_VALIDATION_ERROR",
            &format!("unknown operation {other}"),
            false,
        ),
    }
}

async fn register(
    state: Data<State>,
    faults: Faults,
    addressing: Addressing,
    op: &dom::Element,
) -> HttpResponse {
    state.received.fetch_add(1, Ordering::Relaxed);
    if roll() < faults.timeout {
        tokio::time::sleep(faults.hang.max(Duration::from_secs(1))).await;
        return fault("ASYNC_RESPONSE_TIMEOUT", "simulated timeout", true);
    }
    if roll() < faults.rate_limit {
        return fault("RATE_LIMIT", "simulated rate limit", true);
    }
    if roll() < faults.internal_error {
        return fault("INTERNAL_ERROR", "simulated internal error", true);
    }
    let request = match RegisterDocument::from_element(op) {
        Ok(r) => r,
        Err(e) => return fault("SCHEMA_VALIDATION_ERROR", &e.to_string(), false),
    };
    let Some(reply_to) = addressing.reply_to.clone() else {
        return fault("SCHEMA_VALIDATION_ERROR", "wsa:ReplyTo is required", false);
    };
    {
        let Ok(mut entries) = state.entries.lock() else {
            return fault("INTERNAL_ERROR", "state poisoned", true);
        };
        match entries.get(&request.local_uid) {
            Some(Entry::InProgress { message_id }) if *message_id == addressing.message_id => {
                // The same message again (a retry): acknowledge once more, decide once.
                return reply(&ack(), &addressing.message_id);
            }
            Some(_) => {
                state.duplicates.fetch_add(1, Ordering::Relaxed);
                return fault(
                    "NOT_UNIQUE_PROVIDED_ID",
                    &format!(
                        "local UID {} is already registered or in progress",
                        request.local_uid
                    ),
                    false,
                );
            }
            None => {
                entries.insert(
                    request.local_uid.clone(),
                    Entry::InProgress {
                        message_id: addressing.message_id.clone(),
                    },
                );
            }
        }
    }
    let lost = roll() < faults.lost_callback;
    let st = state.clone();
    let message_id = addressing.message_id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(st.config.verdict_delay).await;
        decide(st, request, message_id, reply_to, lost).await;
    });
    reply(&ack(), &addressing.message_id)
}

fn ack() -> String {
    format!(
        r#"<registerDocumentResponse xmlns="{NS_SERVICE}"><status>success</status></registerDocumentResponse>"#
    )
}

async fn fetch_file(state: &State, url: &str, local_uid: &str) -> Result<Vec<u8>, String> {
    let a = Addressing {
        action: "getDocumentFile".into(),
        message_id: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
        to: url.to_string(),
        reply_to: None,
        relates_to: None,
        client_entity_id: "remd-sim".into(),
    };
    let body = format!(
        r#"<getDocumentFileRequest xmlns="{NS_SERVICE}"><localUid>{}</localUid></getDocumentFileRequest>"#,
        dom::escape_text(local_uid)
    );
    let r = state
        .http
        .post(url)
        .bearer_auth(&state.config.gateway_token)
        .header(
            "content-type",
            "application/soap+xml; charset=utf-8; action=\"getDocumentFile\"",
        )
        .body(a.envelope(&body))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    let parsed = soap::parse_request(&bytes, &Limits::default()).map_err(|e| e.to_string())?;
    let content = parsed
        .operation
        .child_text("content")
        .ok_or_else(|| format!("no content in {}", parsed.operation.name))?;
    base64::engine::general_purpose::STANDARD
        .decode(content.as_bytes())
        .map_err(|e| e.to_string())
}

async fn decide(
    state: Data<State>,
    request: RegisterDocument,
    message_id: String,
    reply_to: String,
    lost: bool,
) {
    let mut errors = Vec::new();
    if let Some(known) = &state.config.known_orgs {
        if !known.contains(&request.organization) {
            errors.push(RegistryError {
                code: "ORG_NOT_FOUND_IN_FRMO".into(),
                message: format!("organization {} is not in FRMO", request.organization),
            });
        }
    }
    if errors.is_empty() && state.config.fetch_file {
        match fetch_file(&state, &request.file_url, &request.local_uid).await {
            Ok(file) => {
                if let Some(check) = &state.config.check {
                    errors.extend(check.check(&request, &file));
                }
            }
            Err(e) => errors.push(RegistryError {
                code: "DOCUMENT_FILE_UNAVAILABLE".into(),
                message: format!("could not fetch the document file: {e}"),
            }),
        }
    }
    let result = if errors.is_empty() {
        let n = state.seq.fetch_add(1, Ordering::Relaxed);
        let item = RegistryItem {
            emdr_id: format!("16.62.23.09.{n:09}"),
            local_uid: request.local_uid.clone(),
            registration_date_time: chrono::Utc::now().to_rfc3339(),
            content_digest: Some(request.content_digest.to_ascii_lowercase()),
        };
        if let Ok(mut e) = state.entries.lock() {
            e.insert(
                request.local_uid.clone(),
                Entry::Registered {
                    item: item.clone(),
                    organization: request.organization.clone(),
                },
            );
        }
        if let Ok(mut r) = state.registrations.lock() {
            *r.entry(request.local_uid.clone()).or_insert(0) += 1;
        }
        RegisterResult {
            relates_to_message: message_id,
            status: "success".into(),
            item: Some(item),
            errors: Vec::new(),
        }
    } else {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = state.entries.lock() {
            e.remove(&request.local_uid);
        }
        RegisterResult {
            relates_to_message: message_id,
            status: "error".into(),
            item: None,
            errors,
        }
    };
    if lost {
        state.callbacks_lost.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let a = Addressing {
        action: "registerDocumentResult".into(),
        message_id: format!("urn:uuid:{}", uuid::Uuid::now_v7()),
        to: reply_to.clone(),
        reply_to: None,
        relates_to: Some(result.relates_to_message.clone()),
        client_entity_id: "remd-sim".into(),
    };
    let envelope = match &state.config.callback_signer {
        None => a.envelope(&result.to_xml()),
        Some(signer) => match crate::codec::xml::dsig::sign_envelope(
            crate::codec::soap::SoapVersion::V12,
            &a.header_xml(),
            &result.to_xml(),
            signer.as_ref(),
            &crate::codec::xml::Limits::default(),
        ) {
            Ok(signed) => signed,
            Err(_) => return,
        },
    };
    for attempt in 0..3u64 {
        let sent = state
            .http
            .post(&reply_to)
            .bearer_auth(&state.config.gateway_token)
            .header("content-type", format!("application/soap+xml; charset=utf-8; action=\"{NS_CALLBACK}registerDocumentResult\""))
            .body(envelope.clone())
            .send()
            .await;
        if matches!(&sent, Ok(r) if r.status().is_success()) {
            state.callbacks_sent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
}

/// The registry's checks of a fetched file: the GOST digest matches the registered one, each
/// signature checksum matches, and each signature verifies over the bytes with one signer.
pub struct CryptoCheck;

impl DocumentCheck for CryptoCheck {
    fn check(&self, request: &RegisterDocument, file: &[u8]) -> Vec<RegistryError> {
        use crate::sign::{digest, verify_detached_cms, DigestAlgorithm, SignError};
        let mut errors = Vec::new();
        let err = |code: &str, message: String| RegistryError {
            code: code.into(),
            message,
        };
        match digest(DigestAlgorithm::Streebog256, file) {
            Ok(d) if hex::encode(&d) == request.content_digest.to_ascii_lowercase() => {}
            Ok(_) => errors.push(err(
                "DIGEST_MISMATCH",
                "fetched file does not match the registered digest".into(),
            )),
            Err(e) => errors.push(err("VALSYS_INTERNAL_ERROR", e.to_string())),
        }
        for s in &request.signatures {
            if crate::codec::remd::sha256_hex(&s.cms) != s.checksum.to_ascii_lowercase() {
                errors.push(err(
                    "SIGNATURE_VERIFICATION_ERROR",
                    format!("{} signature checksum mismatch", s.role),
                ));
                continue;
            }
            match verify_detached_cms(file, &s.cms, None) {
                Ok(_) => {}
                Err(SignError::MultipleSigners(n)) => errors.push(err(
                    "MULTIPLE_SIGNERS",
                    format!("{} signature has {n} signers", s.role),
                )),
                Err(e) => errors.push(err(
                    "SIGNATURE_VERIFICATION_ERROR",
                    format!("{} signature: {e}", s.role),
                )),
            }
        }
        errors
    }
}
