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
        "job",
    ] {
        let out = medgate(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_schedules_command() {
    let day = chrono::Utc::now().date_naive();
    let sim = medgate::sim::emias::EmiasSim::start(medgate::sim::emias::Region {
        clinics: 1,
        doctors: 2,
        days: 30,
        slots_per_day: 3,
        slot_minutes: 20,
        first_day: day,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medgate.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n[emias]\nurl = \"{}\"\ndays_ahead = 7\n",
            dir.path().join("g.db").display(),
            sim.url
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_medgate"));
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MEDGATE_")) {
                cmd.env_remove(k);
            }
            cmd.args(args).output().unwrap()
        })
    };
    let cfg = config.display().to_string();
    let org = "1.2.643.5.1.13.13.12.2.77.7001".to_string();
    let out = run(vec![
        "sync".into(),
        "schedules".into(),
        "--config".into(),
        cfg.clone(),
        "--full".into(),
        "--org".into(),
        org,
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2 practitioners") && text.contains(" slots"),
        "{text}"
    );
    let out = run(vec![
        "sync".into(),
        "schedules".into(),
        "--config".into(),
        cfg.clone(),
        "--full".into(),
        "--org".into(),
        "not-an-oid".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--org"));
    let out = run(vec![
        "sync".into(),
        "schedules".into(),
        "--config".into(),
        cfg,
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 withdrawn"));
    sim.stop().await;
}

/// `medgate hash-password` turns a password on standard input into an argon2id PHC string a
/// dashboard operator's configuration takes; an empty input is refused.
#[test]
fn hash_password_prints_an_argon2_hash() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medgate"))
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("synthetic-password\n");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    // It verifies the password, and no other.
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(hash.trim()).unwrap();
    let argon = argon2::Argon2::default();
    assert!(argon
        .verify_password(b"synthetic-password", &parsed)
        .is_ok());
    assert!(argon.verify_password(b"another", &parsed).is_err());
    assert!(!run("\n").status.success());
}
