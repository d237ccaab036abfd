//! A clinic MIS that speaks FHIR R4: schedules synchronized from it, and bookings made
//! through the SOAP hub and through FHIR landing in it (mapping both ways), with
//! idempotent creates, cancels through the outbox, withdrawn days and faults.

use medgate::store::Backend;
use std::time::Duration;

use chrono::{Days, Utc};
use medgate::adapters::fhir_mis::FhirMisClient;
use medgate::config::EmiasSettings;
use medgate::model::booking::Patient;
use medgate::model::organization::Organization;
use medgate::model::schedule::{Channel, SlotStatus};
use medgate::model::{Oid, PolicyNumber};
use medgate::services::mis::{Mis, MisBooking, MisError};
use medgate::services::schedule_sync::{full_sync, incremental_sync};
use medgate::sim::emias::Faults;
use medgate::sim::fhir_mis::{FhirMisSim, FhirRegion};
use medgate::store::schedules::SlotQuery;
use reqwest::StatusCode;

use crate::booking::{params, patient, policy};
use crate::support::*;

const CLINIC: &str = "1.2.643.5.1.13.13.12.2.77.7013";

fn clinic() -> Oid {
    Oid::parse_organization(CLINIC).unwrap()
}

async fn fhir_clinic_is_synchronized_and_booked_through_both_interfaces(backend: Backend) {
    let first_day = Utc::now().date_naive() + Days::new(1);
    let sim = FhirMisSim::start(FhirRegion {
        clinics: vec![CLINIC.into()],
        doctors_per_clinic: 2,
        days: 3,
        slots_per_day: 8,
        slot_minutes: 20,
        first_day,
    })
    .unwrap();
    let url = sim.url.clone();
    let t = TestGateway::start_with(backend, |s| {
        s.fhir_mis = Some(EmiasSettings {
            url,
            timeout_secs: 1,
            days_ahead: 3,
        });
        s.booking.sync_interval_secs = 0;
    })
    .await;
    let store = &t.gw.store;
    store
        .upsert_organizations(&[Organization {
            oid: clinic(),
            name: "Regional Cardiology Centre".into(),
            short_name: "Cardiology Centre".into(),
            address: "1 Test Street".into(),
            district: "Central".into(),
            source: "test".into(),
            active: true,
        }])
        .await
        .unwrap();
    let client = FhirMisClient::new(&sim.url, Duration::from_secs(1), t.gw.state.txlog.clone());
    let r = full_sync(
        store,
        &client,
        &clinic(),
        first_day,
        3,
        medgate::model::time::now_ms(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!((r.practitioners, r.slots, r.withdrawn), (2, 48, 0));
    let slots = store
        .search_slots(
            &SlotQuery {
                org: Some(clinic()),
                status: Some(SlotStatus::Free),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(slots.len(), 48);
    assert!(slots
        .iter()
        .all(|s| s.id.starts_with("fhir-mis:S-") && s.source == "fhir-mis"));
    assert_eq!(slots[0].specialty_code, "27");
    let internet: Vec<_> = slots
        .iter()
        .filter(|s| {
            s.channels
                .contains(medgate::model::schedule::Channel::Internet)
        })
        .collect();
    assert_eq!(
        internet.len(),
        36,
        "a quarter of the slots are kept off the internet"
    );

    // A booking through the SOAP hub lands in the FHIR clinic.
    let a = internet[0].id.clone();
    let body = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><SetAppointment xmlns="http://tempuri.org/"><IdAppointment>{a}</IdAppointment><IdLPU>{CLINIC}</IdLPU><Polis>{}</Polis><Birthday>1980-05-17</Birthday></SetAppointment></s:Body></s:Envelope>"#,
        policy(51)
    );
    let res = t
        .http
        .post(t.url("/soap/hub"))
        .bearer_auth(PORTAL_TOKEN)
        .header("content-type", "text/xml")
        .header(
            "soapaction",
            "\"http://tempuri.org/IHubService/SetAppointment\"",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    assert!(text.contains("<Status>booked</Status>"), "{text}");
    let ext_a = a.trim_start_matches("fhir-mis:");
    assert!(sim.booked_slot(ext_a).is_some(), "the FHIR MIS has it");
    // And a FHIR $book too.
    let b = internet[1].id.clone();
    let res = t
        .http
        .post(t.url("/fhir/Appointment/$book"))
        .bearer_auth(PORTAL_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(params(&b, Some(patient(52)), None).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let booked: serde_json::Value = res.json().await.unwrap();
    assert!(
        booked["identifier"][1]["value"]
            .as_str()
            .unwrap()
            .starts_with("F-"),
        "{booked}"
    );
    let ext_b = b.trim_start_matches("fhir-mis:");
    assert!(sim.booked_slot(ext_b).is_some());

    // Cancel through FHIR: delivered to the MIS through the outbox.
    let id = booked["id"].as_str().unwrap();
    let mut cancel = booked.clone();
    cancel["status"] = serde_json::json!("cancelled");
    let res = t
        .http
        .put(t.url(&format!("/fhir/Appointment/{id}")))
        .bearer_auth(PORTAL_TOKEN)
        .header("content-type", "application/fhir+json")
        .body(cancel.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for _ in 0..100 {
        if sim.booked_slot(ext_b).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sim.booked_slot(ext_b).is_none(), "cancelled in the MIS");

    // The MIS's own changes: a withdrawn day and the bookings above.
    let doctor = slots[0].practitioner_id.trim_start_matches("fhir-mis:");
    assert_eq!(sim.withdraw_day(doctor, first_day + Days::new(1)), 8);
    let inc = incremental_sync(store, &client, medgate::model::time::now_ms())
        .await
        .unwrap();
    assert_eq!(inc.withdrawn, 8);
    assert_eq!(
        incremental_sync(store, &client, medgate::model::time::now_ms())
            .await
            .unwrap()
            .withdrawn,
        0,
        "the token advanced"
    );
    assert_eq!(
        store.slot(&a).await.unwrap().unwrap().status,
        SlotStatus::Busy
    );
    assert_eq!(
        store.slot(&b).await.unwrap().unwrap().status,
        SlotStatus::Free
    );

    // The clinic moves the visit booked through the hub by half an hour: the gateway's
    // slot takes the new time and the appointment follows it, once.
    let before = store.slot(&a).await.unwrap().unwrap().start_at;
    assert!(sim.move_slot(ext_a, 30));
    let inc = incremental_sync(store, &client, medgate::model::time::now_ms())
        .await
        .unwrap();
    assert_eq!((inc.moved, inc.changed.clone()), (1, vec![a.clone()]));
    let moved = store.slot(&a).await.unwrap().unwrap();
    assert_eq!(
        (moved.start_at, moved.status.as_str()),
        (before + 30 * 60_000, "busy")
    );
    let booking = &t.gw.state.booking;
    assert_eq!(
        booking
            .handle_moved_slots(Some(&inc.changed))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        booking.handle_moved_slots(None).await.unwrap(),
        0,
        "moved once"
    );

    // Idempotent create per client reference; a taken slot is refused; cancel by reference.
    let c = internet[2].id.trim_start_matches("fhir-mis:").to_string();
    let req = MisBooking {
        slot_external_id: c.clone(),
        client_ref: "ref-1".into(),
        patient: Patient {
            policy: PolicyNumber::parse(&policy(53)).ok(),
            ..Patient::default()
        },
        channel: Channel::Phone,
    };
    let first = client.book(req.clone()).await.unwrap();
    assert_eq!(client.book(req.clone()).await.unwrap(), first);
    let err = client
        .book(MisBooking {
            client_ref: "ref-2".into(),
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, MisError::Refused { ref code, .. } if code == "SLOT_TAKEN"),
        "{err}"
    );
    client.cancel(None, "ref-1").await.unwrap();
    assert!(sim.booked_slot(&c).is_none());
    client.cancel(None, "never-booked").await.unwrap();
    sim.set_faults(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let err = client
        .book(MisBooking {
            client_ref: "ref-3".into(),
            ..req
        })
        .await
        .unwrap_err();
    assert!(matches!(err, MisError::Unavailable(_)), "{err}");
    sim.stop().await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_clinic_is_synchronized_and_booked_through_both_interfaces_postgres() {
    fhir_clinic_is_synchronized_and_booked_through_both_interfaces(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_clinic_is_synchronized_and_booked_through_both_interfaces_sqlite() {
    fhir_clinic_is_synchronized_and_booked_through_both_interfaces(Backend::Sqlite).await
}
