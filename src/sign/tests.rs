//! Tests of signing and verification. GOST tests never skip: CI installs
//! `libengine-gost-openssl`, and a missing engine must fail the build loudly.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use super::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

/// Every fixture key: (file stem, expected algorithm).
const FIXTURES: [(&str, Algorithm); 7] = [
    ("org-gost256", Algorithm::Gost2012_256),
    ("org-gost512", Algorithm::Gost2012_512),
    ("org-ec", Algorithm::EcdsaP256),
    ("org-rsa", Algorithm::Rsa),
    ("doctor-gost256", Algorithm::Gost2012_256),
    ("doctor-ec", Algorithm::EcdsaP256),
    ("doctor-rsa", Algorithm::Rsa),
];

const SNILS: &str = "12345678964";
const OGRN: &str = "1027700000001";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(KEYS).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn signer(stem: &str) -> LocalSigner {
    LocalSigner::from_pem(
        &fixture(&format!("{stem}.key.pem")),
        &fixture(&format!("{stem}.cert.pem")),
        None,
    )
    .unwrap_or_else(|e| panic!("{stem}: {e}"))
}

/// The openssl CLI with the gost engine enabled, run in the fixtures folder.
fn openssl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("openssl")
        .args(args)
        .current_dir(KEYS)
        .env("OPENSSL_CONF", Path::new(KEYS).join("openssl-gost.cnf"))
        .output()
        .expect("the openssl CLI runs")
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn gost_engine_is_loaded() {
    let info = init_crypto();
    assert!(
        info.gost_available,
        "GOST engine not available: install libengine-gost-openssl ({})",
        info.openssl_version
    );
    assert_eq!(init_crypto(), info, "idempotent");
}

