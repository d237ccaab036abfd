//! The federation of regional gateways, end to end: three gateways on loopback (regions 78,
//! 50 and 77, each with its own database), talking FHIR to each other over mutual TLS with
//! certificates this test makes. The referring clinic is in region 78; its gateway reaches
//! region 77 through the gateway of region 50 (a chain of two hops), and the target clinic
//! is in region 77. Each gateway sits behind a loopback proxy the test can cut, so a peer
//! can go down in the middle of a referral's life. The transit gateway has a listener of its
//! own for peers (clients keep plain HTTP); the other two speak TLS to everyone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medgate::config::{
    AcceptanceRuleSettings, ClientCertificate, FederationListenSettings, FederationSettings,
    KeyRole, PeerSettings, RequiredDocumentSettings, TlsSettings,
};
use medgate::model::time::{ManualClock, SharedClock};
use medgate::store::Backend;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::documents::{cda, document_reference, key, registry_link, AUTHOR};
use crate::support::*;
use crate::tls::{make, Cert};

/// The referring clinic, in region 78.
const SPB_CLINIC: &str = "1.2.643.5.1.13.13.12.2.78.8001";
/// An organization of region 50 (the transit gateway's region).
const MO_CLINIC: &str = "1.2.643.5.1.13.13.12.2.50.5001";
const DOCTOR_TOKEN: &str = "test-spb-doctor";
const CENTRE_TOKEN: &str = "test-msk-centre";
const PATIENT_SNILS: &str = "11223344595";
const DOCTOR_SNILS: &str = "12345678964";
/// A registry nobody answers at: documents are kept and wait for it, which is all the
/// referrals need of them.
const NO_REGISTRY: &str = "http://127.0.0.1:9/remd";

/// A loopback TCP proxy in front of one gateway: cut it and the gateway is down for its
/// peers (connections refused, open ones dropped).
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (t, u, o) = (target.clone(), up.clone(), open.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let to = *t.lock().unwrap();
                let (Some(to), true) = (to, u.load(Ordering::SeqCst)) else {
                    drop(inbound);
                    continue;
                };
                let pipe = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                o.lock().unwrap().push(pipe);
            }
        });
        Proxy {
            addr,
            target,
            up,
            open,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn point_at(&self, gateway_url: &str) {
        let addr = gateway_url.trim_start_matches("https://").parse().unwrap();
        *self.target.lock().unwrap() = Some(addr);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for pipe in self.open.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    fn mend(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// One span as an OTLP collector received it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    trace: String,
    span: String,
    parent: String,
    name: String,
}

/// An OpenTelemetry collector's OTLP/HTTP receiver on loopback, keeping every span.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    server: actix_web::dev::ServerHandle,
}

impl Collector {
    async fn start() -> Collector {
        use actix_web::{web, App, HttpResponse, HttpServer};
        use prost::Message;
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let kept = spans.clone();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let kept = kept.clone();
                    async move {
                        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                        let Ok(req) = ExportTraceServiceRequest::decode(body.as_ref()) else {
                            return HttpResponse::BadRequest().finish();
                        };
                        let mut out = kept.lock().unwrap();
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|a| a.key == "service.name")
                                .and_then(|a| a.value.as_ref())
                                .map(|v| format!("{:?}", v.value))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for sp in ss.spans {
                                    out.push(Exported {
                                        service: service.clone(),
                                        trace: hex::encode(&sp.trace_id),
                                        span: hex::encode(&sp.span_id),
                                        parent: hex::encode(&sp.parent_span_id),
                                        name: sp.name,
                                    });
                                }
                            }
                        }
                        HttpResponse::Ok().content_type("application/x-protobuf").finish()
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Collector {
            url,
            spans,
            server: handle,
        }
    }

    /// The spans of `trace` received so far.
    fn of(&self, trace: &str) -> Vec<Exported> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect()
    }
}

/// The federation's certificates: one CA, and per gateway a server and a client
/// certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: Cert,
    client: Vec<(String, Cert)>,
}

