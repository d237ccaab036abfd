//! A clinic MIS that speaks FHIR R4 JSON (the kind modern MIS vendors expose), owning a
//! few clinics: `Practitioner` and `Slot` search (paged, `_lastUpdated` for changes),
//! `Appointment` create (idempotent per client reference), search by identifier and cancel
//! by `PUT` with `status: cancelled`. Slots are a function of (doctor, day, index); only
//! bookings and withdrawals are stored. Faults: latency, error rate, hanging requests, and a
//! doctor falling ill (`withdraw_day`).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes, Data, Path, Query};
use actix_web::{App, HttpResponse, HttpServer};
use chrono::{Days, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use super::emias::Faults;
use super::roll;
use crate::model::schedule::{Channel, Channels};
use crate::model::Snils;

/// Extension with the booking channels a slot accepts.
pub const CHANNEL_EXTENSION: &str =
    "https://medgate.example/fhir/StructureDefinition/booking-channel";
/// Identifier system of the client reference a booking carries.
pub const CLIENT_REF_SYSTEM: &str = "urn:medgate:client-ref";

/// Size of the simulated clinics.
#[derive(Debug, Clone)]
pub struct FhirRegion {
    /// Clinic OIDs.
    pub clinics: Vec<String>,
    /// Doctors per clinic.
    pub doctors_per_clinic: u32,
    /// Days of schedule from `first_day`.
    pub days: u32,
    /// Slots per doctor per day (every day is a working day here).
    pub slots_per_day: u32,
    /// Minutes per slot.
    pub slot_minutes: u32,
    /// First day.
    pub first_day: NaiveDate,
}

impl FhirRegion {
    /// The demo's two FHIR clinics (`...77.7013`, `...77.7014`), 10 doctors each, 30 days,
    /// 16 slots of 20 minutes a day.
    pub fn demo(first_day: NaiveDate) -> FhirRegion {
        FhirRegion {
            clinics: vec![
                "1.2.643.5.1.13.13.12.2.77.7013".into(),
                "1.2.643.5.1.13.13.12.2.77.7014".into(),
            ],
            doctors_per_clinic: 10,
            days: 30,
            slots_per_day: 16,
            slot_minutes: 20,
            first_day,
        }
    }
}

const SPECIALTIES: [&str; 4] = ["27", "76", "39", "93"];

/// A generated doctor: (id, clinic, specialty, fake checksum-valid SNILS, family name).
fn doctor(
    region: &FhirRegion,
    clinic: usize,
    n: u32,
) -> (String, String, &'static str, String, String) {
    let seq = 500_000 + clinic as u32 * 1000 + n;
    let digits: Vec<u8> = format!("{seq:09}").bytes().map(|b| b - b'0').collect();
    (
        format!("P{}-{n:02}", clinic + 1),
        region.clinics[clinic].clone(),
        SPECIALTIES[n as usize % SPECIALTIES.len()],
        format!("{seq:09}{:02}", Snils::check_number(&digits)),
        ["Orlova", "Belov", "Morozova", "Volkov"][n as usize % 4].to_string(),
    )
}

fn channels_of(index: u32) -> Channels {
    if index % 4 == 0 {
        Channels::of(&[Channel::Registry, Channel::Phone, Channel::Doctor])
    } else {
        Channels::ALL
    }
}

#[derive(Default)]
struct Booked {
    /// slot -> appointment id
    slots: HashMap<String, String>,
    /// appointment id -> (slot, client ref, status)
    appointments: HashMap<String, (String, String, String)>,
    /// client ref -> appointment id
    refs: HashMap<String, String>,
    withdrawn: std::collections::HashSet<String>,
    /// slot -> last change (epoch ms, strictly increasing)
    updated: HashMap<String, i64>,
    /// slot -> shift of its times in minutes (the clinic moved it)
    moves: HashMap<String, i64>,
    clock: i64,
}

impl Booked {
    fn touch(&mut self, slot: &str) {
        self.clock = self.clock.max(Utc::now().timestamp_millis()) + 1;
        self.updated.insert(slot.to_string(), self.clock);
    }

    fn status(&self, slot: &str) -> &'static str {
        if self.withdrawn.contains(slot) {
            "busy-unavailable"
        } else if self.slots.contains_key(slot) {
            "busy"
        } else {
            "free"
        }
    }
}

struct State {
    region: FhirRegion,
    faults: RwLock<Faults>,
    booked: Mutex<Booked>,
}

