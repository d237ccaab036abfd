//! The operators' dashboard in a real browser (Debian's headless chromium through
//! chromedriver, driven by `tests/browser/dashboard.py`): it logs in, sees every page with
//! the gateway's data, reruns a dead letter and sees it delivered, answers an overdue appeal,
//! and saves a screenshot of each page under `target/screenshots/`. Sessions and CSRF are
//! checked over plain HTTP too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::appeals::{communication, INTAKE};
use crate::booking::{Fx, ORG};
use crate::support::*;

const LOGIN: &str = "operator";
const PASSWORD: &str = "synthetic-password-1";

/// A webhook that refuses (503) until told to accept, keeping what it accepted.
async fn flaky_receiver() -> (
    String,
    Arc<AtomicBool>,
    Arc<Mutex<Vec<Value>>>,
    actix_web::dev::ServerHandle,
) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let up = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (up2, got2) = (up.clone(), got.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        let (up, got) = (up2.clone(), got2.clone());
        App::new().route(
            "/reply",
            web::post().to(move |body: web::Bytes| {
                let (up, got) = (up.clone(), got.clone());
                async move {
                    if !up.load(Ordering::SeqCst) {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    if let Ok(v) = serde_json::from_slice(&body) {
                        got.lock().unwrap().push(v);
                    }
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}/reply"), up, got, handle)
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen");
}

/// Runs a browser script of `tests/browser` with `args`: what it printed, once it passed.
async fn browser(script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new("python3")
        .arg(format!(
            "{}/tests/browser/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser run failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let (reply, up, got, server) = flaky_receiver().await;
    let hash = medgate::services::sessions::hash_password(PASSWORD).unwrap();
    let fx = Fx::start(Backend::Postgres, move |s| {
        s.clients
            .push(client("intake", INTAKE, &[], &["appeals:submit"]));
        s.dashboard.operators = vec![medgate::config::OperatorSettings {
            login: LOGIN.into(),
            name: "Synthetic Operator".into(),
            password_hash: hash,
            scopes: vec!["admin".into()],
            organizations: Vec::new(),
        }];
        s.appeals.reply_urls = [("district-chat".to_string(), reply)].into();
        // One attempt: the refused answer is a dead letter at once.
        s.appeals.retry_schedule_secs = vec![];
        s.appeals.routes = vec![medgate::config::AppealRouteSettings {
            district: "North".into(),
            topic: None,
            org: ORG.into(),
        }];
        s.jobs.disabled.push("appeal-deadlines".into());
        // The compensating cancel retries each second (the clinic system fails only briefly).
        s.booking.mis_retry_schedule_secs = vec![1; 20];
    })
    .await;
    let post = |path: String, body: Value| {
        let r =
            fx.t.http
                .post(fx.t.url(&path))
                .bearer_auth(INTAKE)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send();
        async move {
            let r = r.await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    // An answer the chat's webhook refuses: a dead letter.
    let (s, chat) = post(
        "/fhir/Communication".into(),
        communication(
            "dash-1",
            "district-chat",
            None,
            "booking",
            "North",
            None,
            80,
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{chat}");
    let answer = serde_json::json!({"resourceType": "Parameters", "parameter": [{"name": "answer", "valueString": "Booked."}]});
    let r =
        fx.t.http
            .post(fx.t.url(&format!(
                "/fhir/Communication/{}/$answer",
                chat["id"].as_str().unwrap()
            )))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/fhir+json")
            .body(answer.to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let store = fx.t.gw.store.clone();
    wait_until("the dead letter", async || {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE destination = 'appeal-reply' AND status = 'dead'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
            == 1
    })
    .await;
    up.store(true, Ordering::SeqCst);
    // An overdue general appeal for the operator to answer.
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    let (s, overdue) = post(
        "/fhir/Communication".into(),
        communication(
            "dash-2",
            "phone",
            None,
            "quality",
            "North",
            None,
            81,
            Some(long_ago),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{overdue}");
    let overdue_id = overdue["id"].as_str().unwrap().to_string();

    // A booking the clinic system failed, for the operator to rerun.
    let slot = fx.free(medgate::model::schedule::Channel::Internet).await[0]
        .id
        .clone();
    fx.sim.set_faults(medgate::sim::emias::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let (s, failed) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &crate::booking::params(&slot, Some(crate::booking::patient(9)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{failed}");
    fx.sim.set_faults(Default::default());
    fx.wait_outbox_done("mis", 1).await;

    // The schedule sync's calls to the city MIS are in the transaction log for the health page.
    fx.t.gw.state.txlog.flush().await;
    let failed_exchange = store
        .list_transactions(
            &medgate::store::transactions::TransactionFilter {
                status: Some("server-error".into()),
                direction: Some("inbound".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(failed_exchange.len(), 1, "{failed_exchange:?}");
    let failed_exchange = failed_exchange[0].id.clone();
    // Over plain HTTP first: a form without the session's CSRF token is refused.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(fx.t.url("/admin/login")).send().await.unwrap();
    let login_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("medgate_login_csrf="))
        .unwrap();
    assert!(
        login_cookie.contains("HttpOnly")
            && login_cookie.contains("SameSite=Strict")
            && login_cookie.contains("Secure"),
        "{login_cookie}"
    );
    let token = login_cookie.split(['=', ';']).nth(1).unwrap().to_string();
    let login = http
        .post(fx.t.url("/admin/login"))
        .header("cookie", format!("medgate_login_csrf={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("login={LOGIN}&password={PASSWORD}&csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("medgate_session=") && !c.starts_with("medgate_session=;"))
        .unwrap();
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && session.contains("Secure"),
        "{session}"
    );
    let sid = session.split(['=', ';']).nth(1).unwrap().to_string();
    let forged = http
        .post(fx.t.url(&format!("/admin/appeals/{overdue_id}/answer")))
        .header("cookie", format!("medgate_session={sid}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("answer=forged&csrf=not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // A wrong password opens nothing.
    let wrong = http
        .post(fx.t.url("/admin/login"))
        .header("cookie", format!("medgate_login_csrf={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("login={LOGIN}&password=wrong&csrf={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::OK);
    assert!(wrong
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("medgate_session=")));

    // Then in the browser.
    let shots = format!("{}/target/screenshots", env!("CARGO_MANIFEST_DIR"));
    let port =
        fx.t.gw
            .url()
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
    let text = browser(
        "dashboard.py",
        &[
            &format!("http://localhost:{port}"),
            LOGIN,
            PASSWORD,
            &shots,
            &overdue_id,
            &failed_exchange,
        ],
    )
    .await;
    assert!(
        text.contains("dead letter rerun")
            && text.contains("overdue appeal answered")
            && text.contains("exchange rerun")
            && text.contains("second rerun refused"),
        "{text}"
    );
    for page in [
        "login",
        "systems",
        "dead-letters",
        "appeals",
        "traffic",
        "transactions",
        "rerun-refused",
        "documents",
        "figures",
        "jobs",
    ] {
        assert!(
            std::path::Path::new(&format!("{shots}/{page}.png")).exists(),
            "{page}"
        );
    }
    // The rerun answer reached the chat; the overdue appeal is answered.
    wait_until("the rerun answer's delivery", async || {
        !got.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(got.lock().unwrap()[0]["externalId"], "dash-1");
    let a = store.appeal(&overdue_id).await.unwrap().unwrap();
    assert_eq!(a.status, medgate::model::appeal::AppealStatus::Answered);
    assert_eq!(a.answer.unwrap().by, format!("operator:{LOGIN}"));
    // The rerun booked the slot in the clinic system, as the portal.
    assert!(fx.mis_has_booked(&slot).await, "the rerun booked {slot}");
    let reruns = store
        .list_transactions(
            &medgate::store::transactions::TransactionFilter {
                rerun_of: Some(failed_exchange.clone()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        reruns
            .iter()
            .map(|r| (r.client_id.as_deref(), r.http_status))
            .collect::<Vec<_>>(),
        [(Some("portal"), Some(201))]
    );
    server.stop(true).await;
    fx.t.stop().await;
}

/// The demo as a newcomer starts it (`medgate demo`): once its morning's traffic is in, its
/// operator logs in through a real browser and finds the demo's data on every page
/// (`tests/browser/demo.py`; screenshots `target/screenshots/demo-*.png`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_dashboard_in_a_real_browser() {
    let demo = spawn_demo();
    let port = demo.port;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            match http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(medgate::demo::DEMO_TOKEN)
                .send()
                .await
            {
                Ok(r) if r.status() == StatusCode::OK => r.text().await.unwrap_or_default(),
                _ => String::new(),
            }
        }
    };
    // The demo's traffic ends with today's figures; its documents are registered soon after.
    // It synchronizes a region's month of slots first: minutes allowed on a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !(get("/api/admin/stats?metric=bookings")
        .await
        .contains("internet")
        && get("/api/admin/documents?status=registered")
            .await
            .contains("\"registered\""))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo's traffic never came"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let shots = format!("{}/target/screenshots", env!("CARGO_MANIFEST_DIR"));
    let text = browser(
        "demo.py",
        &[
            &format!("http://localhost:{port}"),
            medgate::demo::DEMO_OPERATOR,
            medgate::demo::DEMO_OPERATOR_PASSWORD,
            &shots,
        ],
    )
    .await;
    for page in [
        "systems",
        "dead-letters",
        "documents",
        "appeals",
        "traffic",
        "transactions",
        "figures",
        "jobs",
    ] {
        assert!(text.contains(&format!("page {page}")), "{text}");
        assert!(
            std::path::Path::new(&format!("{shots}/demo-{page}.png")).exists(),
            "{page}"
        );
    }
}
