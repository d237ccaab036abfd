//! The access matrix: every route of the route table × {no credentials, a client without
//! the route's scope, a client of another organization, the owner}. A route without a case
//! here fails the test, so a new route cannot go without one.

use medgate::config::{KeyRole, RemdSettings};
use medgate::http::access::{Access, Org};
use medgate::model::audit::{AuditAction, AuditEntity};
use medgate::model::schedule::Channel;
use medgate::store::audit::AuditQuery;
use medgate::store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::booking::{params, patient, Fx, ORG};
use crate::documents::{cda, document_reference, key, AUTHOR};
use crate::support::*;

/// Owner: acts for the test clinic with every scope a clinic may hold.
pub(crate) const OWNER: &str = "matrix-owner-token";
/// Another clinic, with the same scopes, acting for another organization.
const OTHER: &str = "matrix-other-token";
/// Acts for the test clinic but holds no scope.
pub(crate) const NOSCOPE: &str = "matrix-noscope-token";
const OTHER_ORG: &str = "1.2.643.5.1.13.13.12.2.77.7002";
pub(crate) const SCOPES: &[&str] = &[
    "schedule:read",
    "appointment:write",
    "booking:admin",
    "documents:submit",
    "documents:read",
    "documents:rerun",
    "transactions:read",
    "transactions:bodies",
    "transactions:rerun",
    "audit:read",
    "referral:write",
    "referral:propose",
    "jobs:run",
    "stats:read",
    "appeals:submit",
    "appeals:answer",
    "outbox:rerun",
    "nsi:read",
];
/// The reference book kept for the terminology routes, and its version.
pub(crate) const BOOK: &str = "1.2.643.5.1.13.13.11.1522";
pub(crate) const BOOK_VERSION: &str = "5.12";

/// Keeps a small version of [`BOOK`] as the nsi-sync job would: loaded, then current.
async fn keep_book(store: &medgate::store::Store) {
    use medgate::model::nsi::{Entry, VersionInfo};
    let now = medgate::model::time::now_ms();
    let v = VersionInfo {
        version: BOOK_VERSION.into(),
        published_at: now,
        last_update: "matrix".into(),
        archive: false,
    };
    let load = store
        .nsi_begin_load(BOOK, &v, "document kinds", now, 500, now)
        .await
        .unwrap();
    let entry = Entry {
        code: "4".into(),
        display: "Protocol of instrumental examination".into(),
        raw: "{}".into(),
    };
    store
        .nsi_insert_entries(BOOK, BOOK_VERSION, load.generation, 0, &[entry])
        .await
        .unwrap();
    store
        .nsi_finish_load(BOOK, BOOK_VERSION, load.generation, "matrix", 1, now)
        .await
        .unwrap();
    assert!(store.nsi_set_current(BOOK, BOOK_VERSION).await.unwrap());
}

/// The organization the owner refers its patients to (publishes no acceptance rules).
const REFERRED_TO: &str = "1.2.643.5.1.13.13.12.2.77.7011";

/// A patient's own request for a referral to [`REFERRED_TO`], naming the owner's doctor.
pub(crate) fn proposal_body() -> Value {
    let mut v = referral_body();
    v["intent"] = json!("proposal");
    v
}

/// A referral of the owner's doctor to [`REFERRED_TO`].
pub(crate) fn referral_body() -> Value {
    json!({
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "code": {"coding": [{"system": "https://medgate.example/fhir/CodeSystem/referral-profile", "code": "cardiology"}]},
        "contained": [
            {"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": AUTHOR}]},
            {"resourceType": "PractitionerRole", "id": "r", "practitioner": {"identifier": {"system": "urn:oid:1.2.643.100.3", "value": "12345678964"}}, "organization": {"reference": format!("Organization/{ORG}")}},
        ],
        "subject": {"reference": "#p"}, "requester": {"reference": "#r"},
        "performer": [{"reference": format!("Organization/{REFERRED_TO}")}],
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I20.8"}]}],
    })
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Unauthorized,
    Forbidden,
    NotFound,
    /// Allowed: the status and body.
    Allowed(u16, String),
}

fn seen(status: StatusCode, body: String) -> Seen {
    // SOAP 1.1 answers every fault 500: the fault's code says what it was.
    let code = body
        .split("<mg:code>")
        .nth(1)
        .and_then(|r| r.split("</mg:code>").next())
        .unwrap_or("");
    match status.as_u16() {
        401 => Seen::Unauthorized,
        403 => Seen::Forbidden,
        404 => Seen::NotFound,
        500 if code == "FORBIDDEN" => Seen::Forbidden,
        500 if code.ends_with("NOT_FOUND") || code.starts_with("UNKNOWN_") => Seen::NotFound,
        s => Seen::Allowed(s, body),
    }
}

/// What a client of another organization must see.
#[derive(Debug, Clone, Copy)]
enum Other {
    /// The same as the owner (public data).
    Same,
    /// Nothing: 404.
    NotFound,
    /// Refused: 403 (a create for an organization it does not act for).
    Forbidden,
    /// A list that leaves out the owner's record (its id must not appear).
    Hidden,
}

/// One request of the matrix.
struct Req {
    method: Method,
    path: String,
    body: Option<String>,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn get(path: impl Into<String>) -> Req {
        Req {
            method: Method::GET,
            path: path.into(),
            body: None,
            headers: Vec::new(),
        }
    }

    fn with(method: Method, path: impl Into<String>, body: Value) -> Req {
        Req {
            method,
            path: path.into(),
            body: Some(body.to_string()),
            headers: vec![("content-type", "application/fhir+json".into())],
        }
    }

    fn form(path: impl Into<String>, body: &str) -> Req {
        Req {
            method: Method::POST,
            path: path.into(),
            body: Some(body.into()),
            headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
        }
    }