#[test]
fn digests_match_published_vectors() {
    // GOST R 34.11-2012 example message M1 (63 bytes) and the empty message.
    let m1 = b"012345678901234567890123456789012345678901234567890123456789012";
    let hex = |alg, data: &[u8]| hex::encode(digest(alg, data).unwrap());
    assert_eq!(
        hex(DigestAlgorithm::Streebog256, m1),
        "9d151eefd8590b89daa6ba6cb74af9275dd051026bb149a452fd84e5e57b5500"
    );
    assert_eq!(
        hex(DigestAlgorithm::Streebog512, m1),
        "1b54d01a4af5b9d5cc3d86d68d285462b19abc2475222f35c085122be4ba1ffa\
         00ad30f8767b3a82384c6574f024c311e2a481332b08ef7f41797891c1646f48"
    );
    assert_eq!(
        hex(DigestAlgorithm::Streebog256, b""),
        "3f539a213e97c802cc229d474c6aa32a825a360b2a933a949fd925208d9ce1bb"
    );
    assert_eq!(
        hex(DigestAlgorithm::Sha256, b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn algorithm_names_are_stable() {
    for (alg, name) in [
        (Algorithm::Gost2012_256, "gost2012-256"),
        (Algorithm::Gost2012_512, "gost2012-512"),
        (Algorithm::EcdsaP256, "ecdsa-p256"),
        (Algorithm::Rsa, "rsa"),
    ] {
        assert_eq!(alg.name(), name);
        assert_eq!(alg.to_string(), name);
        assert_eq!(serde_json::to_string(&alg).unwrap(), format!("\"{name}\""));
        assert_eq!(
            serde_json::from_str::<Algorithm>(&format!("\"{name}\"")).unwrap(),
            alg
        );
    }
}

#[test]
fn sign_and_verify_every_algorithm() {
    let data = b"<ClinicalDocument/>";
    for (stem, expected) in FIXTURES {
        let s = signer(stem);
        assert_eq!(s.algorithm(), expected, "{stem}");
        assert_eq!(s.certificate_der(), s.certificate().to_der().unwrap());
        let cms = s.sign_detached_cms(data).unwrap();
        let v = verify_detached_cms(data, &cms, None).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(v.algorithm, expected, "{stem}");
        let age = chrono::Utc::now() - v.signed_at();
        assert!(age.num_seconds().abs() < 300, "{stem}: signing time {age}");
        assert_eq!(v.signed_at().timestamp(), v.signing_time);
        assert!(!v.serial.is_empty(), "{stem}");
        if stem.starts_with("doctor") {
            assert_eq!(v.snils.as_deref(), Some(SNILS), "{stem}");
            assert_eq!(v.ogrn, None, "{stem}");
            assert!(v.subject.contains("CN=Synthetic Doctor"), "{}", v.subject);
        } else {
            assert_eq!(v.ogrn.as_deref(), Some(OGRN), "{stem}");
            assert_eq!(v.snils, None, "{stem}");
            assert!(
                v.subject.contains("O=Test Polyclinic No. 1"),
                "{}",
                v.subject
            );
        }
        for tampered in [&b"<ClinicalDocument/> "[..], b"<clinicalDocument/>", b""] {
            assert_eq!(
                verify_detached_cms(tampered, &cms, None),
                Err(SignError::Mismatch),
                "{stem}"
            );
        }
        // The empty document signs and verifies too.
        let empty = s.sign_detached_cms(b"").unwrap();
        verify_detached_cms(b"", &empty, None).unwrap_or_else(|e| panic!("{stem}: {e}"));
    }
}

#[test]
fn cms_is_detached_with_the_digest_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (stem, alg) in FIXTURES {
        let cms = signer(stem).sign_detached_cms(b"<doc/>").unwrap();
        let file = write(dir.path(), &format!("{stem}.p7s"), &cms);
        let out = openssl(
            [OsStr::new("cms"), "-cmsout".as_ref(), "-print".as_ref()]
                .into_iter()
                .chain(["-inform", "DER", "-in"].map(OsStr::new))
                .chain([file.as_os_str()]),
        );
        assert_ok(&out, stem);
        let text = String::from_utf8_lossy(&out.stdout);
        let digest_oid = match alg.digest() {
            DigestAlgorithm::Streebog256 => "(1.2.643.7.1.1.2.2)",
            DigestAlgorithm::Streebog512 => "(1.2.643.7.1.1.2.3)",
            DigestAlgorithm::Sha256 => "(2.16.840.1.101.3.4.2.1)",
        };
        let signer_info = text.split("signerInfos:").nth(1).unwrap_or_default();
        assert!(
            signer_info.contains(digest_oid),
            "{stem}: digest {digest_oid} expected in\n{signer_info}"
        );
        assert!(text.contains("eContent: <ABSENT>"), "{stem}: not detached");
        assert!(text.contains("signingTime"), "{stem}: no signing time");
        assert!(!text.contains("SMIMECapabilities"), "{stem}");
    }
}

#[test]
fn openssl_cli_verifies_our_cms() {
    let dir = tempfile::tempdir().unwrap();
    let content: &[u8] = b"<doc>synthetic\r\n\x00binary</doc>";
    let data = write(dir.path(), "doc.xml", content);
    for (stem, _) in FIXTURES {
        let cms = signer(stem).sign_detached_cms(content).unwrap();
        let sig = write(dir.path(), &format!("{stem}.p7s"), &cms);
        let verify = |data: &Path| {
            openssl(
                ["cms", "-verify", "-binary", "-inform", "DER", "-noverify"]
                    .map(OsStr::new)
                    .into_iter()
                    .chain(["-out".as_ref(), OsStr::new("/dev/null")])
                    .chain(["-in".as_ref(), sig.as_os_str()])
                    .chain(["-content".as_ref(), data.as_os_str()]),
            )
        };
        assert_ok(&verify(&data), stem);
        let other = write(dir.path(), "other.xml", b"<doc>other</doc>");
        assert!(
            !verify(&other).status.success(),
            "{stem}: tampered accepted"
        );
    }
}

#[test]
fn we_verify_openssl_cli_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "doc.xml", b"<doc/>");
    for (stem, alg) in FIXTURES {
        let sig = dir.path().join(format!("{stem}.p7s"));
        let out = openssl(
            ["cms", "-sign", "-binary", "-outform", "DER"]
                .map(OsStr::new)
                .into_iter()
                .chain(["-in".as_ref(), data.as_os_str()])
                .chain(["-out".as_ref(), sig.as_os_str()])
                .chain(["-signer".as_ref(), format!("{stem}.cert.pem").as_ref()])
                .chain(["-inkey".as_ref(), format!("{stem}.key.pem").as_ref()]),
        );
        assert_ok(&out, stem);
        let v = verify_detached_cms(b"<doc/>", &std::fs::read(&sig).unwrap(), None)
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(v.algorithm, alg);
    }
}

