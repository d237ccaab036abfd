//! The TLS listener: clients known by their certificate (fingerprint or subject) instead of
//! a token, certificates of untrusted CAs refused in the handshake, and the server's
//! certificate, key and client CA reloaded without a restart (file watch and `SIGHUP`).
//! Every certificate is made by the test. The store plays no part: PostgreSQL only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medgate::config::{ClientCertificate, ClientSettings, Secret, TlsSettings};
use medgate::store::Backend;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};

use crate::support::*;

/// A certificate and its key.
pub(crate) struct Cert {
    cert: X509,
    key: PKey<Private>,
}

impl Cert {
    pub(crate) fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap()
    }

    pub(crate) fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().unwrap()
    }

    pub(crate) fn sha256_hex(&self) -> String {
        // As `openssl x509 -fingerprint -sha256` prints it: colons between the bytes.
        let d = self.cert.digest(MessageDigest::sha256()).unwrap();
        d.iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A P-256 certificate for `subject` (`(field, value)` pairs), signed by `issuer` (none:
/// self-signed, a CA).
pub(crate) fn make(subject: &[(&str, &str)], issuer: Option<&Cert>, server: bool) -> Cert {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509Name::builder().unwrap();
    for (k, v) in subject {
        name.append_entry_by_text(k, v).unwrap();
    }
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    if server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())
        .unwrap();
    Cert {
        cert: b.build(),
        key,
    }
}

/// Writes `bytes` to `path` at once (a rename), as a deployment tool should.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The certificates of one test.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: [Cert; 2],
    server: [Cert; 2],
    client_ca: [Cert; 2],
    /// Known by fingerprint; issued by client CA 1.
    clinic: Cert,
    /// Known by subject; issued by client CA 1.
    kiosk: Cert,
    /// Issued by client CA 1 but configured for no client.
    stranger: Cert,
    /// Known by fingerprint; issued by client CA 2.
    clinic_2: Cert,
}

impl Pki {
    fn new() -> Pki {
        let ca = |n: &str| {
            make(
                &[("C", "RU"), ("O", "medgate tests"), ("CN", n)],
                None,
                false,
            )
        };
        let server_ca = [ca("Server CA 1"), ca("Server CA 2")];
        let client_ca = [ca("Client CA 1"), ca("Client CA 2")];
        let server = [
            make(&[("CN", "gateway 1")], Some(&server_ca[0]), true),
            make(&[("CN", "gateway 2")], Some(&server_ca[1]), true),
        ];
        let client = |cn: &str, ca: &Cert| {
            make(
                &[("C", "RU"), ("O", "Test Polyclinic, No. 1"), ("CN", cn)],
                Some(ca),
                false,
            )
        };
        Pki {
            dir: tempfile::tempdir().unwrap(),
            clinic: client("mis.clinic-1", &client_ca[0]),
            kiosk: client("kiosk-7", &client_ca[0]),
            stranger: client("stranger", &client_ca[0]),
            clinic_2: client("mis.clinic-1 (renewed)", &client_ca[1]),
            server_ca,
            server,
            client_ca,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Puts server certificate `i` and client CA `i` in force on disk.
    fn install(&self, i: usize) {
        put(&self.path("server.pem"), &self.server[i].cert_pem());
        put(&self.path("server.key"), &self.server[i].key_pem());
        put(&self.path("client-ca.pem"), &self.client_ca[i].cert_pem());
    }

    fn settings(&self, watch_secs: u64) -> TlsSettings {
        let p = |n: &str| self.path(n).to_string_lossy().into_owned();
        TlsSettings {
            certificate: p("server.pem"),
            private_key: p("server.key"),
            client_ca: Some(p("client-ca.pem")),
            require_client_certificate: false,
            watch_secs,
        }
    }
}

/// The RFC 2253 subject of `c` as the openssl command prints it.
fn openssl_subject(c: &Cert) -> String {
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&c.cert_pem())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("subject=")
        .to_string()
}

fn cert_client(
    id: &str,
    scopes: &[&str],
    sha256: Option<String>,
    subject: Option<String>,
) -> ClientSettings {
    ClientSettings {
        id: id.into(),
        name: id.into(),
        token_sha256: Secret::default(),
        organizations: vec![CLINIC_ORG.into()],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        channels: Vec::new(),
        rate: None,
        signing_certificate: None,
        certificate: Some(ClientCertificate { sha256, subject }),
    }
}

/// What a request over TLS came to: the status, or the connection's failure.
async fn call(
    base: &str,
    trust: &Cert,
    identity: Option<&Cert>,
    token: Option<&str>,
    path: &str,
) -> Result<u16, String> {
    // A fresh client per call: no pooled connection or TLS session outlives a reload.
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&trust.cert_pem()).unwrap()])
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30));
    if let Some(c) = identity {
        b = b.identity(reqwest::Identity::from_pkcs8_pem(&c.cert_pem(), &c.key_pem()).unwrap());
    }
    let mut req = b.build().unwrap().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Polls (at most 60 s: the machine may be busy) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(pki: &Pki, watch_secs: u64) -> TestGateway {
    start_with(pki, pki.settings(watch_secs)).await
}

