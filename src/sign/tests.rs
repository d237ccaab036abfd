use super::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn signer(who: &str, alg: &str) -> LocalSigner {
    LocalSigner::from_pem(
        &fixture(&format!("{who}-{alg}.key.pem")),
        &fixture(&format!("{who}-{alg}.cert.pem")),
        None,
    )
    .unwrap()
}

#[test]
fn gost_engine_is_loaded() {
    // CI installs libengine-gost-openssl: GOST must work, never silently skip.
    assert!(init_crypto().gost_available, "GOST engine not available");
    let d = digest(DigestAlgorithm::Streebog256, b"").unwrap();
    // GOST R 34.11-2012 (256) of the empty string.
    assert_eq!(
        hex::encode(d),
        "3f539a213e97c802cc229d474c6aa32a825a360b2a933a949fd925208d9ce1bb"
    );
}

#[test]
fn sign_and_verify_every_algorithm() {
    let data = b"<ClinicalDocument/>";
    for (who, alg, expected) in [
        ("org", "gost256", Algorithm::Gost2012_256),
        ("org", "gost512", Algorithm::Gost2012_512),
        ("doctor", "ec", Algorithm::EcdsaP256),
        ("org", "rsa", Algorithm::Rsa),
    ] {
        let s = signer(who, alg);
        assert_eq!(s.algorithm(), expected);
        let cms = s.sign_detached_cms(data).unwrap();
        let v = verify_detached_cms(data, &cms, None).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(
            (v.signing_time - chrono::Utc::now().timestamp()).abs() < 300,
            "{alg}"
        );
        if who == "doctor" {
            assert_eq!(v.snils.as_deref(), Some("12345678964"));
        } else {
            assert_eq!(v.ogrn.as_deref(), Some("1027700000001"));
        }
        assert_eq!(
            verify_detached_cms(b"tampered", &cms, None),
            Err(SignError::Mismatch),
            "{alg}"
        );
    }
}

#[test]
fn openssl_cli_verifies_our_cms() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("doc.xml");
    std::fs::write(&data, b"<doc>synthetic</doc>").unwrap();
    for alg in ["gost256", "gost512", "ec", "rsa"] {
        let cms = signer("org", alg)
            .sign_detached_cms(b"<doc>synthetic</doc>")
            .unwrap();
        let sig = dir.path().join(format!("{alg}.p7s"));
        std::fs::write(&sig, cms).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-noverify",
                "-out",
                "/dev/null",
                "-in",
            ])
            .arg(&sig)
            .arg("-content")
            .arg(&data)
            .env(
                "OPENSSL_CONF",
                format!(
                    "{}/tests/fixtures/keys/openssl-gost.cnf",
                    env!("CARGO_MANIFEST_DIR")
                ),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{alg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn refuses_two_signers_and_missing_signing_time() {
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"));
    let data = dir.path().join("d");
    std::fs::write(&data, b"data").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&keys)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let two = dir.path().join("two.der");
    run(&[
        "cms",
        "-sign",
        "-binary",
        "-outform",
        "DER",
        "-in",
        data.to_str().unwrap(),
        "-out",
        two.to_str().unwrap(),
        "-signer",
        "org-ec.cert.pem",
        "-inkey",
        "org-ec.key.pem",
        "-signer",
        "other-ec.cert.pem",
        "-inkey",
        "other-ec.key.pem",
    ]);
    let der = std::fs::read(&two).unwrap();
    assert_eq!(
        verify_detached_cms(b"data", &der, None),
        Err(SignError::MultipleSigners(2))
    );
    let noattr = dir.path().join("noattr.der");
    run(&[
        "cms",
        "-sign",
        "-binary",
        "-noattr",
        "-outform",
        "DER",
        "-in",
        data.to_str().unwrap(),
        "-out",
        noattr.to_str().unwrap(),
        "-signer",
        "org-ec.cert.pem",
        "-inkey",
        "org-ec.key.pem",
    ]);
    let der = std::fs::read(&noattr).unwrap();
    assert_eq!(
        verify_detached_cms(b"data", &der, None),
        Err(SignError::NoSigningTime)
    );
    let nocert = dir.path().join("nocert.der");
    run(&[
        "cms",
        "-sign",
        "-binary",
        "-nocerts",
        "-outform",
        "DER",
        "-in",
        data.to_str().unwrap(),
        "-out",
        nocert.to_str().unwrap(),
        "-signer",
        "org-ec.cert.pem",
        "-inkey",
        "org-ec.key.pem",
    ]);
    let der = std::fs::read(&nocert).unwrap();
    assert_eq!(
        verify_detached_cms(b"data", &der, None),
        Err(SignError::NoSignerCertificate)
    );
    assert!(matches!(
        verify_detached_cms(b"data", b"garbage", None),
        Err(SignError::MalformedCms(_))
    ));
}

#[test]
fn pkcs12_and_wrong_passphrase() {
    let s = LocalSigner::from_pkcs12(&fixture("org-ec.p12"), "test-pass").unwrap();
    assert_eq!(s.algorithm(), Algorithm::EcdsaP256);
    assert!(matches!(
        LocalSigner::from_pkcs12(&fixture("org-ec.p12"), "nope"),
        Err(SignError::KeyMaterial(_))
    ));
    let mismatched = LocalSigner::from_pem(
        &fixture("org-ec.key.pem"),
        &fixture("other-ec.cert.pem"),
        None,
    );
    assert!(matches!(mismatched, Err(SignError::KeyMaterial(_))));
}