#[test]
fn raw_signatures_round_trip() {
    let data = b"<ds:SignedInfo>...</ds:SignedInfo>";
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "data", data);
    for (stem, alg) in FIXTURES {
        let s = signer(stem);
        let cert = s.certificate_der();
        let sig = s.sign_raw(data).unwrap();
        let expected_len = match alg {
            Algorithm::Gost2012_256 | Algorithm::EcdsaP256 => 64,
            Algorithm::Gost2012_512 => 128,
            Algorithm::Rsa => 256,
        };
        assert_eq!(sig.len(), expected_len, "{stem}");
        verify_raw(alg, &cert, data, &sig).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(
            verify_raw(alg, &cert, b"other", &sig),
            Err(SignError::Mismatch),
            "{stem}"
        );
        let mut flipped = sig.clone();
        flipped[expected_len / 2] ^= 1;
        assert_eq!(
            verify_raw(alg, &cert, data, &flipped),
            Err(SignError::Mismatch),
            "{stem}"
        );
        for short in [&sig[..sig.len() - 1], &[][..]] {
            assert_eq!(
                verify_raw(alg, &cert, data, short),
                Err(SignError::Mismatch),
                "{stem}"
            );
        }
        let wrong = if alg == Algorithm::Rsa {
            Algorithm::EcdsaP256
        } else {
            Algorithm::Rsa
        };
        assert!(matches!(
            verify_raw(wrong, &cert, data, &sig),
            Err(SignError::Unsupported(_))
        ));
        // The openssl CLI agrees (ECDSA r||s is not the DER the CLI takes).
        if alg != Algorithm::EcdsaP256 {
            let sig_file = write(dir.path(), &format!("{stem}.sig"), &sig);
            let md = match alg.digest() {
                DigestAlgorithm::Streebog256 => "-md_gost12_256",
                DigestAlgorithm::Streebog512 => "-md_gost12_512",
                DigestAlgorithm::Sha256 => "-sha256",
            };
            let pubkey = dir.path().join(format!("{stem}.pub.pem"));
            assert_ok(
                &openssl(
                    ["x509", "-pubkey", "-noout", "-in"]
                        .map(OsStr::new)
                        .into_iter()
                        .chain([format!("{stem}.cert.pem").as_ref()])
                        .chain(["-out".as_ref(), pubkey.as_os_str()]),
                ),
                stem,
            );
            let out = openssl(
                ["dgst", md, "-verify"]
                    .map(OsStr::new)
                    .into_iter()
                    .chain([pubkey.as_os_str()])
                    .chain(["-signature".as_ref(), sig_file.as_os_str()])
                    .chain([file.as_os_str()]),
            );
            assert_ok(&out, stem);
        }
    }
}

#[test]
fn chain_verification_with_a_trust_store() {
    let data = b"<doc/>";
    let store = |stems: &[&str]| {
        let mut b = openssl::x509::store::X509StoreBuilder::new().unwrap();
        for stem in stems {
            let cert = openssl::x509::X509::from_pem(&fixture(&format!("{stem}.cert.pem")));
            b.add_cert(cert.unwrap()).unwrap();
        }
        b.build()
    };
    for (stem, _) in FIXTURES {
        let cms = signer(stem).sign_detached_cms(data).unwrap();
        let trusted = store(&[stem]);
        verify_detached_cms(data, &cms, Some(&trusted)).unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(
            verify_detached_cms(b"x", &cms, Some(&trusted)),
            Err(SignError::Mismatch)
        );
        let untrusted = store(&["other-ec"]);
        match verify_detached_cms(data, &cms, Some(&untrusted)) {
            Err(SignError::Untrusted(reason)) => {
                assert!(reason.contains("self-signed"), "{stem}: {reason}")
            }
            other => panic!("{stem}: {other:?}"),
        }
    }
}

