//! Referrals inside a region, end to end through FHIR: the target's acceptance rules refuse
//! what they do not take (naming each missing document or the rule), the lifecycle moves
//! only by the side that makes each move, the referring clinic is told of every move in
//! order, the conclusion is a document registered through the gateway, a lapsed referral
//! expires and moves no further, and every emitted resource validates as FHIR R4.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use medgate::config::{AcceptanceRuleSettings, KeyRole, RequiredDocumentSettings};
use medgate::model::time::ManualClock;
use medgate::sim::remd::RemdSimConfig;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::documents::{cda, document_reference, key, setup_clocked, AUTHOR};
use crate::support::*;

/// The target: a cardiology centre (one of the seeded organizations).
const CENTRE: &str = "1.2.643.5.1.13.13.12.2.77.7012";
const DOCTOR_TOKEN: &str = "test-doctor-token";
const CENTRE_TOKEN: &str = "test-centre-token";
const STRANGER_TOKEN: &str = "test-stranger-token";
/// The citizen portal: records patients' own requests.
const CITIZEN_PORTAL_TOKEN: &str = "test-citizen-portal-token";
/// The patient of the documents the clinic submits.
const PATIENT_SNILS: &str = "11223344595";
const DOCTOR_SNILS: &str = "12345678964";

struct Fx {
    t: TestGateway,
    clock: Arc<ManualClock>,
    notes: Arc<Mutex<Vec<Value>>>,
    _sim: medgate::sim::remd::RemdSim,
    _receiver: actix_web::dev::ServerHandle,
}

impl Fx {
    async fn start(backend: Backend) -> Fx {
        let (url, notes, receiver) = crate::booking::receiver().await;
        let clock = ManualClock::new();
        let setup = setup_clocked(
            backend,
            clock.clone(),
            RemdSimConfig::default(),
            vec![1],
            60,
            move |s| {
                s.referrals.notify_url = Some(url);
                s.referrals.notify_retry_schedule_secs = vec![1, 1];
                s.referrals.rules = vec![AcceptanceRuleSettings {
                    org: CENTRE.into(),
                    name: "cardiology tele-consultations".into(),
                    kinds: vec!["teleconsultation".into()],
                    diagnoses: vec!["I00-I99".into()],
                    profiles: Vec::new(),
                    answer_within_hours: None,
                    required_documents: vec![
                        RequiredDocumentSettings {
                            kind: "4".into(),
                            name: "discharge summary".into(),
                            when_available: false,
                        },
                        RequiredDocumentSettings {
                            kind: "25".into(),
                            name: "CT or MRI report".into(),
                            when_available: true,
                        },
                    ],
                }];
                s.signing
                    .keys
                    .push(key(CENTRE, KeyRole::Organization, "org-gost256"));
                s.clients.extend([
                    client(
                        "doctor",
                        DOCTOR_TOKEN,
                        &[CLINIC_ORG],
                        &["referral:write", "documents:submit", "transactions:read"],
                    ),
                    client(
                        "centre",
                        CENTRE_TOKEN,
                        &[CENTRE],
                        &["referral:write", "documents:submit"],
                    ),
                    client(
                        "citizen-portal",
                        CITIZEN_PORTAL_TOKEN,
                        &[],
                        &["referral:propose"],
                    ),
                    client(
                        "stranger",
                        STRANGER_TOKEN,
                        &["1.2.643.5.1.13.13.12.2.77.7005"],
                        &["referral:write", "transactions:read"],
                    ),
                ]);
            },
        )
        .await;
        Fx {
            t: setup.t,
            clock,
            notes,
            _sim: setup.sim,
            _receiver: receiver,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .t
            .http
            .request(method, self.t.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.header("content-type", "application/fhir+json").json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, token, path, None).await
    }

    async fn refer(&self, body: &Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            DOCTOR_TOKEN,
            "/fhir/ServiceRequest",
            Some(body),
        )
        .await
    }