impl Pki {
    fn new(gateways: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = make(
            &[
                ("C", "RU"),
                ("O", "medgate federation"),
                ("CN", "federation CA"),
            ],
            None,
            false,
        );
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let mut client = Vec::new();
        for g in gateways {
            let server = make(&[("CN", &format!("{g}.gateway"))], Some(&ca), true);
            std::fs::write(dir.path().join(format!("{g}.pem")), server.cert_pem()).unwrap();
            std::fs::write(dir.path().join(format!("{g}.key")), server.key_pem()).unwrap();
            let c = make(
                &[("O", "medgate"), ("CN", &format!("peer-{g}"))],
                Some(&ca),
                false,
            );
            std::fs::write(dir.path().join(format!("{g}-client.pem")), c.cert_pem()).unwrap();
            std::fs::write(dir.path().join(format!("{g}-client.key")), c.key_pem()).unwrap();
            client.push((g.to_string(), c));
        }
        Pki { dir, ca, client }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn tls(&self, gateway: &str) -> TlsSettings {
        TlsSettings {
            certificate: self.path(&format!("{gateway}.pem")),
            private_key: self.path(&format!("{gateway}.key")),
            client_ca: Some(self.path("ca.pem")),
            require_client_certificate: false,
            watch_secs: 0,
        }
    }

    fn client_cert(&self, gateway: &str) -> &Cert {
        &self.client.iter().find(|(g, _)| g == gateway).unwrap().1
    }

    /// Peer `name` (at `url`, reaching `regions`) as gateway `me` knows it.
    fn peer(&self, me: &str, name: &str, regions: &[&str], url: String) -> PeerSettings {
        PeerSettings {
            name: name.into(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            base_url: url,
            client_certificate: Some(self.path(&format!("{me}-client.pem"))),
            client_key: Some(self.path(&format!("{me}-client.key"))),
            ca: Some(self.path("ca.pem")),
            certificate: ClientCertificate {
                sha256: Some(self.client_cert(name).sha256_hex()),
                subject: None,
            },
        }
    }

    /// An HTTP client trusting the federation's CA, presenting gateway `as_peer`'s client
    /// certificate when named.
    fn http(&self, as_peer: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca.cert_pem()).unwrap()])
            .timeout(Duration::from_secs(60));
        if let Some(g) = as_peer {
            let c = self.client_cert(g);
            b = b.identity(reqwest::Identity::from_pkcs8_pem(&c.cert_pem(), &c.key_pem()).unwrap());
        }
        b.build().unwrap()
    }
}

/// Switches a test gateway to TLS with the federation's certificates and sets its region
/// and peers.
/// With `own_listener` peers get a mutual-TLS listener of their own and clients keep plain
/// HTTP; without, the one listener speaks TLS to everyone.
fn federate(
    s: &mut medgate::config::Settings,
    tls: TlsSettings,
    region: &str,
    peers: Vec<PeerSettings>,
    own_listener: bool,
    collector: &str,
) {
    // Three gateways per test: each keeps to a few database connections.
    s.database.max_connections = 4;
    s.instance = format!("medgate-{region}");
    s.log.otlp_endpoint = Some(collector.to_string());
    let listen = if own_listener {
        Some(FederationListenSettings {
            bind: "127.0.0.1:0".into(),
            tls: TlsSettings {
                require_client_certificate: true,
                ..tls
            },
        })
    } else {
        s.http.tls = Some(tls);
        if let Some(u) = &s.http.public_url {
            s.http.public_url = Some(u.replacen("http://", "https://", 1));
        }
        None
    };
    s.federation = Some(FederationSettings {
        region: region.into(),
        timeout_secs: 5,
        retry_schedule_secs: vec![1, 2, 2, 4, 8, 16, 30],
        peers,
        listen,
    });
}

/// Three gateways: St Petersburg (78) with the referring clinic, the Moscow region (50) as
/// the transit, Moscow (77) with the target clinic and its referral slots.
struct Three {
    spb: TestGateway,
    mo: TestGateway,
    msk: crate::booking::Fx,
    proxies: [Proxy; 3],
    pki: Pki,
    http: reqwest::Client,
    collector: Collector,
}

