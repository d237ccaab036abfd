//! A city-wide MIS (EMIAS-style) simulator: the owner of schedules and slots of many clinics.
//!
//! SOAP 1.1, namespace [`NS`]. Operations: `GetResources`, `GetSchedule` (paged),
//! `CreateAppointment`, `CancelAppointment`, `GetChanges` (since a change token). The region
//! is generated deterministically from its size, so any number of slots costs no memory:
//! a slot is a function of (doctor, day, index), and only state changes (bookings,
//! withdrawals) are stored. Faults: latency, error rate, hanging requests, and "doctor falls
//! ill" (all slots of a doctor on a day withdrawn, reported through `GetChanges`); the clinic
//! can also move a slot to another time (`move_slot`, a `moved` change with the new times).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpResponse, HttpServer};
use chrono::{Days, NaiveDate, TimeZone, Utc};

use super::roll;
use crate::codec::soap::{self, Fault, FaultSide, SoapVersion};
use crate::codec::xml::dom::{escape_text as esc, Element, Limits};
use crate::model::schedule::{Channel, Channels};
use crate::model::Snils;

/// Namespace of the MIS operations (the contract in `adapters/emias/`; spelled out here so
/// the simulator shares no code with the gateway's client).
pub const NS: &str = "urn:medgate:sim:emias:v1";
/// Specialty reference book and the version the simulator cites.
pub const SPECIALTY_BOOK_VERSION: &str = "4.12";

/// Size and shape of the simulated region.
#[derive(Debug, Clone)]
pub struct Region {
    /// Number of clinics (OIDs `1.2.643.5.1.13.13.12.2.77.7001` upwards).
    pub clinics: u32,
    /// Doctors in the whole region, spread over the clinics.
    pub doctors: u32,
    /// Days of schedule from `first_day`.
    pub days: u32,
    /// Slots per doctor per working day.
    pub slots_per_day: u32,
    /// Minutes per slot.
    pub slot_minutes: u32,
    /// First day of the schedule.
    pub first_day: NaiveDate,
}

impl Region {
    /// The demo region: 12 clinics, 150 doctors, 30 days, 16 slots of 20 minutes a day.
    pub fn demo(first_day: NaiveDate) -> Region {
        Region {
            clinics: 12,
            doctors: 150,
            days: 30,
            slots_per_day: 16,
            slot_minutes: 20,
            first_day,
        }
    }

    /// OID of clinic `i` (0-based).
    pub fn clinic_oid(&self, i: u32) -> String {
        format!("1.2.643.5.1.13.13.12.2.77.{}", 7001 + i)
    }

    fn clinic_of(&self, doctor: u32) -> u32 {
        doctor % self.clinics.max(1)
    }

    fn doctors_of(&self, clinic: u32) -> impl Iterator<Item = u32> + '_ {
        (0..self.doctors).filter(move |d| self.clinic_of(*d) == clinic)
    }
}

const SPECIALTIES: [(&str, &str); 6] = [
    ("27", "therapist"),
    ("49", "general practitioner"),
    ("76", "cardiologist"),
    ("39", "neurologist"),
    ("93", "ophthalmologist"),
    ("20", "surgeon"),
];
const FAMILIES: [&str; 8] = [
    "Ivanova",
    "Petrov",
    "Sidorova",
    "Smirnov",
    "Kuznetsova",
    "Popov",
    "Vasilieva",
    "Sokolov",
];
const GIVEN: [&str; 6] = ["Anna", "Sergei", "Olga", "Dmitry", "Elena", "Pavel"];

/// A generated doctor.
#[derive(Debug, Clone)]
pub struct Doctor {
    /// Id in the simulator.
    pub id: String,
    /// Clinic OID.
    pub org_oid: String,
    /// Fake, checksum-valid SNILS.
    pub snils: String,
    /// Family name.
    pub family: String,
    /// Given name.
    pub given: String,
    /// Specialty code (book 1.2.643.5.1.13.13.11.1066).
    pub specialty: String,
    /// Position code (book 1.2.643.5.1.13.13.11.1002).
    pub position: String,
    /// Room.
    pub room: String,
}