#[test]
fn refuses_two_signers_missing_signing_time_and_missing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d", b"data");
    let sign = |name: &str, extra: &[&str], signers: &[&str]| {
        let out_file = dir.path().join(name);
        let mut args: Vec<&OsStr> = ["cms", "-sign", "-binary", "-outform", "DER"]
            .map(OsStr::new)
            .to_vec();
        args.extend(extra.iter().map(OsStr::new));
        args.extend([OsStr::new("-in"), data.as_os_str()]);
        args.extend([OsStr::new("-out"), out_file.as_os_str()]);
        let names: Vec<(String, String)> = signers
            .iter()
            .map(|s| (format!("{s}.cert.pem"), format!("{s}.key.pem")))
            .collect();
        for (cert, key) in &names {
            args.extend([OsStr::new("-signer"), cert.as_ref()]);
            args.extend([OsStr::new("-inkey"), key.as_ref()]);
        }
        assert_ok(&openssl(args), name);
        std::fs::read(out_file).unwrap()
    };
    for stem in ["org-ec", "org-gost256"] {
        let two = sign("two.der", &[], &[stem, "other-ec"]);
        assert_eq!(
            verify_detached_cms(b"data", &two, None),
            Err(SignError::MultipleSigners(2))
        );
        let noattr = sign("noattr.der", &["-noattr"], &[stem]);
        assert_eq!(
            verify_detached_cms(b"data", &noattr, None),
            Err(SignError::NoSigningTime)
        );
        let nocert = sign("nocert.der", &["-nocerts"], &[stem]);
        assert_eq!(
            verify_detached_cms(b"data", &nocert, None),
            Err(SignError::NoSignerCertificate)
        );
        // A certificate is included, but not the signer's.
        let wrong_cert = sign(
            "wrongcert.der",
            &["-nocerts", "-certfile", "other-ec.cert.pem"],
            &[stem],
        );
        assert_eq!(
            verify_detached_cms(b"data", &wrong_cert, None),
            Err(SignError::NoSignerCertificate)
        );
    }
}

#[test]
fn malformed_containers_are_errors_not_panics() {
    for junk in [
        &b""[..],
        b"garbage",
        &[0x30, 0x80],
        &[0x30, 0x03, 0x02, 0x01, 0x01],
    ] {
        assert!(
            matches!(
                verify_detached_cms(b"data", junk, None),
                Err(SignError::MalformedCms(_))
            ),
            "{junk:?}"
        );
    }
    // A CMS that is not SignedData.
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d", b"data");
    let plain = dir.path().join("data.der");
    assert_ok(
        &openssl(
            ["cms", "-data_create", "-outform", "DER", "-in"]
                .map(OsStr::new)
                .into_iter()
                .chain([data.as_os_str()])
                .chain(["-out".as_ref(), plain.as_os_str()]),
        ),
        "data_create",
    );
    assert!(matches!(
        verify_detached_cms(b"data", &std::fs::read(plain).unwrap(), None),
        Err(SignError::MalformedCms(_))
    ));
    // Every truncation and a sweep of single-byte corruptions of a valid container.
    let cms = signer("org-gost256").sign_detached_cms(b"data").unwrap();
    for n in 0..cms.len() {
        assert!(
            verify_detached_cms(b"data", &cms[..n], None).is_err(),
            "{n}"
        );
    }
    for i in (0..cms.len()).step_by(3) {
        let mut bad = cms.clone();
        bad[i] ^= 0x5a;
        // Must not panic; some flips (e.g. inside an unused certificate field) may still verify.
        let _ = verify_detached_cms(b"data", &bad, None);
    }
}

