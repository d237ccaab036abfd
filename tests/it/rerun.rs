//! Reruns from the transaction log: a failed inbound exchange (FHIR and SOAP) sent again as
//! the client that sent it, once its cause is gone; what is not rerun, and why; the audit
//! trail and the dashboard's page.

use medgate::config::{BodyPolicy, RoutePolicy};
use medgate::model::schedule::Channel;
use medgate::sim::emias::Faults;
use medgate::store::audit::AuditQuery;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::booking::{issue_code, params, patient, policy, Fx, ORG};
use crate::support::*;

const OPS_TOKEN: &str = "test-clinic-ops-token";

async fn admin_get(fx: &Fx, token: &str, path: &str) -> (StatusCode, Value) {
    let res =
        fx.t.http
            .get(fx.t.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

async fn rerun(fx: &Fx, token: &str, id: &str) -> (StatusCode, Value) {
    let res =
        fx.t.http
            .post(fx.t.url(&format!("/api/admin/transactions/{id}/rerun")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

/// The one record matching `query` whose operation contains `op`.
async fn record(fx: &Fx, query: &str, op: &str) -> Value {
    let (s, list) = admin_get(fx, ADMIN_TOKEN, &format!("/api/admin/transactions?{query}")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let found: Vec<&Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"].as_str().unwrap_or("").contains(op))
        .collect();
    assert_eq!(found.len(), 1, "{op} in {list}");
    found[0].clone()
}

/// The dashboard's transaction log with query `q`, as the operator sees it.
async fn log_page(fx: &Fx, q: &str) -> (StatusCode, String) {
    let res =
        fx.t.http
            .get(fx.t.url(&format!("/admin/transactions{q}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
    (res.status(), res.text().await.unwrap())
}

fn refusal(v: &Value) -> String {
    v["error"].as_str().unwrap_or("").to_string()
}

async fn failed_exchanges_are_rerun_as_their_client(backend: Backend) {
    let fx = Fx::start(backend, |s| {
        s.clients.push(client(
            "clinic-ops",
            OPS_TOKEN,
            &[CLINIC_ORG],
            &["transactions:rerun"],
        ));
        // The compensating cancels retry each second (the clinic system fails only briefly).
        s.booking.mis_retry_schedule_secs = vec![1; 20];
        // Holds keep metadata only: nothing of theirs can be sent again.
        s.transaction_log.routes.push(RoutePolicy {
            prefix: "/fhir/Appointment/$hold".into(),
            bodies: BodyPolicy::MetadataOnly,
            retention_days: None,
        });
    })
    .await;
    let free = fx.free(Channel::Internet).await;
    let (fhir_slot, soap_slot) = (free[0].id.clone(), free[1].id.clone());

    // The clinic system fails: a FHIR booking and a SOAP booking fail with it.
    fx.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let (s, failed) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&fhir_slot, Some(patient(7)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&failed)),
        (StatusCode::GATEWAY_TIMEOUT, "MIS_UNAVAILABLE".into()),
        "{failed}"
    );
    let inner = format!(
        "<IdAppointment>{soap_slot}</IdAppointment><IdLPU>{ORG}</IdLPU><Polis>{}</Polis><Birthday>1980-05-17</Birthday>",
        policy(8)
    );
    let (_, body) = crate::hub::call(&fx, PORTAL_TOKEN, "SetAppointment", &inner, None).await;
    assert_eq!(crate::hub::fault(&body).0, "MIS_UNAVAILABLE", "{body}");
    // The clinic system is back; the compensating cancels of both reach it.
    fx.sim.set_faults(Faults::default());
    fx.wait_outbox_done("mis", 2).await;

    let fhir = record(&fx, "direction=inbound&status=server-error", "$book").await;
    let soap = record(
        &fx,
        "direction=inbound&status=server-error",
        "SetAppointment",
    )
    .await;
    assert_eq!(
        soap["soap_action"],
        format!("\"{}SetAppointment\"", crate::hub::ACTION)
    );
    let fhir_id = fhir["id"].as_str().unwrap().to_string();
    let soap_id = soap["id"].as_str().unwrap().to_string();

    // Another organization's operator does not see the portal's exchange.
    let (s, v) = rerun(&fx, OPS_TOKEN, &fhir_id).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::NOT_FOUND, "TRANSACTION_NOT_FOUND".into()),
        "{v}"
    );

    // The operator reruns both: each is booked, as the portal, in the clinic system too.
    // Two operators at once: one rerun goes, the other is told why not.
    for (id, slot) in [(&fhir_id, &fhir_slot), (&soap_id, &soap_slot)] {
        let (first, second) =
            tokio::join!(rerun(&fx, ADMIN_TOKEN, id), rerun(&fx, ADMIN_TOKEN, id));
        let (s, v, other) = match (first, second) {
            ((StatusCode::OK, v), other) | (other, (StatusCode::OK, v)) => {
                (StatusCode::OK, v, other)
            }
            (a, b) => panic!("no rerun went: {a:?} {b:?}"),
        };
        assert_eq!(other.0, StatusCode::CONFLICT, "{other:?}");
        assert!(
            ["RERUN_IN_PROGRESS", "ALREADY_RERUN"].contains(&refusal(&other.1).as_str()),
            "{other:?}"
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (v["status"].as_str(), v["rerun_of"].as_str()),
            (Some("ok"), Some(id.as_str())),
            "{v}"
        );
        assert!(
            fx.mis_has_booked(slot).await,
            "the rerun of {id} booked {slot}"
        );
        let again = record(&fx, &format!("rerun_of={id}"), "").await;
        assert_eq!(again["id"], v["id"], "{again}");
        assert_eq!(
            again["client_id"], "portal",
            "the rerun acts as the client that sent it"
        );
        assert_eq!(again["status"], "ok");
        assert_eq!(again["http_status"], v["http_status"]);
    }
    assert_eq!(
        fx.t.gw
            .store
            .slot(&fhir_slot)
            .await
            .unwrap()
            .unwrap()
            .status,
        medgate::model::schedule::SlotStatus::Busy
    );

    // What is not rerun, and why.
    let (s, v) = rerun(&fx, ADMIN_TOKEN, &fhir_id).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::CONFLICT, "ALREADY_RERUN".into()),
        "{v}"
    );
    let done = record(&fx, &format!("rerun_of={soap_id}"), "").await;
    let (s, v) = rerun(&fx, ADMIN_TOKEN, done["id"].as_str().unwrap()).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::CONFLICT, "TRANSACTION_SUCCEEDED".into()),
        "{v}"
    );
    let (s, list) = admin_get(
        &fx,
        ADMIN_TOKEN,
        "/api/admin/transactions?direction=outbound&status=server-error",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let call = list["items"][0]["id"]
        .as_str()
        .expect("a failed call to the clinic")
        .to_string();
    let (s, v) = rerun(&fx, ADMIN_TOKEN, &call).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::CONFLICT, "NOT_INBOUND".into()),
        "{v}"
    );
    let (s, _) = fx
        .get(PORTAL_TOKEN, "/fhir/Appointment/no-such-appointment")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let read = record(&fx, "status=client-error&direction=inbound", "GET").await;
    let (s, v) = rerun(&fx, ADMIN_TOKEN, read["id"].as_str().unwrap()).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::CONFLICT, "READ_ONLY".into()),
        "{v}"
    );
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &serde_json::json!({"resourceType": "Parameters"}),
            None,
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    let hold = record(&fx, "status=client-error&direction=inbound", "$hold").await;
    let (s, v) = rerun(&fx, ADMIN_TOKEN, hold["id"].as_str().unwrap()).await;
    assert_eq!(
        (s, refusal(&v)),
        (StatusCode::CONFLICT, "NO_STORED_BODY".into()),
        "{v}"
    );

    // Every ask is in the audit trail under the operator, refusals with their reason.
    let events =
        fx.t.gw
            .store
            .audit_events(
                &AuditQuery {
                    client_id: Some("admin".into()),
                    ..AuditQuery::default()
                },
                100,
            )
            .await
            .unwrap();
    let reruns: Vec<(String, bool, String)> = events
        .iter()
        .filter(|e| e.entity.as_str() == "transaction-body" && e.action.as_str() == "update")
        .map(|e| {
            (
                e.entity_id.clone().unwrap_or_default(),
                e.success,
                e.detail.clone(),
            )
        })
        .collect();
    assert!(
        reruns.contains(&(fhir_id.clone(), true, String::new())),
        "{reruns:?}"
    );
    assert!(
        reruns.contains(&(soap_id.clone(), true, String::new())),
        "{reruns:?}"
    );
    assert!(
        reruns.contains(&(fhir_id.clone(), false, "ALREADY_RERUN".into())),
        "{reruns:?}"
    );
    assert_eq!(reruns.len(), 9, "{reruns:?}");

    // The dashboard's log: the search finds the reruns of one record; failed exchanges
    // carry a rerun button, the reruns themselves none.
    let (_, html) = log_page(&fx, &format!("?rerun_of={fhir_id}")).await;
    assert!(
        html.contains(&format!("Reruns of <code>{fhir_id}</code>")),
        "{html}"
    );
    assert_eq!(html.matches("<tr class=\"ok\">").count(), 1, "{html}");
    assert!(!html.contains("/rerun\""), "{html}");
    let (_, html) = log_page(&fx, "?status=server-error&direction=inbound").await;
    for id in [&fhir_id, &soap_id] {
        assert!(
            html.contains(&format!("/admin/transactions/{id}/rerun")),
            "{html}"
        );
    }
    let (s, body) = log_page(&fx, "?status=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exchanges_are_rerun_as_their_client_postgres() {
    failed_exchanges_are_rerun_as_their_client(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exchanges_are_rerun_as_their_client_sqlite() {
    failed_exchanges_are_rerun_as_their_client(Backend::Sqlite).await
}
