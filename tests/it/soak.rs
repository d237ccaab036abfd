//! The soak load generator on a short profile: every operation of the mix answered, no
//! server error, every request accounted for, the gateway's own RSS sampled, every document
//! delivered.
//! No latency or memory threshold: it runs on a busy machine; figures come from the long
//! profile in BENCHMARKS.md.

use medgate::bench::{Operation, SoakBench};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_answers_every_operation_and_delivers_every_document() {
    capture_logs();
    let report = medgate::bench::soak(SoakBench {
        pg_admin_url: pg_admin_url(),
        slots: 3_000,
        seconds: 15,
        rate: 60,
        rss_every_secs: 2,
        keys: format!("{}/tests/fixtures/keys", env!("CARGO_MANIFEST_DIR")).into(),
        // In its own process, as the long profile runs it: the RSS series is the gateway's.
        gateway_binary: Some(env!("CARGO_BIN_EXE_medgate").into()),
    })
    .await
    .expect("soak ran");
    println!("{report}");

    assert_eq!(report.scheduled, 60 * 15);
    assert_eq!(report.left_in_flight, 0, "{report}");
    let scheduled: u64 = [
        Operation::SearchFhir,
        Operation::SearchSoap,
        Operation::Book,
        Operation::Document,
    ]
    .iter()
    .map(|o| report.op(*o).sent + report.op(*o).unsent)
    .sum();
    assert_eq!(scheduled, report.scheduled, "{report}");
    for op in &report.operations {
        assert!(
            op.ok > 0,
            "{} got no successful answer: {report}",
            op.operation.name()
        );
        assert_eq!(op.settled(), op.sent, "{}: {report}", op.operation.name());
        // Shed requests are refusals, not faults: 503, or a SOAP 1.1 fault (always 500)
        // carrying OVERLOADED.
        let broken: Vec<_> = op
            .errors
            .keys()
            .filter(|(status, code)| {
                *status == 0 || (*status >= 500 && *status != 503 && code != "OVERLOADED")
            })
            .collect();
        assert!(
            broken.is_empty(),
            "{}: server errors or no answer {broken:?}: {report}",
            op.operation.name()
        );
    }
    // Each successful booking is cancelled, and nothing stays booked.
    assert_eq!(
        report.op(Operation::Cancel).sent,
        report.op(Operation::Book).ok
    );
    assert_eq!(report.bookings_left, 0, "{report}");

    assert!(report.rss_gateway_only, "{report}");
    assert!(report.rss.len() >= 5, "{report}");
    assert!(report.rss.iter().all(|(_, mib)| *mib > 0.0), "{report}");
    assert!(report.rss_slope_mib_per_min.is_some(), "{report}");

    let accepted = report.op(Operation::Document).ok;
    assert!(report.documents_settled_after.is_some(), "{report}");
    assert_eq!(
        report.documents_registered + report.documents_rejected,
        accepted,
        "{report}"
    );
    assert_eq!(report.documents_rejected, 0, "{report}");
    assert_eq!(report.outbox_dead("remd"), 0, "{report}");
}
