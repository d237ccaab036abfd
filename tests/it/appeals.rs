//! Citizens' appeals end to end over real HTTP on both backends: intake through FHIR
//! `Communication` and the portal's SOAP complaint service (a repeat is the same appeal),
//! routing by district and topic and rerouting, deadlines from the kind of appeal and the
//! holiday calendar, answers through FHIR and SOAP going back to the channel they came
//! from, escalation of an overdue appeal to the operator, one extension of a general
//! appeal, a booking appeal linked to the citizen's appointment, and the per-district table
//! matching a seeded set exactly (JSON and CSV).

use std::sync::Mutex;
use std::time::Duration;

use medgate::model::schedule::Channel;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::booking::{params, patient, policy, receiver, Fx, ORG};
use crate::support::*;

/// The intake of the portal's complaint service and the district chats.
pub(crate) const INTAKE: &str = "appeals-intake-token";
/// The test clinic's appeals desk.
pub(crate) const DESK: &str = "appeals-desk-token";
const OTHER_ORG: &str = "1.2.643.5.1.13.13.12.2.77.7002";
const NORTH: &str = "North";
const SOUTH: &str = "South";
const SNILS: &str = "11223344595";

/// A FHIR appeal of the citizen with policy `n` (and a fake SNILS).
// A fixture: each call reads as the appeal it builds, field by field.
#[allow(clippy::too_many_arguments)]
pub(crate) fn communication(
    id: &str,
    channel: &str,
    kind: Option<&str>,
    topic: &str,
    district: &str,
    org: Option<&str>,
    n: u32,
    sent: Option<String>,
) -> Value {
    let mut category = vec![
        json!({"coding": [{"system": "https://medgate.example/fhir/CodeSystem/appeal-topic", "code": topic}]}),
    ];
    if let Some(k) = kind {
        category.push(json!({"coding": [{"system": "https://medgate.example/fhir/CodeSystem/appeal-kind", "code": k}]}));
    }
    let mut v = json!({
        "resourceType": "Communication",
        "status": "in-progress",
        "identifier": [{"system": format!("https://medgate.example/fhir/NamingSystem/appeal-id/{channel}"), "value": id}],
        "extension": [{"url": "https://medgate.example/fhir/StructureDefinition/appeal-district", "valueString": district}],
        "medium": [{"coding": [{"system": "https://medgate.example/fhir/CodeSystem/appeal-channel", "code": channel}]}],
        "category": category,
        "contained": [{"resourceType": "Patient", "id": "citizen",
            "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": policy(n)}, {"system": "urn:oid:1.2.643.100.3", "value": SNILS}],
            "telecom": [{"system": "phone", "value": "+7 900 000-00-00"}]}],
        "subject": {"reference": "#citizen"},
        "payload": [{"contentString": format!("Synthetic appeal {id} about {topic}")}],
    });
    if let Some(o) = org {
        v["recipient"] = json!([{"identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{o}")}}]);
    }
    if let Some(s) = sent {
        v["sent"] = json!(s);
    }
    v
}

fn settings(reply: &str, notify: &str) -> impl FnOnce(&mut medgate::config::Settings) {
    let (reply, notify) = (reply.to_string(), notify.to_string());
    move |s| {
        s.clients
            .push(client("intake", INTAKE, &[], &["appeals:submit"]));
        s.clients
            .push(client("appeals-desk", DESK, &[ORG], &["appeals:answer"]));
        s.appeals.routes = vec![
            medgate::config::AppealRouteSettings {
                district: NORTH.into(),
                topic: None,
                org: ORG.into(),
            },
            medgate::config::AppealRouteSettings {
                district: NORTH.into(),
                topic: Some("medicines".into()),
                org: OTHER_ORG.into(),
            },
        ];
        s.appeals.reply_urls = [
            ("portal-complaint".to_string(), reply.clone()),
            ("district-chat".to_string(), reply),
        ]
        .into();
        s.appeals.notify_url = Some(notify);
        s.appeals.holidays = [
            "2026-01-01",
            "2026-01-02",
            "2026-01-05",
            "2026-01-06",
            "2026-01-07",
            "2026-01-08",
            "2026-01-09",
        ]
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
        s.appeals.working_weekends = vec!["2026-01-10".parse().unwrap()];
        // The deadline watch runs when the test steps it.
        s.jobs.disabled.push("appeal-deadlines".into());
    }
}