    async fn move_task(&self, token: &str, id: &str, task: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::PUT,
            token,
            &format!("/fhir/Task/{id}"),
            Some(&task),
        )
        .await
    }

    /// Submits a document of `org` through the gateway; its id.
    async fn document(&self, org: &str, token: &str, n: u64) -> String {
        let uid = uuid::Uuid::new_v4().to_string();
        let mut body = if org == CLINIC_ORG {
            document_reference(&uid, &cda(n), &[])
        } else {
            let doc =
                medgate::codec::cda::sample_document(org, PATIENT_SNILS, DOCTOR_SNILS, n, 200);
            let mut b = document_reference(&uid, &doc, &[]);
            b["custodian"]["identifier"]["value"] = json!(format!("urn:oid:{org}"));
            b
        };
        if token != CLINIC_TOKEN {
            body["author"][0]["identifier"]["value"] = json!(AUTHOR);
        }
        let res = self
            .t
            .http
            .post(self.t.url("/fhir/DocumentReference"))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        uid
    }

    /// The notices received so far about referral `id`.
    fn notes_of(&self, id: &str) -> Vec<Value> {
        self.notes
            .lock()
            .unwrap()
            .iter()
            .filter(|n| n["referral"] == id)
            .cloned()
            .collect()
    }
}

/// A tele-consultation referral from the clinic's doctor to `target` (none: any suitable).
fn referral(target: Option<&str>, diagnosis: &str, documents: &[&str]) -> Value {
    let mut v = json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "category": [{"coding": [{"system": "https://medgate.example/fhir/CodeSystem/referral-kind", "code": "teleconsultation"}]}],
        "code": {"coding": [{"system": "https://medgate.example/fhir/CodeSystem/referral-profile", "code": "cardiology"}]},
        "contained": [
            {"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": PATIENT_SNILS}]},
            {"resourceType": "PractitionerRole", "id": "r",
             "practitioner": {"identifier": {"system": "urn:oid:1.2.643.100.3", "value": DOCTOR_SNILS}},
             "organization": {"reference": format!("Organization/{CLINIC_ORG}")}},
        ],
        "subject": {"reference": "#p"},
        "requester": {"reference": "#r"},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": diagnosis}], "text": "chest pain after a myocardial infarction"}],
        "supportingInfo": documents.iter().map(|d| json!({"reference": format!("DocumentReference/{d}")})).collect::<Vec<_>>(),
    });
    if let Some(t) = target {
        v["performer"] = json!([{"reference": format!("Organization/{t}")}]);
    }
    v
}

fn task(status: &str) -> Value {
    json!({"resourceType": "Task", "status": status, "intent": "order"})
}