impl Three {
    async fn start(msk_clock: SharedClock) -> Three {
        let pki = Pki::new(&["spb", "mo", "msk"]);
        let collector = Collector::start().await;
        let otlp = collector.url.clone();
        let proxies = [
            Proxy::start().await,
            Proxy::start().await,
            Proxy::start().await,
        ];
        let [spb_url, mo_url, msk_url] = [0, 1, 2].map(|i| proxies[i].url());

        let (tls, peers) = (
            pki.tls("msk"),
            vec![pki.peer("msk", "mo", &["50", "78"], mo_url.clone())],
        );
        let msk = crate::booking::Fx::start_clocked(Backend::Postgres, msk_clock, |s| {
            registry_link(s, NO_REGISTRY.into(), vec![3600], 3600);
            s.referrals.rules = vec![AcceptanceRuleSettings {
                org: CLINIC_ORG.into(),
                name: "cardiology tele-consultations".into(),
                kinds: vec!["teleconsultation".into()],
                diagnoses: vec!["I00-I99".into()],
                profiles: Vec::new(),
                answer_within_hours: None,
                required_documents: vec![RequiredDocumentSettings {
                    kind: "4".into(),
                    name: "discharge summary".into(),
                    when_available: false,
                }],
            }];
            s.clients.push(client(
                "centre",
                CENTRE_TOKEN,
                &[CLINIC_ORG],
                &["referral:write", "documents:submit"],
            ));
            federate(s, tls, "77", peers, false, &otlp);
        })
        .await;

        let (tls, peers) = (
            pki.tls("mo"),
            vec![
                pki.peer("mo", "spb", &["78"], spb_url.clone()),
                pki.peer("mo", "msk", &["77"], msk_url.clone()),
            ],
        );
        let mo = TestGateway::start_with(Backend::Postgres, |s| {
            federate(s, tls, "50", peers, true, &otlp)
        })
        .await;

        let (tls, peers) = (
            pki.tls("spb"),
            vec![pki.peer("spb", "mo", &["50", "77"], mo_url.clone())],
        );
        let spb = TestGateway::start_with(Backend::Postgres, |s| {
            registry_link(s, NO_REGISTRY.into(), vec![3600], 3600);
            s.signing
                .keys
                .push(key(SPB_CLINIC, KeyRole::Organization, "org-gost256"));
            s.clients.push(client(
                "doctor",
                DOCTOR_TOKEN,
                &[SPB_CLINIC],
                &[
                    "referral:write",
                    "documents:submit",
                    "schedule:read",
                    "appointment:write",
                ],
            ));
            federate(s, tls, "78", peers, false, &otlp);
        })
        .await;

        proxies[0].point_at(&spb.gw.url());
        proxies[1].point_at(&mo.gw.peer_url().expect("a listener for peers"));
        proxies[2].point_at(&msk.t.gw.url());
        let http = pki.http(None);
        Three {
            spb,
            mo,
            msk,
            proxies,
            pki,
            http,
            collector,
        }
    }

    async fn call(
        &self,
        t: &TestGateway,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, t.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/fhir+json").json(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A document the clinic of `org` submits through gateway `t` with `token`; its id.
    async fn document(&self, t: &TestGateway, org: &str, token: &str, n: u64) -> String {
        let uid = uuid::Uuid::new_v4().to_string();
        let doc = if org == CLINIC_ORG {
            cda(n)
        } else {
            medgate::codec::cda::sample_document(org, PATIENT_SNILS, DOCTOR_SNILS, n, 200)
        };
        let mut body = document_reference(&uid, &doc, &[]);
        body["custodian"]["identifier"]["value"] = json!(format!("urn:oid:{org}"));
        body["author"][0]["identifier"]["value"] = json!(AUTHOR);
        let (s, v) = self
            .call(
                t,
                reqwest::Method::POST,
                token,
                "/fhir/DocumentReference",
                Some(&body),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        uid
    }

    /// The referring doctor's tele-consultation referral to the Moscow clinic.
    async fn refer(&self, documents: &[&str], headers: &[(&str, &str)]) -> (StatusCode, Value) {
        self.send_referral(documents, headers, |_| {}).await
    }

    /// The same referral, changed by `edit` first.
    async fn refer_with(
        &self,
        documents: &[&str],
        edit: impl FnOnce(&mut Value),
    ) -> (StatusCode, Value) {
        self.send_referral(documents, &[], edit).await
    }

    async fn send_referral(
        &self,
        documents: &[&str],
        headers: &[(&str, &str)],
        edit: impl FnOnce(&mut Value),
    ) -> (StatusCode, Value) {
        let mut body = json!({
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
                 "organization": {"reference": format!("Organization/{SPB_CLINIC}")}},
            ],
            "subject": {"reference": "#p"},
            "requester": {"reference": "#r"},
            "performer": [{"reference": format!("Organization/{CLINIC_ORG}")}],
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.4"}], "text": "after a myocardial infarction"}],
            "supportingInfo": documents.iter().map(|d| json!({"reference": format!("DocumentReference/{d}")})).collect::<Vec<_>>(),
        });
        edit(&mut body);
        self.call(
            &self.spb,
            reqwest::Method::POST,
            DOCTOR_TOKEN,
            "/fhir/ServiceRequest",
            Some(&body),
            headers,
        )
        .await
    }