fn doctor(region: &Region, d: u32) -> Doctor {
    let nine = 100_000_000 + d * 7919 % 800_000_000;
    let digits: Vec<u8> = format!("{nine:09}").bytes().map(|b| b - b'0').collect();
    let snils = format!("{nine:09}{:02}", Snils::check_number(&digits));
    let (spec, _) = SPECIALTIES[(d as usize) % SPECIALTIES.len()];
    Doctor {
        id: format!("D{d:05}"),
        org_oid: region.clinic_oid(region.clinic_of(d)),
        snils,
        family: FAMILIES[(d as usize) % FAMILIES.len()].into(),
        given: GIVEN[(d as usize / 3) % GIVEN.len()].into(),
        specialty: spec.into(),
        position: "109".into(),
        room: format!("{}", 100 + d % 40),
    }
}

/// Channels a generated slot allows: most slots all channels; some kept off the internet.
fn channels_of(index: u32) -> Channels {
    match index % 8 {
        0 => Channels::of(&[Channel::Registry, Channel::Doctor]),
        1 => Channels::of(&[
            Channel::Registry,
            Channel::Phone,
            Channel::Doctor,
            Channel::Referral,
        ]),
        _ => Channels::ALL,
    }
}

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added latency.
    pub latency: Duration,
    /// Probability of an `INTERNAL_ERROR` Fault.
    pub error_rate: f64,
    /// Probability of hanging for `hang`.
    pub timeout_rate: f64,
    /// How long a hanging request hangs.
    pub hang: Duration,
}

/// A change the clinic makes silently (see [`EmiasSim::drift`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The slot is withdrawn.
    Withdraw,
    /// The slot moves by so many minutes.
    Move(i64),
    /// The clinic's own desk books the free slot.
    DeskBooking,
    /// The clinic forgets the slot's booking (whoever made it): the slot is free again.
    Forget,
}

#[derive(Debug, Clone)]
enum SlotState {
    Booked { appointment: String },
    Withdrawn,
}

