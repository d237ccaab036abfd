//! The listener's TLS: the acceptor built from `http.tls`, the context every handshake takes
//! (swapped on reload, so certificate, key and client CA change without a restart), and the
//! client certificate a connection presented, for authentication.

use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use actix_tls::accept::openssl::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{
    SniError, SslAcceptor, SslAcceptorBuilder, SslContext, SslFiletype, SslMethod, SslVerifyMode,
};
use openssl::x509::{X509NameRef, X509Ref};
use tokio_util::sync::CancellationToken;

use crate::auth::PeerCertificate;
use crate::config::TlsSettings;

/// Fingerprint and subject of `cert`.
pub fn peer_certificate(cert: &X509Ref) -> Option<PeerCertificate> {
    let digest = cert.digest(MessageDigest::sha256()).ok()?;
    Some(PeerCertificate {
        sha256: <[u8; 32]>::try_from(&digest[..]).ok()?,
        subject: rfc2253(cert.subject_name()),
    })
}

/// A name as RFC 2253 writes it (and `openssl -nameopt RFC2253` prints it): the most
/// specific attribute first, `,` between them, special characters escaped.
pub fn rfc2253(name: &X509NameRef) -> String {
    let mut parts: Vec<String> = name
        .entries()
        .map(|e| {
            let nid = e.object().nid();
            let key = match nid {
                Nid::UNDEF => e.object().to_string(),
                _ => nid
                    .short_name()
                    .map_or_else(|_| e.object().to_string(), str::to_string),
            };
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_2253(&value))
        })
        .collect();
    parts.reverse();
    parts.join(",")
}

/// Escapes an attribute value the RFC 2253 way.
fn escape_2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("http.tls: {0}")]
pub struct TlsError(String);

/// The TLS context in force, read again from its files on demand.
#[derive(Clone)]
pub struct TlsReloader {
    settings: Arc<TlsSettings>,
    current: Arc<RwLock<Loaded>>,
}

/// A context and the state of the files it was built from.
struct Loaded {
    context: SslContext,
    verify: SslVerifyMode,
    files: Vec<Option<(SystemTime, u64)>>,
}

impl TlsReloader {
    /// Loads the files of `settings`; fails if they do not make a context.
    pub fn new(settings: &TlsSettings) -> Result<TlsReloader, TlsError> {
        let files = stamps(settings);
        let (context, verify) = build(settings)?;
        Ok(TlsReloader {
            settings: Arc::new(settings.clone()),
            current: Arc::new(RwLock::new(Loaded {
                context,
                verify,
                files,
            })),
        })
    }

    /// The acceptor to listen with: its handshakes take the context in force (the
    /// server-name callback runs on every ClientHello, with or without SNI).
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, TlsError> {
        let mut builder = builder(&self.settings)?;
        let current = self.current.clone();
        builder.set_servername_callback(move |ssl, _alert| {
            let (context, verify) = match current.read() {
                Ok(l) => (l.context.clone(), l.verify),
                Err(_) => return Err(SniError::ALERT_FATAL),
            };
            ssl.set_ssl_context(&context)
                .map_err(|_| SniError::ALERT_FATAL)?;
            // The verify mode was copied from the first context when the connection began.
            ssl.set_verify(verify);
            Ok(())
        });
        Ok(builder)
    }

    /// Builds a context from the files as they are now and puts it in force; on failure
    /// the one in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = stamps(&self.settings);
        let built = build(&self.settings);
        let mut loaded = self
            .current
            .write()
            .map_err(|_| TlsError("lock poisoned".into()))?;
        // A failed build is not retried until the files change again.
        loaded.files = files;
        let (context, verify) = built?;
        loaded.context = context;
        loaded.verify = verify;
        Ok(())
    }

    /// Reloads when a file changed since the last load; true if it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.settings);
        let changed = self.current.read().map(|l| l.files != now).unwrap_or(true);
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Reloads on `SIGHUP` and, every `watch_secs`, when the files changed, until `stop`.
    pub fn spawn_watch(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        // Installed before returning, so a SIGHUP from now on reloads instead of killing.
        let mut hangup = hangups();
        tokio::spawn(async move {
            let period = Duration::from_secs(this.settings.watch_secs.max(1));
            let watching = this.settings.watch_secs > 0;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let signalled = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick(), if watching => false,
                    Some(()) = next_hangup(&mut hangup) => true,
                };
                let result = if signalled {
                    this.reload().map(|()| true)
                } else {
                    this.reload_if_changed()
                };
                match result {
                    Ok(true) => {
                        tracing::info!(signalled, "TLS certificate, key and client CA reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in force")
                    }
                }
            }
        })
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

/// The next `SIGHUP`; never, where there are none.
async fn next_hangup(h: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = h {
        return s.recv().await;
    }
    let _ = h;
    std::future::pending().await
}

/// Modification time and length of each file (none: unreadable).
fn stamps(s: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&s.certificate),
        Some(&s.private_key),
        s.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        let m = std::fs::metadata(PathBuf::from(p)).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
    .collect()
}

/// An acceptor builder (Mozilla's intermediate profile) with the files of `s` loaded.
fn builder(s: &TlsSettings) -> Result<SslAcceptorBuilder, TlsError> {
    let err = |what: &str, e: openssl::error::ErrorStack| TlsError(format!("{what}: {e}"));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| err("acceptor", e))?;
    b.set_certificate_chain_file(&s.certificate)
        .map_err(|e| err(&format!("certificate {}", s.certificate), e))?;
    b.set_private_key_file(&s.private_key, SslFiletype::PEM)
        .map_err(|e| err(&format!("private_key {}", s.private_key), e))?;
    b.check_private_key()
        .map_err(|e| err("private_key does not match certificate", e))?;
    if let Some(ca) = &s.client_ca {
        b.set_ca_file(ca)
            .map_err(|e| err(&format!("client_ca {ca}"), e))?;
        let names = openssl::x509::X509::stack_from_pem(
            &std::fs::read(ca).map_err(|e| TlsError(format!("client_ca {ca}: {e}")))?,
        )
        .map_err(|e| err(&format!("client_ca {ca}"), e))?;
        let mut list = openssl::stack::Stack::new().map_err(|e| err("client_ca", e))?;
        for c in &names {
            list.push(
                c.subject_name()
                    .to_owned()
                    .map_err(|e| err("client_ca", e))?,
            )
            .map_err(|e| err("client_ca", e))?;
        }
        b.set_client_ca_list(list);
        b.set_verify(verify_mode(s));
    }
    Ok(b)
}

fn verify_mode(s: &TlsSettings) -> SslVerifyMode {
    match (&s.client_ca, s.require_client_certificate) {
        (None, _) => SslVerifyMode::NONE,
        (Some(_), false) => SslVerifyMode::PEER,
        (Some(_), true) => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
    }
}

/// A context from the files of `s`, with its verify mode.
fn build(s: &TlsSettings) -> Result<(SslContext, SslVerifyMode), TlsError> {
    Ok((builder(s)?.build().into_context(), verify_mode(s)))
}

/// `on_connect` hook: puts the verified client certificate of a TLS connection in the
/// connection's extensions.
pub fn on_connect(io: &dyn Any, ext: &mut Extensions) {
    if let Some(tls) = io.downcast_ref::<TlsStream<TcpStream>>() {
        if let Some(peer) = tls
            .ssl()
            .peer_certificate()
            .and_then(|c| peer_certificate(&c))
        {
            ext.insert(peer);
        }
    }
}