    async fn task(&self, t: &TestGateway, token: &str, id: &str) -> Value {
        let (s, v) = self
            .call(
                t,
                reqwest::Method::GET,
                token,
                &format!("/fhir/Task/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// Waits (at most 90 s: the machine may be busy) until the referral's Task at `t`
    /// has business status `status`; the Task.
    async fn until(&self, t: &TestGateway, token: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // Not there yet (404) is waiting too.
            let (_, v) = self
                .call(
                    t,
                    reqwest::Method::GET,
                    token,
                    &format!("/fhir/Task/{id}"),
                    None,
                    &[],
                )
                .await;
            if v["businessStatus"]["coding"][0]["code"] == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the referral never became {status} at {}: {v}",
                t.gw.url()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Moscow clinic moves the referral's Task.
    async fn answer(&self, id: &str, task: &Value) -> (StatusCode, Value) {
        self.call(
            &self.msk.t,
            reqwest::Method::PUT,
            CENTRE_TOKEN,
            &format!("/fhir/Task/{id}"),
            Some(task),
            &[],
        )
        .await
    }

    /// The first slot St Petersburg is offered for the referral's visit.
    async fn first_slot(&self, id: &str) -> String {
        let (s, found) = self
            .call(
                &self.spb,
                reqwest::Method::GET,
                DOCTOR_TOKEN,
                &format!("/fhir/Appointment/$find?referral={id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{found}");
        found["entry"][0]["resource"]["slot"][0]["reference"]
            .as_str()
            .unwrap_or_else(|| panic!("no slot offered: {found}"))
            .to_string()
    }

    /// St Petersburg books the referral's visit in `slot`.
    async fn book(&self, id: &str, slot: &str) -> (StatusCode, Value) {
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "slot", "valueReference": {"reference": slot}}]});
        self.call(
            &self.spb,
            reqwest::Method::POST,
            DOCTOR_TOKEN,
            &format!("/fhir/ServiceRequest/{id}/$book"),
            Some(&body),
            &[],
        )
        .await
    }

    /// The transaction records of trace `trace` in gateway `t`.
    async fn traced(&self, t: &TestGateway, trace: &str) -> Vec<Value> {
        t.gw.state.txlog.flush().await;
        let (s, v) = self
            .call(
                t,
                reqwest::Method::GET,
                ADMIN_TOKEN,
                &format!("/api/admin/transactions?trace_id={trace}"),
                None,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    async fn stop(self) {
        self.collector.server.stop(false).await;
        drop(self.proxies);
        self.spb.stop().await;
        self.mo.stop().await;
        self.msk.t.stop().await;
    }
}

fn task_move(status: &str) -> Value {
    json!({"resourceType": "Task", "status": status, "intent": "order"})
}

/// An inter-regional tele-consultation from a St Petersburg clinic to a Moscow one goes
/// requested → accepted (with the video link) → booked (in Moscow's referral slots, found
/// and booked from St Petersburg) → completed, and the conclusion document arrives at the
/// referring clinic; the referral is one trace in all three transaction logs. A referral
/// missing the documents Moscow requires is refused at once with the list; a peer acting
/// for another region's organization is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inter_regional_teleconsultation_goes_the_whole_way() {
    let f = Three::start(medgate::model::time::system_clock()).await;

    // Missing the discharge summary: Moscow's rule refuses, and St Petersburg says so now.
    let (s, v) = f.refer(&[], &[]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let issue = &v["issue"][0];
    assert_eq!(
        issue["details"]["coding"][0]["code"], "MISSING_DOCUMENTS",
        "{v}"
    );
    let text = issue["details"]["text"].as_str().unwrap();
    assert!(
        text.contains("region 77") && text.contains("discharge summary (kind 4)"),
        "{text}"
    );
    assert_eq!(
        issue["expression"][0], "ServiceRequest.supportingInfo",
        "{v}"
    );

    let summary = f.document(&f.spb, SPB_CLINIC, DOCTOR_TOKEN, 1).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let (s, v) = f.refer(&[&summary], &[("traceparent", &parent)]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // The same referral, under the same id, in all three regions.
    let at_spb = f.task(&f.spb, DOCTOR_TOKEN, &id).await;
    assert_eq!(at_spb["businessStatus"]["text"], "requested", "{at_spb}");
    let at_msk = f.task(&f.msk.t, CENTRE_TOKEN, &id).await;
    assert_eq!(
        at_msk["requester"]["reference"],
        format!("Organization/{SPB_CLINIC}")
    );
    assert_eq!(at_msk["status"], "requested");
    let (s, sr) = f
        .call(
            &f.msk.t,
            reqwest::Method::GET,
            CENTRE_TOKEN,
            &format!("/fhir/ServiceRequest/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sr}");
    assert_eq!(
        sr["supportingInfo"][0]["reference"],
        format!("DocumentReference/{summary}")
    );

    // Moscow accepts with the video link; St Petersburg sees it, through region 50.
    let mut accept = task_move("accepted");
    accept["input"] =
        json!([{"type": {"text": "video-visit"}, "valueUrl": "https://video.example/room/42"}]);
    let (s, v) = f.answer(&id, &accept).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let at_spb = f.until(&f.spb, DOCTOR_TOKEN, &id, "accepted").await;
    let video = at_spb["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["text"] == "video-visit")
        .unwrap();
    assert_eq!(video["valueUrl"], "https://video.example/room/42");
    let by: Vec<&str> = at_spb["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["extension"].as_array())
        .filter_map(|parts| parts.iter().find(|p| p["url"] == "by"))
        .filter_map(|p| p["valueString"].as_str())
        .collect();
    assert_eq!(
        by,
        ["doctor", "mo"],
        "each move recorded as who made it here"
    );

    // St Petersburg finds Moscow's referral slots and books one.
    let slot = f.first_slot(&id).await;
    let (s, appointment) = f.book(&id, &slot).await;
    assert_eq!(s, StatusCode::CREATED, "{appointment}");
    assert_eq!(appointment["resourceType"], "Appointment");
    assert_eq!(appointment["status"], "booked");
    let booked = f.task(&f.spb, DOCTOR_TOKEN, &id).await;
    assert_eq!(
        booked["businessStatus"]["coding"][0]["code"], "booked",
        "{booked}"
    );
    f.until(&f.msk.t, CENTRE_TOKEN, &id, "booked").await;
    // One booking per referral, wherever it is asked for.
    let (s, again) = f.book(&id, &slot).await;
    assert_eq!(s, StatusCode::CONFLICT, "{again}");

    // Moscow completes with its conclusion, a document registered through its gateway; the
    // document itself arrives at the referring clinic.
    let conclusion = f.document(&f.msk.t, CLINIC_ORG, CENTRE_TOKEN, 7).await;
    let mut complete = task_move("completed");
    complete["output"] = json!([{"type": {"text": "conclusion"}, "valueReference": {"reference": format!("DocumentReference/{conclusion}")}}]);
    let (s, v) = f.answer(&id, &complete).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let done = f.until(&f.spb, DOCTOR_TOKEN, &id, "completed").await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["valueReference"]["reference"],
        "#conclusion"
    );
    let doc = &done["contained"][0];
    assert_eq!(doc["identifier"][0]["value"], conclusion);
    let content = doc["content"][0]["attachment"]["data"].as_str().unwrap();
    use base64::Engine;
    let xml = base64::engine::general_purpose::STANDARD
        .decode(content)
        .unwrap();
    assert_eq!(
        String::from_utf8(xml).unwrap(),
        cda(7),
        "the conclusion as registered"
    );
    // What the gateways emitted to each other is FHIR R4 too: the forwarded ServiceRequest
    // and every Task telling a move (the completion carries the conclusion), as sent, and
    // the samples in adapters/peer-gateway.
    let mut emitted = vec![done.clone(), at_msk.clone(), sr.clone()];
    for (t, operation) in [
        (&f.spb, "peer.forwardReferral"),
        (&f.mo, "peer.forwardReferral"),
        (&f.msk.t, "peer.updateReferral"),
        (&f.mo, "peer.updateReferral"),
    ] {
        t.gw.state.txlog.flush().await;
        let sent =
            t.gw.store
                .list_transactions(
                    &medgate::store::transactions::TransactionFilter {
                        operation: Some(operation.into()),
                        ..Default::default()
                    },
                    100,
                )
                .await
                .unwrap();
        assert!(!sent.is_empty(), "{operation}");
        for r in sent {
            emitted.push(serde_json::from_slice(&r.request_body.unwrap()).unwrap());
        }
    }
    for sample in ["forwarded-service-request", "peer-task"] {
        let path = format!(
            "{}/adapters/peer-gateway/samples/{sample}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        emitted.push(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap());
    }
    assert!(emitted
        .iter()
        .any(|v| v["contained"][0]["id"] == "conclusion"));
    crate::schedules::validate_fhir(&emitted);

    // One trace across the three gateways.
    for (name, t) in [("spb", &f.spb), ("mo", &f.mo), ("msk", &f.msk.t)] {
        let records = f.traced(t, trace).await;
        assert!(
            records.iter().any(|r| r["direction"] == "inbound"),
            "{name} recorded the trace: {records:?}"
        );
    }
    // ... and exported as one trace by all three to the collector: Moscow region's request
    // continues region 50's call, which continues St Petersburg's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let spans = f.collector.of(trace);
        let services: std::collections::BTreeSet<&str> =
            spans.iter().map(|s| s.service.as_str()).collect();
        let forwards: Vec<&Exported> = spans
            .iter()
            .filter(|s| s.name == "peer.forwardReferral")
            .collect();
        let chained = spans.iter().any(|server| {
            server.service.contains("77")
                && forwards
                    .iter()
                    .any(|c| c.service.contains("50") && c.span == server.parent)
        }) && spans.iter().any(|server| {
            server.service.contains("50")
                && forwards
                    .iter()
                    .any(|c| c.service.contains("78") && c.span == server.parent)
        });
        if services.len() == 3 && chained {
            assert!(
                spans.iter().any(|s| s.parent == "00f067aa0ba902b7"),
                "the client's span is the root's parent"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trace never reached the collector from all three: {services:?} {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What a peer did is recorded as that peer: region 50's gateway in Moscow's log and
    // trail, with the referral it created and the booking it made.
    let msk_in = f.traced(&f.msk.t, trace).await;
    assert!(
        msk_in
            .iter()
            .any(|r| r["direction"] == "inbound" && r["client_id"] == "mo"),
        "{msk_in:?}"
    );
    let trail = f
        .msk
        .t
        .gw
        .store
        .audit_events(
            &medgate::store::audit::AuditQuery {
                client_id: Some("mo".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    let entities: std::collections::BTreeSet<String> =
        trail.iter().map(|e| format!("{:?}", e.entity)).collect();
    assert!(
        entities.contains("Referral") && entities.contains("Appointment"),
        "{entities:?}"
    );
    let spb_out = f.traced(&f.spb, trace).await;
    assert!(
        spb_out
            .iter()
            .any(|r| r["direction"] == "outbound" && r["operation"] == "peer.forwardReferral"),
        "{spb_out:?}"
    );

    // A peer acts only for organizations of its regions: St Petersburg's gateway may not
    // send region 50's referral, nor answer for Moscow's clinic.
    let spb_peer = f.pki.http(Some("spb"));
    let body = json!({
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:medgate:referral", "value": uuid::Uuid::now_v7().to_string()}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "https://medgate.example/fhir/CodeSystem/referral-profile", "code": "cardiology"}]},
        "contained": [
            {"resourceType": "Patient", "id": "p", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": PATIENT_SNILS}]},
            {"resourceType": "PractitionerRole", "id": "r",
             "practitioner": {"identifier": {"system": "urn:oid:1.2.643.100.3", "value": DOCTOR_SNILS}},
             "organization": {"reference": format!("Organization/{MO_CLINIC}")}},
        ],
        "subject": {"reference": "#p"},
        "requester": {"reference": "#r"},
        "performer": [{"reference": format!("Organization/{CLINIC_ORG}")}],
        "occurrencePeriod": {"end": "2099-01-01T00:00:00Z"},
        "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I21.4"}]}],
    });
    let res = spb_peer
        .post(format!(
            "{}/fhir/ServiceRequest",
            f.mo.gw.peer_url().unwrap()
        ))
        .header("content-type", "application/fhir+json")
        .header("x-medgate-hops", "1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v["issue"][0]["details"]["coding"][0]["code"], "NOT_YOUR_ORGANIZATION",
        "{v}"
    );
    let res = spb_peer
        .put(format!("{}/fhir/Task/{id}", f.mo.gw.peer_url().unwrap()))
        .header("content-type", "application/fhir+json")
        .json(&json!({"resourceType": "Task", "status": "cancelled", "intent": "order",
            "businessStatus": {"coding": [{"system": "https://medgate.example/fhir/CodeSystem/referral-status", "code": "accepted"}]}}))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            res.status(),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::CONFLICT
        ),
        "{}",
        res.status()
    );
    // A request that went around too many gateways is refused.
    let res = spb_peer
        .post(format!(
            "{}/fhir/ServiceRequest",
            f.mo.gw.peer_url().unwrap()
        ))
        .header("content-type", "application/fhir+json")
        .header("x-medgate-hops", "3")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 508, "{}", res.text().await.unwrap());
    f.stop().await;
}

/// The duty path across regions: St Petersburg's doctor sees the Moscow clinic's duty
/// schedule (its free referral slots, answered by Moscow's gateway) and refers the patient
/// into one of its slots in one request: Moscow accepts on the schedule's standing and
/// books, and St Petersburg's copy follows. A slot that is not on the schedule is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_slot_in_another_region_is_booked_in_one_request() {
    let f = Three::start(medgate::model::time::system_clock()).await;
    let summary = f.document(&f.spb, SPB_CLINIC, DOCTOR_TOKEN, 4).await;
    let (s, schedule) = f
        .call(
            &f.spb,
            reqwest::Method::GET,
            DOCTOR_TOKEN,
            &format!("/fhir/Appointment/$find?organization={CLINIC_ORG}&channel=referral&_count=3"),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{schedule}");
    let slot = schedule["entry"][0]["resource"]["slot"][0]["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("no duty slot: {schedule}"))
        .to_string();
    let duty = |slot: &str| json!([{"url": "https://medgate.example/fhir/StructureDefinition/referral-duty-slot", "valueReference": {"reference": slot}}]);

    // Not a slot of the schedule: refused by Moscow, said by St Petersburg.
    let (s, v) = f
        .refer_with(&[&summary], |b| {
            b["extension"] = duty("Slot/emias.no-such-slot")
        })
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["issue"][0]["details"]["coding"][0]["code"], "DUTY_SLOT_UNAVAILABLE",
        "{v}"
    );

    let (s, v) = f
        .refer_with(&[&summary], |b| b["extension"] = duty(&slot))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let at_msk = f.until(&f.msk.t, CENTRE_TOKEN, &id, "booked").await;
    let appointment = at_msk["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["text"] == "appointment")
        .unwrap()["valueReference"]["reference"]
        .clone();
    let at_spb = f.until(&f.spb, DOCTOR_TOKEN, &id, "booked").await;
    let statuses: Vec<&str> = at_spb["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["extension"].as_array())
        .filter_map(|parts| parts.iter().find(|p| p["url"] == "status"))
        .filter_map(|p| p["valueCode"].as_str())
        .collect();
    assert_eq!(statuses, ["requested", "accepted", "booked"]);
    let same = at_spb["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"]["text"] == "appointment")
        .unwrap()["valueReference"]["reference"]
        .clone();
    assert_eq!(same, appointment, "the visit booked in Moscow");
    // The slot is taken now: the schedule no longer offers it.
    let (_, again) = f
        .call(
            &f.spb,
            reqwest::Method::GET,
            DOCTOR_TOKEN,
            &format!(
                "/fhir/Appointment/$find?organization={CLINIC_ORG}&channel=referral&_count=100"
            ),
            None,
            &[],
        )
        .await;
    assert!(!again.to_string().contains(&slot), "{again}");
    f.stop().await;
}

/// A gateway that is down gets the referral and its moves later, in order, and nothing is
/// lost: the doctor sees "waiting for region 77" while St Petersburg's peer is down, and
/// Moscow's acceptance reaches St Petersburg once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outage_mid_flow_loses_nothing() {
    let f = Three::start(medgate::model::time::system_clock()).await;
    let summary = f.document(&f.spb, SPB_CLINIC, DOCTOR_TOKEN, 2).await;

    // Region 50's gateway (St Petersburg's only way to Moscow) is down.
    f.proxies[1].cut();
    let (s, v) = f.refer(&[&summary], &[]).await;
    assert_eq!(s, StatusCode::CREATED, "waiting is not an error: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    let waiting = f.task(&f.spb, DOCTOR_TOKEN, &id).await;
    assert_eq!(
        waiting["businessStatus"]["text"], "waiting for region 77",
        "{waiting}"
    );
    // It comes back; the referral goes on to Moscow.
    f.proxies[1].mend();
    f.until(&f.msk.t, CENTRE_TOKEN, &id, "requested").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while f.task(&f.spb, DOCTOR_TOKEN, &id).await["businessStatus"]["text"] != "requested" {
        assert!(
            Instant::now() < deadline,
            "St Petersburg never saw it forwarded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // St Petersburg goes down while Moscow accepts: region 50 keeps the move until it is back.
    f.proxies[0].cut();
    let (s, v) = f.answer(&id, &task_move("accepted")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    f.until(&f.mo, ADMIN_TOKEN, &id, "accepted").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let items = f.mo.gw.store.outbox_for(&id).await.unwrap();
        if items
            .iter()
            .any(|i| i.destination == "peer" && i.attempts >= 1 && i.status == "pending")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "region 50 never tried St Petersburg: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        f.task(&f.spb, DOCTOR_TOKEN, &id).await["businessStatus"]["coding"][0]["code"],
        "requested"
    );
    f.proxies[0].mend();
    f.until(&f.spb, DOCTOR_TOKEN, &id, "accepted").await;
    // Every item for a peer is delivered (its sender records that just after the peer
    // answered); none dead.
    let deadline = Instant::now() + Duration::from_secs(90);
    for t in [&f.spb, &f.mo, &f.msk.t] {
        loop {
            let items = t.gw.store.outbox_for(&id).await.unwrap();
            let peer_items = items.iter().filter(|i| i.destination == "peer");
            assert!(peer_items.clone().all(|i| i.status != "dead"), "{items:?}");
            if peer_items.clone().all(|i| i.status == "done") {
                break;
            }
            assert!(Instant::now() < deadline, "{items:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    f.stop().await;
}

/// A referral whose validity ended in the target's region expires there, the expiry
/// reaches the referring region, and it cannot be booked from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_referral_cannot_be_booked_across_regions() {
    let clock = ManualClock::new();
    let f = Three::start(clock.clone()).await;
    let summary = f.document(&f.spb, SPB_CLINIC, DOCTOR_TOKEN, 3).await;
    let (s, v) = f.refer(&[&summary], &[]).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = f.answer(&id, &task_move("accepted")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    f.until(&f.spb, DOCTOR_TOKEN, &id, "accepted").await;
    // A slot St Petersburg could have booked while it was valid.
    let slot = f.first_slot(&id).await;

    // Thirty-one days later in Moscow: its upkeep expires the referral (the copies in the
    // other regions follow Moscow's, they do not expire on their own).
    clock.advance(Duration::from_secs(31 * 86_400));
    assert_eq!(f.spb.step("referral-upkeep").await, 0);
    assert!(f.msk.t.step("referral-upkeep").await >= 1);
    f.until(&f.spb, DOCTOR_TOKEN, &id, "expired").await;
    let (s, v) = f.book(&id, &slot).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    f.stop().await;
}
