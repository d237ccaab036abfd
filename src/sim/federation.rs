//! A federation of gateways on one machine, for the demo and the benchmarks: a CA made on
//! the spot, each gateway's server and client certificates, and each gateway's settings
//! for its region, its peers and the listener peers connect to. Demo only: a real
//! federation's certificates come from its operators.

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};

use crate::config::{
    ClientCertificate, FederationListenSettings, FederationSettings, PeerSettings, TlsSettings,
};

/// One gateway of the federation: its name, region and the address peers reach it at.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name (its peers' client id for it).
    pub name: String,
    /// Its region code.
    pub region: String,
    /// Where its listener for peers binds (`127.0.0.1:PORT`).
    pub peer_bind: String,
}

/// The certificates of a federation, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    fingerprints: Vec<(String, String)>,
}

type Made = (X509, PKey<Private>);

fn make(cn: &str, issuer: Option<&Made>, server: bool) -> Result<Made, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("O", "medgate federation (demo)")?;
    name.append_entry_by_text("CN", cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))?;
    b.set_pubkey(&key)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(365)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    }
    if server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None))?;
        b.append_extension(san)?;
    }
    b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256())?;
    Ok((b.build(), key))
}

impl Pki {
    /// Makes a CA and, for each of `names`, a server and a client certificate, under `dir`.
    pub fn create(dir: &Path, names: &[&str]) -> Result<Pki, String> {
        let e = |e: openssl::error::ErrorStack| e.to_string();
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let write = |file: String, bytes: Vec<u8>| {
            std::fs::write(dir.join(file), bytes).map_err(|e| e.to_string())
        };
        let ca = make("federation CA (demo)", None, false).map_err(e)?;
        write("ca.pem".into(), ca.0.to_pem().map_err(e)?)?;
        let mut fingerprints = Vec::new();
        for n in names {
            let server = make(&format!("{n}.gateway"), Some(&ca), true).map_err(e)?;
            write(format!("{n}.pem"), server.0.to_pem().map_err(e)?)?;
            write(
                format!("{n}.key"),
                server.1.private_key_to_pem_pkcs8().map_err(e)?,
            )?;
            let client = make(&format!("peer-{n}"), Some(&ca), false).map_err(e)?;
            write(format!("{n}-client.pem"), client.0.to_pem().map_err(e)?)?;
            write(
                format!("{n}-client.key"),
                client.1.private_key_to_pem_pkcs8().map_err(e)?,
            )?;
            let digest = client.0.digest(MessageDigest::sha256()).map_err(e)?;
            fingerprints.push((n.to_string(), hex::encode(digest)));
        }
        Ok(Pki {
            dir: dir.to_path_buf(),
            fingerprints,
        })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The CA's certificate file (what a client trusts to reach a peer listener).
    pub fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// The federation settings of `me` among `members`: every other member is a peer
    /// reaching its own region; peers connect to `me.peer_bind` with mutual TLS.
    pub fn settings(&self, me: &Member, members: &[Member]) -> FederationSettings {
        let peers = members
            .iter()
            .filter(|m| m.name != me.name)
            .map(|m| PeerSettings {
                name: m.name.clone(),
                regions: vec![m.region.clone()],
                base_url: format!("https://{}", m.peer_bind),
                client_certificate: Some(self.path(&format!("{}-client.pem", me.name))),
                client_key: Some(self.path(&format!("{}-client.key", me.name))),
                ca: Some(self.ca()),
                certificate: ClientCertificate {
                    sha256: self
                        .fingerprints
                        .iter()
                        .find(|(n, _)| *n == m.name)
                        .map(|(_, f)| f.clone()),
                    subject: None,
                },
            })
            .collect();
        FederationSettings {
            region: me.region.clone(),
            timeout_secs: 10,
            retry_schedule_secs: vec![1, 5, 30, 120, 600, 1800, 3600],
            peers,
            listen: Some(FederationListenSettings {
                bind: me.peer_bind.clone(),
                tls: TlsSettings {
                    certificate: self.path(&format!("{}.pem", me.name)),
                    private_key: self.path(&format!("{}.key", me.name)),
                    client_ca: Some(self.ca()),
                    require_client_certificate: true,
                    watch_secs: 0,
                },
            }),
        }
    }
}