struct State {
    region: Region,
    faults: RwLock<Faults>,
    slots: Mutex<HashMap<String, SlotState>>,
    changes: Mutex<Vec<(String, &'static str)>>,
    /// Slots the clinic moved: slot id -> shift of start and end in minutes.
    moves: Mutex<HashMap<String, i64>>,
    appointments: Mutex<HashMap<String, String>>,
    /// Client reference (the gateway's appointment id) -> appointment id.
    client_refs: Mutex<HashMap<String, String>>,
    /// Requests received.
    requests: std::sync::atomic::AtomicU64,
    /// Appointments created (replays of a client reference not counted).
    creates: std::sync::atomic::AtomicU64,
    /// Slots the clinic will not book, with the refusal code it answers.
    refusals: Mutex<HashMap<String, String>>,
}

/// A running simulator.
pub struct EmiasSim {
    /// Endpoint URL.
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl EmiasSim {
    /// Starts on a random loopback port.
    pub fn start(region: Region) -> std::io::Result<EmiasSim> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            region,
            faults: RwLock::new(Faults::default()),
            slots: Mutex::new(HashMap::new()),
            changes: Mutex::new(Vec::new()),
            moves: Mutex::new(HashMap::new()),
            appointments: Mutex::new(HashMap::new()),
            client_refs: Mutex::new(HashMap::new()),
            requests: std::sync::atomic::AtomicU64::new(0),
            creates: std::sync::atomic::AtomicU64::new(0),
            refusals: Mutex::new(HashMap::new()),
        });
        let data = Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/emias", web::post().to(endpoint))
        })
        .workers(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(EmiasSim {
            url: format!("http://{addr}/emias"),
            state,
            handle,
        })
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appointments created so far (a repeat of a client reference creates none).
    pub fn creates(&self) -> u64 {
        self.state
            .creates
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Slots booked now, each with the client reference its booking was made under
    /// (empty when it was made without one).
    pub fn active_bookings(&self) -> Vec<(String, String)> {
        let (Ok(slots), Ok(refs)) = (self.state.slots.lock(), self.state.client_refs.lock()) else {
            return Vec::new();
        };
        let by_appointment: HashMap<&String, &String> = refs.iter().map(|(r, a)| (a, r)).collect();
        slots
            .iter()
            .filter_map(|(slot, state)| match state {
                SlotState::Booked { appointment } => Some((
                    slot.clone(),
                    by_appointment
                        .get(appointment)
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                )),
                SlotState::Withdrawn => None,
            })
            .collect()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, f: Faults) {
        if let Ok(mut g) = self.state.faults.write() {
            *g = f;
        }
    }

    /// The doctor falls ill: every slot of `doctor_id` on `day` is withdrawn.
    pub fn withdraw_day(&self, doctor_id: &str, day: NaiveDate) -> usize {
        let r = &self.state.region;
        let Some(offset) = day
            .signed_duration_since(r.first_day)
            .num_days()
            .try_into()
            .ok()
        else {
            return 0;
        };
        let offset: u32 = offset;
        let (Ok(mut slots), Ok(mut changes)) = (self.state.slots.lock(), self.state.changes.lock())
        else {
            return 0;
        };
        let mut n = 0;
        for i in 0..r.slots_per_day {
            let id = slot_id(doctor_id, r.first_day + Days::new(u64::from(offset)), i);
            slots.insert(id.clone(), SlotState::Withdrawn);
            changes.push((id, "withdrawn"));
            n += 1;
        }
        n
    }

    /// The clinic moves one slot (simulator slot id) by `minutes`, keeping whoever booked
    /// it: the new times appear in the schedule and as a `moved` change. False when the id
    /// is not a slot of the region.
    pub fn move_slot(&self, slot_id: &str, minutes: i64) -> bool {
        if slot_times(&self.state.region, slot_id, 0).is_none() {
            return false;
        }
        let (Ok(mut moves), Ok(mut changes)) = (self.state.moves.lock(), self.state.changes.lock())
        else {
            return false;
        };
        *moves.entry(slot_id.to_string()).or_default() += minutes;
        changes.push((slot_id.to_string(), "moved"));
        true
    }

    /// Drift: a change the clinic makes without a word in the change feed, as a lost
    /// callback or an edit by hand leaves it. False when the slot is not one of the region's
    /// or is already as asked.
    pub fn drift(&self, slot_id: &str, drift: Drift) -> bool {
        if slot_times(&self.state.region, slot_id, 0).is_none() {
            return false;
        }
        let (Ok(mut slots), Ok(mut appointments), Ok(mut refs)) = (
            self.state.slots.lock(),
            self.state.appointments.lock(),
            self.state.client_refs.lock(),
        ) else {
            return false;
        };
        match drift {
            Drift::Withdraw => !matches!(
                slots.insert(slot_id.to_string(), SlotState::Withdrawn),
                Some(SlotState::Withdrawn)
            ),
            Drift::Move(minutes) => match self.state.moves.lock() {
                Ok(mut moves) => {
                    *moves.entry(slot_id.to_string()).or_default() += minutes;
                    true
                }
                Err(_) => false,
            },
            Drift::DeskBooking => {
                if slots.contains_key(slot_id) {
                    return false;
                }
                let appointment = format!("A-desk-{}", uuid::Uuid::new_v4().simple());
                appointments.insert(appointment.clone(), slot_id.to_string());
                slots.insert(slot_id.to_string(), SlotState::Booked { appointment });
                true
            }
            Drift::Forget => {
                let Some(SlotState::Booked { appointment }) = slots.get(slot_id).cloned() else {
                    return false;
                };
                slots.remove(slot_id);
                appointments.remove(&appointment);
                refs.retain(|_, a| *a != appointment);
                true
            }
        }
    }

    /// From now on the clinic refuses every booking of `slot_id` with `code` (a doctor whose
    /// booking it closed by hand, say), though the slot still shows free.
    pub fn refuse_bookings(&self, slot_id: &str, code: &str) {
        if let Ok(mut r) = self.state.refusals.lock() {
            r.insert(slot_id.to_string(), code.to_string());
        }
    }

    /// The appointment holding a slot (simulator slot id, without the `emias:` prefix).
    pub fn booked_slot(&self, slot_id: &str) -> Option<String> {
        match self.state.slots.lock().ok()?.get(slot_id) {
            Some(SlotState::Booked { appointment }) => Some(appointment.clone()),
            _ => None,
        }
    }

    /// The generated doctors of a clinic.
    pub fn doctors(&self, org_oid: &str) -> Vec<Doctor> {
        let r = &self.state.region;
        (0..r.clinics)
            .filter(|c| r.clinic_oid(*c) == org_oid)
            .flat_map(|c| r.doctors_of(c).map(|d| doctor(r, d)).collect::<Vec<_>>())
            .collect()
    }

    /// Stops the simulator.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn slot_id(doctor_id: &str, day: NaiveDate, index: u32) -> String {
    format!("{doctor_id}-{}-{index:02}", day.format("%Y%m%d"))
}

/// Start and end of a slot of the region, shifted by `shift` minutes.
fn slot_start_end(
    r: &Region,
    day: NaiveDate,
    index: u32,
    shift: i64,
) -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    let start = Utc.from_utc_datetime(&day.and_hms_opt(5, 0, 0).unwrap_or_default())
        + chrono::Duration::minutes(i64::from(index * r.slot_minutes) + shift);
    (
        start,
        start + chrono::Duration::minutes(i64::from(r.slot_minutes)),
    )
}

