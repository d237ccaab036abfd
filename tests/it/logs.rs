//! Logs and metrics carry no personal data: no whole SNILS or policy number, no patient's
//! or doctor's name, no document or message body. Every test process writes its logs (at
//! debug) to a file (`support::capture_logs`); one test scans its own session, and
//! `tests/run.sh` scans the files of the whole suite after it ran.

use medgate::model::schedule::Channel;
use medgate::sim::remd::RemdSimConfig;
use medgate::store::Backend;
use reqwest::StatusCode;

use crate::booking::{params, patient, policy, Fx};
use crate::documents::{cda, document_reference, setup, submit, wait_status, Setup};
use crate::support::*;

/// Names in the synthetic documents and fixtures.
const NAMES: &[&str] = &["Testova", "Vrachov"];
/// Markers of bodies: a CDA document (as text and base64) or a SOAP envelope.
const BODIES: &[&str] = &[
    "ClinicalDocument",
    "PENsaW5pY2FsRG9jdW1lbnQ",
    "Envelope xmlns",
    "<?xml",
];

/// True when the 11 digits are a SNILS with a valid check number.
fn is_snils(d: &[u8]) -> bool {
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, c)| u32::from(c - b'0') * (9 - i as u32))
        .sum();
    let check = match sum {
        s if s < 100 => s,
        100 | 101 => 0,
        s => (s % 101) % 100,
    };
    check == u32::from(d[9] - b'0') * 10 + u32::from(d[10] - b'0')
}

/// True when `b[start..end]` lies inside a UUID (8-4-4-4-12 hex digits): a request id's
/// digits are not a number (one in 10⁵ or so holds a valid SNILS by chance).
fn in_uuid(b: &[u8], start: usize, end: usize) -> bool {
    let hex = |c: &u8| c.is_ascii_hexdigit() || *c == b'-';
    let from = b[..start]
        .iter()
        .rposition(|c| !hex(c))
        .map_or(0, |p| p + 1);
    let to = b[end..]
        .iter()
        .position(|c| !hex(c))
        .map_or(b.len(), |p| end + p);
    let token = &b[from..to];
    let uuid = token.len() == 36
        && token.iter().enumerate().all(|(k, c)| match k {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    // A W3C trace id (32 hex digits) or span id (16) is no number either.
    let trace = matches!(token.len(), 16 | 32)
        && token.iter().all(u8::is_ascii_hexdigit)
        && token.iter().any(u8::is_ascii_alphabetic);
    uuid || trace
}

/// Personal data in `text`: whole SNILS (bare, or `ddd-ddd-ddd dd`), 16-digit policy
/// numbers, the fixtures' names, bodies.
pub(crate) fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let run = &b[start..i];
        if in_uuid(b, start, i) {
            continue;
        }
        // The fraction of a decimal number (an elapsed time in seconds) is no identifier.
        if start >= 2 && b[start - 1] == b'.' && b[start - 2].is_ascii_digit() {
            continue;
        }
        if (run.len() == 11 && is_snils(run)) || run.len() == 16 {
            found.push(text[start..i].to_string());
        }
        // ddd-ddd-ddd dd (or -dd)
        if run.len() == 3 && b.len() >= start + 14 {
            let w = &b[start..start + 14];
            let shape = w.iter().enumerate().all(|(k, c)| match k {
                3 | 7 => *c == b'-',
                11 => *c == b' ' || *c == b'-',
                _ => c.is_ascii_digit(),
            });
            if shape {
                let digits: Vec<u8> = w.iter().copied().filter(u8::is_ascii_digit).collect();
                if is_snils(&digits) {
                    found.push(text[start..start + 14].to_string());
                }
            }
        }
    }
    for m in NAMES.iter().chain(BODIES) {
        if text.contains(m) {
            found.push((*m).to_string());
        }
    }
    found
}

