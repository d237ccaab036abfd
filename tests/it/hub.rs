//! The portal booking hub (SOAP 1.1) end to end: an ordinary SOAP client generated from our
//! WSDL (Python's zeep) walks clinic → specialty → doctor → date → slot → booking →
//! history → refusal; raw messages check that bad input gets a Fault naming the element;
//! a race through both interfaces books each slot once.

use medgate::model::schedule::Channel;
use medgate::store::Backend;
use reqwest::StatusCode;

use crate::booking::{first_day, params, patient, policy, Fx, ORG};
use crate::support::*;

pub(crate) const ACTION: &str = "http://tempuri.org/IHubService/";

fn envelope(op: &str, inner: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{op} xmlns="http://tempuri.org/">{inner}</{op}></s:Body></s:Envelope>"#
    )
}

pub(crate) async fn call(
    fx: &Fx,
    token: &str,
    op: &str,
    inner: &str,
    key: Option<&str>,
) -> (StatusCode, String) {
    let mut r =
        fx.t.http
            .post(fx.t.url("/soap/hub"))
            .bearer_auth(token)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", format!("\"{ACTION}{op}\""));
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    let res = r.body(envelope(op, inner)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

fn between<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

pub(crate) fn fault(xml: &str) -> (String, String) {
    (
        between(xml, "mg:code").unwrap_or("").to_string(),
        between(xml, "mg:field").unwrap_or("").to_string(),
    )
}

const ZEEP: &str = r#"
import datetime, json, os, requests
from lxml import etree
from zeep import Client
from zeep.exceptions import Fault
from zeep.transports import Transport

session = requests.Session()
session.headers['Authorization'] = 'Bearer ' + os.environ['TOKEN']
client = Client(os.environ['URL'] + '/soap/hub?wsdl', transport=Transport(session=session))
svc = client.service
org, polis, birthday = os.environ['ORG'], os.environ['POLIS'], '1980-05-17'
out = {}
out['lpus'] = [c.IdLPU for c in svc.GetLPUList().ListLPU.Clinic]
out['check'] = svc.CheckPatient(Polis=polis, Birthday=birthday).Success
specs = svc.GetSpesialityList(IdLPU=org).ListSpesiality.Spesiality
out['specialties'] = [[s.IdSpesiality, s.NameSpesiality, s.CountFreeTicket] for s in specs]
spec = specs[0].IdSpesiality
doctors = svc.GetDoctorList(IdLPU=org, IdSpesiality=spec).ListDoctor.Doctor
out['doctors'] = [[d.IdDoc, d.CountFreeTicket] for d in doctors]
doc = doctors[0].IdDoc
dates = svc.GetAvailableDates(IdLPU=org, IdDoc=doc, VisitStart=os.environ['FROM'], VisitEnd=os.environ['TO']).ListDate.AvailableDate
out['dates'] = [[str(d.Date), d.CountFreeTicket] for d in dates]
day = dates[0].Date
slots = svc.GetAvaibleAppointments(IdLPU=org, IdDoc=doc, VisitStart=str(day), VisitEnd=str(day + datetime.timedelta(days=1))).ListAppointments.Appointment
out['slots'] = [s.IdAppointment for s in slots]
booked = svc.SetAppointment(IdAppointment=slots[0].IdAppointment, IdLPU=org, Polis=polis, Birthday=birthday)
out['booked'] = {'claim': booked.IdClaim, 'slot': booked.IdAppointment, 'status': booked.Status, 'start': booked.VisitStart.isoformat()}
history = svc.GetPatientHistory(Polis=polis, Birthday=birthday).ListHistoryVisit.HistoryVisit
out['history'] = [[h.IdClaim, h.Status] for h in history]
refused = svc.CreateClaimForRefusal(IdClaim=booked.IdClaim)
out['refused'] = refused.Status
try:
    svc.SetAppointment(IdAppointment=slots[1].IdAppointment, IdLPU=org, Polis='12345', Birthday=birthday)
    out['fault'] = None
except Fault as f:
    ns = {'mg': 'urn:medgate:fault'}
    out['fault'] = {'message': f.message, 'code': f.detail.findtext('mg:error/mg:code', namespaces=ns), 'field': f.detail.findtext('mg:error/mg:field', namespaces=ns)}
print(json.dumps(out))
"#;

/// Runs a zeep `script` with `env`; what it printed, as JSON.
fn run_zeep(script: &str, env: &[(&str, String)]) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "zeep failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const ZEEP_REFERRAL: &str = r#"
import json, os, requests
from zeep import Client
from zeep.exceptions import Fault
from zeep.transports import Transport

session = requests.Session()
session.headers['Authorization'] = 'Bearer ' + os.environ['TOKEN']
client = Client(os.environ['URL'] + '/soap/hub?wsdl', transport=Transport(session=session))
svc = client.service
ref = os.environ['REFERRAL']
ns = {'mg': 'urn:medgate:fault'}
out = {}
r = svc.CheckReferral(IdReferral=ref).Referral
out['check'] = {'status': r.Status, 'lpu': r.IdLPU, 'from': r.IdLPUFrom, 'diagnosis': r.Diagnosis}
slots = svc.GetAvaibleAppointmentsByReferral(IdReferral=ref, VisitStart=os.environ['FROM'], VisitEnd=os.environ['TO']).ListAppointments.Appointment
out['slots'] = [s.IdAppointment for s in slots]
booked = svc.SetAppointment(IdAppointment=slots[0].IdAppointment, IdLPU=r.IdLPU, IdReferral=ref)
out['booked'] = {'claim': booked.IdClaim, 'slot': booked.IdAppointment, 'status': booked.Status}
out['after'] = svc.CheckReferral(IdReferral=ref).Referral.Status
try:
    svc.SetAppointment(IdAppointment=slots[1].IdAppointment, IdLPU=r.IdLPU, IdReferral=ref)
    out['again'] = None
except Fault as f:
    out['again'] = {'code': f.detail.findtext('mg:error/mg:code', namespaces=ns), 'field': f.detail.findtext('mg:error/mg:field', namespaces=ns)}
try:
    svc.CheckReferral(IdReferral='00000000-0000-0000-0000-000000000000')
    out['unknown'] = None
except Fault as f:
    out['unknown'] = f.detail.findtext('mg:error/mg:code', namespaces=ns)
print(json.dumps(out))
"#;

/// A clinic's MIS that speaks the hub books a referral's visit through the WSDL: checks the
/// referral, lists the slots open to referrals, books one with `IdReferral`; a second
/// booking of the same referral and an unknown referral are Faults naming the element.
async fn zeep_client_books_a_referral_through_the_wsdl(backend: Backend) {
    const REFERRER: &str = "1.2.643.5.1.13.13.12.2.77.7005";
    let fx = Fx::start(backend, |s| {
        s.clients.extend([
            client(
                "referrer",
                "hub-referrer-token",
                &[REFERRER],
                &["referral:write"],
            ),
            client(
                "clinic-mis",
                "hub-clinic-mis-token",
                &[ORG],
                &["referral:write", "appointment:write"],
            ),
        ]);
    })
    .await;
    let mut body = crate::access::referral_body();
    body["contained"][1]["organization"]["reference"] =
        serde_json::json!(format!("Organization/{REFERRER}"));
    body["performer"] = serde_json::json!([{"reference": format!("Organization/{ORG}")}]);
    let (s, request) = fx
        .post("hub-referrer-token", "/fhir/ServiceRequest", &body, None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{request}");
    let id = request["id"].as_str().unwrap().to_string();
    let accepted =
        fx.t.http
            .put(fx.t.url(&format!("/fhir/Task/{id}")))
            .bearer_auth("hub-clinic-mis-token")
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Task","status":"accepted","intent":"order"}"#)
            .send()
            .await
            .unwrap();
    assert_eq!(accepted.status(), StatusCode::OK);
    // Booking it at another clinic than its target: a Fault naming IdLPU, and audited.
    let slot = fx.free(Channel::Referral).await[0].id.clone();
    let (_, xml) = call(
        &fx,
        "hub-clinic-mis-token",
        "SetAppointment",
        &format!("<IdAppointment>{slot}</IdAppointment><IdLPU>{REFERRER}</IdLPU><IdReferral>{id}</IdReferral>"),
        None,
    )
    .await;
    assert_eq!(
        fault(&xml),
        ("REFERRAL_TO_ANOTHER_ORGANIZATION".into(), "IdLPU".into()),
        "{xml}"
    );
    let refused =
        fx.t.gw
            .store
            .audit_events(
                &medgate::store::audit::AuditQuery {
                    client_id: Some("clinic-mis".into()),
                    ..Default::default()
                },
                50,
            )
            .await
            .unwrap();
    assert!(
        refused
            .iter()
            .any(|e| !e.success && e.detail == "REFERRAL_TO_ANOTHER_ORGANIZATION"),
        "{refused:?}"
    );
    let day = first_day();
    let v = run_zeep(
        ZEEP_REFERRAL,
        &[
            ("URL", fx.t.gw.url()),
            ("TOKEN", "hub-clinic-mis-token".into()),
            ("REFERRAL", id.clone()),
            ("FROM", day.to_string()),
            ("TO", (day + chrono::Days::new(7)).to_string()),
        ],
    );
    assert_eq!(v["check"]["status"], "accepted", "{v}");
    assert_eq!(v["check"]["lpu"], ORG, "{v}");
    assert_eq!(v["check"]["from"], REFERRER, "{v}");
    assert_eq!(v["check"]["diagnosis"], "I20.8", "{v}");
    // Only slots open to the referral channel.
    let slots = v["slots"].as_array().unwrap();
    assert!(!slots.is_empty(), "{v}");
    let referral_slots: Vec<String> = fx
        .free(Channel::Referral)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        slots[1..]
            .iter()
            .all(|s| referral_slots.contains(&s.as_str().unwrap().to_string())),
        "{v}"
    );
    assert_eq!(v["booked"]["status"], "booked", "{v}");
    assert_eq!(v["after"], "booked", "{v}");
    assert_eq!(v["again"]["code"], "INVALID_TRANSITION", "{v}");
    assert_eq!(v["again"]["field"], "IdReferral", "{v}");
    assert_eq!(v["unknown"], "NOT_FOUND", "{v}");
    let a =
        fx.t.gw
            .store
            .appointment(v["booked"]["claim"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(a.channel, Channel::Referral);
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_client_books_a_referral_through_the_wsdl_postgres() {
    zeep_client_books_a_referral_through_the_wsdl(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_client_books_a_referral_through_the_wsdl_sqlite() {
    zeep_client_books_a_referral_through_the_wsdl(Backend::Sqlite).await
}

async fn zeep_client_books_through_the_wsdl(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let day = first_day();
    let v = run_zeep(
        ZEEP,
        &[
            ("URL", fx.t.gw.url()),
            ("TOKEN", PORTAL_TOKEN.into()),
            ("ORG", ORG.into()),
            ("POLIS", policy(31)),
            ("FROM", day.to_string()),
            ("TO", (day + chrono::Days::new(7)).to_string()),
        ],
    );
    assert!(
        v["lpus"].as_array().unwrap().iter().any(|o| o == ORG),
        "{v}"
    );
    assert_eq!(v["check"], true);
    // 3 doctors of 3 specialties in this clinic.
    assert_eq!(v["specialties"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["specialties"][0][1], "Therapist");
    assert!(v["doctors"][0][1].as_i64().unwrap() > 0);
    assert!(!v["dates"].as_array().unwrap().is_empty());
    // Only slots the portal's channel (internet) may take: 6 of 8 a day.
    assert_eq!(v["slots"].as_array().unwrap().len(), 6, "{v}");
    let slot = v["booked"]["slot"].as_str().unwrap();
    assert_eq!(v["booked"]["status"], "booked");
    let claim = v["booked"]["claim"].as_str().unwrap();
    assert_eq!(v["history"], serde_json::json!([[claim, "booked"]]));
    assert_eq!(v["refused"], "cancelled");
    assert_eq!(v["fault"]["code"], "INVALID_POLICY", "{v}");
    assert_eq!(v["fault"]["field"], "Polis");
    // The database and the MIS agree.
    let a = fx.t.gw.store.appointment(claim).await.unwrap().unwrap();
    assert_eq!(
        (
            a.status.as_str(),
            a.slot_id.as_deref().unwrap_or(""),
            a.channel.as_str()
        ),
        ("cancelled", slot, "internet")
    );
    fx.wait_outbox_done("mis", 1).await;
    assert!(!fx.mis_has_booked(slot).await);
    let trail: serde_json::Value =
        fx.t.get_admin("/fhir/AuditEvent?agent=portal&_count=50")
            .await
            .json()
            .await
            .unwrap();
    // The session's trail, newest first: the refusal, the history, the booking, the check;
    // each names the request and the (masked) patient. The faulted call reached no data.
    let events: Vec<&serde_json::Value> = trail["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["subtype"][0]["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("U", "appointment"),
            ("E", "appointment"),
            ("C", "appointment"),
            ("R", "patient")
        ],
        "{trail}"
    );
    let masked = format!("************{}", &policy(31)[12..]);
    let mut requests = std::collections::HashSet::new();
    for e in &events {
        assert_eq!(e["outcome"], "0", "{e}");
        assert!(e.to_string().contains(&masked), "{e}");
        assert!(!e.to_string().contains(&policy(31)), "unmasked: {e}");
        assert!(requests.insert(e["extension"][0]["valueString"].to_string()));
    }
    for e in [events[0], events[2]] {
        assert_eq!(e["entity"][0]["what"]["identifier"]["value"], claim, "{e}");
        assert_eq!(e["source"]["site"], ORG, "{e}");
    }
    crate::schedules::validate_fhir(std::slice::from_ref(&trail));
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_client_books_through_the_wsdl_postgres() {
    zeep_client_books_through_the_wsdl(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zeep_client_books_through_the_wsdl_sqlite() {
    zeep_client_books_through_the_wsdl(Backend::Sqlite).await
}

async fn hub_faults_name_the_element(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let free = fx.free(Channel::Internet).await;
    let slot = &free[0];
    let doc = &slot.practitioner_id;
    let pat = format!(
        "<Polis>{}</Polis><Birthday>1980-05-17</Birthday>",
        policy(41)
    );
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("GetSpesialityList", "<IdLPU>1.2.3</IdLPU>".into(), "INVALID_ORGANIZATION", "IdLPU"),
        ("GetSpesialityList", "<IdLPU>1.2.643.5.1.13.13.12.2.77.9999</IdLPU>".into(), "UNKNOWN_ORGANIZATION", "IdLPU"),
        ("GetDoctorList", format!("<IdLPU>{ORG}</IdLPU>"), "REQUIRED_FIELD_MISSING", "IdSpesiality"),
        ("GetAvaibleAppointments", format!("<IdLPU>{ORG}</IdLPU><IdDoc>{doc}</IdDoc><VisitStart>2030-01-02</VisitStart><VisitEnd>2030-01-01</VisitEnd>"), "INVALID_PERIOD", "VisitEnd"),
        ("GetAvailableDates", format!("<IdLPU>{ORG}</IdLPU><IdDoc>{doc}</IdDoc><VisitStart>02.01.2030</VisitStart>"), "INVALID_DATE", "VisitStart"),
        ("GetAvailableDates", format!("<IdLPU>{ORG}</IdLPU><IdDoc>emias:nobody</IdDoc>"), "UNKNOWN_DOCTOR", "IdDoc"),
        ("SetAppointment", format!("<IdAppointment>{}</IdAppointment><IdLPU>{ORG}</IdLPU><Polis>7700 12</Polis><Birthday>1980-05-17</Birthday>", slot.id), "INVALID_POLICY", "Polis"),
        ("SetAppointment", format!("<IdAppointment>{}</IdAppointment><IdLPU>{ORG}</IdLPU><Polis>{}</Polis>", slot.id, policy(41)), "PATIENT_NOT_IDENTIFIED", "Birthday"),
        ("SetAppointment", format!("<IdAppointment>emias:nope</IdAppointment><IdLPU>{ORG}</IdLPU>{pat}"), "UNKNOWN_SLOT", "IdAppointment"),
        ("SetAppointment", format!("<IdAppointment>{}</IdAppointment><IdLPU>1.2.643.5.1.13.13.12.2.77.7002</IdLPU>{pat}", slot.id), "SLOT_OF_ANOTHER_CLINIC", "IdAppointment"),
        ("CreateClaimForRefusal", "<IdClaim>nope</IdClaim>".into(), "UNKNOWN_APPOINTMENT", "IdClaim"),
        ("GetPatientHistory", "<Snils>12345678900</Snils>".into(), "INVALID_SNILS", "Snils"),
        ("NoSuchOperation", String::new(), "UNKNOWN_OPERATION", "NoSuchOperation"),
    ];
    for (op, inner, code, field) in cases {
        let (s, body) = call(&fx, PORTAL_TOKEN, op, &inner, None).await;
        assert_eq!(
            s,
            StatusCode::INTERNAL_SERVER_ERROR,
            "SOAP 1.1 faults travel with 500: {body}"
        );
        assert!(
            body.contains("<soap:Fault>") || body.contains(":Fault>"),
            "{body}"
        );
        assert_eq!(
            fault(&body),
            (code.to_string(), field.to_string()),
            "{op} {inner} -> {body}"
        );
    }
    // A slot the internet channel may not take; allowed when the client names the registry.
    let registry_only = fx
        .free(Channel::Registry)
        .await
        .into_iter()
        .find(|s| !s.channels.contains(Channel::Internet))
        .unwrap();
    let inner = format!(
        "<IdAppointment>{}</IdAppointment><IdLPU>{ORG}</IdLPU>{pat}",
        registry_only.id
    );
    let (_, body) = call(&fx, PORTAL_TOKEN, "SetAppointment", &inner, None).await;
    assert_eq!(
        fault(&body),
        ("CHANNEL_NOT_ALLOWED".into(), "Channel".into()),
        "{body}"
    );
    let (s, body) = call(
        &fx,
        PORTAL_TOKEN,
        "SetAppointment",
        &format!("{inner}<Channel>registry</Channel>"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Malformed XML and a wrong SOAPAction.
    let res = fx
        .t
        .http
        .post(fx.t.url("/soap/hub"))
        .bearer_auth(PORTAL_TOKEN)
        .header("content-type", "text/xml")
        .header("soapaction", format!("\"{ACTION}GetLPUList\""))
        .body(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><GetLPUList",
        )
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    assert_eq!(fault(&body).0, "MALFORMED_XML", "{body}");
    let res =
        fx.t.http
            .post(fx.t.url("/soap/hub"))
            .bearer_auth(PORTAL_TOKEN)
            .header("content-type", "text/xml")
            .header("soapaction", format!("\"{ACTION}SetAppointment\""))
            .body(envelope("GetLPUList", ""))
            .send()
            .await
            .unwrap();
    let body = res.text().await.unwrap();
    assert_eq!(
        fault(&body),
        ("SOAP_ACTION_MISMATCH".into(), "SOAPAction".into()),
        "{body}"
    );
    // Idempotency: the same request with the same key returns the first booking.
    let other = &free[1];
    let inner = format!("<IdAppointment>{}</IdAppointment><IdLPU>{ORG}</IdLPU>{pat}<IdempotencyKey>hub-1</IdempotencyKey>", other.id);
    let (s, first) = call(&fx, PORTAL_TOKEN, "SetAppointment", &inner, None).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let (s, again) = call(&fx, PORTAL_TOKEN, "SetAppointment", &inner, None).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(between(&first, "IdClaim"), between(&again, "IdClaim"));
    let changed = inner.replace(&policy(41), &policy(42));
    let (_, reused) = call(&fx, PORTAL_TOKEN, "SetAppointment", &changed, None).await;
    assert_eq!(fault(&reused).0, "IDEMPOTENCY_KEY_REUSED", "{reused}");
    // The WSDL is public and carries this gateway's address.
    let wsdl =
        fx.t.http
            .get(fx.t.url("/soap/hub?wsdl"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        wsdl.contains(&format!("location=\"{}/soap/hub\"", fx.t.gw.url())),
        "{}",
        &wsdl[..200]
    );
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_faults_name_the_element_postgres() {
    hub_faults_name_the_element(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_faults_name_the_element_sqlite() {
    hub_faults_name_the_element(Backend::Sqlite).await
}

async fn race_through_both_interfaces(backend: Backend) {
    let fx = Fx::start(backend, |_| {}).await;
    let slots: Vec<String> = fx
        .free(Channel::Internet)
        .await
        .into_iter()
        .take(10)
        .map(|s| s.id)
        .collect();
    let tasks = (0..200u32).map(|i| {
        let http = fx.t.http.clone();
        let slot = slots[(i % 10) as usize].clone();
        let (url, ct, action, body) = if i % 2 == 0 {
            (fx.t.url("/fhir/Appointment/$book"), "application/fhir+json", String::new(), params(&slot, Some(patient(200 + i)), None).to_string())
        } else {
            (fx.t.url("/soap/hub"), "text/xml; charset=utf-8", format!("\"{ACTION}SetAppointment\""),
             envelope("SetAppointment", &format!("<IdAppointment>{slot}</IdAppointment><IdLPU>{ORG}</IdLPU><Polis>{}</Polis><Birthday>1980-05-17</Birthday>", policy(200 + i))))
        };
        async move {
            let mut r = http.post(url).bearer_auth(PORTAL_TOKEN).header("content-type", ct);
            if !action.is_empty() {
                r = r.header("soapaction", action);
            }
            let res = r.body(body).send().await.unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            (i % 2 == 0, status, text)
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let won: Vec<_> = results
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::OK || *s == StatusCode::CREATED)
        .collect();
    assert_eq!(won.len(), 10, "exactly one booking per slot");
    for (fhir, status, text) in &results {
        if *status == StatusCode::OK || *status == StatusCode::CREATED {
            continue;
        }
        if *fhir {
            assert_eq!(*status, StatusCode::CONFLICT, "{text}");
            assert!(text.contains("SLOT_TAKEN"), "{text}");
        } else {
            assert_eq!(fault(text).0, "SLOT_TAKEN", "{text}");
        }
    }
    let booked: Vec<(String, i64)> = sqlx::query_as(
        "SELECT slot_id, COUNT(*) FROM appointments WHERE status = 'booked' GROUP BY slot_id",
    )
    .fetch_all(fx.t.gw.store.pool())
    .await
    .unwrap();
    assert_eq!(booked.len(), 10);
    assert!(booked.iter().all(|(_, n)| *n == 1));
    for s in &slots {
        assert!(
            fx.sim.booked_slot(s.trim_start_matches("emias:")).is_some(),
            "the MIS agrees on {s}"
        );
    }
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_through_both_interfaces_postgres() {
    race_through_both_interfaces(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_through_both_interfaces_sqlite() {
    race_through_both_interfaces(Backend::Sqlite).await
}