/// Times of the slot with this id (`<doctor>-<YYYYMMDD>-<index>`), shifted by `shift`.
fn slot_times(
    r: &Region,
    id: &str,
    shift: i64,
) -> Option<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)> {
    let mut parts = id.rsplitn(3, '-');
    let index: u32 = parts.next()?.parse().ok()?;
    let day = NaiveDate::parse_from_str(parts.next()?, "%Y%m%d").ok()?;
    parts.next()?;
    (index < r.slots_per_day).then(|| slot_start_end(r, day, index, shift))
}

fn fault(code: &str, message: &str, server: bool) -> HttpResponse {
    let body = soap::fault(
        SoapVersion::V11,
        &Fault {
            side: if server {
                FaultSide::Receiver
            } else {
                FaultSide::Sender
            },
            code,
            message,
            field: None,
            request_id: "emias-sim",
        },
    );
    HttpResponse::InternalServerError()
        .content_type(SoapVersion::V11.content_type())
        .body(body)
}

fn reply(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(SoapVersion::V11.content_type())
        .body(soap::envelope(SoapVersion::V11, "", &body))
}

async fn endpoint(state: Data<State>, body: Bytes) -> HttpResponse {
    state
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let faults = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if roll() < faults.timeout_rate {
        tokio::time::sleep(faults.hang.max(Duration::from_secs(1))).await;
    }
    if roll() < faults.error_rate {
        return fault("INTERNAL_ERROR", "simulated MIS failure", true);
    }
    let req = match soap::parse_request(&body, &Limits::default()) {
        Ok(r) => r,
        Err(e) => return fault("BAD_REQUEST", &e.to_string(), false),
    };
    let op = &req.operation;
    match op.name.as_str() {
        "GetResources" => get_resources(&state, op),
        "GetSchedule" => get_schedule(&state, op),
        "CreateAppointment" => create_appointment(&state, op),
        "CancelAppointment" => cancel_appointment(&state, op),
        "GetChanges" => get_changes(&state, op),
        other => fault("UNKNOWN_OPERATION", other, false),
    }
}