#[test]
fn pkcs12_and_passphrases() {
    for (file, alg) in [
        ("org-ec.p12", Algorithm::EcdsaP256),
        ("org-gost256.p12", Algorithm::Gost2012_256),
    ] {
        let s = LocalSigner::from_pkcs12(&fixture(file), "test-pass")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(s.algorithm(), alg);
        let cms = s.sign_detached_cms(b"x").unwrap();
        verify_detached_cms(b"x", &cms, None).unwrap();
        assert!(matches!(
            LocalSigner::from_pkcs12(&fixture(file), "nope"),
            Err(SignError::WrongPassphrase(_))
        ));
    }
    assert!(matches!(
        LocalSigner::from_pkcs12(b"not pkcs12", "test-pass"),
        Err(SignError::KeyMaterial(_))
    ));
    for (stem, alg) in [
        ("doctor-ec", Algorithm::EcdsaP256),
        ("org-gost256", Algorithm::Gost2012_256),
    ] {
        let key = fixture(&format!("{stem}.key.encrypted.pem"));
        let cert = fixture(&format!("{stem}.cert.pem"));
        let s = LocalSigner::from_pem(&key, &cert, Some("test-pass")).unwrap();
        assert_eq!(s.algorithm(), alg);
        for wrong in [Some("nope"), Some(""), None] {
            assert!(
                matches!(
                    LocalSigner::from_pem(&key, &cert, wrong),
                    Err(SignError::WrongPassphrase(_))
                ),
                "{stem} {wrong:?}"
            );
        }
    }
    // A passphrase given for a plain key is ignored.
    LocalSigner::from_pem(
        &fixture("org-rsa.key.pem"),
        &fixture("org-rsa.cert.pem"),
        Some("unused"),
    )
    .unwrap();
    let mismatched = LocalSigner::from_pem(
        &fixture("org-ec.key.pem"),
        &fixture("other-ec.cert.pem"),
        None,
    );
    assert!(matches!(mismatched, Err(SignError::KeyMaterial(_))));
    assert!(matches!(
        LocalSigner::from_pem(b"junk", &fixture("org-ec.cert.pem"), None),
        Err(SignError::KeyMaterial(_))
    ));
    assert!(matches!(
        LocalSigner::from_pem(&fixture("org-ec.key.pem"), b"junk", None),
        Err(SignError::KeyMaterial(_))
    ));
}

#[test]
fn missing_key_file_names_the_file() {
    let settings = crate::config::KeySettings {
        owner: "1.2.643.5.1.13.13.12.2.77.7001".into(),
        role: crate::config::KeyRole::Organization,
        certificate: Some(format!("{KEYS}/org-ec.cert.pem")),
        private_key: Some(format!("{KEYS}/no-such.key.pem")),
        pkcs12: None,
        passphrase: None,
        remote: None,
    };
    match LocalSigner::from_settings(&settings) {
        Err(SignError::KeyFile { path, .. }) => assert!(path.ends_with("no-such.key.pem")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn other_curves_and_short_rsa_keys_are_unsupported() {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::{X509NameBuilder, X509};

    fn self_signed(key: &PKey<Private>) -> (Vec<u8>, Vec<u8>) {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "Unsupported").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(key, openssl::hash::MessageDigest::sha256()).unwrap();
        (
            key.private_key_to_pem_pkcs8().unwrap(),
            b.build().to_pem().unwrap(),
        )
    }
    let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let rsa1024 = openssl::rsa::Rsa::generate(1024).unwrap();
    for key in [
        PKey::from_ec_key(p384).unwrap(),
        PKey::from_rsa(rsa1024).unwrap(),
    ] {
        let (key_pem, cert_pem) = self_signed(&key);
        assert!(matches!(
            LocalSigner::from_pem(&key_pem, &cert_pem, None),
            Err(SignError::Unsupported(_))
        ));
        // Signed elsewhere, such a signature verifies cryptographically but is refused.
        let cert = openssl::x509::X509::from_pem(&cert_pem).unwrap();
        let cms = openssl::cms::CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(b"d"),
            openssl::cms::CMSOptions::DETACHED | openssl::cms::CMSOptions::BINARY,
        )
        .unwrap();
        assert!(matches!(
            verify_detached_cms(b"d", &cms.to_der().unwrap(), None),
            Err(SignError::Unsupported(_))
        ));
    }
}

#[test]
fn signers_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<LocalSigner>();
    send_sync::<RemoteSigner>();
    for stem in ["org-gost256", "org-ec"] {
        let s: Arc<dyn Signer> = Arc::new(signer(stem));
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let data = format!("thread {t} document {i}");
                        let cms = s.sign_detached_cms(data.as_bytes()).unwrap();
                        verify_detached_cms(data.as_bytes(), &cms, None).unwrap();
                        let raw = s.sign_raw(data.as_bytes()).unwrap();
                        verify_raw(s.algorithm(), &s.certificate_der(), data.as_bytes(), &raw)
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("no panic in signing threads");
        }
    }
}