/// The leaks of each line of the log files in `files`, with where they are.
fn scan(files: &[std::path::PathBuf]) -> (usize, Vec<String>) {
    let mut lines = 0;
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            lines += 1;
            for leak in leaks(line) {
                found.push(format!("{}:{}: `{leak}` in {line}", f.display(), n + 1));
            }
        }
    }
    (lines, found)
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    for planted in [
        "patient 11223344595 booked",
        "snils=112-233-445 95",
        "policy \"7700000000000031\"",
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\">",
        "family Testova",
    ] {
        assert!(!leaks(planted).is_empty(), "missed {planted}");
    }
    for clean in [
        "***-***-*** 95",
        "************0031",
        "request_id=01a235d1-ea03-72a3-ac1f-dea1a39fdbed",
        // The last group holds 93682308940, a valid SNILS by chance (seen in a suite run).
        "\"request_id\":\"01a23777-ff6a-733e-9085-93682308940a\"",
        "2026-12-02T08:14:39.108Z took 12345678901 ns",
        // An elapsed time whose fraction holds 16 digits (seen in a suite run).
        "\"elapsed_secs\":1.1664675230000001,",
        // A trace id whose digits hold 16 in a row (seen in a suite run).
        "\"trace_id\":\"ac967a3c5d8846269806331207cd096b\"",
    ] {
        assert!(leaks(clean).is_empty(), "{clean}: {:?}", leaks(clean));
    }
}

/// A session over the personal-data paths, the error paths among them, then this process's
/// log and the metrics scanned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logs_no_personal_data() {
    let fx = Fx::start(Backend::Postgres, |_| {}).await;
    let slots = fx.free(Channel::Internet).await;
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slots[0].id, Some(patient(61)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let id = booked["id"].as_str().unwrap();
    let (s, _) = fx
        .get(PORTAL_TOKEN, &format!("/fhir/Appointment/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let search = format!(
        "/fhir/Appointment?patient:identifier=urn:oid:1.2.643.5.1.13.2.1.1.635%7C{}",
        policy(61)
    );
    assert_eq!(fx.get(PORTAL_TOKEN, &search).await.0, StatusCode::OK);
    // Refusals: a policy with a letter, a SNILS with a wrong check number.
    let mut bad = patient(62);
    bad["identifier"][0]["value"] = serde_json::json!(format!("{}X", &policy(62)[1..]));
    let (s, o) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slots[1].id, Some(bad), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{o}");
    let check = fx
        .t
        .soap(
            "http://tempuri.org/IHubService/CheckPatient",
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><CheckPatient xmlns="http://tempuri.org/"><Snils>112-233-445 96</Snils><Birthday>1980-05-17</Birthday></CheckPatient></s:Body></s:Envelope>"#,
        )
        .await;
    let fault = check.text().await.unwrap();
    assert!(
        fault.contains("Fault") && fault.contains("Snils"),
        "{fault}"
    );
    let metrics = fx.t.http.get(fx.t.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    fx.sim.stop().await;
    fx.t.stop().await;

    let Setup { t, sim } = setup(Backend::Postgres, RemdSimConfig::default(), vec![1], 30).await;
    let uid = uuid::Uuid::new_v4().to_string();
    let r = submit(&t, &document_reference(&uid, &cda(61), &[])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    wait_status(&t, &uid, "registered", 60).await;
    // A document whose header and metadata disagree on the patient.
    let mut body = document_reference(&uuid::Uuid::new_v4().to_string(), &cda(62), &[]);
    body["subject"]["identifier"]["value"] = serde_json::json!("123-456-789 64");
    assert_eq!(
        submit(&t, &body).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    sim.stop().await;
    t.stop().await;

    let (lines, found) = scan(&[log_file()]);
    // The capture works: the session's requests are in the log.
    let log = std::fs::read_to_string(log_file()).unwrap();
    assert!(
        lines > 20 && log.contains("request served") && log.contains("/fhir/DocumentReference"),
        "{lines} lines captured in {}",
        log_file().display()
    );
    assert!(
        found.is_empty(),
        "personal data in the log:\n{}",
        found.join("\n")
    );
    let in_metrics = leaks(&metrics);
    assert!(in_metrics.is_empty(), "in /metrics: {in_metrics:?}");
}

/// The logs of the whole suite (run by `tests/run.sh` after the suite, on the files the
/// suite's processes wrote).
#[test]
#[ignore = "scans the logs the whole suite wrote: run after it (tests/run.sh does)"]
fn the_suites_logs_hold_no_personal_data() {
    let files: Vec<_> = std::fs::read_dir(log_dir())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let (lines, found) = scan(&files);
    eprintln!(
        "scanned {lines} log lines in {} files of {}",
        files.len(),
        log_dir().display()
    );
    assert!(
        lines > 1000,
        "too few log lines ({lines}) to say anything: did the suite run?"
    );
    assert!(
        found.is_empty(),
        "{} leaks; the first:\n{}",
        found.len(),
        found
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