    fn soap(path: &str, action: &str, body: String) -> Req {
        Req {
            method: Method::POST,
            path: path.into(),
            body: Some(body),
            headers: vec![
                ("content-type", "text/xml; charset=utf-8".into()),
                ("soapaction", format!("\"{action}\"")),
            ],
        }
    }
}

/// The owner's records the cases act on.
pub(crate) struct Records {
    pub(crate) slots: Vec<String>,
    pub(crate) hold_to_book: String,
    pub(crate) hold_to_cancel: String,
    pub(crate) booked: String,
    pub(crate) urgent: String,
    pub(crate) hold_to_refuse: String,
    pub(crate) document: String,
    pub(crate) restriction_to_list: String,
    pub(crate) restriction_to_delete: String,
    pub(crate) transaction: String,
    pub(crate) referral: String,
    pub(crate) referral_to_cancel: String,
    /// An accepted referral of the owner to its own organization, and a slot to book it in.
    pub(crate) referral_to_book: String,
    pub(crate) referral_slot: String,
    /// Appeals routed to the owner: to read, answer, reroute, extend (a general one).
    pub(crate) appeal: String,
    pub(crate) appeal_to_answer: String,
    pub(crate) appeal_to_reroute: String,
    pub(crate) appeal_general: String,
    /// An appeal the owner answers through the dashboard's form.
    pub(crate) appeal_dashboard: String,
    /// A dead letter of the owner's booking, rerun through the dashboard.
    pub(crate) dead_letter: String,
    /// Another, which stays dead.
    pub(crate) dead_kept: String,
    /// A failed FHIR request of the owner's, kept whole: rerun (and failing again).
    pub(crate) failed_exchange: String,
    /// A record of the owner's that no probe names (the log page must not show it to
    /// another client, whose own records hold the ids it probed).
    pub(crate) quiet_transaction: String,
}

async fn send(fx: &Fx, token: Option<&str>, r: &Req) -> Seen {
    send_as(fx, token, r, &uuid::Uuid::now_v7().to_string()).await
}

/// Sends `r` with request id `rid`.
async fn send_as(fx: &Fx, token: Option<&str>, r: &Req, rid: &str) -> Seen {
    // Redirects are what a route answers, not followed (a followed one would repeat the
    // request id).
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let http = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    });
    let mut b = http
        .request(r.method.clone(), fx.t.url(&r.path))
        .header("x-request-id", rid);
    if let Some(t) = token {
        b = b.bearer_auth(t);
    }
    for (k, v) in &r.headers {
        b = b.header(*k, v);
    }
    if let Some(body) = &r.body {
        b = b.body(body.clone());
    }
    let resp = b.send().await.unwrap();
    let status = resp.status();
    seen(status, resp.text().await.unwrap())
}

async fn json_of(fx: &Fx, token: &str, r: &Req) -> Value {
    match send(fx, Some(token), r).await {
        Seen::Allowed(_, body) => serde_json::from_str(&body).unwrap(),
        other => panic!("{} {}: {other:?}", r.method, r.path),
    }
}

fn hub(op: &str, inner: &str) -> Req {
    Req::soap(
        "/soap/hub",
        &format!("http://tempuri.org/IHubService/{op}"),
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><{op} xmlns="http://tempuri.org/">{inner}</{op}></s:Body></s:Envelope>"#
        ),
    )
}

