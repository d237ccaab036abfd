//! Foundation: health, readiness, metrics, limits, error model, authentication,
//! transaction log.

use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

const LPU_ACTION: &str = "http://tempuri.org/IHubService/GetLPUList";

fn lpu_request(district: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetLPUList xmlns="http://tempuri.org/"><IdDistrict>{district}</IdDistrict></GetLPUList></s:Body></s:Envelope>"#
    )
}

/// Parses a SOAP fault answer and returns (faultcode or Code/Value, machine code, field).
fn fault_parts(xml: &str) -> (String, String, Option<String>) {
    let root = medgate::codec::xml::dom::parse(xml.as_bytes(), &Default::default())
        .unwrap_or_else(|e| panic!("fault is not XML ({e}): {xml}"));
    let fault = root
        .path(&["Body", "Fault"])
        .unwrap_or_else(|| panic!("no Fault in {xml}"));
    let code = fault
        .child_text("faultcode")
        .map(str::to_string)
        .or_else(|| fault.path(&["Code", "Value"]).map(|v| v.text.clone()))
        .expect("fault code");
    let detail = fault
        .child("detail")
        .or_else(|| fault.child("Detail"))
        .and_then(|d| d.child("error"))
        .expect("fault detail");
    (
        code,
        detail.child_text("code").expect("machine code").to_string(),
        detail.child_text("field").map(str::to_string),
    )
}

fn issue(outcome: &Value) -> &Value {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    &outcome["issue"][0]
}