fn get_resources(state: &State, op: &Element) -> HttpResponse {
    let r = &state.region;
    let org = op.child_text("OrgOid");
    let mut out = format!(r#"<GetResourcesResponse xmlns="{NS}">"#);
    for d in 0..r.doctors {
        let doc = doctor(r, d);
        if org.is_some_and(|o| o != doc.org_oid) {
            continue;
        }
        out.push_str(&format!(
            r#"<Resource><Id>{}</Id><OrgOid>{}</OrgOid><Snils>{}</Snils><Family>{}</Family><Given>{}</Given><Specialty code="{}" version="{SPECIALTY_BOOK_VERSION}"/><Position code="{}"/><Room>{}</Room></Resource>"#,
            doc.id, doc.org_oid, doc.snils, esc(&doc.family), esc(&doc.given), doc.specialty, doc.position, esc(&doc.room)
        ));
    }
    out.push_str("</GetResourcesResponse>");
    reply(out)
}

/// Page cursor: (doctor index within the clinic's list, day offset).
fn get_schedule(state: &State, op: &Element) -> HttpResponse {
    let r = &state.region;
    let Some(org) = op.child_text("OrgOid") else {
        return fault("BAD_REQUEST", "OrgOid is required", false);
    };
    let parse_day = |n: &str| {
        op.child_text(n)
            .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
    };
    let (Some(from), Some(to)) = (parse_day("From"), parse_day("To")) else {
        return fault(
            "BAD_REQUEST",
            "From and To must be dates (YYYY-MM-DD)",
            false,
        );
    };
    let page_size: usize = op
        .child_text("PageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000)
        .clamp(1, 50_000);
    let (mut doc_pos, mut day_pos): (usize, i64) = op
        .child_text("PageToken")
        .and_then(|t| t.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((0, 0));
    let doctors: Vec<u32> = (0..r.clinics)
        .filter(|c| r.clinic_oid(*c) == org)
        .flat_map(|c| r.doctors_of(c).collect::<Vec<_>>())
        .collect();
    let first = from.max(r.first_day);
    let last = to.min(r.first_day + Days::new(u64::from(r.days)));
    let span = last.signed_duration_since(first).num_days().max(0);
    let overrides = state.slots.lock().map(|s| s.clone()).unwrap_or_default();
    let moves = state.moves.lock().map(|m| m.clone()).unwrap_or_default();
    let mut out = format!(r#"<GetScheduleResponse xmlns="{NS}"><Slots>"#);
    let mut emitted = 0usize;
    let mut next = None;
    'outer: while doc_pos < doctors.len() {
        let doc = doctor(r, doctors[doc_pos]);
        while day_pos < span {
            if emitted + r.slots_per_day as usize > page_size && emitted > 0 {
                next = Some(format!("{doc_pos}:{day_pos}"));
                break 'outer;
            }
            let day = first + Days::new(day_pos as u64);
            let is_workday = day.format("%u").to_string().parse::<u32>().unwrap_or(1) <= 6;
            if is_workday {
                for i in 0..r.slots_per_day {
                    let id = slot_id(&doc.id, day, i);
                    let shift = moves.get(&id).copied().unwrap_or(0);
                    let (start, end) = slot_start_end(r, day, i, shift);
                    let status = match overrides.get(&id) {
                        Some(SlotState::Booked { .. }) => "busy",
                        Some(SlotState::Withdrawn) => "withdrawn",
                        None => "free",
                    };
                    out.push_str(&format!(
                        "<Slot><Id>{id}</Id><ResourceId>{}</ResourceId><Start>{}</Start><End>{}</End><Status>{status}</Status><Channels>{}</Channels></Slot>",
                        doc.id,
                        start.to_rfc3339(),
                        end.to_rfc3339(),
                        channels_of(i).to_list()
                    ));
                    emitted += 1;
                }
            }
            day_pos += 1;
        }
        doc_pos += 1;
        day_pos = 0;
    }
    out.push_str("</Slots>");
    if let Some(n) = next {
        out.push_str(&format!("<NextPageToken>{n}</NextPageToken>"));
    }
    out.push_str("</GetScheduleResponse>");
    reply(out)
}

/// Books a slot. `ClientRef` (the caller's own id for the booking) makes the create
/// idempotent: a repeat returns the first appointment.
fn create_appointment(state: &State, op: &Element) -> HttpResponse {
    let Some(slot) = op.child_text("SlotId") else {
        return fault("BAD_REQUEST", "SlotId is required", false);
    };
    let client_ref = op.child_text("ClientRef").filter(|r| !r.is_empty());
    let (Ok(mut slots), Ok(mut refs), Ok(mut changes)) = (
        state.slots.lock(),
        state.client_refs.lock(),
        state.changes.lock(),
    ) else {
        return fault("INTERNAL_ERROR", "state", true);
    };
    if let Some(existing) = client_ref.and_then(|r| refs.get(r)) {
        return reply(format!(
            r#"<CreateAppointmentResponse xmlns="{NS}"><AppointmentId>{existing}</AppointmentId></CreateAppointmentResponse>"#
        ));
    }
    if let Some(code) = state
        .refusals
        .lock()
        .ok()
        .and_then(|r| r.get(slot).cloned())
    {
        return fault(&code, "the clinic does not book this slot", false);
    }
    match slots.get(slot) {
        Some(SlotState::Booked { .. }) => {
            return fault("SLOT_TAKEN", "the slot is already booked", false)
        }
        Some(SlotState::Withdrawn) => {
            return fault("SLOT_WITHDRAWN", "the slot was withdrawn", false)
        }
        None => {}
    }
    let appointment = format!("A-{}", uuid::Uuid::new_v4().simple());
    slots.insert(
        slot.to_string(),
        SlotState::Booked {
            appointment: appointment.clone(),
        },
    );
    changes.push((slot.to_string(), "booked"));
    state
        .creates
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(r) = client_ref {
        refs.insert(r.to_string(), appointment.clone());
    }
    if let Ok(mut a) = state.appointments.lock() {
        a.insert(appointment.clone(), slot.to_string());
    }
    reply(format!(
        r#"<CreateAppointmentResponse xmlns="{NS}"><AppointmentId>{appointment}</AppointmentId></CreateAppointmentResponse>"#
    ))
}

/// Cancels by `AppointmentId` or by `ClientRef`; cancelling what does not exist answers
/// `Cancelled` false (the goal, nothing booked, holds).
fn cancel_appointment(state: &State, op: &Element) -> HttpResponse {
    let by_ref = || {
        let r = op.child_text("ClientRef")?;
        state.client_refs.lock().ok()?.get(r).cloned()
    };
    let id = match (op.child_text("AppointmentId"), op.child_text("ClientRef")) {
        (Some(id), _) => Some(id.to_string()),
        (None, Some(_)) => by_ref(),
        (None, None) => {
            return fault(
                "BAD_REQUEST",
                "AppointmentId or ClientRef is required",
                false,
            )
        }
    };
    let slot = id.and_then(|id| {
        let slot = state.appointments.lock().ok()?.remove(&id)?;
        Some((id, slot))
    });
    let cancelled = match slot {
        None => false,
        Some((id, slot)) => {
            if let (Ok(mut s), Ok(mut changes)) = (state.slots.lock(), state.changes.lock()) {
                if matches!(s.get(&slot), Some(SlotState::Booked { appointment }) if *appointment == id)
                {
                    s.remove(&slot);
                    changes.push((slot, "free"));
                }
            }
            true
        }
    };
    reply(format!(
        r#"<CancelAppointmentResponse xmlns="{NS}"><Cancelled>{cancelled}</Cancelled></CancelAppointmentResponse>"#
    ))
}

fn get_changes(state: &State, op: &Element) -> HttpResponse {
    let since: usize = op
        .child_text("Token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let changes = state.changes.lock().map(|c| c.clone()).unwrap_or_default();
    let mut out = format!(r#"<GetChangesResponse xmlns="{NS}"><Changes>"#);
    let moves = state.moves.lock().map(|m| m.clone()).unwrap_or_default();
    for (id, kind) in changes.iter().skip(since) {
        // A move carries the slot's new times.
        let times = match (*kind, moves.get(id)) {
            ("moved", Some(shift)) => slot_times(&state.region, id, *shift)
                .map(|(s, e)| {
                    format!(
                        "<Start>{}</Start><End>{}</End>",
                        s.to_rfc3339(),
                        e.to_rfc3339()
                    )
                })
                .unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "<Change><SlotId>{id}</SlotId><Kind>{kind}</Kind>{times}</Change>"
        ));
    }
    out.push_str(&format!(
        "</Changes><Token>{}</Token></GetChangesResponse>",
        changes.len()
    ));
    reply(out)
}
