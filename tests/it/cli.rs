//! Operator commands through the built binary.

use std::process::Command;

fn medgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medgate"))
        .args(args)
        .output()
        .expect("run medgate")
}

#[test]
fn sign_and_verify_with_gost_and_a_trust_anchor() {
    let keys = format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("doc.xml");
    std::fs::write(&doc, "<doc>synthetic</doc>").unwrap();
    let sig = dir.path().join("doc.p7s");
    let (doc_s, sig_s) = (doc.to_str().unwrap(), sig.to_str().unwrap());
    let out = medgate(&[
        "sign",
        "--in",
        doc_s,
        "--out",
        sig_s,
        "--cert",
        &format!("{keys}/doctor-gost256.cert.pem"),
        "--key",
        &format!("{keys}/doctor-gost256.key.pem"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Gost2012_256"));

    let out = medgate(&[
        "verify",
        "--in",
        doc_s,
        "--signature",
        sig_s,
        "--ca",
        &format!("{keys}/doctor-gost256.cert.pem"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("SNILS: 12345678964") && text.contains("verified against --ca"),
        "{text}"
    );

    let out = medgate(&[
        "verify",
        "--in",
        doc_s,
        "--signature",
        sig_s,
        "--ca",
        &format!("{keys}/org-ec.cert.pem"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not trusted"));

    std::fs::write(&doc, "<doc>changed</doc>").unwrap();
    let out = medgate(&["verify", "--in", doc_s, "--signature", sig_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));

    let out = medgate(&[
        "sign",
        "--in",
        doc_s,
        "--out",
        sig_s,
        "--pkcs12",
        &format!("{keys}/org-ec.p12"),
        "--passphrase",
        "wrong",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase"));
}

#[test]
fn every_command_has_help() {
    for cmd in [
        "serve",
        "migrate",
        "check-config",
        "demo",
        "sign",
        "verify",
        "bench",
    ] {
        let out = medgate(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd}"
        );
    }
}
