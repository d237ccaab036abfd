//! Booking end to end through FHIR against the city MIS simulator: find, hold, book,
//! cancel, reschedule, channel rules and restriction windows, hold expiry, MIS timeouts
//! leaving no half-booked state, urgent visits, idempotency keys, withdrawn and moved slots
//! producing patient notifications, and a booking race.

use medgate::store::Backend;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use medgate::adapters::emias::EmiasClient;
use medgate::config::EmiasSettings;
use medgate::model::booking::Patient;
use medgate::model::schedule::Channel;
use medgate::model::schedule::{Slot, SlotStatus};
use medgate::model::time::ManualClock;
use medgate::model::{Oid, PolicyNumber};
use medgate::services::mis::{Mis, MisBooking, MisError};
use medgate::services::schedule_sync::full_sync;
use medgate::sim::emias::{EmiasSim, Faults, Region};
use medgate::store::schedules::SlotQuery;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::schedules::validate_fhir;
use crate::support::*;

pub(crate) const ORG: &str = "1.2.643.5.1.13.13.12.2.77.7001";

/// The test clinic's OID, typed.
pub(crate) fn org() -> Oid {
    Oid::parse_organization(ORG).unwrap()
}

pub(crate) fn first_day() -> NaiveDate {
    Utc::now().date_naive() + Days::new(1)
}

fn region() -> Region {
    Region {
        clinics: 2,
        doctors: 6,
        days: 7,
        slots_per_day: 8,
        slot_minutes: 20,
        first_day: first_day(),
    }
}

pub(crate) struct Fx {
    pub(crate) t: TestGateway,
    pub(crate) sim: EmiasSim,
}

impl Fx {
    pub(crate) async fn start(
        backend: medgate::store::Backend,
        tweak: impl FnOnce(&mut medgate::config::Settings),
    ) -> Fx {
        Fx::start_clocked(backend, medgate::model::time::system_clock(), tweak).await
    }

    /// Starts with the gateway's services and jobs reading `clock`.
    pub(crate) async fn start_clocked(
        backend: medgate::store::Backend,
        clock: medgate::model::time::SharedClock,
        tweak: impl FnOnce(&mut medgate::config::Settings),
    ) -> Fx {
        let sim = EmiasSim::start(region()).unwrap();
        let url = sim.url.clone();
        let t = TestGateway::start_clocked(backend, clock, |s| {
            s.emias = Some(EmiasSettings {
                url,
                timeout_secs: 1,
                days_ahead: 7,
            });
            s.booking.sync_interval_secs = 0;
            tweak(s);
        })
        .await;
        let fx = Fx { t, sim };
        full_sync(
            &fx.t.gw.store,
            &fx.mis(),
            &org(),
            first_day(),
            7,
            medgate::model::time::now_ms(),
            &|_| {},
        )
        .await
        .unwrap();
        fx
    }

    pub(crate) fn mis(&self) -> EmiasClient {
        EmiasClient::new(
            &self.sim.url,
            Duration::from_secs(5),
            self.t.gw.state.txlog.clone(),
        )
    }

    /// Free slots of the clinic that accept `channel`.
    pub(crate) async fn free(&self, channel: Channel) -> Vec<Slot> {
        let q = SlotQuery {
            org: Some(org()),
            status: Some(SlotStatus::Free),
            ..SlotQuery::default()
        };
        let rows = self.t.gw.store.search_slots(&q, 1000).await.unwrap();
        rows.into_iter()
            .filter(|s| s.channels.contains(channel))
            .collect()
    }

    pub(crate) async fn post(
        &self,
        token: &str,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .t
            .http
            .post(self.t.url(path))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json");
        if let Some(k) = key {
            r = r.header("idempotency-key", k);
        }
        let res = r.body(body.to_string()).send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let res = self
            .t
            .http
            .get(self.t.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn put(&self, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .t
            .http
            .put(self.t.url(path))
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Outbox items of a destination with their status.
    pub(crate) async fn outbox(&self, destination: &str) -> Vec<(String, String)> {
        sqlx::query_as::<_, (String, String)>(
            "SELECT aggregate_id, status FROM outbox WHERE destination = $1 ORDER BY id",
        )
        .bind(destination.to_string())
        .fetch_all(self.t.gw.store.pool())
        .await
        .unwrap()
    }

    pub(crate) async fn wait_outbox_done(&self, destination: &str, n: usize) {
        for _ in 0..100 {
            let items = self.outbox(destination).await;
            if items.len() >= n && items.iter().all(|(_, s)| s == "done") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "outbox {destination} not delivered: {:?}",
            self.outbox(destination).await
        );
    }

    /// True when the simulator still has the slot booked (a probe booking is refused).
    pub(crate) async fn mis_has_booked(&self, slot_id: &str) -> bool {
        let probe = MisBooking {
            slot_external_id: slot_id.trim_start_matches("emias:").into(),
            client_ref: uuid::Uuid::new_v4().to_string(),
            patient: Patient {
                policy: PolicyNumber::parse(&policy(999)).ok(),
                ..Patient::default()
            },
            channel: Channel::Registry,
        };
        let mis = self.mis();
        match mis.book(probe.clone()).await {
            Ok(id) => {
                mis.cancel(Some(&id), &probe.client_ref).await.unwrap();
                false
            }
            Err(MisError::Refused { code, .. }) if code == "SLOT_TAKEN" => true,
            Err(e) => panic!("probe failed: {e}"),
        }
    }
}

/// A synthetic, valid-format OMS policy number.
pub(crate) fn policy(i: u32) -> String {
    format!("7700{i:012}")
}

pub(crate) fn slot_ref(id: &str) -> String {
    format!("Slot/{}", id.replacen(':', ".", 1))
}

pub(crate) fn patient(i: u32) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": policy(i)}], "birthDate": "1980-05-17"})
}

pub(crate) fn params(slot: &str, patient: Option<Value>, channel: Option<&str>) -> Value {
    let mut p = vec![
        json!({"name": "appointment", "resource": {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": slot_ref(slot)}], "participant": [{"status": "needs-action"}]}}),
    ];
    if let Some(pt) = patient {
        p.push(json!({"name": "patient", "resource": pt}));
    }
    if let Some(c) = channel {
        p.push(json!({"name": "channel", "valueCode": c}));
    }
    json!({"resourceType": "Parameters", "parameter": p})
}

fn book_hold(id: &str) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "appointment", "resource": {"resourceType": "Appointment", "id": id, "status": "pending", "participant": [{"status": "accepted"}]}}]})
}