async fn health_ready_and_metrics(backend: Backend) {
    let t = TestGateway::start(backend).await;
    let r = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let r: Value = t
        .http
        .get(t.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "ready");
    assert_eq!(r["database"], backend.name());

    // A served request shows up in the per-route counters and latency histogram.
    let r = t.get_admin("/fhir/Organization?_count=1").await;
    assert_eq!(r.status(), StatusCode::OK);
    let m = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(
            r#"medgate_http_requests_total{fault="none",method="GET",route="/fhir/Organization",status="200"} 1"#
        ),
        "{m}"
    );
    assert!(m.contains(
        r#"medgate_http_request_duration_seconds_bucket{method="GET",route="/fhir/Organization""#
    ));
    assert!(m.contains(r#"medgate_db_pool_connections{state="open"}"#));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_postgres() {
    health_ready_and_metrics(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_sqlite() {
    health_ready_and_metrics(Backend::Sqlite).await
}

async fn not_ready_until_migrated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut s = settings(&db);
    s.database.migrate_on_start = false;
    let store = medgate::store::Store::connect(&s.database).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = medgate::app::Gateway::start_on(
        s,
        store.clone(),
        listener,
        medgate::model::time::system_clock(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/readyz", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not-ready");
    store.migrate().await.unwrap();
    let r = http
        .get(format!("{}/readyz", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    gw.stop().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_migrated_postgres() {
    not_ready_until_migrated(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_migrated_sqlite() {
    not_ready_until_migrated(Backend::Sqlite).await
}

async fn body_limit_answers_413_in_the_route_protocol(backend: Backend) {
    let t = TestGateway::start_with(backend, |s| s.http.max_body_bytes = 4096).await;
    let big = "x".repeat(8192);
    // Declared length over the limit, FHIR route.
    let r = t
        .http
        .post(t.url("/fhir/DocumentReference"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let o: Value = r.json().await.unwrap();
    assert_eq!(issue(&o)["code"], "too-costly");
    assert!(issue(&o)["details"]["text"]
        .as_str()
        .unwrap()
        .contains("4096"));
    // Streamed body without Content-Length, SOAP route.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..8).map(|_| Ok("y".repeat(1024))).collect();
    let r = t
        .http
        .post(t.url("/soap/hub"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/xml")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, code, _) = fault_parts(&r.text().await.unwrap());
    assert_eq!(code, "PAYLOAD_TOO_LARGE");
    // A body under the limit still works.
    let r = t.soap(LPU_ACTION, &lpu_request("North")).await;
    assert_eq!(r.status(), StatusCode::OK);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_answers_413_in_the_route_protocol_postgres() {
    body_limit_answers_413_in_the_route_protocol(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_answers_413_in_the_route_protocol_sqlite() {
    body_limit_answers_413_in_the_route_protocol(Backend::Sqlite).await
}

async fn fhir_errors_are_operation_outcomes_naming_the_field(backend: Backend) {
    let t = TestGateway::start(backend).await;
    let r = t.get_admin("/fhir/Organization/not-an-oid").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/fhir+json"));
    let o: Value = r.json().await.unwrap();
    assert_eq!(issue(&o)["expression"][0], "Organization.id");
    assert_eq!(
        issue(&o)["details"]["coding"][0]["code"],
        "INVALID_ORGANIZATION_ID"
    );

    let o: Value = t
        .get_admin("/fhir/Organization?_count=lots")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(issue(&o)["expression"][0], "_count");
    let o: Value = t
        .get_admin("/fhir/Organization?colour=red")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(issue(&o)["code"], "not-supported");
    assert_eq!(issue(&o)["expression"][0], "colour");

    let r = t
        .get_admin("/fhir/Organization/1.2.643.5.1.13.13.12.2.77.1")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = t.get_admin("/fhir/Basic/1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let o: Value = r.json().await.unwrap();
    assert_eq!(issue(&o)["code"], "not-supported");

    // Missing and unknown credentials.
    let r = t
        .http
        .get(t.url("/fhir/Organization"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(issue(&r.json().await.unwrap())["code"], "login");
    let r = t
        .http
        .get(t.url("/fhir/Organization"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Metadata is public.
    let r = t.http.get(t.url("/fhir/metadata")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    // Its date is the build's, a real date, not a literal.
    let date = cs["date"].as_str().unwrap();
    assert_eq!(date, env!("GATEWAY_BUILD_DATE"));
    assert!(
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
        "{date}"
    );
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(types.contains(&"Location"), "{types:?}");
    // Every resource type a FHIR route serves is declared.
    for route in medgate::http::route_table().filter(|r| r.scope == "/fhir") {
        let kind = route
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        if kind != "metadata" {
            assert!(
                types.contains(&kind),
                "{kind} is served but not declared: {types:?}"
            );
        }
    }
    crate::schedules::validate_fhir(std::slice::from_ref(&cs));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_errors_are_operation_outcomes_naming_the_field_postgres() {
    fhir_errors_are_operation_outcomes_naming_the_field(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_errors_are_operation_outcomes_naming_the_field_sqlite() {
    fhir_errors_are_operation_outcomes_naming_the_field(Backend::Sqlite).await
}

async fn soap_errors_are_faults_with_machine_codes(backend: Backend) {
    let t = TestGateway::start(backend).await;
    let ok = t.soap(LPU_ACTION, &lpu_request("North")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body = ok.text().await.unwrap();
    assert_eq!(body.matches("<Clinic>").count(), 3, "{body}");

    let r = t
        .soap(
            LPU_ACTION,
            "<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>",
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/xml"));
    let (fc, code, _) = fault_parts(&r.text().await.unwrap());
    assert_eq!(
        (fc.as_str(), code.as_str()),
        ("soap:Client", "MALFORMED_XML")
    );

    let r = t
        .soap(
            "http://tempuri.org/IHubService/SetAppointment",
            &lpu_request("1"),
        )
        .await;
    let (_, code, field) = fault_parts(&r.text().await.unwrap());
    assert_eq!(code, "SOAP_ACTION_MISMATCH");
    assert_eq!(field.as_deref(), Some("SOAPAction"));

    let bomb = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>"#;
    let (_, code, _) = fault_parts(&t.soap(LPU_ACTION, bomb).await.text().await.unwrap());
    assert_eq!(code, "MALFORMED_XML");

    let other = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Frobnicate xmlns="http://tempuri.org/"/></s:Body></s:Envelope>"#;
    let r = t
        .soap("http://tempuri.org/IHubService/Frobnicate", other)
        .await;
    let (_, code, field) = fault_parts(&r.text().await.unwrap());
    assert_eq!(code, "UNKNOWN_OPERATION");
    assert_eq!(field.as_deref(), Some("Frobnicate"));

    // SOAP 1.2: Sender fault with a 4xx status and the 1.2 envelope.
    let v12 = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><GetLPUList xmlns="http://tempuri.org/"/></e:Body></e:Envelope>"#;
    let r = t
        .http
        .post(t.url("/soap/hub"))
        .bearer_auth(ADMIN_TOKEN)
        .header(
            "content-type",
            "application/soap+xml; charset=utf-8; action=\"http://tempuri.org/IHubService/Nope\"",
        )
        .body(v12)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (fc, code, _) = fault_parts(&r.text().await.unwrap());
    assert_eq!(
        (fc.as_str(), code.as_str()),
        ("soap:Sender", "SOAP_ACTION_MISMATCH")
    );

    // Unauthenticated SOAP gets a Fault too, not an empty 401.
    let r = t
        .http
        .post(t.url("/soap/hub"))
        .header("content-type", "text/xml")
        .header("soapaction", LPU_ACTION)
        .body(lpu_request("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, code, _) = fault_parts(&r.text().await.unwrap());
    assert_eq!(code, "UNAUTHORIZED");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_errors_are_faults_with_machine_codes_postgres() {
    soap_errors_are_faults_with_machine_codes(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soap_errors_are_faults_with_machine_codes_sqlite() {
    soap_errors_are_faults_with_machine_codes(Backend::Sqlite).await
}

async fn transaction_log_records_requests(backend: Backend) {
    let t = TestGateway::start_with(backend, |s| {
        s.transaction_log.routes.push(medgate::config::RoutePolicy {
            prefix: "/fhir/Organization/".into(),
            bodies: medgate::config::BodyPolicy::MetadataOnly,
            retention_days: Some(1),
        });
    })
    .await;
    let r = t
        .http
        .post(t.url("/soap/hub"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/xml")
        .header("soapaction", LPU_ACTION)
        .header("x-request-id", "req-lpu-1")
        .header("x-correlation-id", "corr-1")
        .body(lpu_request("South"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-lpu-1");
    let _ = t
        .get_admin("/fhir/Organization/1.2.643.5.1.13.13.12.2.77.7001")
        .await;

    let list: Value = t
        .get_admin("/api/admin/transactions?correlation_id=corr-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1, "{list}");
    let item = &list["items"][0];
    assert_eq!(item["operation"], "hub.GetLPUList");
    assert_eq!(item["client_id"], "admin");
    assert_eq!(item["protocol"], "soap");
    assert_eq!(item["direction"], "inbound");
    assert_eq!(item["status"], "ok");
    assert_eq!(item["request_id"], "req-lpu-1");
    let id = item["id"].as_str().unwrap();
    let one: Value = t
        .get_admin(&format!("/api/admin/transactions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(one["request_body"]["content"]
        .as_str()
        .unwrap()
        .contains("<IdDistrict>South</IdDistrict>"));
    assert!(one["response_body"]["content"]
        .as_str()
        .unwrap()
        .contains("GetLPUListResponse"));

    // Metadata-only route: no bodies, sizes kept.
    let list: Value = t
        .get_admin("/api/admin/transactions?operation=GET%20/fhir/Organization/%7Bid%7D")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["count"], 1, "{list}");
    let id = list["items"][0]["id"].as_str().unwrap();
    let one: Value = t
        .get_admin(&format!("/api/admin/transactions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["body_policy"], "metadata-only");
    assert!(one["request_body"].is_null());
    assert!(one["response_bytes"].as_i64().unwrap() > 0);

    // A SOAP 1.1 fault (HTTP 500) of a bad request is logged as a client error with its code.
    let _ = t.soap(LPU_ACTION, "<broken").await;
    let list: Value = t
        .get_admin("/api/admin/transactions?status=client-error&protocol=soap")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"][0]["error"]
            .as_str()
            .map(|e| e.starts_with("MALFORMED_XML")),
        Some(true),
        "{list}"
    );

    // Filters are validated and named.
    let r = t.get_admin("/api/admin/transactions?limit=0").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "limit");
    let r = t.get_admin("/api/admin/transactions?from=yesterday").await;
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "from");
    let r = t.get_admin("/api/admin/transactions/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Scopes: the portal client may not read the log.
    let r = t
        .http
        .get(t.url("/api/admin/transactions"))
        .bearer_auth(PORTAL_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_log_records_requests_postgres() {
    transaction_log_records_requests(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_log_records_requests_sqlite() {
    transaction_log_records_requests(Backend::Sqlite).await
}

async fn transaction_log_pages_through_a_thousand_records(backend: Backend) {
    let t = TestGateway::start(backend).await;
    let base = medgate::model::time::now_ms() - 3_600_000;
    let records: Vec<_> = (0..1000)
        .map(|i| medgate::store::transactions::TransactionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            correlation_id: format!("bulk-{i}"),
            request_id: format!("bulk-{i}"),
            client_id: Some("loader".into()),
            direction: "outbound".into(),
            protocol: "emias".into(),
            operation: "emias.GetSchedule".into(),
            method: "POST".into(),
            target: "http://127.0.0.1:1/emias".into(),
            status: if i % 10 == 0 { "server-error" } else { "ok" }.into(),
            http_status: Some(if i % 10 == 0 { 500 } else { 200 }),
            error: None,
            started_at: base + i,
            duration_us: 1000,
            request_bytes: 10,
            response_bytes: 20,
            body_policy: "metadata-only".into(),
            request_body: None,
            response_body: None,
            truncated: false,
            rerun_of: None,
            content_type: None,
            soap_action: None,
            expires_at: base + 86_400_000,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
        })
        .collect();
    t.gw.store.insert_transactions(&records).await.unwrap();

    let mut seen = std::collections::HashSet::new();
    let mut next =
        Some("/api/admin/transactions?operation=emias.GetSchedule&limit=128".to_string());
    let mut pages = 0;
    let mut last_id: Option<String> = None;
    while let Some(path) = next {
        let page: Value = t.get_admin(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_string();
            if let Some(prev) = &last_id {
                assert!(id < *prev, "newest first");
            }
            assert!(seen.insert(id.clone()), "duplicate {id}");
            last_id = Some(id);
        }
        pages += 1;
        next = page["next"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(pages, 8);

    // Filters combine with paging.
    let errors: Value = t
        .get_admin(
            "/api/admin/transactions?operation=emias.GetSchedule&status=server-error&limit=1000",
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(errors["count"], 100);
    let from = medgate::model::time::from_ms(base + 900).to_rfc3339();
    let recent: Value = t
        .get_admin(&format!(
            "/api/admin/transactions?operation=emias.GetSchedule&from={}",
            urlencode(&from)
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recent["count"], 100);

    // Retention: everything expires a day after `base`, removed in bounded batches.
    let cut = medgate::store::transactions::Retention {
        now: base + 86_400_001,
        bodies_before: 0,
        outbox_before: 0,
        history_before: 0,
        job_runs_before: 0,
    };
    let mut removed = 0;
    loop {
        let p = t.gw.store.prune_batch(&cut, 300).await.unwrap();
        assert!(p.transactions <= 300, "bounded");
        removed += p.transactions;
        if p.transactions < 300 {
            break;
        }
    }
    assert!(removed >= 1000);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_log_pages_through_a_thousand_records_postgres() {
    transaction_log_pages_through_a_thousand_records(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_log_pages_through_a_thousand_records_sqlite() {
    transaction_log_pages_through_a_thousand_records(Backend::Sqlite).await
}

/// COPY's text format escapes what a request may carry (tabs, line breaks, backslashes, a
/// literal `\N`, Cyrillic, every byte in a body); a record stored by COPY reads back as the
/// INSERT path stores it, and a batch already stored is written again without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_records_written_by_copy_read_back_unchanged_postgres() {
    let t = TestGateway::start(Backend::Postgres).await;
    let awkward = "tab\there\nline\r\\N back\\slash Запись №1";
    let body: Vec<u8> = (0..=255u8).collect();
    let records: Vec<_> = (0..3)
        .map(|i| medgate::store::transactions::TransactionRecord {
            id: uuid::Uuid::now_v7().to_string(),
            correlation_id: format!("copy-{i}"),
            request_id: awkward.into(),
            client_id: (i != 1).then(|| "loader".to_string()),
            direction: "inbound".into(),
            protocol: "soap".into(),
            operation: awkward.into(),
            method: "POST".into(),
            target: "/soap/hub?a=b\tc".into(),
            status: "client-error".into(),
            http_status: (i != 2).then_some(400),
            error: Some(awkward.into()),
            started_at: 1_700_000_000_000 + i,
            duration_us: 12,
            request_bytes: 256,
            response_bytes: -1,
            body_policy: "full".into(),
            request_body: (i == 0).then(|| body.clone()),
            response_body: (i == 0).then(Vec::new),
            truncated: i == 0,
            rerun_of: None,
            content_type: None,
            soap_action: None,
            expires_at: 1_800_000_000_000,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
        })
        .collect();
    let mut copier =
        t.gw.store
            .transaction_copier()
            .expect("PostgreSQL has COPY");
    copier.write(&records).await.unwrap();
    for r in &records {
        let got =
            t.gw.store
                .get_transaction(&r.id)
                .await
                .unwrap()
                .expect("stored");
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(r).unwrap()
        );
        assert_eq!(got.request_body, r.request_body);
        assert_eq!(got.response_body, r.response_body);
    }
    // A batch whose COPY committed unseen is written again by the INSERT path: no duplicate.
    assert!(
        copier.write(&records).await.is_err(),
        "COPY refuses a stored id"
    );
    t.gw.store.insert_transactions(&records).await.unwrap();
    copier.write(&records[..0]).await.unwrap();
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM transactions WHERE correlation_id LIKE 'copy-%'")
            .fetch_one(t.gw.store.pool())
            .await
            .unwrap();
    assert_eq!(count, 3);
    // The copier opens a fresh connection after a failed COPY.
    let more = vec![medgate::store::transactions::TransactionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        correlation_id: "copy-3".into(),
        ..records[1].clone()
    }];
    copier.write(&more).await.unwrap();
    assert!(t
        .gw
        .store
        .get_transaction(&more[0].id)
        .await
        .unwrap()
        .is_some());
    t.stop().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A handler that panics never leaves a client without an answer: the middleware contains it
/// and answers in the route's protocol with the request id, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_contained() {
    use actix_web::http::Method;
    use actix_web::{web, App, HttpServer};
    use medgate::http::access::{Access, AccessRules, Org};
    let t = TestGateway::start(medgate::store::Backend::Sqlite).await;
    let data = web::Data::from(t.gw.state.clone());
    // The test's own routes need rules too: a served route without one is refused.
    let admin = Access::Scope("admin", Org::Public);
    let rules = web::Data::new(
        AccessRules::default()
            .with(Method::GET, "/fhir/Boom", admin)
            .with(Method::GET, "/fhir/Fine", admin),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(rules.clone())
            .wrap(actix_web::middleware::from_fn(
                medgate::http::middleware::gateway,
            ))
            .route(
                "/fhir/Boom",
                web::get().to(|| async {
                    if std::hint::black_box(true) {
                        panic!("deliberate test panic");
                    }
                    "unreachable"
                }),
            )
            .route("/fhir/Fine", web::get().to(|| async { "fine" }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let r = http
            .get(format!("http://{addr}/fhir/Boom"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-request-id", "panic-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let o: Value = r.json().await.unwrap();
        assert_eq!(issue(&o)["code"], "exception");
        assert_eq!(issue(&o)["diagnostics"], "request id panic-1");
        assert!(
            !o.to_string().contains("deliberate"),
            "panic text must not leak: {o}"
        );
    }
    let r = http
        .get(format!("http://{addr}/fhir/Fine"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "fine");
    handle.stop(true).await;
    t.stop().await;
}

/// Each adapter's default profile (`adapters/<system>/profile.toml`) is a valid section of
/// the gateway's configuration, as its README says.
#[test]
fn adapter_profiles_are_valid_config_sections() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    for (system, section) in [
        ("emias", "emias"),
        ("fhir-mis", "fhir_mis"),
        ("remd", "remd"),
        ("peer-gateway", "federation"),
        ("nsi", "nsi"),
    ] {
        let profile =
            std::fs::read_to_string(format!("{root}/adapters/{system}/profile.toml")).unwrap();
        let file = dir.path().join(format!("{section}.toml"));
        // Subtables of the section are named relative to it in the profile.
        let profile = profile
            .replace("[listen", &format!("[{section}.listen"))
            .replace("[[peers]]", &format!("[[{section}.peers]]"))
            .replace("[[books]]", &format!("[[{section}.books]]"));
        std::fs::write(&file, format!("[{section}]\n{profile}")).unwrap();
        let s = medgate::config::Settings::load(Some(&file))
            .unwrap_or_else(|e| panic!("adapters/{system}/profile.toml: {e}"));
        let loaded = match section {
            "emias" => s.emias.is_some(),
            "fhir_mis" => s.fhir_mis.is_some(),
            "federation" => s.federation.is_some(),
            "nsi" => s.nsi.as_ref().is_some_and(|n| n.books.len() == 4),
            _ => s.remd.is_some(),
        };
        assert!(loaded, "{system}");
    }
}

/// The configurations shipped in `deploy/` load through the real loader.
#[test]
fn shipped_configurations_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::path::PathBuf::from(format!("{root}/deploy/medgate.example.toml"));
    let s = medgate::config::Settings::load(Some(&example)).unwrap();
    assert!(s.remd.is_some());
    assert_eq!(s.signing.keys.len(), 2);
    // The Kubernetes ConfigMap embeds a TOML file under `medgate.toml: |`.
    let cm = std::fs::read_to_string(format!("{root}/deploy/k8s/configmap.yaml")).unwrap();
    let body: String = cm
        .split_once("medgate.toml: |\n")
        .unwrap()
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medgate.toml");
    std::fs::write(&file, body).unwrap();
    let s = medgate::config::Settings::load(Some(&file)).unwrap();
    assert_eq!(s.http.bind, "0.0.0.0:8080");
}

/// `medgate demo` from the built binary serves readiness on its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_binary_becomes_ready() {
    let mut demo = spawn_demo();
    let (port, second) = (demo.port, demo.second);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut ready = false;
    // A minute: the demo seeds its appeals before it answers, on a machine that may be busy.
    for _ in 0..1200 {
        if let Ok(r) = http.get(&url).send().await {
            if r.status() == StatusCode::OK {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "demo never became ready");
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(medgate::demo::DEMO_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let orgs = get("/fhir/Organization").await;
    // 12 clinics of the city MIS, 2 of the FHIR clinic MIS and the 2 federal centres.
    assert_eq!(orgs["entry"].as_array().unwrap().len(), 16);
    let rules = get("/api/referrals/rules").await;
    assert_eq!(rules["rules"].as_array().map(Vec::len), Some(2), "{rules}");
    // The seeded appeals make a per-district table on first start.
    let table = get("/api/admin/appeals/stats?from=2020-01-01&to=2099-12-31").await;
    let districts: Vec<&str> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(districts.len(), 4, "{table}");
    assert!(
        table["rows"][0]["share_answered"].as_f64() > table["rows"][3]["share_answered"].as_f64(),
        "{table}"
    );
    // The second region's gateway is a peer: its doctor's referral to a federal centre is
    // checked by the first region's rules, over the peers' mutual-TLS link.
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/adapters/peer-gateway/samples/referral-without-documents.json"
    ))
    .unwrap();
    let refused: Value = http
        .post(format!("http://127.0.0.1:{second}/fhir/ServiceRequest"))
        .bearer_auth(medgate::demo::DEMO_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(sample)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        refused["issue"][0]["details"]["coding"][0]["code"], "MISSING_DOCUMENTS",
        "{refused}"
    );
    demo.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_database_connections_answer_503_then_recover() {
    use sqlx::Connection;
    // PostgreSQL drops every connection of the gateway (what a restart or a failover looks
    // like to it). The pool does not ping before each checkout, so a request may meet a
    // dead connection: it is answered 503 DATABASE_UNAVAILABLE (retry), never 500, the dead
    // connection is discarded, and the gateway recovers by itself.
    // No ping of idle connections: the first request after the drop meets a dead one.
    let t = TestGateway::start_with(medgate::store::Backend::Postgres, |s| {
        s.database.ping_idle_secs = 3600
    })
    .await;
    let get = || async {
        let r = t.get_admin("/fhir/Organization?_count=1").await;
        let status = r.status();
        (status, r.text().await.unwrap())
    };
    // Several requests at once, so the pool holds several connections.
    let warm = futures_util::future::join_all((0..6).map(|_| get())).await;
    assert!(warm.iter().all(|(s, _)| *s == StatusCode::OK), "{warm:?}");
    // The transaction log's writer holds no connection either when they are dropped.
    t.gw.state.txlog.flush().await;
    let mut admin = sqlx::PgConnection::connect(&t.db.url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 1, "the gateway held connections");
    let mut answers = Vec::new();
    for _ in 0..30 {
        let (status, body) = get().await;
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                let o: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(o["resourceType"], "OperationOutcome", "{body}");
                assert_eq!(o["issue"][0]["code"], "transient", "{body}");
                assert_eq!(
                    o["issue"][0]["details"]["coding"][0]["code"], "DATABASE_UNAVAILABLE",
                    "{body}"
                );
            }
            other => panic!("{other}: {body}"),
        }
        answers.push(status);
    }
    assert_eq!(
        answers[0],
        StatusCode::SERVICE_UNAVAILABLE,
        "the first request meets a dropped connection: {answers:?}"
    );
    assert!(
        answers[answers.len() - 10..]
            .iter()
            .all(|s| *s == StatusCode::OK),
        "recovered: {answers:?}"
    );
    admin.close().await.unwrap();
    t.stop().await;
}

/// The README's access table is the route table (route, scope, organization rule).
#[test]
fn the_readme_lists_every_route_with_its_rule() {
    let table = medgate::http::access::markdown_table(medgate::http::route_table());
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- routes -->\n")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /routes -->").next())
        .unwrap_or_default();
    assert_eq!(
        block, table,
        "README.md's route table is out of date; it should read:\n{table}"
    );
}

/// A client over its rate is answered 429 with `Retry-After`, in its route's format; other
/// clients are not slowed by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_their_rate_get_429_with_retry_after() {
    let t = TestGateway::start_with(Backend::Sqlite, |s| {
        if let Some(portal) = s.clients.iter_mut().find(|c| c.id == "portal") {
            portal.rate = Some(medgate::config::RateLimit {
                per_second: 1,
                burst: 3,
            });
        }
    })
    .await;
    let get = |token: &'static str| {
        let (http, url) = (t.http.clone(), t.url("/fhir/Organization?_count=1"));
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(get(PORTAL_TOKEN).await.status(), StatusCode::OK);
    }
    let r = get(PORTAL_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let o: Value = r.json().await.unwrap();
    assert_eq!(issue(&o)["code"], "throttled");
    assert_eq!(issue(&o)["details"]["coding"][0]["code"], "RATE_LIMITED");
    // Another client is not limited by the portal's rate.
    for _ in 0..5 {
        assert_eq!(get(ADMIN_TOKEN).await.status(), StatusCode::OK);
    }
    t.stop().await;
}

/// The admin API's OpenAPI 3 document is generated from the route table: every
/// `/api/admin` route is in it with its method, path parameters and the scope it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_described_by_openapi() {
    let t = TestGateway::start(medgate::store::Backend::Sqlite).await;
    let r = t
        .http
        .get(t.url("/api/admin/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut n = 0;
    for route in medgate::http::route_table().filter(|r| r.scope == "/api/admin") {
        let op = &doc["paths"][route.pattern()][route.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing",
            route.method,
            route.pattern()
        );
        if let medgate::http::access::Access::Scope(scope, _) = route.access {
            assert_eq!(op["security"][0]["bearer"][0], scope, "{op}");
        }
        for name in route
            .pattern()
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{op}"
            );
        }
        n += 1;
    }
    assert!(n >= 15, "{n} admin routes");
    // A refusal is the problem the document describes, its required fields present.
    let problem = &doc["components"]["schemas"]["Problem"];
    let op = &doc["paths"]["/api/admin/transactions/{id}/rerun"]["post"];
    assert_eq!(
        op["responses"]["409"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Problem",
        "{op}"
    );
    let refused: Value = t
        .http
        .post(t.url("/api/admin/transactions/no-such-record/rerun"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in problem["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        assert!(refused[field].is_string(), "{field} of {refused}");
    }
    assert_eq!(refused["error"], "TRANSACTION_NOT_FOUND");
    t.stop().await;
}