async fn send(
    fx: &Fx,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = fx.t.http.request(method, fx.t.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/fhir+json")
            .body(b.to_string());
    }
    let res = r.send().await.unwrap();
    let s = res.status();
    (s, res.json().await.unwrap_or(Value::Null))
}

async fn soap(fx: &Fx, token: &str, op: &str, inner: &str) -> (StatusCode, String) {
    let res = fx
        .t
        .http
        .post(fx.t.url("/soap/appeals"))
        .bearer_auth(token)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", format!("\"urn:medgate:appeals:v1/{op}\""))
        .body(format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{op} xmlns="urn:medgate:appeals:v1">{inner}</{op}></s:Body></s:Envelope>"#
        ))
        .send()
        .await
        .unwrap();
    let s = res.status();
    (s, res.text().await.unwrap())
}

fn between<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).map(|i| i + open.len()).unwrap_or(0);
    let end = xml[start..].find("</").map(|i| start + i).unwrap_or(start);
    &xml[start..end]
}

fn ext<'a>(v: &'a Value, suffix: &str) -> Option<&'a Value> {
    v["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
}

async fn wait_for_notes(got: &Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let notes = got.lock().unwrap().clone();
        if notes.len() >= n {
            return notes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got.lock().unwrap().clone()
}

async fn appeals_end_to_end(backend: Backend) {
    let (reply_url, replies, reply_server) = receiver().await;
    let (notify_url, notices, notify_server) = receiver().await;
    let fx = Fx::start(backend, settings(&reply_url, &notify_url)).await;
    // The citizen booked a visit; the appeal about booking is linked to it.
    let slot = fx.free(Channel::Internet).await[0].id.clone();
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(60)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // A district-chat message about booking, no organization named: the district's.
    let chat = communication(
        "chat-1",
        "district-chat",
        None,
        "booking",
        NORTH,
        None,
        60,
        None,
    );
    let (s, a) = send(
        &fx,
        INTAKE,
        post.clone(),
        "/fhir/Communication",
        Some(chat.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let chat_id = a["id"].as_str().unwrap().to_string();
    assert_eq!(a["status"], "in-progress");
    assert_eq!(
        a["recipient"][0]["identifier"]["value"],
        format!("urn:oid:{ORG}")
    );
    assert_eq!(
        a["about"][0]["reference"],
        format!("Appointment/{}", booked["id"].as_str().unwrap())
    );
    let sent = chrono::DateTime::parse_from_rfc3339(a["sent"].as_str().unwrap()).unwrap();
    let due = chrono::DateTime::parse_from_rfc3339(
        ext(&a, "appeal-due").unwrap()["valueDateTime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(due - sent, chrono::Duration::hours(2), "{a}");
    // The chat sends it again: the same appeal.
    let (s, again) = send(&fx, INTAKE, post.clone(), "/fhir/Communication", Some(chat)).await;
    assert_eq!((s, &again["id"]), (StatusCode::OK, &a["id"]));
    // Medicines in the North go to another organization.
    let meds = communication(
        "chat-2",
        "district-chat",
        None,
        "medicines",
        NORTH,
        None,
        61,
        None,
    );
    let (s, m) = send(&fx, INTAKE, post.clone(), "/fhir/Communication", Some(meds)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    assert_eq!(
        m["recipient"][0]["identifier"]["value"],
        format!("urn:oid:{OTHER_ORG}")
    );

    // The portal's complaint about a refusal, sent before the New Year holidays, in a
    // district with no route: the operator routes it. 5 working days: Sat 10 (a working
    // Saturday), 12, 13, 14, 15 January.
    let (s, xml) = soap(
        &fx,
        INTAKE,
        "SubmitComplaint",
        "<ComplaintId>PC-77-1</ComplaintId><Kind>refusal</Kind><District>South</District><Topic>booking</Topic>\
         <Text>Synthetic complaint: the registry refused my documents</Text><Contact>citizen@example.test</Contact>\
         <Snils>112-233-445 95</Snils><Received>2025-12-31T15:00:00+03:00</Received>",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert_eq!(between(&xml, "Status"), "unrouted", "{xml}");
    assert_eq!(between(&xml, "Due"), "2026-01-15T21:00:00+00:00", "{xml}");
    let complaint = between(&xml, "AppealId").to_string();
    // Nobody's yet: the clinic does not see it, the operator does.
    let (s, _) = send(
        &fx,
        DESK,
        get.clone(),
        &format!("/fhir/Communication/{complaint}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let reroute = json!({"resourceType": "Parameters", "parameter": [
        {"name": "organization", "valueString": ORG}, {"name": "reason", "valueString": "the citizen's clinic"}]});
    let (s, routed) = send(
        &fx,
        ADMIN_TOKEN,
        post.clone(),
        &format!("/fhir/Communication/{complaint}/$reroute"),
        Some(reroute),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{routed}");
    assert_eq!(
        routed["recipient"][0]["identifier"]["value"],
        format!("urn:oid:{ORG}")
    );
    // A reroute without a reason names the parameter.
    let bare = json!({"resourceType": "Parameters", "parameter": [{"name": "organization", "valueString": OTHER_ORG}]});
    let (s, out) = send(
        &fx,
        DESK,
        post.clone(),
        &format!("/fhir/Communication/{complaint}/$reroute"),
        Some(bare),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "Parameters.parameter[reason]",
        "{out}"
    );

    // The clinic sees its appeals; not the other organization's.
    let (s, list) = send(
        &fx,
        DESK,
        get.clone(),
        "/fhir/Communication?status=in-progress",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&chat_id.as_str()) && ids.contains(&complaint.as_str()),
        "{ids:?}"
    );
    assert!(!ids.contains(&m["id"].as_str().unwrap()), "{ids:?}");

    // Answers: the chat through FHIR, the complaint through SOAP; each goes back where it
    // came from.
    let answer = json!({"resourceType": "Parameters", "parameter": [{"name": "answer", "valueString": "You are booked for tomorrow."}]});
    let (s, done) = send(
        &fx,
        DESK,
        post.clone(),
        &format!("/fhir/Communication/{chat_id}/$answer"),
        Some(answer.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    let (s, out) = send(
        &fx,
        DESK,
        post.clone(),
        &format!("/fhir/Communication/{chat_id}/$answer"),
        Some(answer),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    let (s, xml) = soap(
        &fx,
        DESK,
        "AnswerComplaint",
        &format!("<AppealId>{complaint}</AppealId><Text>Your documents are accepted.</Text>"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    // Received a year ago, answered now: late.
    assert_eq!(between(&xml, "OnTime"), "false", "{xml}");
    let got = wait_for_notes(&replies, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let by_channel = |c: &str| got.iter().find(|r| r["channel"] == c).cloned().unwrap();
    assert_eq!(by_channel("district-chat")["externalId"], "chat-1");
    assert_eq!(by_channel("district-chat")["onTime"], true);
    assert_eq!(by_channel("portal-complaint")["externalId"], "PC-77-1");
    assert_eq!(
        by_channel("portal-complaint")["answer"],
        "Your documents are accepted."
    );

    // A general appeal by phone received 31 days ago: overdue, escalated once, shown red.
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(31)).to_rfc3339();
    let phone = communication(
        "call-1",
        "phone",
        None,
        "quality",
        NORTH,
        None,
        62,
        Some(long_ago),
    );
    let (s, p) = send(
        &fx,
        INTAKE,
        post.clone(),
        "/fhir/Communication",
        Some(phone),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let phone_id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["priority"], "urgent", "{p}");
    assert_eq!(fx.t.step("appeal-deadlines").await, 1);
    assert_eq!(fx.t.step("appeal-deadlines").await, 0);
    let notes = wait_for_notes(&notices, 1).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["appeal"], phone_id.as_str());
    assert_eq!(notes[0]["district"], NORTH);
    let note = notes[0].to_string();
    assert!(
        !note.contains(&policy(62)) && !note.contains("+7 900"),
        "personal data in {note}"
    );
    let (s, overdue) = send(
        &fx,
        DESK,
        get.clone(),
        "/fhir/Communication?overdue=true",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let overdue_ids: Vec<&str> = overdue["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(overdue_ids, [phone_id.as_str()]);
    // One extension of a general appeal, with its reason; a second is refused, and a chat
    // message cannot be extended.
    let extend = json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "an inspection is under way"}]});
    let (s, ext1) = send(
        &fx,
        DESK,
        post.clone(),
        &format!("/fhir/Communication/{phone_id}/$extend"),
        Some(extend.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ext1}");
    assert!(ext(&ext1, "appeal-extended").is_some(), "{ext1}");
    assert_eq!(ext1["priority"], "routine", "{ext1}");
    let (s, _) = send(
        &fx,
        DESK,
        post.clone(),
        &format!("/fhir/Communication/{phone_id}/$extend"),
        Some(extend.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, out) = send(
        &fx,
        ADMIN_TOKEN,
        post.clone(),
        &format!("/fhir/Communication/{}/$extend", m["id"].as_str().unwrap()),
        Some(extend),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "Parameters.parameter[kind]",
        "{out}"
    );
    // The history tells it all.
    let (s, full) = send(
        &fx,
        DESK,
        get.clone(),
        &format!("/fhir/Communication/{phone_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = full["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"].as_str().unwrap().ends_with("appeal-event"))
        .map(|e| e["extension"][0]["valueCode"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["received", "routed", "escalated", "extended"]);
    // What the gateway answers is valid FHIR R4, checked by an independent model.
    crate::schedules::validate_fhir(&[full.clone(), done.clone(), list.clone()]);

    // Bad input names the field.
    let mut bad = communication(
        "chat-3",
        "district-chat",
        None,
        "astrology",
        NORTH,
        None,
        63,
        None,
    );
    let (s, out) = send(
        &fx,
        INTAKE,
        post.clone(),
        "/fhir/Communication",
        Some(bad.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "Communication.category",
        "{out}"
    );
    bad = communication(
        "chat-3",
        "district-chat",
        None,
        "booking",
        NORTH,
        None,
        63,
        None,
    );
    bad["payload"] = json!([{"contentString": "  "}]);
    let (s, out) = send(&fx, INTAKE, post.clone(), "/fhir/Communication", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "Communication.payload[0].contentString",
        "{out}"
    );
    let (s, xml) = soap(&fx, INTAKE, "SubmitComplaint", "<ComplaintId>PC-2</ComplaintId><District>South</District><Topic>booking</Topic><Text>t</Text>").await;
    assert!(!s.is_success(), "{xml}");
    assert!(xml.contains("SubmitComplaint/Contact"), "{xml}");

    // Every access is in the trail, with the citizen.
    let trail =
        fx.t.gw
            .store
            .audit_events(&medgate::store::audit::AuditQuery::default(), 500)
            .await
            .unwrap();
    let on_appeals = trail
        .iter()
        .filter(|e| e.entity == medgate::model::audit::AuditEntity::Appeal)
        .count();
    assert!(on_appeals >= 10, "{on_appeals}");
    reply_server.stop(true).await;
    notify_server.stop(true).await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appeals_end_to_end_postgres() {
    appeals_end_to_end(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appeals_end_to_end_sqlite() {
    appeals_end_to_end(Backend::Sqlite).await
}

/// The per-district table of a seeded set: chat messages received an hour ago (due in an
/// hour: answered now, on time) and three hours ago (due an hour ago: late).
async fn the_district_table_matches_a_seeded_set(backend: Backend) {
    let (url, _, server) = receiver().await;
    let fx = Fx::start(backend, |s| {
        settings(&url, &url)(s);
        s.appeals.routes.push(medgate::config::AppealRouteSettings {
            district: SOUTH.into(),
            topic: None,
            org: ORG.into(),
        });
        s.appeals.routes.push(medgate::config::AppealRouteSettings {
            district: "East".into(),
            topic: None,
            org: ORG.into(),
        });
    })
    .await;
    let ago = |h: i64| (chrono::Utc::now() - chrono::Duration::hours(h)).to_rfc3339();
    // (district, topic, hours ago, answered)
    let seed: &[(&str, &str, i64, bool)] = &[
        (NORTH, "booking", 1, true),
        (NORTH, "booking", 1, true),
        (NORTH, "routing", 3, true),
        (NORTH, "queues", 3, false),
        (SOUTH, "booking", 1, true),
        (SOUTH, "home-visit", 3, true),
        ("East", "routing", 1, false),
        ("East", "routing", 3, false),
        ("East", "other", 1, false),
    ];
    for (i, (district, topic, hours, answered)) in seed.iter().enumerate() {
        let body = communication(
            &format!("seed-{i}"),
            "district-chat",
            None,
            topic,
            district,
            None,
            70 + i as u32,
            Some(ago(*hours)),
        );
        let (s, a) = send(
            &fx,
            INTAKE,
            reqwest::Method::POST,
            "/fhir/Communication",
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        if *answered {
            let answer = json!({"resourceType": "Parameters", "parameter": [{"name": "answer", "valueString": "Answered."}]});
            let (s, out) = send(
                &fx,
                DESK,
                reqwest::Method::POST,
                &format!("/fhir/Communication/{}/$answer", a["id"].as_str().unwrap()),
                Some(answer),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{out}");
        }
    }
    let today = chrono::Utc::now().date_naive();
    let period = format!("from={}&to={}", today - chrono::Days::new(1), today);
    let (s, table) = send(
        &fx,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        &format!("/api/admin/appeals/stats?{period}&by=district"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{table}");
    let rows: Vec<(String, u64, u64, u64, f64)> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["appeals"].as_u64().unwrap(),
                r["answered"].as_u64().unwrap(),
                r["answered_on_time"].as_u64().unwrap(),
                r["share_answered"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (SOUTH.to_string(), 2, 2, 1, 1.0),
            (NORTH.to_string(), 4, 3, 2, 0.75),
            ("East".to_string(), 3, 0, 0, 0.0),
        ]
    );
    let north = &table["rows"][1];
    assert_eq!(
        north["by_topic"],
        json!({"booking": 2, "routing": 1, "queues": 1})
    );
    // Answered 60, 60 and 180 minutes after receipt: the median is 60.
    assert_eq!(north["median_minutes_to_answer"], 60, "{north}");
    let csv =
        fx.t.http
            .get(fx.t.url(&format!(
                "/api/admin/appeals/stats?{period}&by=district&format=csv"
            )))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[2].starts_with("North,4,3,2,0.750,0.500,60,2,1,0,1,"),
        "{text}"
    );
    // A clinic sees its own organization's figures only; an unknown grouping is named.
    let (s, out) = send(
        &fx,
        ADMIN_TOKEN,
        reqwest::Method::GET,
        &format!("/api/admin/appeals/stats?{period}&by=planet"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    server.stop(true).await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_district_table_matches_a_seeded_set_postgres() {
    the_district_table_matches_a_seeded_set(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_district_table_matches_a_seeded_set_sqlite() {
    the_district_table_matches_a_seeded_set(Backend::Sqlite).await
}