async fn start_with(pki: &Pki, tls: TlsSettings) -> TestGateway {
    pki.install(0);
    let clients = [
        cert_client(
            "cert-clinic",
            &["schedule:read"],
            Some(pki.clinic.sha256_hex()),
            None,
        ),
        cert_client(
            "cert-clinic-renewed",
            &["schedule:read"],
            Some(pki.clinic_2.sha256_hex()),
            None,
        ),
        // Known by subject, as the openssl command prints it; no scope for the directory.
        cert_client(
            "cert-kiosk",
            &["documents:read"],
            None,
            Some(openssl_subject(&pki.kiosk)),
        ),
    ];
    TestGateway::start_with(Backend::Postgres, |s| {
        s.http.tls = Some(tls);
        s.http.public_url = None;
        s.clients.extend(clients);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_known_by_their_certificates() {
    let pki = Pki::new();
    let t = start(&pki, 0).await;
    let base = t.gw.url();
    assert!(base.starts_with("https://"), "{base}");
    let trust = &pki.server_ca[0];
    let dir = "/fhir/Organization";
    // By fingerprint: the client's scope lets it in.
    assert_eq!(
        call(&base, trust, Some(&pki.clinic), None, dir).await,
        Ok(200)
    );
    // By subject: this client lacks the scope, so it was told apart from the clinic.
    assert_eq!(
        openssl_subject(&pki.kiosk),
        "CN=kiosk-7,O=Test Polyclinic\\, No. 1,C=RU"
    );
    assert_eq!(
        call(&base, trust, Some(&pki.kiosk), None, dir).await,
        Ok(403)
    );
    // A certificate of the trusted CA that no client is configured with.
    assert_eq!(
        call(&base, trust, Some(&pki.stranger), None, dir).await,
        Ok(401)
    );
    // Neither a certificate nor a token.
    assert_eq!(call(&base, trust, None, None, dir).await, Ok(401));
    // Tokens still work over TLS, with or without a certificate (the token decides).
    assert_eq!(
        call(&base, trust, None, Some(PORTAL_TOKEN), dir).await,
        Ok(200)
    );
    assert_eq!(
        call(&base, trust, Some(&pki.kiosk), Some(PORTAL_TOKEN), dir).await,
        Ok(200)
    );
    // A certificate of a CA not (yet) trusted fails the handshake.
    let refused = call(&base, trust, Some(&pki.clinic_2), None, dir).await;
    assert!(refused.is_err(), "{refused:?}");
    // The server is not the one a client trusting another CA expects.
    let wrong = call(&base, &pki.server_ca[1], Some(&pki.clinic), None, dir).await;
    assert!(wrong.is_err(), "{wrong:?}");
    t.stop().await;
}

/// After files change (`install(1)`), the new server certificate and client CA are in
/// force: clients of the old CA are refused in the handshake.
async fn reloaded(pki: &Pki, base: &str) {
    let dir = "/fhir/Organization";
    eventually("the new certificate and client CA", || async {
        call(base, &pki.server_ca[1], Some(&pki.clinic_2), None, dir).await == Ok(200)
    })
    .await;
    let old_client = call(base, &pki.server_ca[1], Some(&pki.clinic), None, dir).await;
    assert!(old_client.is_err(), "{old_client:?}");
    let old_server = call(base, &pki.server_ca[0], Some(&pki.clinic_2), None, dir).await;
    assert!(old_server.is_err(), "{old_server:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_when_their_files_change() {
    let pki = Pki::new();
    let t = start(&pki, 1).await;
    let base = t.gw.url();
    let dir = "/fhir/Organization";
    assert_eq!(
        call(&base, &pki.server_ca[0], Some(&pki.clinic), None, dir).await,
        Ok(200)
    );
    // A broken key: the reload fails and the certificate in force stays.
    put(&pki.path("server.key"), b"not a key");
    let before = t.gw.tls.as_ref().unwrap().reload_if_changed();
    assert!(before.is_err(), "{before:?}");
    assert_eq!(
        call(&base, &pki.server_ca[0], Some(&pki.clinic), None, dir).await,
        Ok(200)
    );
    pki.install(1);
    reloaded(&pki, &base).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup() {
    let pki = Pki::new();
    // No watch: only the signal reloads.
    let t = start(&pki, 0).await;
    let base = t.gw.url();
    pki.install(1);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    reloaded(&pki, &base).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_certificate_is_required() {
    let pki = Pki::new();
    let tls = TlsSettings {
        require_client_certificate: true,
        ..pki.settings(0)
    };
    let t = start_with(&pki, tls).await;
    let base = t.gw.url();
    let dir = "/fhir/Organization";
    let trust = &pki.server_ca[0];
    let bare = call(&base, trust, None, Some(PORTAL_TOKEN), dir).await;
    assert!(bare.is_err(), "a token without a certificate: {bare:?}");
    assert_eq!(
        call(&base, trust, Some(&pki.clinic), None, dir).await,
        Ok(200)
    );
    t.stop().await;
}