/// A running simulator.
pub struct FhirMisSim {
    /// FHIR base URL, e.g. `http://127.0.0.1:PORT/fhir`.
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl FhirMisSim {
    /// Starts on a random loopback port.
    pub fn start(region: FhirRegion) -> std::io::Result<FhirMisSim> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            region,
            faults: RwLock::new(Faults::default()),
            booked: Mutex::new(Booked::default()),
        });
        let data = Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .route("/fhir/Practitioner", web::get().to(practitioners))
                .route("/fhir/Slot", web::get().to(slots))
                .route("/fhir/Appointment", web::post().to(create))
                .route("/fhir/Appointment", web::get().to(find))
                .route("/fhir/Appointment/{id}", web::put().to(update))
        })
        .workers(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(FhirMisSim {
            url: format!("http://{addr}/fhir"),
            state,
            handle,
        })
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut g) = self.state.faults.write() {
            *g = f;
        }
    }

    /// The doctor falls ill: every slot of `doctor_id` on `day` is withdrawn.
    pub fn withdraw_day(&self, doctor_id: &str, day: NaiveDate) -> usize {
        let Ok(mut b) = self.state.booked.lock() else {
            return 0;
        };
        let mut n = 0;
        for i in 0..self.state.region.slots_per_day {
            let id = slot_id(doctor_id, day, i);
            b.withdrawn.insert(id.clone());
            b.touch(&id);
            n += 1;
        }
        n
    }

    /// The clinic moves one slot (simulator id) by `minutes`, keeping whoever booked it:
    /// the Slot shows the new `start`/`end` and a new `meta.lastUpdated`.
    pub fn move_slot(&self, slot: &str, minutes: i64) -> bool {
        let Ok(mut b) = self.state.booked.lock() else {
            return false;
        };
        *b.moves.entry(slot.to_string()).or_default() += minutes;
        b.touch(slot);
        true
    }

    /// The appointment holding a slot (simulator id, without the `fhir-mis:` prefix).
    pub fn booked_slot(&self, slot: &str) -> Option<String> {
        self.state.booked.lock().ok()?.slots.get(slot).cloned()
    }

    /// Stops the simulator.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn slot_id(doctor: &str, day: NaiveDate, index: u32) -> String {
    format!("S-{doctor}-{}-{index:02}", day.format("%Y%m%d"))
}

fn outcome(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("application/fhir+json")
        .body(
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing",
                "details": {"coding": [{"code": code}], "text": message}}]})
            .to_string(),
        )
}

fn bundle(entries: Vec<Value>, next: Option<String>) -> HttpResponse {
    let mut links = vec![];
    if let Some(n) = next {
        links.push(json!({"relation": "next", "url": n}));
    }
    HttpResponse::Ok()
        .content_type("application/fhir+json")
        .body(
            json!({"resourceType": "Bundle", "type": "searchset", "link": links,
            "entry": entries.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
            .to_string(),
        )
}

/// Applies the configured faults; `Some` is the answer to give instead.
async fn faults(state: &State) -> Option<HttpResponse> {
    let f = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    if roll() < f.timeout_rate {
        tokio::time::sleep(f.hang.max(std::time::Duration::from_secs(1))).await;
    }
    (roll() < f.error_rate).then(|| outcome(500, "INTERNAL_ERROR", "simulated MIS failure"))
}

async fn practitioners(state: Data<State>, q: Query<HashMap<String, String>>) -> HttpResponse {
    if let Some(r) = faults(&state).await {
        return r;
    }
    let r = &state.region;
    let org = q
        .get("organization")
        .map(|o| o.trim_start_matches("Organization/"));
    let mut out = Vec::new();
    for (c, clinic) in r.clinics.iter().enumerate() {
        if org.is_some_and(|o| o != clinic) {
            continue;
        }
        for n in 0..r.doctors_per_clinic {
            let (id, org, spec, snils, family) = doctor(r, c, n);
            out.push(json!({"resourceType": "Practitioner", "id": id,
                "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": snils}],
                "name": [{"family": family, "given": ["Maria"]}],
                "qualification": [{"code": {"coding": [{"system": "urn:oid:1.2.643.5.1.13.13.11.1066", "code": spec, "version": "4.12"}]}}],
                "extension": [{"url": "https://medgate.example/fhir/StructureDefinition/organization", "valueString": org},
                    {"url": "https://medgate.example/fhir/StructureDefinition/room", "valueString": format!("{}", 200 + n)}]}));
        }
    }
    bundle(out, None)
}