/// The case of a route: the request, what another organization's client sees, and the
/// statuses the owner may get.
fn case(
    method: &actix_web::http::Method,
    pattern: &str,
    r: &Records,
) -> Option<(Req, Other, &'static [u16])> {
    const OK: &[u16] = &[200];
    const CREATED: &[u16] = &[201];
    let urgent = json!({
        "resourceType": "Appointment", "status": "booked",
        "appointmentType": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276", "code": "EMERGENCY"}]},
        "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": AUTHOR}]}],
        "participant": [{"actor": {"reference": "#p"}, "status": "accepted"}, {"actor": {"reference": format!("Location/{ORG}")}, "status": "accepted"}]
    });
    let doc_status = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><GetDocumentStatus xmlns="urn:medgate:documents:v1"><LocalUid>{}</LocalUid></GetDocumentStatus></s:Body></s:Envelope>"#,
        r.document
    );
    let file_request = format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><getDocumentFileRequest xmlns="http://egisz.rosminzdrav.ru/iehr/emdr/service/"><localUid>{}</localUid></getDocumentFileRequest></s:Body></s:Envelope>"#,
        r.document
    );
    let m = method.as_str();
    Some(match (m, pattern) {
        ("GET", "/healthz" | "/readyz" | "/metrics" | "/fhir/metadata") => {
            (Req::get(pattern), Other::Same, OK)
        }
        ("GET", "/soap/hub") => (Req::get("/soap/hub?wsdl"), Other::Same, OK),
        ("GET", "/fhir/Organization") => (Req::get("/fhir/Organization?_count=2"), Other::Same, OK),
        ("GET", "/fhir/Location" | "/fhir/Practitioner" | "/fhir/PractitionerRole" | "/fhir/Schedule") => {
            (Req::get(format!("{pattern}?organization={ORG}")), Other::Same, OK)
        }
        ("GET", "/fhir/Organization/{id}" | "/fhir/Location/{id}") => {
            (Req::get(pattern.replace("{id}", ORG)), Other::Same, OK)
        }
        ("GET", "/fhir/Slot") => (
            Req::get(format!("/fhir/Slot?organization={ORG}&status=free&_count=5")),
            Other::Same,
            OK,
        ),
        ("GET", "/fhir/Appointment/$find") => (
            Req::get(format!("/fhir/Appointment/$find?organization={ORG}&_count=3")),
            Other::Same,
            OK,
        ),
        ("POST", "/fhir/Appointment/$find") => (
            Req::with(
                Method::POST,
                pattern,
                json!({"resourceType": "Parameters", "parameter": [{"name": "organization", "valueString": ORG}]}),
            ),
            Other::Same,
            OK,
        ),
        // Any client may hold a free slot; the owner and the other hold different ones.
        ("POST", "/fhir/Appointment/$hold") => (
            Req::with(Method::POST, pattern, params(&r.slots[0], None, None)),
            Other::Same,
            CREATED,
        ),
        ("POST", "/fhir/Appointment/$book") => (
            Req::with(
                Method::POST,
                pattern,
                json!({"resourceType": "Parameters", "parameter": [
                    {"name": "appointment", "resource": {"resourceType": "Appointment", "id": r.hold_to_book, "status": "proposed", "participant": [{"status": "needs-action"}]}},
                    {"name": "patient", "resource": patient(41)}]}),
            ),
            Other::NotFound,
            CREATED,
        ),
        // By patient: the appointment's id is in no link of the answer.
        ("GET", "/fhir/Appointment") => (
            Req::get(format!(
                "/fhir/Appointment?patient:identifier=urn:oid:1.2.643.100.3%7C{}",
                AUTHOR.replace(['-', ' '], "")
            )),
            Other::Hidden,
            OK,
        ),
        ("POST", "/fhir/Appointment") => (
            Req::with(Method::POST, pattern, urgent),
            Other::Forbidden,
            CREATED,
        ),
        ("GET", "/fhir/Appointment/{id}") => (
            Req::get(format!("/fhir/Appointment/{}", r.urgent)),
            Other::NotFound,
            OK,
        ),
        ("PUT", "/fhir/Appointment/{id}") => (
            Req::with(
                Method::PUT,
                format!("/fhir/Appointment/{}", r.hold_to_cancel),
                json!({"resourceType": "Appointment", "id": r.hold_to_cancel, "status": "cancelled", "participant": [{"status": "declined"}]}),
            ),
            Other::NotFound,
            OK,
        ),
        ("POST", "/fhir/Appointment/{id}/$reschedule") => (
            Req::with(
                Method::POST,
                format!("/fhir/Appointment/{}/$reschedule", r.booked),
                json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{}", r.slots[1].replacen(':', ".", 1))}}]}),
            ),
            Other::NotFound,
            CREATED,
        ),
        ("POST", "/fhir/DocumentReference") => (
            Req::with(
                Method::POST,
                pattern,
                document_reference(&uuid::Uuid::new_v4().to_string(), &cda(52), &[]),
            ),
            Other::Forbidden,
            CREATED,
        ),
        ("GET", "/fhir/DocumentReference/{id}") => (
            Req::get(format!("/fhir/DocumentReference/{}", r.document)),
            Other::NotFound,
            OK,
        ),
        ("POST", "/soap/documents") => (
            Req::soap(
                pattern,
                "urn:medgate:documents:v1/GetDocumentStatus",
                doc_status,
            ),
            Other::NotFound,
            OK,
        ),
        ("POST", "/soap/remd/provider") => (
            Req {
                headers: vec![(
                    "content-type",
                    "application/soap+xml; charset=utf-8".into(),
                )],
                ..Req::soap(pattern, "getDocumentFile", file_request)
            },
            Other::Forbidden,
            OK,
        ),
        // An unknown verdict: the registry gets a Fault, but it got in.
        ("POST", "/soap/remd/callback") => (
            Req {
                headers: vec![(
                    "content-type",
                    "application/soap+xml; charset=utf-8".into(),
                )],
                ..Req::soap(
                    pattern,
                    "registerDocumentResult",
                    r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><registerDocumentResult xmlns="http://egisz.rosminzdrav.ru/iehr/emdr/callback/"><relatesToMessage>urn:uuid:00000000-0000-0000-0000-000000000000</relatesToMessage><status>error</status></registerDocumentResult></s:Body></s:Envelope>"#.into(),
                )
            },
            Other::Forbidden,
            &[200, 400],
        ),
        ("POST", "/soap/hub") => (
            hub(
                "CreateClaimForRefusal",
                &format!("<IdClaim>{}</IdClaim>", r.hold_to_refuse),
            ),
            Other::NotFound,
            OK,
        ),
        // The trail of the owner's urgent visit: its id is in no event another sees.
        ("GET", "/fhir/AuditEvent") => (
            Req::get(format!(
                "/fhir/AuditEvent?patient:identifier=urn:oid:1.2.643.100.3%7C{}",
                AUTHOR.replace(['-', ' '], "")
            )),
            Other::Hidden,
            OK,
        ),
        ("GET", "/api/admin/documents") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/api/admin/documents/{id}") => (
            Req::get(format!("/api/admin/documents/{}", r.document)),
            Other::NotFound,
            OK,
        ),
        // The document is queued already: the owner gets in and is told so.
        ("POST", "/api/admin/documents/{id}/rerun") => (
            Req {
                method: Method::POST,
                ..Req::get(format!("/api/admin/documents/{}/rerun", r.document))
            },
            Other::NotFound,
            &[409],
        ),
        ("POST", "/api/admin/documents/rerun") => (
            Req {
                method: Method::POST,
                ..Req::get("/api/admin/documents/rerun?status=rejected")
            },
            Other::Same,
            &[202],
        ),
        ("GET", "/api/admin/transactions") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/api/admin/outbox") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/api/admin/transactions/{id}") => (
            Req::get(format!("/api/admin/transactions/{}", r.transaction)),
            Other::NotFound,
            OK,
        ),
        // Rerun as the owner's client, it fails as it failed before: the rerun is answered.
        ("POST", "/api/admin/transactions/{id}/rerun") => (
            Req {
                method: Method::POST,
                ..Req::get(format!(
                    "/api/admin/transactions/{}/rerun",
                    r.failed_exchange
                ))
            },
            Other::NotFound,
            OK,
        ),
        ("GET", "/api/admin/restrictions") => (Req::get(pattern), Other::Hidden, OK),
        ("POST", "/api/admin/restrictions") => (
            Req::with(
                Method::POST,
                pattern,
                json!({"organization": ORG, "channels": ["kiosk"], "from": "2030-01-01", "to": "2030-01-02", "reason": "matrix"}),
            ),
            Other::Forbidden,
            CREATED,
        ),
        ("DELETE", "/api/admin/restrictions/{id}") => (
            Req {
                method: Method::DELETE,
                ..Req::get(format!("/api/admin/restrictions/{}", r.restriction_to_delete))
            },
            Other::NotFound,
            &[204],
        ),
        ("POST", "/fhir/ServiceRequest") => (
            Req::with(Method::POST, pattern, referral_body()),
            Other::Forbidden,
            CREATED,
        ),
        ("GET", "/fhir/ServiceRequest" | "/fhir/Task") => {
            (Req::get(pattern), Other::Hidden, OK)
        }
        ("GET", "/fhir/ServiceRequest/{id}" | "/fhir/Task/{id}") => (
            Req::get(pattern.replace("{id}", &r.referral)),
            Other::NotFound,
            OK,
        ),
        ("PUT", "/fhir/Task/{id}") => (
            Req::with(
                Method::PUT,
                format!("/fhir/Task/{}", r.referral_to_cancel),
                json!({"resourceType": "Task", "status": "cancelled", "intent": "order"}),
            ),
            Other::NotFound,
            OK,
        ),
        ("GET", "/api/referrals/rules") => (Req::get(pattern), Other::Same, OK),
        // Reference books are no organization's records.
        ("GET", "/fhir/CodeSystem") => (
            Req::get(format!("/fhir/CodeSystem?url=urn:oid:{BOOK}")),
            Other::Same,
            OK,
        ),
        ("GET", "/fhir/CodeSystem/{id}") => (
            Req::get(format!("/fhir/CodeSystem/{BOOK}-{BOOK_VERSION}")),
            Other::Same,
            OK,
        ),
        ("GET", "/fhir/ValueSet/$expand") => (
            Req::get(format!("/fhir/ValueSet/$expand?url=urn:oid:{BOOK}&count=5")),
            Other::Same,
            OK,
        ),
        // The gateway's jobs are no organization's records.
        ("GET", "/api/admin/jobs") => (Req::get(pattern), Other::Same, OK),
        ("GET", "/api/admin/openapi.json") => (Req::get(pattern), Other::Same, OK),
        ("GET", "/api/admin/stats") => (
            Req::get("/api/admin/stats?metric=bookings"),
            Other::Hidden,
            OK,
        ),
        ("GET", "/api/admin/jobs/{name}/runs") => (
            Req::get("/api/admin/jobs/retention/runs"),
            Other::Same,
            OK,
        ),
        ("POST", "/api/admin/jobs/{name}/run") => (
            Req::with(Method::POST, "/api/admin/jobs/retention/run", json!({})),
            Other::Same,
            OK,
        ),
        // A citizen-facing channel records a request for any attending organization.
        ("POST", "/fhir/ServiceRequest/$propose") => (
            Req::with(Method::POST, pattern, proposal_body()),
            Other::Same,
            CREATED,
        ),
        ("POST", "/fhir/ServiceRequest/{id}/$book") => (
            Req::with(
                Method::POST,
                format!("/fhir/ServiceRequest/{}/$book", r.referral_to_book),
                json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{}", r.referral_slot.replacen(':', ".", 1))}}]}),
            ),
            Other::NotFound,
            CREATED,
        ),
        // A citizen-facing channel takes in appeals about any organization (a repeat of its
        // id answers the stored appeal).
        ("POST", "/fhir/Communication") => (
            Req::with(
                Method::POST,
                pattern,
                crate::appeals::communication("matrix-new", "district-chat", None, "booking", "North", Some(ORG), 44, None),
            ),
            Other::Same,
            &[200, 201],
        ),
        ("GET", "/fhir/Communication") => (Req::get("/fhir/Communication"), Other::Hidden, OK),
        ("GET", "/fhir/Communication/{id}") => (
            Req::get(format!("/fhir/Communication/{}", r.appeal)),
            Other::NotFound,
            OK,
        ),
        ("POST", "/fhir/Communication/{id}/$answer") => (
            Req::with(
                Method::POST,
                format!("/fhir/Communication/{}/$answer", r.appeal_to_answer),
                json!({"resourceType": "Parameters", "parameter": [{"name": "answer", "valueString": "matrix answer"}]}),
            ),
            Other::NotFound,
            OK,
        ),
        ("POST", "/fhir/Communication/{id}/$reroute") => (
            Req::with(
                Method::POST,
                format!("/fhir/Communication/{}/$reroute", r.appeal_to_reroute),
                json!({"resourceType": "Parameters", "parameter": [{"name": "organization", "valueString": OTHER_ORG}, {"name": "reason", "valueString": "matrix"}]}),
            ),
            Other::NotFound,
            OK,
        ),
        ("POST", "/fhir/Communication/{id}/$extend") => (
            Req::with(
                Method::POST,
                format!("/fhir/Communication/{}/$extend", r.appeal_general),
                json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "matrix"}]}),
            ),
            Other::NotFound,
            OK,
        ),
        ("POST", "/soap/appeals") => (
            Req::soap(
                "/soap/appeals",
                "urn:medgate:appeals:v1/SubmitComplaint",
                format!(
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><SubmitComplaint xmlns="urn:medgate:appeals:v1"><ComplaintId>matrix-soap</ComplaintId><District>North</District><OrgOid>{ORG}</OrgOid><Topic>queues</Topic><Text>matrix</Text><Contact>matrix@example.test</Contact><Snils>{AUTHOR}</Snils></SubmitComplaint></s:Body></s:Envelope>"#
                ),
            ),
            Other::Same,
            OK,
        ),
        ("GET", "/soap/appeals") => (Req::get("/soap/appeals?wsdl"), Other::Same, OK),
        // The dashboard: its login and assets are open; its pages answer bearer clients as
        // they answer sessions.
        ("GET", "/admin/login" | "/admin/assets/dashboard.css") => {
            (Req::get(pattern), Other::Same, OK)
        }
        ("POST", "/admin/login" | "/admin/logout") => (
            Req::form(pattern, "login=nobody&password=wrong&csrf=none"),
            Other::Same,
            OK,
        ),
        ("GET", "/admin" | "/admin/jobs" | "/admin/traffic") => (Req::get(pattern), Other::Same, OK),
        ("GET", "/admin/figures") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/admin/outbox" | "/admin/appeals") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/admin/transactions") => (Req::get(pattern), Other::Hidden, OK),
        ("GET", "/admin/documents") => (
            Req::get("/admin/documents?status=queued"),
            Other::Hidden,
            OK,
        ),
        // The document is queued already: the owner gets in and back to the page.
        ("POST", "/admin/documents/{id}/rerun") => (
            Req::form(format!("/admin/documents/{}/rerun", r.document), "csrf="),
            Other::NotFound,
            &[303],
        ),
        ("POST", "/admin/transactions/{id}/rerun") => (
            Req::form(
                format!("/admin/transactions/{}/rerun", r.failed_exchange),
                "csrf=",
            ),
            Other::NotFound,
            // The browser goes on to the rerun's record.
            &[303],
        ),
        ("POST", "/admin/outbox/{id}/rerun") => (
            Req::form(format!("/admin/outbox/{}/rerun", r.dead_letter), "csrf="),
            Other::NotFound,
            // The form's answer sends the browser back to the page.
            &[303],
        ),
        ("POST", "/admin/appeals/{id}/answer") => (
            Req::form(
                format!("/admin/appeals/{}/answer", r.appeal_dashboard),
                "answer=matrix+answer",
            ),
            Other::NotFound,
            &[303],
        ),
        ("GET", "/api/admin/appeals/stats") => (
            Req::get("/api/admin/appeals/stats?from=2020-01-01&to=2099-12-31&by=organization"),
            Other::Hidden,
            OK,
        ),
        _ => return None,
    })
}