/// Without the gost engine RSA and ECDSA work and GOST answers `GostUnavailable`. The engine
/// is process-wide, so the checks run in a child process of this test binary with an empty
/// engines directory; in the parent run this test only starts that child.
#[test]
fn without_gost_engine() {
    const CHILD: &str = "MEDGATE_SIGN_TEST_WITHOUT_GOST";
    if let Some(gost_cms) = std::env::var_os(CHILD) {
        return checks_without_gost(&std::fs::read(gost_cms).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let gost_cms = signer("org-gost256").sign_detached_cms(b"data").unwrap();
    let gost_cms = write(dir.path(), "gost.p7s", &gost_cms);
    let engines = dir.path().join("no-engines");
    std::fs::create_dir(&engines).unwrap();
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::without_gost_engine"),
            "--nocapture",
        ])
        .env(CHILD, &gost_cms)
        .env("OPENSSL_ENGINES", &engines)
        .env_remove("OPENSSL_CONF")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("checks without the gost engine passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn checks_without_gost(gost_cms: &[u8]) {
    assert!(!init_crypto().gost_available, "the engine was found anyway");
    for stem in ["org-ec", "org-rsa"] {
        let s = signer(stem);
        let cms = s.sign_detached_cms(b"data").unwrap();
        verify_detached_cms(b"data", &cms, None).unwrap();
        let raw = s.sign_raw(b"data").unwrap();
        verify_raw(s.algorithm(), &s.certificate_der(), b"data", &raw).unwrap();
    }
    assert_eq!(
        digest(DigestAlgorithm::Sha256, b"abc").map(hex::encode),
        Ok("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
    );
    for alg in [DigestAlgorithm::Streebog256, DigestAlgorithm::Streebog512] {
        assert_eq!(digest(alg, b""), Err(SignError::GostUnavailable));
    }
    for stem in ["org-gost256", "org-gost512", "doctor-gost256"] {
        let loaded = LocalSigner::from_pem(
            &fixture(&format!("{stem}.key.pem")),
            &fixture(&format!("{stem}.cert.pem")),
            None,
        );
        assert_eq!(
            loaded.map(|_| ()),
            Err(SignError::GostUnavailable),
            "{stem}"
        );
    }
    let encrypted = LocalSigner::from_pem(
        &fixture("org-gost256.key.encrypted.pem"),
        &fixture("org-gost256.cert.pem"),
        Some("test-pass"),
    );
    assert_eq!(encrypted.map(|_| ()), Err(SignError::GostUnavailable));
    assert!(LocalSigner::from_pkcs12(&fixture("org-gost256.p12"), "test-pass").is_err());
    assert_eq!(
        verify_detached_cms(b"data", gost_cms, None),
        Err(SignError::GostUnavailable)
    );
    let cert = openssl::x509::X509::from_pem(&fixture("org-gost256.cert.pem"))
        .and_then(|c| c.to_der())
        .unwrap();
    assert_eq!(
        verify_raw(Algorithm::Gost2012_256, &cert, b"data", &[0; 64]),
        Err(SignError::GostUnavailable)
    );
    println!("checks without the gost engine passed");
}