fn slot_resource(r: &FhirRegion, b: &Booked, doctor: &str, day: NaiveDate, i: u32) -> Value {
    let id = slot_id(doctor, day, i);
    let shift = b.moves.get(&id).copied().unwrap_or(0);
    let start = Utc.from_utc_datetime(&day.and_hms_opt(6, 0, 0).unwrap_or_default())
        + chrono::Duration::minutes(i64::from(i * r.slot_minutes) + shift);
    let end = start + chrono::Duration::minutes(i64::from(r.slot_minutes));
    let mut v = json!({"resourceType": "Slot", "id": id, "schedule": {"reference": format!("Schedule/{doctor}")},
        "status": b.status(&id), "start": start.to_rfc3339(), "end": end.to_rfc3339(),
        "extension": channels_of(i).iter().map(|c| json!({"url": CHANNEL_EXTENSION, "valueCode": c.as_str()})).collect::<Vec<_>>()});
    if let Some(t) = b.updated.get(&id) {
        v["meta"] = json!({"lastUpdated": crate::model::time::instant_millis(*t)});
    }
    v
}

async fn slots(state: Data<State>, q: Query<Vec<(String, String)>>) -> HttpResponse {
    if let Some(r) = faults(&state).await {
        return r;
    }
    let r = &state.region;
    let Ok(b) = state.booked.lock() else {
        return outcome(500, "INTERNAL_ERROR", "state");
    };
    // Changes since an instant.
    if let Some((_, since)) = q.iter().find(|(k, _)| k == "_lastUpdated") {
        let Some(since) = since
            .strip_prefix("gt")
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        else {
            return outcome(400, "BAD_REQUEST", "_lastUpdated must be gt<instant>");
        };
        let since = since.timestamp_millis();
        let mut changed: Vec<(&String, &i64)> =
            b.updated.iter().filter(|(_, t)| **t > since).collect();
        changed.sort_by_key(|(_, t)| **t);
        let out = changed
            .into_iter()
            .filter_map(|(id, _)| {
                // S-P1-03-20261123-07
                let rest = id.strip_prefix("S-")?;
                let (doc_day, idx) = rest.rsplit_once('-')?;
                let (doc, day) = doc_day.rsplit_once('-')?;
                let day = NaiveDate::parse_from_str(day, "%Y%m%d").ok()?;
                Some(slot_resource(r, &b, doc, day, idx.parse().ok()?))
            })
            .collect();
        return bundle(out, None);
    }
    let get = |k: &str| {
        q.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let Some(org) = get("organization")
        .first()
        .map(|o| o.trim_start_matches("Organization/").to_string())
    else {
        return outcome(400, "BAD_REQUEST", "organization is required");
    };
    let mut from = r.first_day;
    let mut to = r.first_day + Days::new(u64::from(r.days));
    for s in get("start") {
        let (p, d) = s.split_at(2.min(s.len()));
        let Ok(d) = NaiveDate::parse_from_str(d, "%Y-%m-%d") else {
            return outcome(
                400,
                "BAD_REQUEST",
                "start must be geYYYY-MM-DD or ltYYYY-MM-DD",
            );
        };
        match p {
            "ge" => from = from.max(d),
            "lt" => to = to.min(d),
            _ => {
                return outcome(
                    400,
                    "BAD_REQUEST",
                    "start must be geYYYY-MM-DD or ltYYYY-MM-DD",
                )
            }
        }
    }
    let count: usize = get("_count")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or(500)
        .clamp(1, 5000);
    let page: usize = get("_page")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let Some(c) = r.clinics.iter().position(|x| *x == org) else {
        return bundle(Vec::new(), None);
    };
    let span = to.signed_duration_since(from).num_days().max(0) as u64;
    let per_doctor = span * u64::from(r.slots_per_day);
    let total = per_doctor * u64::from(r.doctors_per_clinic);
    let first = (page * count) as u64;
    let mut out = Vec::new();
    for k in first..(first + count as u64).min(total) {
        let n = (k / per_doctor.max(1)) as u32;
        let rem = k % per_doctor.max(1);
        let day = from + Days::new(rem / u64::from(r.slots_per_day));
        let i = (rem % u64::from(r.slots_per_day)) as u32;
        let (doc, ..) = doctor(r, c, n);
        out.push(slot_resource(r, &b, &doc, day, i));
    }
    let next = (first + (count as u64) < total).then(|| {
        format!(
            "Slot?organization={org}&start=ge{from}&start=lt{to}&_count={count}&_page={}",
            page + 1
        )
    });
    bundle(out, next)
}

fn appointment(id: &str, slot: &str, client_ref: &str, status: &str) -> Value {
    json!({"resourceType": "Appointment", "id": id, "status": status,
        "identifier": [{"system": CLIENT_REF_SYSTEM, "value": client_ref}],
        "slot": [{"reference": format!("Slot/{slot}")}],
        "participant": [{"status": "accepted"}]})
}

async fn create(state: Data<State>, body: Bytes) -> HttpResponse {
    if let Some(r) = faults(&state).await {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return outcome(400, "BAD_REQUEST", "not JSON");
    };
    let Some(slot) = v["slot"][0]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Slot/"))
    else {
        return outcome(400, "BAD_REQUEST", "Appointment.slot is required");
    };
    let client_ref = v["identifier"]
        .as_array()
        .and_then(|ids| {
            ids.iter()
                .find(|i| i["system"].as_str() == Some(CLIENT_REF_SYSTEM))
        })
        .and_then(|i| i["value"].as_str())
        .unwrap_or("")
        .to_string();
    let Ok(mut b) = state.booked.lock() else {
        return outcome(500, "INTERNAL_ERROR", "state");
    };
    if let Some(id) = b
        .refs
        .get(&client_ref)
        .filter(|_| !client_ref.is_empty())
        .cloned()
    {
        let (slot, _, status) = b.appointments.get(&id).cloned().unwrap_or_default();
        return HttpResponse::Ok()
            .content_type("application/fhir+json")
            .body(appointment(&id, &slot, &client_ref, &status).to_string());
    }
    match b.status(slot) {
        "busy" => return outcome(409, "SLOT_TAKEN", "the slot is already booked"),
        "busy-unavailable" => return outcome(409, "SLOT_WITHDRAWN", "the slot was withdrawn"),
        _ => {}
    }
    let id = format!("F-{}", uuid::Uuid::new_v4().simple());
    b.slots.insert(slot.to_string(), id.clone());
    b.appointments.insert(
        id.clone(),
        (slot.to_string(), client_ref.clone(), "booked".into()),
    );
    if !client_ref.is_empty() {
        b.refs.insert(client_ref.clone(), id.clone());
    }
    b.touch(slot);
    HttpResponse::Created()
        .content_type("application/fhir+json")
        .body(appointment(&id, slot, &client_ref, "booked").to_string())
}

async fn find(state: Data<State>, q: Query<HashMap<String, String>>) -> HttpResponse {
    if let Some(r) = faults(&state).await {
        return r;
    }
    let Some(client_ref) = q
        .get("identifier")
        .and_then(|i| i.strip_prefix(&format!("{CLIENT_REF_SYSTEM}|")))
    else {
        return outcome(
            400,
            "BAD_REQUEST",
            "search by identifier=urn:medgate:client-ref|REF",
        );
    };
    let Ok(b) = state.booked.lock() else {
        return outcome(500, "INTERNAL_ERROR", "state");
    };
    let out = b
        .refs
        .get(client_ref)
        .and_then(|id| {
            b.appointments
                .get(id)
                .map(|(s, r, st)| appointment(id, s, r, st))
        })
        .into_iter()
        .collect();
    bundle(out, None)
}

async fn update(state: Data<State>, id: Path<String>, body: Bytes) -> HttpResponse {
    if let Some(r) = faults(&state).await {
        return r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return outcome(400, "BAD_REQUEST", "not JSON");
    };
    if v["status"].as_str() != Some("cancelled") {
        return outcome(
            422,
            "UNSUPPORTED_CHANGE",
            "only status cancelled is accepted",
        );
    }
    let Ok(mut b) = state.booked.lock() else {
        return outcome(500, "INTERNAL_ERROR", "state");
    };
    let Some((slot, client_ref, _)) = b.appointments.get(id.as_str()).cloned() else {
        return outcome(404, "APPOINTMENT_NOT_FOUND", "no such appointment");
    };
    b.appointments.insert(
        id.to_string(),
        (slot.clone(), client_ref.clone(), "cancelled".into()),
    );
    if b.slots.get(&slot) == Some(&id.to_string()) {
        b.slots.remove(&slot);
        b.touch(&slot);
    }
    HttpResponse::Ok()
        .content_type("application/fhir+json")
        .body(appointment(&id, &slot, &client_ref, "cancelled").to_string())
}