/// What the trail must record of the owner's access to a route: action, entity, and
/// whether the patient is known; `None` for routes that touch no personal data.
fn audited(method: &str, pattern: &str) -> Option<(AuditAction, AuditEntity, bool)> {
    use AuditAction::*;
    use AuditEntity::*;
    match (method, pattern) {
        // The hold has no patient yet.
        ("POST", "/fhir/Appointment/$hold") => Some((Create, Appointment, false)),
        ("POST", "/fhir/Appointment/$book") => Some((Update, Appointment, false)),
        ("GET", "/fhir/Appointment") => Some((Search, Appointment, true)),
        ("POST", "/fhir/Appointment") => Some((Create, Appointment, true)),
        ("GET", "/fhir/Appointment/{id}") => Some((Read, Appointment, true)),
        ("PUT", "/fhir/Appointment/{id}") => Some((Update, Appointment, false)),
        ("POST", "/fhir/Appointment/{id}/$reschedule") => Some((Update, Appointment, false)),
        ("POST", "/soap/hub") => Some((Update, Appointment, false)),
        ("POST", "/fhir/DocumentReference") => Some((Create, Document, true)),
        ("GET", "/fhir/DocumentReference/{id}") => Some((Read, Document, true)),
        ("POST", "/soap/documents") => Some((Read, Document, true)),
        ("POST", "/soap/remd/provider") => Some((Read, Document, true)),
        ("GET", "/api/admin/documents/{id}") => Some((Read, Document, true)),
        ("POST", "/api/admin/documents/{id}/rerun" | "/admin/documents/{id}/rerun") => {
            Some((Update, Document, false))
        }
        ("GET", "/api/admin/transactions/{id}") => Some((Read, TransactionBody, false)),
        ("POST", "/api/admin/transactions/{id}/rerun" | "/admin/transactions/{id}/rerun") => {
            Some((Update, TransactionBody, false))
        }
        ("POST", "/fhir/ServiceRequest" | "/fhir/ServiceRequest/$propose") => {
            Some((Create, Referral, true))
        }
        ("GET", "/fhir/ServiceRequest" | "/fhir/Task") => Some((Search, Referral, false)),
        ("GET", "/fhir/ServiceRequest/{id}" | "/fhir/Task/{id}") => Some((Read, Referral, true)),
        ("PUT", "/fhir/Task/{id}") => Some((Update, Referral, true)),
        // Booking a referral's visit is the appointment's creation.
        ("POST", "/fhir/ServiceRequest/{id}/$book") => Some((Create, Appointment, true)),
        ("POST", "/fhir/Communication" | "/soap/appeals") => Some((Create, Appeal, true)),
        ("GET", "/admin/appeals") => Some((Search, Appeal, false)),
        ("POST", "/admin/appeals/{id}/answer") => Some((Update, Appeal, true)),
        ("GET", "/fhir/Communication") => Some((Search, Appeal, false)),
        ("GET", "/fhir/Communication/{id}") => Some((Read, Appeal, true)),
        (
            "POST",
            "/fhir/Communication/{id}/$answer"
            | "/fhir/Communication/{id}/$reroute"
            | "/fhir/Communication/{id}/$extend",
        ) => Some((Update, Appeal, true)),
        // Public data, lists without patients, the registry's verdicts, the (masked)
        // trail itself.
        (
            "GET",
            "/healthz"
            | "/readyz"
            | "/metrics"
            | "/fhir/metadata"
            | "/fhir/Organization"
            | "/fhir/Organization/{id}"
            | "/fhir/Location"
            | "/fhir/Location/{id}"
            | "/fhir/AuditEvent"
            | "/fhir/Slot"
            | "/fhir/Practitioner"
            | "/fhir/PractitionerRole"
            | "/fhir/Schedule"
            | "/fhir/Appointment/$find"
            | "/api/admin/documents"
            | "/soap/hub"
            | "/api/admin/transactions"
            | "/api/admin/outbox"
            | "/api/admin/restrictions"
            | "/api/referrals/rules"
            | "/api/admin/jobs"
            | "/api/admin/jobs/{name}/runs"
            | "/api/admin/stats"
            | "/soap/appeals"
            | "/api/admin/appeals/stats"
            | "/fhir/CodeSystem"
            | "/fhir/CodeSystem/{id}"
            | "/fhir/ValueSet/$expand"
            | "/admin/login"
            | "/admin/assets/dashboard.css"
            | "/admin"
            | "/admin/jobs"
            | "/admin/outbox"
            | "/admin/traffic"
            | "/admin/figures"
            | "/admin/transactions"
            | "/admin/documents"
            | "/api/admin/openapi.json",
        ) => None,
        (
            "POST",
            "/fhir/Appointment/$find"
            | "/soap/remd/callback"
            | "/api/admin/documents/rerun"
            | "/api/admin/restrictions"
            | "/api/admin/jobs/{name}/run"
            | "/admin/login"
            | "/admin/logout"
            | "/admin/outbox/{id}/rerun",
        ) => None,
        ("DELETE", "/api/admin/restrictions/{id}") => None,
        (m, p) => panic!("{m} {p}: say whether it touches personal data"),
    }
}