async fn referral_lifecycle(backend: Backend) {
    let fx = Fx::start(backend).await;

    // The rules are published.
    let (s, rules) = fx
        .get(
            DOCTOR_TOKEN,
            &format!("/api/referrals/rules?organization={CENTRE}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rules}");
    assert_eq!(rules["rules"][0]["diagnoses"][0], "I00-I99");
    assert_eq!(
        rules["rules"][0]["requiredDocuments"][0]["name"],
        "discharge summary"
    );

    // Without the discharge summary: refused, naming it (the CT is asked for only when
    // available, so it is not named).
    let (s, out) = fx.refer(&referral(Some(CENTRE), "I21.0", &[])).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "MISSING_DOCUMENTS",
        "{out}"
    );
    let message = out["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + out["issue"][0]["details"]["text"]
            .as_str()
            .unwrap_or_default();
    assert!(message.contains("discharge summary"), "{out}");
    assert!(!message.contains("CT or MRI"), "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "ServiceRequest.supportingInfo",
        "{out}"
    );

    let summary = fx.document(CLINIC_ORG, CLINIC_TOKEN, 1).await;
    // A diagnosis the centre does not take: refused, naming the rule.
    let (s, out) = fx
        .refer(&referral(Some(CENTRE), "J18.9", &[&summary]))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "DIAGNOSIS_NOT_ACCEPTED",
        "{out}"
    );
    assert!(
        out.to_string().contains("cardiology tele-consultations"),
        "{out}"
    );
    // An unknown document is named by its position.
    let (s, out) = fx
        .refer(&referral(
            Some(CENTRE),
            "I21.0",
            &[&summary, "no-such-document"],
        ))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "ServiceRequest.supportingInfo[1]",
        "{out}"
    );
    // Another organization cannot refer for the clinic.
    let (s, out) = fx
        .send(
            reqwest::Method::POST,
            STRANGER_TOKEN,
            "/fhir/ServiceRequest",
            Some(&referral(Some(CENTRE), "I21.0", &[])),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{out}");

    // "Any suitable organization": the centre's rules take it.
    let (s, request) = fx.refer(&referral(None, "I21.0", &[&summary])).await;
    assert_eq!(s, StatusCode::CREATED, "{request}");
    assert_eq!(
        request["performer"][0]["reference"],
        format!("Organization/{CENTRE}")
    );
    assert_eq!(request["priority"], "urgent");
    let id = request["id"].as_str().unwrap().to_string();

    // Both organizations see it; a third does not know it exists.
    let (s, t) = fx.get(CENTRE_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(
        (s, t["status"].as_str()),
        (StatusCode::OK, Some("requested")),
        "{t}"
    );
    let (s, found) = fx
        .get(
            CENTRE_TOKEN,
            &format!("/fhir/Task?owner={CENTRE}&status=requested"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    let (s, _) = fx
        .get(DOCTOR_TOKEN, &format!("/fhir/ServiceRequest/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = fx
        .get(STRANGER_TOKEN, &format!("/fhir/ServiceRequest/{id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, none) = fx.get(STRANGER_TOKEN, "/fhir/ServiceRequest").await;
    assert_eq!(none["entry"].as_array().map(Vec::len), Some(0), "{none}");
    let (s, _) = fx.move_task(STRANGER_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Only the target answers; it cannot complete before a visit; a rejection needs a reason.
    let (s, out) = fx.move_task(DOCTOR_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "WRONG_SIDE",
        "{out}"
    );
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("rejected")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    // The video-visit link travels with the acceptance, and only as an https URL.
    let mut with_video = task("accepted");
    with_video["input"] =
        json!([{"type": {"text": "video-visit"}, "valueUrl": "http://video.example/room/1"}]);
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, with_video.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "Task.input[video-visit].valueUrl",
        "{out}"
    );
    with_video["input"][0]["valueUrl"] = json!("https://video.example/room/1");
    let (s, accepted) = fx.move_task(CENTRE_TOKEN, &id, with_video).await;
    assert_eq!(
        (s, accepted["status"].as_str()),
        (StatusCode::OK, Some("accepted")),
        "{accepted}"
    );
    assert_eq!(
        accepted["input"][0]["valueUrl"], "https://video.example/room/1",
        "{accepted}"
    );
    // Repeating a move answers the same state.
    let (s, again) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(
        (s, again["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    let conclusion = fx.document(CENTRE, CENTRE_TOKEN, 2).await;
    let mut complete = task("completed");
    complete["output"] = json!([{"type": {"text": "conclusion"}, "valueReference": {"reference": format!("DocumentReference/{conclusion}")}}]);
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, complete.clone()).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "accepted cannot complete without a visit: {out}"
    );
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "INVALID_TRANSITION",
        "{out}"
    );

    // The referring side withdraws it; the centre is told, and the referring clinic was
    // told of the acceptance, in order.
    let (s, cancelled) = fx.move_task(DOCTOR_TOKEN, &id, task("cancelled")).await;
    assert_eq!(
        (s, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{cancelled}"
    );
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    wait_for("three notices", || fx.notes_of(&id).len() >= 3).await;
    let notes = fx.notes_of(&id);
    let seen: Vec<(&str, &str)> = notes
        .iter()
        .map(|n| {
            (
                n["status"].as_str().unwrap(),
                n["organization"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("requested", CENTRE),
            ("accepted", CLINIC_ORG),
            ("cancelled", CENTRE)
        ]
    );

    // The delivered notices are listed to the referral's organizations, not to others.
    let listed = |token: &'static str| {
        let (fx, id) = (&fx, &id);
        async move {
            let (s, v) = fx
                .get(
                    token,
                    "/api/admin/outbox?status=done&destination=referral-notify",
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["aggregate_id"] == id.as_str())
                .count()
        }
    };
    assert_eq!(listed(DOCTOR_TOKEN).await, 3);
    assert_eq!(listed(STRANGER_TOKEN).await, 0);

    // The Task carries every transition with who made it.
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    let transitions: Vec<String> = t["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == medgate::codec::fhir::referral::TRANSITION_EXTENSION)
        .map(|e| {
            format!(
                "{}:{}",
                e["extension"][0]["valueCode"].as_str().unwrap(),
                e["extension"][2]["valueString"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        transitions,
        ["requested:doctor", "accepted:centre", "cancelled:doctor"]
    );

    // Every access to the referral is in the audit trail.
    let (_, audit) = fx
        .get(ADMIN_TOKEN, "/fhir/AuditEvent?agent=centre&_count=100")
        .await;
    let entries = audit["entry"].as_array().cloned().unwrap_or_default();
    let on_it = entries
        .iter()
        .filter(|e| e.to_string().contains(&id))
        .count();
    // Its read, five moves asked for (two refused) and its read after each move.
    assert!(on_it >= 6, "{on_it}: {audit}");

    crate::schedules::validate_fhir(&[request, t, found["entry"][0]["resource"].clone()]);
    fx.t.stop().await;
}

async fn expired_referrals_move_no_further(backend: Backend) {
    let fx = Fx::start(backend).await;
    let summary = fx.document(CLINIC_ORG, CLINIC_TOKEN, 3).await;
    let (s, request) = fx
        .refer(&referral(Some(CENTRE), "I50.1", &[&summary]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{request}");
    let id = request["id"].as_str().unwrap().to_string();
    assert_eq!(fx.t.step("referral-upkeep").await, 0);

    // Unanswered after the default 72 hours: escalated to the region's operator, once.
    fx.clock.advance(Duration::from_secs(73 * 3_600));
    assert_eq!(fx.t.step("referral-upkeep").await, 1);
    assert_eq!(fx.t.step("referral-upkeep").await, 0);
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(t["status"], "requested", "{t}");
    assert!(
        t["extension"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == medgate::codec::fhir::referral::ESCALATED_EXTENSION),
        "{t}"
    );
    let (s, overdue) = fx.get(ADMIN_TOKEN, "/fhir/Task?escalated=true").await;
    assert_eq!(s, StatusCode::OK, "{overdue}");
    assert_eq!(
        overdue["entry"].as_array().map(Vec::len),
        Some(1),
        "{overdue}"
    );
    wait_for("the operator's notice", || {
        fx.notes_of(&id)
            .iter()
            .any(|n| n["organization"] == "operator")
    })
    .await;

    fx.clock.advance(Duration::from_secs(31 * 86_400));
    // Until the job runs, a move of a lapsed referral is refused as expired.
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "REFERRAL_EXPIRED",
        "{out}"
    );
    assert_eq!(fx.t.step("referral-upkeep").await, 1);
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["businessStatus"]["text"], "expired", "{t}");
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    assert_eq!(fx.t.step("referral-upkeep").await, 0);
    wait_for("the expiry notice", || {
        fx.notes_of(&id)
            .iter()
            .any(|n| n["status"] == "expired" && n["organization"] == CLINIC_ORG)
    })
    .await;
    let (_, found) = fx
        .get(DOCTOR_TOKEN, "/fhir/ServiceRequest?status=expired")
        .await;
    assert_eq!(found["entry"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["status"], "revoked",
        "{found}"
    );
    fx.t.stop().await;
}

/// A referral from another clinic to the test clinic (which publishes no rules), booked in
/// the test clinic's referral slots, its visit cancelled and booked again, completed with
/// the clinic's conclusion; an expired one cannot be booked.
async fn referrals_are_booked_once_in_the_targets_referral_slots(backend: Backend) {
    const REFERRER: &str = "1.2.643.5.1.13.13.12.2.77.7005";
    const REFERRER_TOKEN: &str = "test-referrer-token";
    const TARGET_TOKEN: &str = "test-target-token";
    let registry = medgate::sim::remd::RemdSim::start(RemdSimConfig {
        gateway_token: REMD_TOKEN.into(),
        ..RemdSimConfig::default()
    })
    .unwrap();
    let registry_url = registry.url.clone();
    let clock = ManualClock::new();
    let fx = crate::booking::Fx::start_clocked(backend, clock.clone(), |s| {
        crate::documents::registry_link(s, registry_url, vec![1], 60);
        s.clients.extend([
            client(
                "referrer",
                REFERRER_TOKEN,
                &[REFERRER],
                &["referral:write", "appointment:write", "schedule:read"],
            ),
            client("target", TARGET_TOKEN, &[CLINIC_ORG], &["referral:write"]),
        ]);
    })
    .await;
    let t = &fx.t;
    let call = |method: reqwest::Method, token: &'static str, path: String, body: Value| async move {
        let res = t
            .http
            .request(method, t.url(&path))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let refer = || async {
        let mut body = referral(Some(CLINIC_ORG), "I20.8", &[]);
        body["contained"][1]["organization"]["reference"] =
            json!(format!("Organization/{REFERRER}"));
        let (s, v) = call(
            reqwest::Method::POST,
            REFERRER_TOKEN,
            "/fhir/ServiceRequest".into(),
            body,
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let book = |id: String, slot: String| {
        call(
            reqwest::Method::POST,
            REFERRER_TOKEN,
            format!("/fhir/ServiceRequest/{id}/$book"),
            json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": crate::booking::slot_ref(&slot)}}]}),
        )
    };
    let task_of = |id: String| async move {
        call(
            reqwest::Method::GET,
            REFERRER_TOKEN,
            format!("/fhir/Task/{id}"),
            Value::Null,
        )
        .await
        .1
    };
    let accept = |id: String| async move {
        let (s, v) = call(
            reqwest::Method::PUT,
            TARGET_TOKEN,
            format!("/fhir/Task/{id}"),
            task("accepted"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    };
    let referral_slots = fx.free(medgate::model::schedule::Channel::Referral).await;
    let other_slot = fx
        .free(medgate::model::schedule::Channel::Registry)
        .await
        .into_iter()
        .find(|s| {
            !s.channels
                .contains(medgate::model::schedule::Channel::Referral)
        })
        .expect("a slot not open to referrals");
    assert!(referral_slots.len() >= 3);

    let id = refer().await;
    // Not before the target accepts.
    let (s, out) = book(id.clone(), referral_slots[0].id.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    accept(id.clone()).await;
    // $find with the referral: only the target's slots open to referrals.
    let find = |query: String| async move {
        let res = t
            .http
            .get(t.url(&format!("/fhir/Appointment/$find?{query}")))
            .bearer_auth(REFERRER_TOKEN)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, found) = find(format!("referral={id}&_count=100")).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let offered: Vec<String> = found["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["slot"][0]["reference"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(!offered.is_empty(), "{found}");
    let open: Vec<String> = referral_slots
        .iter()
        .map(|s| crate::booking::slot_ref(&s.id))
        .collect();
    assert!(offered.iter().all(|o| open.contains(o)), "{found}");
    let (s, out) = find(format!("referral={id}&organization={REFERRER}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    // Not in a slot closed to referrals.
    let (s, out) = book(id.clone(), other_slot.id.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    let (s, appointment) = book(id.clone(), referral_slots[0].id.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{appointment}");
    let booked = task_of(id.clone()).await;
    assert_eq!(
        (
            booked["status"].as_str(),
            booked["businessStatus"]["text"].as_str()
        ),
        (Some("in-progress"), Some("booked")),
        "{booked}"
    );
    assert_eq!(
        booked["input"][0]["valueReference"]["reference"],
        format!("Appointment/{}", appointment["id"].as_str().unwrap())
    );
    // One booking per referral.
    let (s, out) = book(id.clone(), referral_slots[1].id.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    assert_eq!(fx.sim.active_bookings().len(), 1);

    // The patient cancels the visit: the referral may be booked again.
    let appointment_id = appointment["id"].as_str().unwrap().to_string();
    let (s, out) = call(
        reqwest::Method::PUT,
        REFERRER_TOKEN,
        format!("/fhir/Appointment/{appointment_id}"),
        json!({"resourceType": "Appointment", "id": appointment_id, "status": "cancelled"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if task_of(id.clone()).await["status"] == "accepted" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the referral stayed booked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, again) = book(id.clone(), referral_slots[1].id.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{again}");

    // The target concludes with a document registered through the gateway.
    let uid = uuid::Uuid::new_v4().to_string();
    let (s, doc) = fx
        .post(
            CLINIC_TOKEN,
            "/fhir/DocumentReference",
            &document_reference(&uid, &cda(7), &[]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{doc}");
    let mut complete = task("completed");
    complete["output"] = json!([{"type": {"text": "conclusion"}, "valueReference": {"reference": format!("DocumentReference/{uid}")}}]);
    let (s, done) = call(
        reqwest::Method::PUT,
        TARGET_TOKEN,
        format!("/fhir/Task/{id}"),
        complete,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["valueReference"]["reference"],
        format!("DocumentReference/{uid}")
    );
    let (_, request) = call(
        reqwest::Method::GET,
        REFERRER_TOKEN,
        format!("/fhir/ServiceRequest/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(request["status"], "completed", "{request}");

    // An expired referral cannot be booked.
    let late = refer().await;
    accept(late.clone()).await;
    clock.advance(Duration::from_secs(31 * 86_400));
    let (s, out) = book(late, referral_slots[2].id.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "REFERRAL_EXPIRED",
        "{out}"
    );

    crate::schedules::validate_fhir(&[booked, done, request, again]);
    registry.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_are_booked_once_in_the_targets_referral_slots_postgres() {
    referrals_are_booked_once_in_the_targets_referral_slots(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_are_booked_once_in_the_targets_referral_slots_sqlite() {
    referrals_are_booked_once_in_the_targets_referral_slots(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referral_lifecycle_postgres() {
    referral_lifecycle(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referral_lifecycle_sqlite() {
    referral_lifecycle(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_referrals_move_no_further_postgres() {
    expired_referrals_move_no_further(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_referrals_move_no_further_sqlite() {
    expired_referrals_move_no_further(Backend::Sqlite).await
}

/// An accepted referral nobody booked: three days before it lapses the referring
/// organization is reminded, once, and the reminder is in the referral's history.
async fn an_unbooked_referral_is_reminded_of_before_it_lapses(backend: Backend) {
    let fx = Fx::start(backend).await;
    let summary = fx.document(CLINIC_ORG, CLINIC_TOKEN, 3).await;
    let (s, request) = fx
        .refer(&referral(Some(CENTRE), "I50.1", &[&summary]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{request}");
    let id = request["id"].as_str().unwrap().to_string();
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // Valid for 30 days: not yet within three days of the end.
    fx.clock.advance(Duration::from_secs(26 * 86_400));
    assert_eq!(fx.t.step("referral-upkeep").await, 0);
    fx.clock.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(fx.t.step("referral-upkeep").await, 1);
    assert_eq!(fx.t.step("referral-upkeep").await, 0);
    wait_for("the reminder", || {
        fx.notes_of(&id).iter().any(|n| {
            n["organization"] == CLINIC_ORG
                && n["status"] == "accepted"
                && n["reason"].as_str().is_some_and(|r| r.contains("reminded"))
        })
    })
    .await;
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(t["status"], "accepted", "{t}");
    // Then it lapses as any other.
    fx.clock.advance(Duration::from_secs(3 * 86_400));
    assert_eq!(fx.t.step("referral-upkeep").await, 1);
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(t["businessStatus"]["text"], "expired", "{t}");
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbooked_referral_is_reminded_of_before_it_lapses_postgres() {
    an_unbooked_referral_is_reminded_of_before_it_lapses(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbooked_referral_is_reminded_of_before_it_lapses_sqlite() {
    an_unbooked_referral_is_reminded_of_before_it_lapses(Backend::Sqlite).await
}

/// A patient's own request for a tele-consultation (through the citizen portal) waits for
/// the attending doctor: the centre cannot act on it; the doctor confirms it, attaching the
/// documents the centre's rules require (checked then: without them it stays a request),
/// and it is sent to the centre; another the doctor declines.
async fn a_patients_own_request_waits_for_the_attending_doctor(backend: Backend) {
    let fx = Fx::start(backend).await;
    let propose = |body: Value| {
        let fx = &fx;
        async move {
            fx.send(
                reqwest::Method::POST,
                CITIZEN_PORTAL_TOKEN,
                "/fhir/ServiceRequest/$propose",
                Some(&body),
            )
            .await
        }
    };
    let request = || {
        let mut v = referral(Some(CENTRE), "I21.0", &[]);
        v["intent"] = json!("proposal");
        v
    };
    let (s, sr) = propose(request()).await;
    assert_eq!(s, StatusCode::CREATED, "{sr}");
    assert_eq!(
        (sr["intent"].as_str(), sr["status"].as_str()),
        (Some("proposal"), Some("draft"))
    );
    let id = sr["id"].as_str().unwrap().to_string();
    let (_, t) = fx.get(DOCTOR_TOKEN, &format!("/fhir/Task/{id}")).await;
    assert_eq!(t["status"], "draft", "{t}");
    assert_eq!(t["businessStatus"]["coding"][0]["code"], "proposed");
    crate::schedules::validate_fhir(&[sr.clone(), t.clone()]);
    // The attending clinic is told; the centre hears nothing yet and cannot act on it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fx.notes_of(&id).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no notice of the request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notes = fx.notes_of(&id);
    assert_eq!(notes[0]["status"], "proposed");
    assert_eq!(notes[0]["organization"], CLINIC_ORG);
    let (s, out) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{out}");
    // Confirmed without the discharge summary: the centre's rule refuses, the request stays.
    let (s, out) = fx.move_task(DOCTOR_TOKEN, &id, task("requested")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"], "MISSING_DOCUMENTS",
        "{out}"
    );
    // With it: sent.
    let summary = fx.document(CLINIC_ORG, CLINIC_TOKEN, 41).await;
    let mut confirm = task("requested");
    confirm["input"] = json!([{"type": {"text": "supporting-document"},
        "valueReference": {"reference": format!("DocumentReference/{summary}")}}]);
    let (s, t) = fx.move_task(DOCTOR_TOKEN, &id, confirm).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "requested", "{t}");
    let (_, sr) = fx
        .get(CENTRE_TOKEN, &format!("/fhir/ServiceRequest/{id}"))
        .await;
    assert_eq!(sr["intent"], "order", "{sr}");
    assert_eq!(
        sr["supportingInfo"][0]["reference"],
        format!("DocumentReference/{summary}")
    );
    let (s, t) = fx.move_task(CENTRE_TOKEN, &id, task("accepted")).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let by: Vec<String> = t["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["extension"].as_array())
        .map(|parts| {
            let get = |k: &str| {
                parts
                    .iter()
                    .find(|p| p["url"] == k)
                    .cloned()
                    .unwrap_or_default()
            };
            format!(
                "{}:{}",
                get("status")["valueCode"].as_str().unwrap_or(""),
                get("by")["valueString"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        by,
        [
            "proposed:citizen-portal",
            "requested:doctor",
            "accepted:centre"
        ]
    );

    // Another request the doctor declines, saying why.
    let (_, sr) = propose(request()).await;
    let other = sr["id"].as_str().unwrap().to_string();
    let mut decline = task("cancelled");
    decline["statusReason"] = json!({"text": "seen in person: no tele-consultation needed"});
    let (s, t) = fx.move_task(DOCTOR_TOKEN, &other, decline).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["businessStatus"]["coding"][0]["code"], "cancelled");

    // A request names the organization asked for, carries no documents, and the portal
    // cannot send an order itself.
    let mut no_target = request();
    no_target.as_object_mut().unwrap().remove("performer");
    let (s, out) = propose(no_target).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["details"]["coding"][0]["code"],
        "TARGET_REQUIRED"
    );
    let mut with_docs = request();
    with_docs["supportingInfo"] = json!([{"reference": format!("DocumentReference/{summary}")}]);
    let (s, out) = propose(with_docs).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0],
        "ServiceRequest.supportingInfo"
    );
    let (s, out) = fx
        .send(
            reqwest::Method::POST,
            CITIZEN_PORTAL_TOKEN,
            "/fhir/ServiceRequest",
            Some(&referral(Some(CENTRE), "I21.0", &[])),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{out}");
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_own_request_waits_for_the_attending_doctor_postgres() {
    a_patients_own_request_waits_for_the_attending_doctor(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_own_request_waits_for_the_attending_doctor_sqlite() {
    a_patients_own_request_waits_for_the_attending_doctor(Backend::Sqlite).await
}

/// A referral may bring new documents with it: each contained `DocumentReference` goes
/// through the document intake first (validated, signed, queued for the registry) and is
/// attached by its id; a bad one is refused naming where it is, and nothing is created.
async fn documents_come_with_the_referral(backend: Backend) {
    let fx = Fx::start(backend).await;
    let uid = uuid::Uuid::new_v4().to_string();
    let mut doc = document_reference(&uid, &cda(51), &[]);
    doc["id"] = json!("summary");
    doc["author"][0]["identifier"]["value"] = json!(AUTHOR);
    let mut body = referral(Some(CENTRE), "I21.0", &[]);
    body["contained"].as_array_mut().unwrap().push(doc.clone());
    body["supportingInfo"] = json!([{"reference": "#summary"}]);
    let (s, sr) = fx.refer(&body).await;
    assert_eq!(s, StatusCode::CREATED, "{sr}");
    assert_eq!(
        sr["supportingInfo"][0]["reference"],
        format!("DocumentReference/{uid}")
    );
    let (s, registered) = fx
        .get(CLINIC_TOKEN, &format!("/fhir/DocumentReference/{uid}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{registered}");
    crate::schedules::validate_fhir(&[sr]);

    // Without its local UID: refused where it is; no referral, no document.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("masterIdentifier");
    let mut body = referral(Some(CENTRE), "I21.0", &[]);
    body["contained"].as_array_mut().unwrap().push(broken);
    body["supportingInfo"] = json!([{"reference": "#summary"}]);
    let (s, out) = fx.refer(&body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{out}");
    assert_eq!(
        out["issue"][0]["expression"][0], "ServiceRequest.supportingInfo[0].masterIdentifier.value",
        "{out}"
    );
    let (_, list) = fx.get(DOCTOR_TOKEN, "/fhir/ServiceRequest").await;
    assert_eq!(
        list["total"]
            .as_u64()
            .or(list["entry"].as_array().map(|e| e.len() as u64)),
        Some(1),
        "{list}"
    );
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_come_with_the_referral_postgres() {
    documents_come_with_the_referral(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_come_with_the_referral_sqlite() {
    documents_come_with_the_referral(Backend::Sqlite).await
}

/// The referral benchmark on a short profile: every referral created and accepted (no
/// speed asserted: figures come from `medgate bench referrals`, BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referral_benchmark_creates_and_accepts_every_referral() {
    capture_logs();
    let report = medgate::bench::referrals(medgate::bench::ReferralBench {
        pg_admin_url: pg_admin_url(),
        count: 60,
        concurrency: 4,
        across_peer: false,
    })
    .await
    .expect("benchmark ran");
    println!("{report}");
    assert!(
        report.contains("created (POST ServiceRequest): 60 in"),
        "{report}"
    );
    assert!(
        report.contains("accepted by the target (PUT Task): 60 in"),
        "{report}"
    );
}

/// The same across a peer link: every referral forwarded, accepted, and its acceptance
/// back in the referring region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referral_benchmark_across_a_peer_link_routes_every_referral() {
    capture_logs();
    let report = medgate::bench::referrals(medgate::bench::ReferralBench {
        pg_admin_url: pg_admin_url(),
        count: 40,
        concurrency: 4,
        across_peer: true,
    })
    .await
    .expect("benchmark ran");
    println!("{report}");
    for expected in [
        "created in 78 and forwarded to 77 within the request: 40 in",
        "accepted by the target in 77 (PUT Task): 40 in",
        "routed back to region 78 (outbox, one PUT Task each): 40 of 40",
    ] {
        assert!(report.contains(expected), "{report}");
    }
}