fn ext<'a>(a: &'a Value, suffix: &str) -> &'a Value {
    a["extension"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|x| x["url"].as_str().is_some_and(|u| u.ends_with(suffix)))
        })
        .map(|x| {
            x.get("valueCode")
                .or(x.get("valueInstant"))
                .unwrap_or(&Value::Null)
        })
        .unwrap_or(&Value::Null)
}

pub(crate) fn issue_code(outcome: &Value) -> String {
    outcome["issue"][0]["details"]["coding"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub(crate) fn issue_field(outcome: &Value) -> String {
    outcome["issue"][0]["expression"][0]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn find_hold_book_reschedule_cancel(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let mut emitted = Vec::new();

    // $find offers only slots the internet channel may take.
    let (s, found) = fx
        .get(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/$find?organization={ORG}&_count=30"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    let self_link = found["link"][0]["url"].as_str().unwrap();
    assert!(
        self_link.ends_with(&format!("/Appointment/$find?organization={ORG}&_count=30")),
        "the self link carries the query: {self_link}"
    );
    let proposals = found["entry"].as_array().unwrap();
    assert_eq!(proposals.len(), 30);
    for e in proposals {
        assert_eq!(e["resource"]["status"], "proposed");
        let channels: Vec<&str> = e["resource"]["extension"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["valueCode"].as_str())
            .collect();
        assert!(channels.contains(&"internet"), "{channels:?}");
        emitted.push(e["resource"].clone());
    }

    let free = fx.free(Channel::Internet).await;
    let (a, b) = (free[0].id.clone(), free[1].id.clone());

    // Hold, then a competing hold is refused.
    let (s, held) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&a, Some(patient(1)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    assert_eq!(held["status"], "pending");
    assert_eq!(ext(&held, "booking-status"), "held");
    assert_eq!(ext(&held, "booking-channel"), "internet");
    assert!(ext(&held, "hold-expires").is_string());
    let id = held["id"].as_str().unwrap().to_string();
    let (s, taken) = fx
        .post(
            ADMIN_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&a, Some(patient(2)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&taken)),
        (StatusCode::CONFLICT, "SLOT_TAKEN".into()),
        "{taken}"
    );
    assert_eq!(issue_field(&taken), "Appointment.slot");
    emitted.push(held);

    // Book the hold: the MIS books it, the slot is busy here and there.
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &book_hold(&id),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["id"], id.as_str());
    assert!(
        booked["identifier"][1]["value"]
            .as_str()
            .unwrap()
            .starts_with("A-"),
        "{booked}"
    );
    assert_eq!(
        fx.t.gw.store.slot(&a).await.unwrap().unwrap().status,
        SlotStatus::Busy
    );
    assert!(fx.mis_has_booked(&a).await);
    emitted.push(booked);

    // Read and search.
    let (s, read) = fx
        .get(PORTAL_TOKEN, &format!("/fhir/Appointment/{id}"))
        .await;
    assert_eq!(
        (s, read["status"].as_str()),
        (StatusCode::OK, Some("booked"))
    );
    let (s, _) = fx
        .get(CLINIC_TOKEN, &format!("/fhir/Appointment/{id}"))
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "another client without appointment scopes"
    );
    let (s, found) = fx
        .get(
            PORTAL_TOKEN,
            &format!(
                "/fhir/Appointment?patient:identifier=urn:oid:1.2.643.5.1.13.2.1.1.635|{}",
                policy(1)
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found["entry"].as_array().unwrap().len(), 1);
    emitted.push(found.clone());

    // Reschedule to b: b booked, a cancelled and freed in the MIS through the outbox.
    let body = json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": slot_ref(&b)}}]});
    let (s, moved) = fx
        .post(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/{id}/$reschedule"),
            &body,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{moved}");
    assert_eq!(moved["status"], "booked");
    assert_eq!(moved["slot"][0]["reference"], slot_ref(&b).as_str());
    let new_id = moved["id"].as_str().unwrap().to_string();
    let old = fx.t.gw.store.appointment(&id).await.unwrap().unwrap();
    assert_eq!(
        (old.status.as_str(), old.reason.as_str()),
        ("cancelled", "RESCHEDULED")
    );
    fx.wait_outbox_done("mis", 1).await;
    assert!(
        !fx.mis_has_booked(&a).await,
        "the old slot is free in the MIS"
    );
    assert!(fx.mis_has_booked(&b).await);
    assert_eq!(
        fx.t.gw.store.slot(&a).await.unwrap().unwrap().status,
        SlotStatus::Free
    );
    emitted.push(moved.clone());

    // Cancel by status.
    let mut cancel = moved.clone();
    cancel["status"] = json!("cancelled");
    cancel["cancelationReason"] = json!({"text": "patient recovered"});
    let (s, cancelled) = fx
        .put(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/{new_id}"),
            &cancel,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelationReason"]["text"], "patient recovered");
    fx.wait_outbox_done("mis", 2).await;
    assert!(!fx.mis_has_booked(&b).await);
    let (s, again) = fx
        .put(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/{new_id}"),
            &cancel,
        )
        .await;
    assert_eq!(
        (s, issue_code(&again)),
        (StatusCode::CONFLICT, "WRONG_STATE".into())
    );
    let mut move_it = moved.clone();
    move_it["start"] = json!("2030-01-01T10:00:00Z");
    let (s, refused) = fx
        .put(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/{new_id}"),
            &move_it,
        )
        .await;
    assert_eq!(
        (s, issue_field(&refused)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Appointment.status".into()
        )
    );
    emitted.push(cancelled);

    // Schedule and PractitionerRole.
    let (s, schedules) = fx
        .get(PORTAL_TOKEN, &format!("/fhir/Schedule?organization={ORG}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(schedules["entry"].as_array().unwrap().len(), 3);
    let (s, roles) = fx
        .get(
            PORTAL_TOKEN,
            &format!("/fhir/PractitionerRole?organization={ORG}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(roles["entry"].as_array().unwrap().len(), 3);
    emitted.push(schedules);
    emitted.push(roles);
    validate_fhir(&emitted);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_hold_book_reschedule_cancel_postgres() {
    find_hold_book_reschedule_cancel(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_hold_book_reschedule_cancel_sqlite() {
    find_hold_book_reschedule_cancel(Backend::Sqlite).await
}

async fn channels_and_restrictions(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    // A slot that only the registry and doctors may take.
    let registry_only = fx
        .free(Channel::Registry)
        .await
        .into_iter()
        .find(|s| !s.channels.contains(Channel::Internet))
        .unwrap();
    let (s, refused) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&registry_only.id, Some(patient(1)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&refused)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "CHANNEL_NOT_ALLOWED".into()
        ),
        "{refused}"
    );
    assert!(
        refused["issue"][0]["details"]["text"]
            .as_str()
            .unwrap()
            .contains("registry"),
        "{refused}"
    );
    assert_eq!(issue_field(&refused), "Parameters.parameter[channel]");
    let (s, ok) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&registry_only.id, Some(patient(1)), Some("registry")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ok}");
    assert_eq!(ext(&ok, "booking-channel"), "registry");

    // The clinic restricts internet booking for the first day (an epidemic).
    let day = first_day();
    let restriction = json!({"organization": ORG, "channels": ["internet"], "from": day.to_string(), "to": (day + Days::new(1)).to_string(), "reason": "influenza epidemic"});
    let (s, created) = fx
        .post(ADMIN_TOKEN, "/api/admin/restrictions", &restriction, None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (s, bad) = fx.post(ADMIN_TOKEN, "/api/admin/restrictions", &json!({"organization": ORG, "channels": ["phone"], "from": "2026-01-02", "to": "2026-01-01", "reason": "x"}), None).await;
    assert_eq!(
        (s, bad["field"].as_str(), bad["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("channels[0]"),
            Some("INVALID_CHANNEL")
        ),
        "only internet and kiosk can be restricted: {bad}"
    );
    let (s, _) = fx
        .post(PORTAL_TOKEN, "/api/admin/restrictions", &restriction, None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let free = fx.free(Channel::Internet).await;
    let on_day = free
        .iter()
        .find(|s| medgate::model::time::from_ms(s.start_at).date_naive() == day)
        .unwrap();
    let later = free
        .iter()
        .find(|s| medgate::model::time::from_ms(s.start_at).date_naive() > day)
        .unwrap();
    let (s, refused) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&on_day.id, Some(patient(2)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&refused)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "CHANNEL_RESTRICTED".into()
        ),
        "{refused}"
    );
    assert!(
        refused["issue"][0]["details"]["text"]
            .as_str()
            .unwrap()
            .contains("influenza epidemic"),
        "{refused}"
    );
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&on_day.id, Some(patient(2)), Some("phone")),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the phone channel is not restricted"
    );
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&later.id, Some(patient(3)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "outside the window");

    // Lifting the restriction.
    let rid = created["id"].as_str().unwrap();
    let res =
        fx.t.http
            .delete(fx.t.url(&format!("/api/admin/restrictions/{rid}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let next = free
        .iter()
        .find(|s| {
            medgate::model::time::from_ms(s.start_at).date_naive() == day && s.id != on_day.id
        })
        .unwrap();
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&next.id, Some(patient(4)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_restrictions_postgres() {
    channels_and_restrictions(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_and_restrictions_sqlite() {
    channels_and_restrictions(Backend::Sqlite).await
}

async fn holds_expire(backend: Backend) {
    let clock = ManualClock::new();
    let fx = Fx::start_clocked(backend, clock.clone(), |s| s.booking.hold_secs = 300).await;
    let slot = fx.free(Channel::Internet).await[0].id.clone();
    let (s, held) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&slot, None, None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    let id = held["id"].as_str().unwrap().to_string();
    // Booking a hold without a patient is refused, naming the patient.
    let (s, refused) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &book_hold(&id),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&refused)),
        (StatusCode::BAD_REQUEST, "PATIENT_NOT_IDENTIFIED".into()),
        "{refused}"
    );
    // The hold time passes (a hold at its very end still counts).
    clock.advance(Duration::from_secs(300));
    assert_eq!(fx.t.step("hold-sweeper").await, 0);
    clock.advance(Duration::from_secs(1));
    let mut late = book_hold(&id);
    late["parameter"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "patient", "resource": patient(5)}));
    let (s, expired) = fx
        .post(PORTAL_TOKEN, "/fhir/Appointment/$book", &late, None)
        .await;
    assert_eq!(
        (s, issue_code(&expired)),
        (StatusCode::CONFLICT, "HOLD_EXPIRED".into()),
        "{expired}"
    );
    // The sweeper ends it (whether or not it ran before the late booking, the answer is
    // the same).
    assert_eq!(fx.t.step("hold-sweeper").await, 1);
    let (s, again) = fx
        .post(PORTAL_TOKEN, "/fhir/Appointment/$book", &late, None)
        .await;
    assert_eq!(
        (s, issue_code(&again)),
        (StatusCode::CONFLICT, "HOLD_EXPIRED".into()),
        "{again}"
    );
    let a = fx.t.gw.store.appointment(&id).await.unwrap().unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("expired", "HOLD_EXPIRED")
    );
    // The slot is free for others at once, and the MIS never saw the hold.
    let (s, other) = fx
        .post(
            ADMIN_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(6)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_postgres() {
    holds_expire(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_sqlite() {
    holds_expire(Backend::Sqlite).await
}

/// A booking whose process died between the clinic system's yes and the gateway's commit
/// leaves a hold; its expiry cancels the booking there, so the slot is not lost.
async fn a_hold_that_outlived_its_process_is_cancelled_in_the_mis(backend: Backend) {
    let clock = ManualClock::new();
    let fx = Fx::start_clocked(backend, clock.clone(), |s| s.booking.hold_secs = 300).await;
    let slot = fx.free(Channel::Internet).await[0].clone();
    let (s, held) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&slot.id, Some(patient(7)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{held}");
    let id = held["id"].as_str().unwrap().to_string();
    // What the dead request did: the clinic system booked the slot under our reference.
    fx.mis()
        .book(MisBooking {
            slot_external_id: slot.id.trim_start_matches("emias:").into(),
            client_ref: id.clone(),
            patient: Patient {
                policy: PolicyNumber::parse(&policy(7)).ok(),
                ..Patient::default()
            },
            channel: Channel::Internet,
        })
        .await
        .unwrap();
    assert!(fx.mis_has_booked(&slot.id).await);
    clock.advance(Duration::from_secs(301));
    assert_eq!(fx.t.step("hold-sweeper").await, 1);
    let queued = fx.outbox("mis").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, id);
    // The delivery worker was woken by the expiry.
    fx.wait_outbox_done("mis", 1).await;
    assert!(
        !fx.mis_has_booked(&slot.id).await,
        "the orphan is cancelled"
    );
    // A key whose first request died is taken over once older than the bound given.
    let store = &fx.t.gw.store;
    let now = medgate::model::time::now_ms();
    use medgate::store::appointments::KeyClaim;
    let claim = |now: i64| store.claim_idempotency_key("portal", "k-1", "h", now, now - 300_000);
    assert!(matches!(claim(now).await.unwrap(), KeyClaim::Fresh));
    assert!(matches!(
        claim(now + 299_000).await.unwrap(),
        KeyClaim::InProgress
    ));
    assert!(matches!(
        claim(now + 301_000).await.unwrap(),
        KeyClaim::Fresh
    ));
    assert!(matches!(
        claim(now + 302_000).await.unwrap(),
        KeyClaim::InProgress
    ));
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_outlived_its_process_is_cancelled_in_the_mis_postgres() {
    a_hold_that_outlived_its_process_is_cancelled_in_the_mis(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_outlived_its_process_is_cancelled_in_the_mis_sqlite() {
    a_hold_that_outlived_its_process_is_cancelled_in_the_mis(Backend::Sqlite).await
}

async fn mis_timeout_leaves_nothing_booked(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let slot = fx.free(Channel::Internet).await[0].id.clone();
    fx.sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let (s, failed) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(7)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&failed)),
        (StatusCode::GATEWAY_TIMEOUT, "MIS_UNAVAILABLE".into()),
        "{failed}"
    );
    let rows =
        fx.t.gw
            .store
            .search_appointments(
                &medgate::store::appointments::AppointmentQuery {
                    slot_id: Some(slot.clone()),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].reason.as_str()),
        ("failed", "MIS_UNAVAILABLE")
    );
    assert_eq!(
        fx.t.gw.store.slot(&slot).await.unwrap().unwrap().status,
        SlotStatus::Free
    );
    // The compensating cancel waits in the outbox until the MIS answers again.
    assert_eq!(fx.outbox("mis").await.len(), 1);
    fx.sim.set_faults(Faults::default());
    fx.wait_outbox_done("mis", 1).await;
    assert!(
        !fx.mis_has_booked(&slot).await,
        "whatever the MIS did with the timed-out request was undone"
    );
    let (s, ok) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(7)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ok}");
    assert_eq!(ok["status"], "booked");

    // A refusal by the MIS (the slot was booked there directly) leaves nothing either.
    let other = fx.free(Channel::Internet).await[0].id.clone();
    fx.mis()
        .book(MisBooking {
            slot_external_id: other.trim_start_matches("emias:").into(),
            client_ref: "direct".into(),
            patient: Patient {
                policy: PolicyNumber::parse(&policy(9)).ok(),
                ..Patient::default()
            },
            channel: Channel::Registry,
        })
        .await
        .unwrap();
    let (s, taken) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&other, Some(patient(8)), None),
            None,
        )
        .await;
    assert_eq!(
        (s, issue_code(&taken)),
        (StatusCode::CONFLICT, "SLOT_TAKEN".into()),
        "{taken}"
    );
    assert_eq!(
        fx.t.gw.store.slot(&other).await.unwrap().unwrap().status,
        SlotStatus::Busy,
        "the MIS's verdict is recorded"
    );
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mis_timeout_leaves_nothing_booked_postgres() {
    mis_timeout_leaves_nothing_booked(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mis_timeout_leaves_nothing_booked_sqlite() {
    mis_timeout_leaves_nothing_booked(Backend::Sqlite).await
}

async fn urgent_visits_and_idempotency(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let urgent = json!({
        "resourceType": "Appointment", "status": "booked",
        "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "EMERGENCY"}]},
        "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": "123-456-789 64"}]}],
        "participant": [{"actor": {"reference": "#p"}, "status": "accepted"}, {"actor": {"reference": format!("Location/{ORG}")}, "status": "accepted"}]
    });
    // An urgent visit is a record of the clinic: the portal may not make one there.
    let (s, refused) = fx
        .post(PORTAL_TOKEN, "/fhir/Appointment", &urgent, Some("urgent-0"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{refused}");
    let (s, a) = fx
        .post(DESK_TOKEN, "/fhir/Appointment", &urgent, Some("urgent-1"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(ext(&a, "booking-status"), "urgent");
    assert_eq!(a["appointmentType"]["coding"][0]["code"], "EMERGENCY");
    assert!(a.get("slot").is_none());
    let (s, replay) = fx
        .post(DESK_TOKEN, "/fhir/Appointment", &urgent, Some("urgent-1"))
        .await;
    assert_eq!(
        (s, replay["id"].clone()),
        (StatusCode::CREATED, a["id"].clone()),
        "a replay returns the first result"
    );

    let slot = fx.free(Channel::Internet).await[0].id.clone();
    let body = params(&slot, Some(patient(11)), None);
    let (s, first) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &body,
            Some("book-1"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let (s, replay) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &body,
            Some("book-1"),
        )
        .await;
    assert_eq!(
        (s, replay["id"].clone()),
        (StatusCode::CREATED, first["id"].clone())
    );
    let (s, reused) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(12)), None),
            Some("book-1"),
        )
        .await;
    assert_eq!(
        (s, issue_code(&reused)),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED".into()
        )
    );
    // A failed create does not burn its key.
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params("emias:nope", Some(patient(13)), None),
            Some("book-2"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let other = fx.free(Channel::Internet).await[0].id.clone();
    let (s, _) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params("emias:nope", Some(patient(13)), None),
            Some("book-2"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "same request, same answer");
    let (s, ok) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&other, Some(patient(13)), None),
            Some("book-3"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ok}");
    validate_fhir(&[a, first, ok]);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_visits_and_idempotency_postgres() {
    urgent_visits_and_idempotency(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_visits_and_idempotency_sqlite() {
    urgent_visits_and_idempotency(Backend::Sqlite).await
}

async fn bad_booking_input_is_named(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let slot = fx.free(Channel::Internet).await[0].id.clone();
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            params("emias:D99999-20300101-00", Some(patient(1)), None),
            StatusCode::NOT_FOUND,
            "UNKNOWN_SLOT",
            "Appointment.slot",
        ),
        (
            params(
                &slot,
                Some(
                    json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": "12345"}], "birthDate": "1980-01-01"}),
                ),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_POLICY",
            "Parameters.parameter[patient].resource.identifier[policy]",
        ),
        (
            params(
                &slot,
                Some(
                    json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": policy(1)}]}),
                ),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "PATIENT_NOT_IDENTIFIED",
            "Parameters.parameter[patient].resource.birthDate",
        ),
        (
            params(
                &slot,
                Some(
                    json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": policy(1)}], "birthDate": "17.05.1980"}),
                ),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_DATE",
            "Parameters.parameter[patient].resource.birthDate",
        ),
        (
            params(
                &slot,
                Some(
                    json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": "12345678900"}]}),
                ),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "INVALID_SNILS",
            "Parameters.parameter[patient].resource.identifier[snils]",
        ),
        (
            params(&slot, Some(patient(1)), Some("telepathy")),
            StatusCode::BAD_REQUEST,
            "INVALID_CHANNEL",
            "Parameters.parameter[channel]",
        ),
        (
            json!({"resourceType": "Parameters", "parameter": []}),
            StatusCode::BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
            "Parameters.parameter[appointment]",
        ),
        (
            json!({"resourceType": "Patient"}),
            StatusCode::BAD_REQUEST,
            "WRONG_RESOURCE_TYPE",
            "resourceType",
        ),
    ];
    for (body, status, code, field) in cases {
        let (s, o) = fx
            .post(PORTAL_TOKEN, "/fhir/Appointment/$book", &body, None)
            .await;
        assert_eq!(
            (s, issue_code(&o), issue_field(&o)),
            (status, code.to_string(), field.to_string()),
            "{body} -> {o}"
        );
        assert_eq!(o["resourceType"], "OperationOutcome");
    }
    let res =
        fx.t.http
            .post(fx.t.url("/fhir/Appointment/$hold"))
            .bearer_auth(PORTAL_TOKEN)
            .header("content-type", "application/fhir+json")
            .body("{\"resourceType\": \"Parameters\", ")
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let o: Value = res.json().await.unwrap();
    assert_eq!(issue_code(&o), "INVALID_JSON");
    for (query, field) in [
        ("organization=1.2.3", "organization"),
        (
            "organization=1.2.643.5.1.13.13.12.2.77.7001&start=2030-01-02&end=2030-01-01",
            "end",
        ),
        ("start=yesterday", "start"),
        ("colour=blue", "colour"),
    ] {
        let (s, o) = fx
            .get(PORTAL_TOKEN, &format!("/fhir/Appointment/$find?{query}"))
            .await;
        assert_eq!(
            (s, issue_field(&o)),
            (StatusCode::BAD_REQUEST, field.to_string()),
            "{query} -> {o}"
        );
    }
    let (s, o) = fx
        .post(
            CLINIC_TOKEN,
            "/fhir/Appointment/$hold",
            &params(&slot, None, None),
            None,
        )
        .await;
    assert_eq!(
        (s, o["issue"][0]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{o}"
    );
    // Nothing was stored by any of it.
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM appointments")
        .fetch_one(fx.t.gw.store.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_booking_input_is_named_postgres() {
    bad_booking_input_is_named(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_booking_input_is_named_sqlite() {
    bad_booking_input_is_named(Backend::Sqlite).await
}

/// Collects what is POSTed to it.
pub(crate) async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/notify",
            web::post().to(move |body: web::Bytes| {
                let sink = sink.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        sink.lock().unwrap().push(v);
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
    (format!("http://{addr}/notify"), got, handle)
}

/// A gateway notifying a [`receiver`] (its schedule rounds run by hand), with one slot
/// booked by patient `n`: the fixture, the notifications received, the receiver, the slot
/// and the booked Appointment. The first round (which looks at every appointment) has run.
async fn booked_with_notifications(
    backend: medgate::store::Backend,
    n: u32,
) -> (
    Fx,
    Arc<Mutex<Vec<Value>>>,
    actix_web::dev::ServerHandle,
    Slot,
    Value,
) {
    let (url, got, handle) = receiver().await;
    let fx = Fx::start(backend, |s| s.booking.notify_url = Some(url)).await;
    let slot = fx.free(Channel::Internet).await[0].clone();
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot.id, Some(patient(n)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    assert_eq!(fx.t.step("schedule-round").await, 0);
    (fx, got, handle, slot, booked)
}

/// The notifications received once the first arrives (or none after about five seconds).
async fn first_notes(got: &Mutex<Vec<Value>>) -> Vec<Value> {
    for _ in 0..50 {
        let notes = got.lock().unwrap().clone();
        if !notes.is_empty() {
            return notes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

async fn withdrawn_slot_notifies_the_patient(backend: Backend) {
    let (fx, got, handle, slot, booked) = booked_with_notifications(backend, 21).await;
    // The doctor falls ill that day.
    let doctor = slot.practitioner_id.trim_start_matches("emias:");
    let day = medgate::model::time::from_ms(slot.start_at).date_naive();
    assert_eq!(fx.sim.withdraw_day(doctor, day), 8);
    assert_eq!(fx.t.step("schedule-round").await, 1);
    let notes = first_notes(&got).await;
    assert_eq!(notes.len(), 1, "one notification: {notes:?}");
    let n = &notes[0];
    assert_eq!(n["event"], "slot-withdrawn");
    assert_eq!(n["appointment"], booked["id"]);
    assert_eq!(n["patient"]["policy"], policy(21).as_str());
    let alternatives = n["alternatives"].as_array().unwrap();
    assert!(!alternatives.is_empty() && alternatives.len() <= 5, "{n}");
    for alt in alternatives {
        let s =
            fx.t.gw
                .store
                .slot(alt["slot"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            (s.specialty_code.as_str(), s.status.as_str()),
            (slot.specialty_code.as_str(), "free")
        );
        assert!(s.channels.contains(Channel::Internet));
    }
    let (_, a) = fx
        .get(
            PORTAL_TOKEN,
            &format!("/fhir/Appointment/{}", booked["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        (a["status"].as_str(), ext(&a, "booking-status").as_str()),
        (Some("cancelled"), Some("withdrawn"))
    );
    assert_eq!(a["cancelationReason"]["text"], "SLOT_WITHDRAWN");
    fx.wait_outbox_done("notify", 1).await;
    handle.stop(false).await;
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_slot_notifies_the_patient_postgres() {
    withdrawn_slot_notifies_the_patient(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_slot_notifies_the_patient_sqlite() {
    withdrawn_slot_notifies_the_patient(Backend::Sqlite).await
}

async fn moved_slot_moves_the_appointment_and_notifies_the_patient(backend: Backend) {
    let (fx, got, handle, slot, booked) = booked_with_notifications(backend, 22).await;
    // The clinic shifts the visit by an hour and a half; the booking stays in the MIS.
    let sim_slot = slot.id.trim_start_matches("emias:");
    assert!(fx.sim.move_slot(sim_slot, 90));
    assert_eq!(fx.t.step("schedule-round").await, 1);
    let notes = first_notes(&got).await;
    assert_eq!(notes.len(), 1, "one notification: {notes:?}");
    let n = &notes[0];
    let moved_to = slot.start_at + 90 * 60_000;
    let time = |ms: i64| medgate::model::time::from_ms(ms).to_rfc3339();
    assert_eq!(n["event"], "slot-moved");
    assert_eq!(n["appointment"], booked["id"]);
    assert_eq!(n["patient"]["policy"], policy(22).as_str());
    assert_eq!(n["previousStart"], time(slot.start_at).as_str());
    assert_eq!(n["start"], time(moved_to).as_str());
    assert!(
        n["alternatives"].as_array().is_some_and(|a| !a.is_empty()),
        "{n}"
    );
    // The slot and the appointment carry the new time; the appointment stays booked.
    let stored = fx.t.gw.store.slot(&slot.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.start_at, stored.status.as_str()),
        (moved_to, "busy")
    );
    let id = booked["id"].as_str().unwrap();
    let (_, a) = fx
        .get(PORTAL_TOKEN, &format!("/fhir/Appointment/{id}"))
        .await;
    assert_eq!(a["status"], "booked", "{a}");
    assert_eq!(a["comment"], "SLOT_MOVED");
    let start = chrono::DateTime::parse_from_rfc3339(a["start"].as_str().unwrap()).unwrap();
    assert_eq!(start.timestamp_millis(), moved_to);
    assert!(
        fx.sim.booked_slot(sim_slot).is_some(),
        "the MIS keeps the booking"
    );
    // Later sync rounds find nothing new to tell.
    assert_eq!(fx.t.step("schedule-round").await, 0);
    assert_eq!(fx.t.step("schedule-round").await, 0);
    fx.wait_outbox_done("notify", 1).await;
    assert_eq!(got.lock().unwrap().len(), 1);
    fx.wait_outbox_done("notify", 1).await;
    handle.stop(false).await;
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_slot_moves_the_appointment_and_notifies_the_patient_postgres() {
    moved_slot_moves_the_appointment_and_notifies_the_patient(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_slot_moves_the_appointment_and_notifies_the_patient_sqlite() {
    moved_slot_moves_the_appointment_and_notifies_the_patient(Backend::Sqlite).await
}

async fn slot_checks_look_at_the_changed_slots_or_at_all(backend: Backend) {
    // The schedule loop looks only at the slots its sync changed, and now and then at
    // every active appointment; both find an appointment on a withdrawn slot.
    let fx = Fx::start(backend, |_| {}).await;
    let free = fx.free(Channel::Internet).await;
    let (slot, other) = (free[0].clone(), free[1].clone());
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot.id, Some(patient(23)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let store = &fx.t.gw.store;
    store
        .set_slots_status(
            std::slice::from_ref(&slot.id),
            SlotStatus::Withdrawn,
            medgate::model::time::now_ms(),
        )
        .await
        .unwrap();
    let on = |ids: Option<Vec<String>>| async move {
        store
            .active_on_withdrawn_slots(ids.as_deref(), 100)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(on(Some(vec![])).await, 0);
    assert_eq!(on(Some(vec![other.id.clone()])).await, 0);
    assert_eq!(on(Some(vec![other.id.clone(), slot.id.clone()])).await, 1);
    assert_eq!(on(None).await, 1);
    let booking = &fx.t.gw.state.booking;
    assert_eq!(
        booking
            .handle_withdrawn_slots(Some(std::slice::from_ref(&other.id)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(booking.handle_withdrawn_slots(None).await.unwrap(), 1);
    assert_eq!(
        booking.handle_withdrawn_slots(None).await.unwrap(),
        0,
        "ended once"
    );
    let a = store
        .appointment(booked["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("withdrawn", "SLOT_WITHDRAWN")
    );
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_checks_look_at_the_changed_slots_or_at_all_postgres() {
    slot_checks_look_at_the_changed_slots_or_at_all(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_checks_look_at_the_changed_slots_or_at_all_sqlite() {
    slot_checks_look_at_the_changed_slots_or_at_all(Backend::Sqlite).await
}

async fn a_full_sync_makes_the_next_round_look_at_every_appointment(backend: Backend) {
    let (fx, got, handle, slot, booked) = booked_with_notifications(backend, 24).await;
    // The fixture's own full sync ran after the gateway started; a round took it into
    // account (the fixture ran it).
    // A change outside the change feed, as a full sync makes it: the slot is gone.
    let store = &fx.t.gw.store;
    let now = medgate::model::time::now_ms();
    store
        .set_slots_status(std::slice::from_ref(&slot.id), SlotStatus::Withdrawn, now)
        .await
        .unwrap();
    // Rounds look only at the slots their incremental sync changed: nothing happens.
    assert_eq!(fx.t.step("schedule-round").await, 0);
    assert_eq!(fx.t.step("schedule-round").await, 0);
    assert!(got.lock().unwrap().is_empty(), "no full sync on record yet");
    // A full sync finishes (as `medgate sync schedules` records it): the next round
    // looks at every active appointment.
    store
        .set_change_token("emias", &format!("full:{}", slot.org), "0", now)
        .await
        .unwrap();
    assert_eq!(fx.t.step("schedule-round").await, 1);
    let notes = first_notes(&got).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(
        (notes[0]["event"].as_str(), &notes[0]["appointment"]),
        (Some("slot-withdrawn"), &booked["id"])
    );
    fx.wait_outbox_done("notify", 1).await;
    handle.stop(false).await;
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_makes_the_next_round_look_at_every_appointment_postgres() {
    a_full_sync_makes_the_next_round_look_at_every_appointment(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_makes_the_next_round_look_at_every_appointment_sqlite() {
    a_full_sync_makes_the_next_round_look_at_every_appointment(Backend::Sqlite).await
}

async fn booking_race_gives_one_appointment_per_slot(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let slots: Vec<String> = fx
        .free(Channel::Internet)
        .await
        .into_iter()
        .take(10)
        .map(|s| s.id)
        .collect();
    assert_eq!(slots.len(), 10);
    let tasks = (0..200u32).map(|i| {
        let http = fx.t.http.clone();
        let url = fx.t.url("/fhir/Appointment/$book");
        let body = params(&slots[(i % 10) as usize], Some(patient(100 + i)), None).to_string();
        async move {
            http.post(url)
                .bearer_auth(PORTAL_TOKEN)
                .header("content-type", "application/fhir+json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures_util::future::join_all(tasks).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 10, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let booked: Vec<(String, i64)> = sqlx::query_as("SELECT slot_id, COUNT(*) FROM appointments WHERE status = 'booked' GROUP BY slot_id ORDER BY slot_id")
        .fetch_all(fx.t.gw.store.pool()).await.unwrap();
    assert_eq!(booked.len(), 10);
    assert!(booked.iter().all(|(_, n)| *n == 1));
    for s in &slots {
        assert!(fx.mis_has_booked(s).await, "the MIS agrees on {s}");
    }
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_race_gives_one_appointment_per_slot_postgres() {
    booking_race_gives_one_appointment_per_slot(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_race_gives_one_appointment_per_slot_sqlite() {
    booking_race_gives_one_appointment_per_slot(Backend::Sqlite).await
}

/// Books `slot` for patient `i` through FHIR.
pub(crate) async fn book(fx: &Fx, slot: &str, i: u32) -> (StatusCode, Value) {
    fx.post(
        PORTAL_TOKEN,
        "/fhir/Appointment/$book",
        &params(slot, Some(patient(i)), None),
        None,
    )
    .await
}

/// Books like [`book`], again after a pause while refused `retry_on` (a status and text the
/// refusal carries: a retryable answer, which a client retries), at most `tries` times;
/// returns the last answer.
async fn book_retrying(
    fx: &Fx,
    slot: &str,
    i: u32,
    retry_on: (StatusCode, &str),
    (tries, pause): (u32, Duration),
) -> (StatusCode, Value) {
    for _ in 1..tries {
        let (s, v) = book(fx, slot, i).await;
        if s != retry_on.0 {
            return (s, v);
        }
        assert!(v.to_string().contains(retry_on.1), "{v}");
        tokio::time::sleep(pause).await;
    }
    book(fx, slot, i).await
}

/// Cancels appointment `v` through FHIR.
async fn cancel(fx: &Fx, v: &Value) {
    let mut c = v.clone();
    c["status"] = json!("cancelled");
    let id = v["id"].as_str().unwrap();
    let (s, out) = fx
        .put(PORTAL_TOKEN, &format!("/fhir/Appointment/{id}"), &c)
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
}

/// A patient cancels and another books the same slot at once: the cancellation reaches the
/// clinic system before the new booking (delivered first, or waited for), so the second
/// booking succeeds; while the cancellation cannot be delivered, the booking is refused as
/// retryable and the slot is not marked busy on the clinic's refusal.
async fn a_freed_slot_is_booked_after_its_cancellation(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let slots = fx.free(Channel::Internet).await;
    // Slow clinic system: the cancellation is still in flight when the next booking comes.
    fx.sim.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    for (n, slot) in slots[..3].iter().enumerate() {
        let n = n as u32;
        let (s, first) = book(&fx, &slot.id, 300 + n).await;
        assert_eq!(s, StatusCode::CREATED, "{first}");
        cancel(&fx, &first).await;
        // On a busy machine the cancellation may outlast the booking's wait: the answer is
        // then 503 SLOT_RELEASE_PENDING, which a client retries after its Retry-After.
        let (s, second) = book_retrying(
            &fx,
            &slot.id,
            310 + n,
            (StatusCode::SERVICE_UNAVAILABLE, "SLOT_RELEASE_PENDING"),
            (20, Duration::from_millis(500)),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "slot {}: {second}", slot.id);
        assert!(fx.mis_has_booked(&slot.id).await);
    }
    // The clinic system fails: the cancellation waits for its retry; a booking meanwhile is
    // refused as retryable, the slot stays free, and books once the cancellation is through.
    fx.sim.set_faults(Faults::default());
    let slot = &slots[3].id;
    let (s, first) = book(&fx, slot, 320).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    fx.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    cancel(&fx, &first).await;
    let res =
        fx.t.http
            .post(fx.t.url("/fhir/Appointment/$book"))
            .bearer_auth(PORTAL_TOKEN)
            .header("content-type", "application/fhir+json")
            .body(params(slot, Some(patient(321)), None).to_string())
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    let refused: Value = res.json().await.unwrap();
    assert_eq!(issue_code(&refused), "SLOT_RELEASE_PENDING", "{refused}");
    assert_eq!(
        fx.t.gw.store.slot(slot).await.unwrap().unwrap().status,
        SlotStatus::Free
    );
    fx.sim.set_faults(Faults::default());
    fx.wait_outbox_done("mis", 4).await;
    let (s, second) = book(&fx, slot, 321).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_slot_is_booked_after_its_cancellation_postgres() {
    a_freed_slot_is_booked_after_its_cancellation(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_slot_is_booked_after_its_cancellation_sqlite() {
    a_freed_slot_is_booked_after_its_cancellation(Backend::Sqlite).await
}

/// The value of the metric line starting with `prefix` in `/metrics` (0 when absent).
pub(crate) async fn metric(t: &TestGateway, prefix: &str) -> f64 {
    let text = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A clinic system that keeps failing is skipped for the cool-down (bookings answered at
/// once, without a call), probed after it, and used again once it answers; the metrics
/// show the circuit, and count SOAP client faults as client faults.
async fn a_failing_clinic_system_is_skipped_for_a_cool_down(backend: Backend) {
    let clock = ManualClock::new();
    let fx = Fx::start_clocked(backend, clock.clone(), |_| {}).await;
    let slots = fx.free(Channel::Internet).await;
    fx.sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let state = "medgate_partner_circuit_state{partner=\"emias\"}";
    let mut i = 0;
    while metric(&fx.t, state).await != 1.0 {
        let (s, v) = book(&fx, &slots[i].id, 400 + i as u32).await;
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
        i += 1;
        assert!(i <= 5, "the circuit never opened");
    }
    // The compensating cancels of the failed bookings wait in the queue, counted.
    let queued = metric(
        &fx.t,
        "medgate_outbox_items{destination=\"mis\",status=\"pending\"}",
    )
    .await
        + metric(
            &fx.t,
            "medgate_outbox_items{destination=\"mis\",status=\"inflight\"}",
        )
        .await;
    assert!(queued >= 1.0, "{queued}");
    // Open: not called, answered at once.
    let before = fx.sim.requests();
    let (s, v) = book(&fx, &slots[10].id, 410).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert!(v.to_string().contains("skipped for a cool-down"), "{v}");
    assert_eq!(fx.sim.requests(), before);
    // After the cool-down one probe goes; the clinic system answers again: closed.
    fx.sim.set_faults(Faults::default());
    clock.advance(Duration::from_secs(31));
    // The probe may be the queued cancels' (the delivery worker's) rather than this
    // booking's: while that one is out, a booking is still turned away.
    let (s, v) = book_retrying(
        &fx,
        &slots[11].id,
        411,
        (StatusCode::GATEWAY_TIMEOUT, "skipped for a cool-down"),
        (50, Duration::from_millis(100)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(metric(&fx.t, state).await, 0.0);
    assert!(
        metric(
            &fx.t,
            "medgate_partner_circuit_trips_total{partner=\"emias\"}"
        )
        .await
            >= 1.0
    );
    // A SOAP client fault is sent as HTTP 500 but counted as the client's.
    let fault = fx
        .t
        .soap(
            "http://tempuri.org/IHubService/CheckPatient",
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><CheckPatient xmlns="http://tempuri.org/"><Polis>12</Polis><Birthday>1980-05-17</Birthday></CheckPatient></s:Body></s:Envelope>"#,
        )
        .await;
    assert_eq!(fault.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let client = "medgate_http_requests_total{fault=\"client\",method=\"POST\",route=\"/soap/hub\",status=\"500\"}";
    assert_eq!(metric(&fx.t, client).await, 1.0);
    let server = "medgate_http_requests_total{fault=\"server\",method=\"POST\",route=\"/soap/hub\"";
    assert_eq!(metric(&fx.t, server).await, 0.0);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_clinic_system_is_skipped_for_a_cool_down_postgres() {
    a_failing_clinic_system_is_skipped_for_a_cool_down(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_clinic_system_is_skipped_for_a_cool_down_sqlite() {
    a_failing_clinic_system_is_skipped_for_a_cool_down(Backend::Sqlite).await
}

/// Beyond `http.max_inflight` requests at work, a request waits `queue_timeout_ms` and is
/// then shed: 503 OVERLOADED with Retry-After, at once, while health stays answered.
async fn overload_is_shed_with_a_retryable_answer(backend: Backend) {
    let fx = Fx::start(backend, |s| {
        s.http.max_inflight = 1;
        s.http.queue_timeout_ms = 100;
        // Room for the slow booking on a busy machine.
        s.emias.as_mut().unwrap().timeout_secs = 10;
    })
    .await;
    let slots = fx.free(Channel::Internet).await;
    fx.sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    // One slow booking (within the clinic system's timeout) takes the only slot.
    let slow = {
        let http = fx.t.http.clone();
        let url = fx.t.url("/fhir/Appointment/$book");
        let body = params(&slots[0].id, Some(patient(500)), None).to_string();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(PORTAL_TOKEN)
                .header("content-type", "application/fhir+json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let shed = "medgate_http_shed_total{reason=\"busy\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let r =
            fx.t.http
                .get(fx.t.url("/fhir/Organization?_count=1"))
                .bearer_auth(PORTAL_TOKEN)
                .send()
                .await
                .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let o: Value = refused.json().await.unwrap();
    assert_eq!(issue_code(&o), "OVERLOADED", "{o}");
    assert!(metric(&fx.t, shed).await >= 1.0);
    // Health is not behind the gate.
    let h = fx.t.http.get(fx.t.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(slow.await.unwrap(), StatusCode::CREATED);
    let r =
        fx.t.http
            .get(fx.t.url("/fhir/Organization?_count=1"))
            .bearer_auth(PORTAL_TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_a_retryable_answer_postgres() {
    overload_is_shed_with_a_retryable_answer(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_a_retryable_answer_sqlite() {
    overload_is_shed_with_a_retryable_answer(Backend::Sqlite).await
}
