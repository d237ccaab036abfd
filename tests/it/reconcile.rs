//! Schedule reconciliation: drift seeded silently in the city MIS simulator (no change-feed
//! entry, as a lost callback or an edit by hand leaves it) and in the gateway's own rows is
//! found and repaired in the right direction by the `schedule-reconciliation` job, run
//! through the admin API, with counts per organization in its run record.

use medgate::model::booking::AppointmentStatus;
use medgate::model::schedule::{Channel, SlotStatus};
use medgate::sim::emias::Drift;
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::Value;

use crate::booking::{params, patient, Fx, ORG};
use crate::support::*;

const JOB: &str = "schedule-reconciliation";

async fn run_job(fx: &Fx) -> Value {
    let res =
        fx.t.http
            .post(fx.t.url(&format!("/api/admin/jobs/{JOB}/run")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn sim_id(slot: &str) -> &str {
    slot.trim_start_matches("emias:")
}

async fn slot_status(fx: &Fx, id: &str) -> Option<SlotStatus> {
    fx.t.gw.store.slot(id).await.unwrap().map(|s| s.status)
}

async fn drift_is_repaired_in_the_right_direction(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let store = &fx.t.gw.store;
    let free = fx.free(Channel::Internet).await;
    assert!(free.len() >= 12, "{} free slots", free.len());
    let book = |i: usize, n: u32| {
        let slot = free[i].id.clone();
        let fx = &fx;
        async move {
            let (s, a) = fx
                .post(
                    PORTAL_TOKEN,
                    "/fhir/Appointment/$book",
                    &params(&slot, Some(patient(n)), None),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{a}");
            a["id"].as_str().unwrap().to_string()
        }
    };
    let resent = book(0, 41).await;
    let flagged = book(1, 42).await;
    let followed = book(2, 43).await;
    let (lost, refused, withdrawn_booked) = (&free[0].id, &free[1].id, &free[2].id);
    let (withdrawn, moved, desk, missing, busy_here) = (
        &free[3].id,
        &free[4].id,
        &free[5].id,
        &free[6].id,
        &free[7].id,
    );
    let before = fx.t.gw.store.appointment(&resent).await.unwrap().unwrap();

    // The clinic, silently: loses two of our bookings (and its desk takes one of those slots
    // the moment we ask again), withdraws a booked and a free slot, moves one, books one at
    // its own desk.
    assert!(fx.sim.drift(sim_id(lost), Drift::Forget));
    assert!(fx.sim.drift(sim_id(refused), Drift::Forget));
    fx.sim.refuse_bookings(sim_id(refused), "SLOT_TAKEN");
    assert!(fx.sim.drift(sim_id(withdrawn_booked), Drift::Withdraw));
    assert!(fx.sim.drift(sim_id(withdrawn), Drift::Withdraw));
    assert!(fx.sim.drift(sim_id(moved), Drift::Move(30)));
    assert!(fx.sim.drift(sim_id(desk), Drift::DeskBooking));
    // The gateway lost a slot row, and holds one busy that nobody booked.
    sqlx::query("DELETE FROM slots WHERE id = $1")
        .bind(missing.clone())
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE slots SET status = 'busy' WHERE id = $1")
        .bind(busy_here.clone())
        .execute(store.pool())
        .await
        .unwrap();
    // Nothing in the change feed: a schedule round sees none of it.
    assert_eq!(fx.t.step("schedule-round").await, 0);

    let run = run_job(&fx).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["kind"], "manual");
    let at = format!("emias {ORG}");
    let org = &run["details"][&at];
    assert_eq!(org["added"], 1, "{run}");
    assert_eq!(org["withdrawn"], 2, "{run}");
    assert_eq!(org["changed"], 1, "{run}");
    assert_eq!(org["booked_at_clinic"], 1, "{run}");
    assert_eq!(org["freed"], 1, "{run}");
    assert_eq!(org["resent"], 1, "{run}");
    assert_eq!(org["flagged"], 1, "{run}");
    assert_eq!(org["pending"], 0, "{run}");
    assert_eq!(org["appointments_followed"], 1, "{run}");
    assert_eq!(org["flagged_appointments"][0][0], flagged.as_str());
    assert_eq!(
        org["flagged_appointments"][0][1],
        "LOST_BY_CLINIC:SLOT_TAKEN"
    );
    assert_eq!(run["found"], 8, "{run}");
    assert_eq!(run["repaired"], 7, "{run}");
    // Both sides were counted: the clinic's slots and the gateway's (one row missing).
    let slots = store
        .slots_of("emias", &crate::booking::org(), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(org["examined"], (2 * slots.len() - 1) as u64, "{run}");

    // The clinic owns slots: its state is taken over.
    assert_eq!(
        slot_status(&fx, withdrawn).await,
        Some(SlotStatus::Withdrawn)
    );
    assert_eq!(slot_status(&fx, desk).await, Some(SlotStatus::Busy));
    assert_eq!(slot_status(&fx, missing).await, Some(SlotStatus::Free));
    assert_eq!(slot_status(&fx, busy_here).await, Some(SlotStatus::Free));
    let m = store.slot(moved).await.unwrap().unwrap();
    assert_eq!(m.start_at, free[4].start_at + 30 * 60_000);
    // The gateway owns its bookings: the lost one is booked there again under its own
    // reference; the refused one waits for a person; the withdrawn one ended (patient told).
    let again = store.appointment(&resent).await.unwrap().unwrap();
    assert_eq!(again.status, AppointmentStatus::Booked);
    assert_ne!(again.external_id, before.external_id);
    assert_eq!(fx.sim.booked_slot(sim_id(lost)), again.external_id);
    let attention = store.needing_attention(None, 10).await.unwrap();
    assert_eq!(
        attention,
        [(flagged.clone(), "LOST_BY_CLINIC:SLOT_TAKEN".to_string())]
    );
    let ended = store.appointment(&followed).await.unwrap().unwrap();
    assert_eq!(ended.status, AppointmentStatus::Withdrawn);

    // A second run finds only what waits for a person.
    let second = run_job(&fx).await;
    assert_eq!(second["outcome"], "ok", "{second}");
    assert_eq!(second["repaired"], 0, "{second}");
    assert_eq!(second["found"], 1, "{second}");
    assert_eq!(second["details"][&at]["flagged"], 1, "{second}");
    // The history keeps both runs, newest first.
    let runs: Value =
        fx.t.get_admin(&format!("/api/admin/jobs/{JOB}/runs"))
            .await
            .json()
            .await
            .unwrap();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["id"], second["id"]);
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_in_the_right_direction_postgres() {
    drift_is_repaired_in_the_right_direction(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_repaired_in_the_right_direction_sqlite() {
    drift_is_repaired_in_the_right_direction(Backend::Sqlite).await;
}

/// A clinic system that cannot be reached changes nothing: the run fails naming the
/// organization, and the next run, with the clinic back, repairs.
async fn an_unreachable_clinic_changes_nothing(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let free = fx.free(Channel::Internet).await;
    assert!(fx.sim.drift(sim_id(&free[0].id), Drift::Withdraw));
    fx.sim.set_faults(medgate::sim::emias::Faults {
        error_rate: 1.0,
        ..Default::default()
    });
    let run = run_job(&fx).await;
    assert_eq!(run["outcome"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains(ORG), "{run}");
    assert!(
        run["details"][format!("emias {ORG}")]["error"].is_string(),
        "{run}"
    );
    assert_eq!(slot_status(&fx, &free[0].id).await, Some(SlotStatus::Free));
    fx.sim.set_faults(Default::default());
    let run = run_job(&fx).await;
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(run["repaired"], 1, "{run}");
    assert_eq!(
        slot_status(&fx, &free[0].id).await,
        Some(SlotStatus::Withdrawn)
    );
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_clinic_changes_nothing_postgres() {
    an_unreachable_clinic_changes_nothing(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_clinic_changes_nothing_sqlite() {
    an_unreachable_clinic_changes_nothing(Backend::Sqlite).await;
}

/// Workers are jobs in the same home: a minute (here a second) of a worker's loop that
/// handled something is a row of its history, named by the replica that ran it.
async fn a_workers_loop_is_in_the_history(backend: Backend) {
    let fx = Fx::start(backend, |s| s.jobs.worker_window_secs = 1).await;
    let slot = fx.free(Channel::Internet).await[0].id.clone();
    let (s, booked) = fx
        .post(
            PORTAL_TOKEN,
            "/fhir/Appointment/$book",
            &params(&slot, Some(patient(44)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let mut cancel = booked.clone();
    cancel["status"] = "cancelled".into();
    let id = booked["id"].as_str().unwrap();
    let (s, out) = fx
        .put(PORTAL_TOKEN, &format!("/fhir/Appointment/{id}"), &cancel)
        .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    // The cancellation goes to the clinic system through the outbox worker; its window
    // closes with the worker's next step after a second.
    let path = "/api/admin/jobs/deliver:mis/runs";
    let mut runs = Vec::new();
    for _ in 0..100 {
        let got: Value = fx.t.get_admin(path).await.json().await.unwrap();
        runs = got["runs"].as_array().cloned().unwrap_or_default();
        if !runs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!(r["kind"], "worker", "{r}");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["repaired"], 1, "{r}");
    assert!(
        r["replica"].as_str().unwrap().starts_with("medgate-"),
        "{r}"
    );
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_loop_is_in_the_history_postgres() {
    a_workers_loop_is_in_the_history(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_loop_is_in_the_history_sqlite() {
    a_workers_loop_is_in_the_history(Backend::Sqlite).await;
}