/// The record a list must leave out for another organization's client.
fn hidden_id<'a>(pattern: &str, r: &'a Records) -> &'a str {
    match pattern {
        "/fhir/Appointment" | "/fhir/AuditEvent" => &r.urgent,
        "/api/admin/documents" | "/admin/documents" => &r.document,
        "/api/admin/transactions" => &r.transaction,
        "/admin/transactions" => &r.quiet_transaction,
        "/api/admin/outbox" => &r.booked,
        "/fhir/ServiceRequest" | "/fhir/Task" => &r.referral,
        "/fhir/Communication" | "/admin/appeals" => &r.appeal,
        "/admin/outbox" => &r.dead_letter,
        // The owner's organization's figures.
        "/admin/figures" => ORG,
        "/api/admin/appeals/stats" => ORG,
        // The owner's organization's figures.
        "/api/admin/stats" => ORG,
        _ => &r.restriction_to_list,
    }
}

pub(crate) async fn records(fx: &Fx) -> Records {
    let slots: Vec<String> = fx
        .free(Channel::Internet)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    let hold = |slot: String| async move {
        let (s, v) = fx
            .post(
                OWNER,
                "/fhir/Appointment/$hold",
                &params(&slot, None, None),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let hold_to_book = hold(slots[10].clone()).await;
    let hold_to_cancel = hold(slots[11].clone()).await;
    let hold_to_refuse = hold(slots[12].clone()).await;
    let (s, booked) = fx
        .post(
            OWNER,
            "/fhir/Appointment/$book",
            &params(&slots[13], Some(patient(42)), None),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{booked}");
    let urgent = json!({
        "resourceType": "Appointment", "status": "booked",
        "appointmentType": {"coding": [{"code": "EMERGENCY"}]},
        "contained": [{"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": AUTHOR}]}],
        "participant": [{"actor": {"reference": "#p"}}, {"actor": {"reference": format!("Location/{ORG}")}}]
    });
    let (s, urgent) = fx.post(OWNER, "/fhir/Appointment", &urgent, None).await;
    assert_eq!(s, StatusCode::CREATED, "{urgent}");
    let uid = uuid::Uuid::new_v4().to_string();
    let (s, doc) = fx
        .post(
            OWNER,
            "/fhir/DocumentReference",
            &document_reference(&uid, &cda(51), &[]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{doc}");
    let restriction = |day: u32| async move {
        let body = json!({"organization": ORG, "channels": ["internet"], "from": format!("2030-02-{day:02}"), "to": format!("2030-02-{:02}", day + 1), "reason": "matrix"});
        let v = json_of(
            fx,
            OWNER,
            &Req::with(Method::POST, "/api/admin/restrictions", body),
        )
        .await;
        v["id"].as_str().unwrap().to_string()
    };
    let restriction_to_list = restriction(1).await;
    let restriction_to_delete = restriction(3).await;
    let refer = || async {
        let v = json_of(
            fx,
            OWNER,
            &Req::with(Method::POST, "/fhir/ServiceRequest", referral_body()),
        )
        .await;
        v["id"].as_str().unwrap().to_string()
    };
    let referral = refer().await;
    let referral_to_cancel = refer().await;
    let mut to_self = referral_body();
    to_self["performer"] = json!([{"reference": format!("Organization/{ORG}")}]);
    let referral_to_book = json_of(
        fx,
        OWNER,
        &Req::with(Method::POST, "/fhir/ServiceRequest", to_self),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    json_of(
        fx,
        OWNER,
        &Req::with(
            Method::PUT,
            format!("/fhir/Task/{referral_to_book}"),
            json!({"resourceType": "Task", "status": "accepted", "intent": "order"}),
        ),
    )
    .await;
    let referral_slot = fx
        .free(Channel::Referral)
        .await
        .into_iter()
        .find(|s| !s.channels.contains(Channel::Internet))
        .expect("a slot open to referrals only")
        .id;
    let mine = json_of(fx, OWNER, &Req::get("/api/admin/transactions?limit=1")).await;
    // A booking without its slot: refused, and refused again whenever rerun.
    send(
        fx,
        Some(OWNER),
        &Req::with(
            Method::POST,
            "/fhir/Appointment/$book",
            json!({"resourceType": "Parameters"}),
        ),
    )
    .await;
    let failed = json_of(
        fx,
        OWNER,
        &Req::get("/api/admin/transactions?limit=1&status=client-error&protocol=fhir"),
    )
    .await;
    let failed_exchange = failed["items"][0]["id"].as_str().unwrap().to_string();
    let ok = json_of(
        fx,
        OWNER,
        &Req::get("/api/admin/transactions?limit=5&status=ok"),
    )
    .await;
    let quiet_transaction = ok["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .find(|id| *id != mine["items"][0]["id"])
        .expect("another record of the owner's");
    // A dead letter of the owner's booking (due far ahead, so no worker takes it first).
    let booked_id = booked["id"].as_str().unwrap().to_string();
    let now = medgate::model::time::now_ms();
    let dead_letter_of = |booked_id: String| async move {
        let dead =
            fx.t.gw
                .store
                .enqueue(
                    &medgate::store::outbox::NewOutboxItem {
                        destination: "mis".into(),
                        kind: "cancel-appointment".into(),
                        aggregate_id: booked_id,
                        payload: "{}".into(),
                        due_at: now + 86_400_000,
                        attempts: 0,
                        ordering_key: None,
                    },
                    now,
                )
                .await
                .unwrap();
        sqlx::query("UPDATE outbox SET status = 'dead', attempts = 9, last_error = 'gave up: matrix' WHERE id = $1")
            .bind(dead.clone())
            .execute(fx.t.gw.store.pool())
            .await
            .unwrap();
        dead
    };
    let dead_kept = dead_letter_of(booked_id.clone()).await;
    // Another, for the dashboard's rerun.
    let dead_letter = dead_letter_of(booked_id.clone()).await;
    // The day's figures, with the owner's bookings in them.
    fx.t.step("daily-stats").await;
    let appeal = |id: &'static str, channel: &'static str| async move {
        let v = json_of(
            fx,
            OWNER,
            &Req::with(
                Method::POST,
                "/fhir/Communication",
                crate::appeals::communication(
                    id,
                    channel,
                    None,
                    "booking",
                    "North",
                    Some(ORG),
                    45,
                    None,
                ),
            ),
        )
        .await;
        v["id"].as_str().unwrap().to_string()
    };
    let (appeal_read, appeal_to_answer, appeal_to_reroute, appeal_general) = (
        appeal("matrix-read", "district-chat").await,
        appeal("matrix-answer", "district-chat").await,
        appeal("matrix-reroute", "district-chat").await,
        appeal("matrix-general", "phone").await,
    );
    let appeal_dashboard = appeal("matrix-dashboard", "district-chat").await;
    keep_book(&fx.t.gw.store).await;
    Records {
        slots: slots[..10].to_vec(),
        hold_to_book,
        hold_to_cancel,
        booked: booked["id"].as_str().unwrap().to_string(),
        urgent: urgent["id"].as_str().unwrap().to_string(),
        hold_to_refuse,
        document: uid,
        restriction_to_list,
        restriction_to_delete,
        transaction: mine["items"][0]["id"].as_str().unwrap().to_string(),
        referral,
        referral_to_cancel,
        referral_to_book,
        referral_slot,
        appeal: appeal_read,
        appeal_to_answer,
        appeal_to_reroute,
        appeal_general,
        appeal_dashboard,
        dead_letter,
        failed_exchange,
        quiet_transaction,
        dead_kept,
    }
}

/// The matrix's clients (owner, other, no scope), an intake-only registry link and the
/// signing keys, on top of the test settings.
pub(crate) fn matrix_settings(s: &mut medgate::config::Settings) {
    s.clients.push(client("owner", OWNER, &[ORG], SCOPES));
    s.clients.push(client("other", OTHER, &[OTHER_ORG], SCOPES));
    s.clients.push(client("noscope", NOSCOPE, &[ORG], &[]));
    let base = s.http.public_url.clone().unwrap();
    // Intake only: nothing is sent to a registry.
    s.remd = Some(RemdSettings {
        url: "http://127.0.0.1:9/unused".into(),
        client_entity_id: "matrix".into(),
        callback_url: format!("{base}/soap/remd/callback"),
        file_url: format!("{base}/soap/remd/provider"),
        timeout_secs: 1,
        retry_schedule_secs: vec![1],
        callback_timeout_secs: 30,
        workers: 1,
        max_document_bytes: 1024 * 1024,
        deliver: false,
        message_key: None,
        callback_certificates: Vec::new(),
    });
    s.signing.keys = vec![
        key(ORG, KeyRole::Organization, "org-gost256"),
        key("12345678964", KeyRole::Doctor, "doctor-gost256"),
    ];
}

async fn every_route_checks_scope_and_organization(backend: Backend) {
    let fx = Fx::start(backend, matrix_settings).await;
    let r = records(&fx).await;
    let store = fx.t.db.store().await;
    let mut checked = 0;
    for route in medgate::http::route_table() {
        let pattern = route.pattern();
        let what = format!("{} {pattern}", route.method);
        let Some((req, other, owner_ok)) = case(&route.method, &pattern, &r) else {
            panic!("{what} has no case in the access matrix");
        };
        let open = route.access == Access::Open;
        // No credentials.
        let s = send(&fx, None, &req).await;
        if open {
            assert!(matches!(s, Seen::Allowed(200, _)), "{what} open: {s:?}");
        } else {
            assert_eq!(s, Seen::Unauthorized, "{what} without credentials");
        }
        // A client without the scope.
        let s = send(&fx, Some(NOSCOPE), &req).await;
        if open {
            assert!(matches!(s, Seen::Allowed(200, _)), "{what} open: {s:?}");
        } else {
            assert_eq!(s, Seen::Forbidden, "{what} without the scope");
        }
        // A client of another organization.
        let rid_other = uuid::Uuid::now_v7().to_string();
        let s = send_as(&fx, Some(OTHER), &req, &rid_other).await;
        let registry = matches!(route.access, Access::Scope(_, Org::Registry));
        match other {
            Other::NotFound => assert_eq!(s, Seen::NotFound, "{what} for another organization"),
            Other::Forbidden => assert_eq!(s, Seen::Forbidden, "{what} for another organization"),
            Other::Same => assert!(
                matches!(&s, Seen::Allowed(code, _) if owner_ok.contains(code)),
                "{what} for another organization: {s:?}"
            ),
            Other::Hidden => match &s {
                Seen::Allowed(200, body) => assert!(
                    !body.contains(hidden_id(&pattern, &r)),
                    "{what} shows another organization's record: {body}"
                ),
                s => panic!("{what} for another organization: {s:?}"),
            },
        }
        // The owner (for the registry's routes: the registry).
        let token = if registry { REMD_TOKEN } else { OWNER };
        let req = if pattern == "/fhir/Appointment/$hold" {
            Req::with(
                Method::POST,
                pattern.as_str(),
                params(&r.slots[2], None, None),
            )
        } else {
            req
        };
        let rid_owner = uuid::Uuid::now_v7().to_string();
        let s = send_as(&fx, Some(token), &req, &rid_owner).await;
        assert!(
            matches!(&s, Seen::Allowed(code, _) if owner_ok.contains(code)),
            "{what} for its owner: {s:?}"
        );
        let trail = |rid: String| {
            let store = store.clone();
            async move {
                let q = AuditQuery {
                    request_id: Some(rid),
                    ..AuditQuery::default()
                };
                store.audit_events(&q, 10).await.unwrap()
            }
        };
        let (mine, theirs) = (trail(rid_owner).await, trail(rid_other).await);
        match audited(route.method.as_str(), &pattern) {
            None => assert!(
                mine.is_empty() && theirs.is_empty(),
                "{what} touches no personal data yet wrote {mine:?} {theirs:?}"
            ),
            Some((action, entity, with_patient)) => {
                assert_eq!(
                    mine.len(),
                    1,
                    "{what}: one audit event per access: {mine:?}"
                );
                let e = &mine[0];
                let client = if registry { "remd" } else { "owner" };
                assert_eq!(
                    (e.action, e.entity, e.success, e.client_id.as_str()),
                    (action, entity, true, client),
                    "{what}: {e:?}"
                );
                assert_eq!(e.snils.is_some(), with_patient, "{what}: patient of {e:?}");
                if registry {
                    // Refused before the service, for want of the registry's scope.
                    assert!(theirs.is_empty(), "{what}: {theirs:?}");
                } else {
                    assert_eq!(theirs.len(), 1, "{what}: refusals are audited: {theirs:?}");
                    let e = &theirs[0];
                    let refused = matches!(other, Other::NotFound | Other::Forbidden);
                    assert_eq!(
                        (e.action, e.entity, e.success, e.client_id.as_str()),
                        (action, entity, !refused, "other"),
                        "{what} for another organization: {e:?}"
                    );
                    assert_eq!(e.detail.is_empty(), !refused, "{what}: {e:?}");
                }
            }
        }
        if let (Other::Hidden, Seen::Allowed(_, body)) = (other, &s) {
            assert!(
                body.contains(hidden_id(&pattern, &r)),
                "{what} must list the owner's record: {body}"
            );
        }
        checked += 1;
    }
    // A dead letter shows why it was given up and after how many attempts.
    let dead = json_of(&fx, OWNER, &Req::get("/api/admin/outbox?destination=mis")).await;
    let item = dead["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == r.dead_kept.as_str() && i["aggregate_id"] == r.booked.as_str())
        .unwrap_or_else(|| panic!("{dead}"));
    assert_eq!(
        (
            &item["status"],
            &item["attempts"],
            &item["last_error"],
            &item["org"]
        ),
        (
            &json!("dead"),
            &json!(9),
            &json!("gave up: matrix"),
            &json!(ORG)
        ),
        "{item}"
    );
    assert!(item.get("payload").is_none(), "{item}");
    assert!(checked >= 47, "{checked} routes checked");
    fx.sim.stop().await;
    fx.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_scope_and_organization_postgres() {
    every_route_checks_scope_and_organization(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_scope_and_organization_sqlite() {
    every_route_checks_scope_and_organization(Backend::Sqlite).await
}

/// A served path asked with another method: 405 at once, naming the methods it serves in
/// `Allow`, before credentials or the body are looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unserved_method_is_refused_with_allow() {
    let t = TestGateway::start(Backend::Sqlite).await;
    let r = t.http.delete(t.url("/fhir/Slot")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET");
    let r = t
        .http
        .request(Method::PATCH, t.url("/fhir/Appointment/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, PUT");
    t.stop().await;
}

/// A client that sends a request's head too slowly (slowloris) is answered 408 after
/// `http.header_timeout_secs` and its connection closed: it cannot hold a worker forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_too_slowly_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = TestGateway::start_with(Backend::Sqlite, |s| s.http.header_timeout_secs = 1).await;
    let mut conn = tokio::net::TcpStream::connect(t.gw.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: medgate\r\nX-Slow: ")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // Generous: the gateway's deadline is 1 s; a busy machine may add a few.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("the connection is closed")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    t.stop().await;
}
