//! The built-in demo: an embedded SQLite gateway with a documented demo client and a seeded
//! region, so a newcomer can try every interface without any set-up.

use std::path::Path;

use crate::config::{
    BodyPolicy, ClientSettings, KeyRole, KeySettings, RemdSettings, RoutePolicy, Secret, Settings,
};
use crate::model::organization::Organization;
use crate::model::Oid;
use crate::store::{Store, StoreError};

/// The demo client's bearer token (documented in the README; demo only).
pub const DEMO_TOKEN: &str = "demo-token";

/// Settings of the demo gateway: SQLite in `data_dir`, all bodies logged, one admin client.
pub fn settings(port: u16, data_dir: &Path) -> Settings {
    let mut s = Settings {
        instance: "medgate-demo".into(),
        ..Settings::default()
    };
    s.http.bind = format!("127.0.0.1:{port}");
    s.database.url = format!("sqlite://{}", data_dir.join("medgate-demo.db").display());
    s.transaction_log.default_bodies = BodyPolicy::Full;
    s.transaction_log.routes = vec![
        RoutePolicy {
            prefix: "/api/admin".into(),
            bodies: BodyPolicy::MetadataOnly,
            retention_days: Some(7),
        },
        // The dashboard's pages show appeals' texts: their bodies are not kept.
        RoutePolicy {
            prefix: "/admin".into(),
            bodies: BodyPolicy::MetadataOnly,
            retention_days: Some(7),
        },
    ];
    s.referrals.rules = referral_rules();
    s.appeals.routes = appeal_routes();
    // The demo's operator logs in to the dashboard as demo / demo.
    if let Ok(hash) = crate::services::sessions::hash_password(DEMO_OPERATOR_PASSWORD) {
        s.dashboard.operators = vec![crate::config::OperatorSettings {
            login: DEMO_OPERATOR.into(),
            name: "Demo operator".into(),
            password_hash: hash,
            scopes: vec!["admin".into()],
            organizations: Vec::new(),
        }];
    }
    s.clients = vec![ClientSettings {
        id: "demo".into(),
        name: "Demo client (all scopes)".into(),
        token_sha256: Secret::new(hex::encode(crate::auth::token_hash(DEMO_TOKEN))),
        organizations: Vec::new(),
        scopes: vec!["admin".into()],
        channels: Vec::new(),
        rate: None,
        signing_certificate: None,
        certificate: None,
    }];
    s
}

/// The user key the demo's reference-book simulator issues to the demo gateway.
pub const DEMO_NSI_KEY: &str = "demo-nsi-user-key";

/// Points the demo gateway at a reference-book simulator: the four federal books, every
/// version kept, document kinds of versions 5.12 and 5.13 accepted by the registry.
pub fn with_reference_books(mut s: Settings, nsi_url: &str) -> Settings {
    use crate::config::{NsiBookSettings, NsiSettings};
    use crate::model::nsi::{
        BOOK_DOCUMENT_KINDS, BOOK_ICD10, BOOK_ORGANIZATIONS, BOOK_SPECIALTIES,
    };
    let book = |oid: &str, accepts: Option<&[&str]>| NsiBookSettings {
        oid: oid.into(),
        name: None,
        registry_accepts: accepts.map(|a| a.iter().map(|v| v.to_string()).collect()),
        code_column: None,
        display_column: None,
    };
    s.nsi = Some(NsiSettings {
        url: nsi_url.to_string(),
        user_key: Secret::new(DEMO_NSI_KEY),
        timeout_secs: 30,
        page_size: 500,
        attempts: 3,
        books: vec![
            book(BOOK_SPECIALTIES, None),
            book(BOOK_DOCUMENT_KINDS, Some(&["5.12", "5.13"])),
            book(BOOK_ICD10, None),
            book(BOOK_ORGANIZATIONS, None),
        ],
    });
    s
}

/// The demo dashboard's operator login and password (demo only).
pub const DEMO_OPERATOR: &str = "demo";
/// The demo operator's password.
pub const DEMO_OPERATOR_PASSWORD: &str = "demo";

/// The organization whose keys the demo holds.
pub const DEMO_ORG: &str = "1.2.643.5.1.13.13.12.2.77.7001";
/// The demo doctor's (fake, checksum-valid) SNILS.
pub const DEMO_DOCTOR_SNILS: &str = "12345678964";

/// Points the demo gateway at a registry simulator and at the demo keys.
pub fn with_registry(mut s: Settings, registry_url: &str, keys: Vec<KeySettings>) -> Settings {
    let base = format!("http://{}", s.http.bind);
    s.remd = Some(RemdSettings {
        url: registry_url.to_string(),
        client_entity_id: "medgate-demo".into(),
        callback_url: format!("{base}/soap/remd/callback"),
        file_url: format!("{base}/soap/remd/provider"),
        timeout_secs: 5,
        retry_schedule_secs: vec![2, 10, 30, 120],
        callback_timeout_secs: 30,
        workers: 4,
        max_document_bytes: 5 * 1024 * 1024,
        deliver: true,
        message_key: None,
        callback_certificates: Vec::new(),
    });
    s.signing.keys = keys;
    s
}

/// Creates (once) demo signing keys in `dir`: ECDSA P-256 with self-signed certificates for
/// [`DEMO_ORG`] and the demo doctor. Demo only; production keys come from the operator.
pub fn ensure_keys(dir: &Path) -> Result<Vec<KeySettings>, String> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let make = |name: &str, subject: &[(Nid, &str)]| -> Result<(String, String), String> {
        let key_path = dir.join(format!("{name}.key.pem"));
        let cert_path = dir.join(format!("{name}.cert.pem"));
        if !key_path.exists() || !cert_path.exists() {
            let e = |e: openssl::error::ErrorStack| e.to_string();
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
            let key = PKey::from_ec_key(EcKey::generate(&group).map_err(e)?).map_err(e)?;
            let mut n = X509NameBuilder::new().map_err(e)?;
            for (nid, v) in subject {
                n.append_entry_by_nid(*nid, v).map_err(e)?;
            }
            let n = n.build();
            let mut b = X509Builder::new().map_err(e)?;
            b.set_version(2).map_err(e)?;
            b.set_subject_name(&n).map_err(e)?;
            b.set_issuer_name(&n).map_err(e)?;
            b.set_pubkey(&key).map_err(e)?;
            let serial = openssl::bn::BigNum::from_u32(rand_serial())
                .map_err(e)?
                .to_asn1_integer()
                .map_err(e)?;
            b.set_serial_number(&serial).map_err(e)?;
            let not_before = openssl::asn1::Asn1Time::days_from_now(0).map_err(e)?;
            b.set_not_before(&not_before).map_err(e)?;
            let not_after = openssl::asn1::Asn1Time::days_from_now(365).map_err(e)?;
            b.set_not_after(&not_after).map_err(e)?;
            b.sign(&key, openssl::hash::MessageDigest::sha256())
                .map_err(e)?;
            std::fs::write(&key_path, key.private_key_to_pem_pkcs8().map_err(e)?)
                .map_err(|e| e.to_string())?;
            std::fs::write(&cert_path, b.build().to_pem().map_err(e)?)
                .map_err(|e| e.to_string())?;
        }
        Ok((
            key_path.display().to_string(),
            cert_path.display().to_string(),
        ))
    };
    let (org_key, org_cert) = make(
        "demo-org",
        &[
            (Nid::COUNTRYNAME, "RU"),
            (Nid::ORGANIZATIONNAME, "City Polyclinic No. 1 (demo)"),
            (Nid::COMMONNAME, "City Polyclinic No. 1 (demo)"),
        ],
    )?;
    let (doc_key, doc_cert) = make(
        "demo-doctor",
        &[
            (Nid::COUNTRYNAME, "RU"),
            (Nid::COMMONNAME, "Synthetic Doctor (demo)"),
            (Nid::from_raw(1006), DEMO_DOCTOR_SNILS),
        ],
    )?;
    Ok(vec![
        KeySettings {
            owner: DEMO_ORG.into(),
            role: KeyRole::Organization,
            certificate: Some(org_cert),
            private_key: Some(org_key),
            pkcs12: None,
            passphrase: None,
            remote: None,
        },
        KeySettings {
            owner: DEMO_DOCTOR_SNILS.into(),
            role: KeyRole::Doctor,
            certificate: Some(doc_cert),
            private_key: Some(doc_key),
            pkcs12: None,
            passphrase: None,
            remote: None,
        },
    ])
}

fn rand_serial() -> u32 {
    (uuid::Uuid::new_v4().as_u128() as u32) & 0x7fff_ffff
}

/// An organization OID of the demo region (well-formed by construction).
fn demo_oid(raw: &str) -> Oid {
    Oid::parse_organization(raw).expect("the demo region's OIDs are FRMO OIDs")
}

/// The demo region's organizations.
pub fn organizations() -> Vec<Organization> {
    let districts = ["Central", "North", "South", "East"];
    (1..=12)
        .map(|i| Organization {
            oid: demo_oid(&format!("1.2.643.5.1.13.13.12.2.77.{}", 7000 + i)),
            name: format!("City Polyclinic No. {i} of the Demo Region Health Department"),
            short_name: format!("City Polyclinic No. {i}"),
            address: format!("{} Demo Street, Demo City", 10 + i),
            district: districts[(i as usize - 1) % districts.len()].into(),
            source: "demo".into(),
            active: true,
        })
        .collect()
}

/// The federal centres the demo region refers tele-consultations to.
pub const CARDIOLOGY_CENTRE: &str = "1.2.643.5.1.13.13.12.1.77.9001";
/// The federal obstetrics centre.
pub const OBSTETRICS_CENTRE: &str = "1.2.643.5.1.13.13.12.1.77.9002";

/// The federal centres as organizations of the directory.
pub fn federal_centres() -> Vec<Organization> {
    [
        (CARDIOLOGY_CENTRE, "Federal Cardiology Centre (demo)"),
        (
            OBSTETRICS_CENTRE,
            "Federal Obstetrics and Perinatology Centre (demo)",
        ),
    ]
    .into_iter()
    .map(|(oid, name)| Organization {
        oid: demo_oid(oid),
        name: name.into(),
        short_name: name.trim_end_matches(" (demo)").into(),
        address: "1 Federal Lane, Capital".into(),
        district: "Federal".into(),
        source: "demo".into(),
        active: true,
    })
    .collect()
}

/// The centres' acceptance rules, as the federal tele-consultation programme publishes
/// them (document kinds are demo codes of reference book 1522).
pub fn referral_rules() -> Vec<crate::config::AcceptanceRuleSettings> {
    use crate::config::{AcceptanceRuleSettings, RequiredDocumentSettings};
    let doc = |kind: &str, name: &str, when_available: bool| RequiredDocumentSettings {
        kind: kind.into(),
        name: name.into(),
        when_available,
    };
    vec![
        AcceptanceRuleSettings {
            org: CARDIOLOGY_CENTRE.into(),
            name: "diseases of the circulatory system".into(),
            kinds: vec!["teleconsultation".into(), "consultation".into()],
            diagnoses: vec!["I00-I99".into()],
            profiles: Vec::new(),
            answer_within_hours: None,
            required_documents: vec![
                doc("4", "discharge summary", false),
                doc("31", "ECG", false),
                doc("32", "echocardiography report", false),
                doc("33", "CT or MRI report", true),
            ],
        },
        AcceptanceRuleSettings {
            org: OBSTETRICS_CENTRE.into(),
            name: "pregnancy, childbirth and the puerperium".into(),
            kinds: vec!["teleconsultation".into(), "consultation".into()],
            diagnoses: vec!["O00-O9A".into()],
            profiles: Vec::new(),
            answer_within_hours: None,
            required_documents: vec![
                doc("4", "discharge summary", false),
                doc("34", "ultrasound report", false),
            ],
        },
    ]
}

/// Each district's appeals go to its first polyclinic.
pub fn appeal_routes() -> Vec<crate::config::AppealRouteSettings> {
    let orgs = organizations();
    ["Central", "North", "South", "East"]
        .iter()
        .filter_map(|d| {
            let org = orgs.iter().find(|o| o.district == *d)?;
            Some(crate::config::AppealRouteSettings {
                district: (*d).into(),
                topic: None,
                org: org.oid.to_string(),
            })
        })
        .collect()
}

/// Books appointments in six polyclinics of all four districts through every citizen
/// channel and submits a few documents, as the demo client over the gateway's own API, so
/// its traffic, transaction log and figures show a morning's work; what was booked and
/// submitted.
async fn activity(base: &str) -> Result<(usize, usize), String> {
    use serde_json::{json, Value};
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            http.post(format!("{base}{path}"))
                .bearer_auth(DEMO_TOKEN)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().is_success())
                .map_err(|e| e.to_string())
        }
    };
    let channels = ["internet", "phone", "registry", "kiosk", "doctor"];
    // Tomorrow's slots onwards: today's may be past already.
    let from = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .to_string();
    let mut booked = 0;
    for (i, org) in organizations().iter().take(6).enumerate() {
        let slots: Value = http
            .get(format!(
                "{base}/fhir/Slot?organization={}&status=free&_count=60&start=ge{from}",
                org.oid
            ))
            .bearer_auth(DEMO_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        // Each slot with the channels it accepts; a booking goes through one of them.
        let found: Vec<(String, Vec<String>)> = slots["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|x| {
                        let id = x["resource"]["id"].as_str()?.to_string();
                        let accepts = x["resource"]["extension"]
                            .as_array()
                            .map(|ext| {
                                ext.iter()
                                    .filter(|e| {
                                        e["url"]
                                            .as_str()
                                            .is_some_and(|u| u.ends_with("/booking-channel"))
                                    })
                                    .filter_map(|e| e["valueCode"].as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        Some((id, accepts))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut used = vec![false; found.len()];
        for j in 0..4 {
            let n = i * 4 + j;
            let wanted = channels[n % channels.len()];
            // A slot open to the channel wanted, else any slot left through its own.
            let pick = (0..found.len())
                .find(|&k| !used[k] && found[k].1.iter().any(|c| c == wanted))
                .or_else(|| (0..found.len()).find(|&k| !used[k]));
            let Some(k) = pick else { break };
            used[k] = true;
            let (slot, accepts) = &found[k];
            let channel = if accepts.iter().any(|c| c == wanted) {
                wanted
            } else {
                accepts.first().map_or(wanted, String::as_str)
            };
            // Synthetic patients: valid-format, fake OMS policy numbers.
            let params = json!({"resourceType": "Parameters", "parameter": [
                {"name": "appointment", "resource": {"resourceType": "Appointment", "status": "proposed",
                    "slot": [{"reference": format!("Slot/{slot}")}], "participant": [{"status": "needs-action"}]}},
                {"name": "patient", "resource": {"resourceType": "Patient", "birthDate": "1980-05-17",
                    "identifier": [{"system": "urn:oid:1.2.643.5.1.13.2.1.1.635", "value": format!("7700{:012}", 900 + n)}]}},
                {"name": "channel", "valueCode": channel},
            ]});
            if post("/fhir/Appointment/$book".into(), params).await? {
                booked += 1;
            }
        }
    }
    let sample: Value = serde_json::from_str(include_str!(
        "../adapters/remd/samples/document-reference.json"
    ))
    .map_err(|e| e.to_string())?;
    let mut documents = 0;
    for _ in 0..3 {
        let mut doc = sample.clone();
        doc["masterIdentifier"]["value"] = json!(format!("urn:uuid:{}", uuid::Uuid::new_v4()));
        if post("/fhir/DocumentReference".into(), doc).await? {
            documents += 1;
        }
    }
    Ok((booked, documents))
}

/// Seeds synthetic appeals across the districts (some answered, some overdue), so the
/// per-district table has rows on first start; a second start adds nothing. Returns how
/// many were new.
pub async fn seed_appeals(appeals: &crate::services::appeals::Appeals) -> Result<usize, String> {
    use crate::model::appeal::{AppealChannel, AppealKind, AppealTopic};
    use crate::services::appeals::NewAppeal;
    let caller = crate::services::Caller {
        client_id: "demo",
        operator: true,
        organizations: &[],
        regions: &[],
    };
    let districts = ["Central", "North", "South", "East"];
    let now = crate::model::time::now_ms();
    let mut new = 0;
    for i in 0..64u32 {
        let d = (i % 4) as usize;
        let chat = i % 3 == 0;
        let (channel, kind, ago_ms) = if chat {
            (
                AppealChannel::DistrictChat,
                AppealKind::Chat,
                i64::from(i % 5 + 1) * 3_600_000,
            )
        } else if i % 3 == 1 {
            (
                AppealChannel::PortalComplaint,
                AppealKind::Complaint,
                i64::from(i % 25 + 1) * 86_400_000,
            )
        } else {
            (
                AppealChannel::Phone,
                AppealKind::General,
                i64::from(i % 40 + 1) * 86_400_000,
            )
        };
        let topic = AppealTopic::ALL[(i as usize * 7) % AppealTopic::ALL.len()];
        let (appeal, created) = appeals
            .submit(
                caller,
                NewAppeal {
                    channel,
                    external_id: format!("demo-{i}"),
                    kind: Some(kind),
                    district: districts[d].into(),
                    org: None,
                    topic,
                    text: format!("Synthetic demo appeal {i} about {topic}."),
                    contact: format!("demo-citizen-{i}@example.test"),
                    snils: None,
                    policy: None,
                    received_at: Some(now - ago_ms),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        // Districts answer at different rates: the table has a spread to show.
        if created && (i as usize + d) % (d + 2) != 0 {
            appeals
                .answer(
                    caller,
                    &appeal.id,
                    "Thank you: the clinic has dealt with it (demo).",
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        new += usize::from(created);
    }
    Ok(new)
}

/// Seeds the demo data (idempotent).
pub async fn seed(store: &Store) -> Result<(), StoreError> {
    let mut orgs = organizations();
    orgs.extend(federal_centres());
    store.upsert_organizations(&orgs).await
}

/// The region of the demo's second gateway (its peer), and its clinic.
pub const SECOND_REGION: &str = "78";
/// The second region's clinic, whose doctors refer patients to the federal centres.
pub const SECOND_REGION_CLINIC: &str = "1.2.643.5.1.13.13.12.2.78.8001";

/// A free loopback port (bound, read, released: demo only).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The demo's second region: one clinic, no schedules of its own; its doctors send
/// referrals to the federal centres through the first region's gateway.
async fn second_region(
    port: u16,
    data_dir: &Path,
    registry_url: &str,
    keys: &[KeySettings],
    federation: crate::config::FederationSettings,
) -> Result<crate::app::Gateway, String> {
    let mut s = settings(port, data_dir);
    s.instance = format!("medgate-demo-{SECOND_REGION}");
    s.database.url = format!(
        "sqlite://{}",
        data_dir
            .join(format!("medgate-demo-{SECOND_REGION}.db"))
            .display()
    );
    s.referrals.rules = Vec::new();
    // The clinic signs with the demo keys: a demo shortcut, not how keys are issued.
    let keys = keys
        .iter()
        .map(|k| match k.role {
            KeyRole::Organization => KeySettings {
                owner: SECOND_REGION_CLINIC.into(),
                ..k.clone()
            },
            _ => k.clone(),
        })
        .collect();
    let mut s = with_registry(s, registry_url, keys);
    s.federation = Some(federation);
    let store = Store::connect(&s.database)
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    store
        .upsert_organizations(&[Organization {
            oid: demo_oid(SECOND_REGION_CLINIC),
            name: "City Polyclinic No. 8 of the Second Demo Region".into(),
            short_name: "City Polyclinic No. 8 (region 78)".into(),
            address: "8 Neva Embankment, Second City".into(),
            district: "Admiralteysky".into(),
            source: "demo".into(),
            active: true,
        }])
        .await
        .map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind(&s.http.bind)
        .map_err(|e| format!("cannot listen on {}: {e}", s.http.bind))?;
    crate::app::Gateway::start_on(s, store, listener, crate::model::time::system_clock())
        .await
        .map_err(|e| e.to_string())
}

/// The running demo: the gateways and the simulators they talk to.
pub struct Demo {
    gateway: crate::app::Gateway,
    peer: crate::app::Gateway,
    federation_ca: String,
    registry: crate::sim::remd::RemdSim,
    mis: crate::sim::emias::EmiasSim,
    fhir_mis: crate::sim::fhir_mis::FhirMisSim,
    nsi: crate::sim::nsi::NsiSim,
}

impl Demo {
    /// Starts the simulators and the gateway on `port`, seeds the region and synchronizes
    /// the city MIS's schedules in the background; a second region's gateway on
    /// `second_port` is its peer (each has a mutual-TLS listener for the other, with
    /// certificates made in `data_dir/federation`).
    pub async fn start(port: u16, second_port: u16, data_dir: &Path) -> Result<Demo, String> {
        let settings = settings(port, data_dir);
        crate::telemetry::init(&settings.log);
        let registry = crate::sim::remd::RemdSim::start(crate::sim::remd::RemdSimConfig {
            gateway_token: DEMO_TOKEN.into(),
            check: Some(std::sync::Arc::new(crate::sim::remd::CryptoCheck)),
            ..Default::default()
        })
        .map_err(|e| format!("registry simulator: {e}"))?;
        let today = chrono::Utc::now().date_naive();
        let mis = crate::sim::emias::EmiasSim::start(crate::sim::emias::Region::demo(today))
            .map_err(|e| format!("city MIS simulator: {e}"))?;
        let fhir_region = crate::sim::fhir_mis::FhirRegion::demo(today);
        let fhir_clinics = fhir_region.clinics.clone();
        let fhir_mis = crate::sim::fhir_mis::FhirMisSim::start(fhir_region)
            .map_err(|e| format!("FHIR clinic MIS simulator: {e}"))?;
        let nsi = crate::sim::nsi::NsiSim::start(DEMO_NSI_KEY)
            .map_err(|e| format!("reference-book simulator: {e}"))?;
        let keys = ensure_keys(data_dir)?;
        let members = [("msk", "77"), ("spb", SECOND_REGION)]
            .map(|(name, region)| {
                free_port().map(|p| crate::sim::federation::Member {
                    name: name.into(),
                    region: region.into(),
                    peer_bind: format!("127.0.0.1:{p}"),
                })
            })
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let pki =
            crate::sim::federation::Pki::create(&data_dir.join("federation"), &["msk", "spb"])?;
        let peer = second_region(
            second_port,
            data_dir,
            &registry.url,
            &keys,
            pki.settings(&members[1], &members),
        )
        .await?;
        let mut settings =
            with_reference_books(with_registry(settings, &registry.url, keys), &nsi.url);
        settings.federation = Some(pki.settings(&members[0], &members));
        settings.emias = Some(crate::config::EmiasSettings {
            url: mis.url.clone(),
            timeout_secs: 30,
            days_ahead: 30,
        });
        settings.fhir_mis = Some(crate::config::EmiasSettings {
            url: fhir_mis.url.clone(),
            timeout_secs: 30,
            days_ahead: 30,
        });
        // Seed before listening, so that a ready demo already has its region.
        let store = Store::connect(&settings.database)
            .await
            .map_err(|e| e.to_string())?;
        store.migrate().await.map_err(|e| e.to_string())?;
        seed(&store).await.map_err(|e| e.to_string())?;
        let fhir_orgs: Vec<Organization> = fhir_clinics
            .iter()
            .enumerate()
            .map(|(i, oid)| Organization {
                oid: demo_oid(oid),
                name: format!("Regional Specialist Centre No. {} (FHIR MIS)", i + 1),
                short_name: format!("Specialist Centre No. {}", i + 1),
                address: format!("{} Clinic Avenue, Demo City", 1 + i),
                district: "Central".into(),
                source: "demo".into(),
                active: true,
            })
            .collect();
        store
            .upsert_organizations(&fhir_orgs)
            .await
            .map_err(|e| e.to_string())?;
        // The appeals too, before listening: a ready demo shows its per-district table.
        let seeding =
            crate::app::appeals_service(&settings, &store, &crate::model::time::system_clock())
                .map_err(|e| e.to_string())?;
        let appeals = seed_appeals(&seeding).await?;
        if appeals > 0 {
            println!("  {appeals} synthetic appeals seeded across the districts");
        }
        let listener = std::net::TcpListener::bind(&settings.http.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", settings.http.bind))?;
        let gateway = crate::app::Gateway::start_on(
            settings,
            store,
            listener,
            crate::model::time::system_clock(),
        )
        .await
        .map_err(|e| e.to_string())?;
        // The reference books once at start (then nightly), so the demo has them at hand.
        let books = gateway.state.reference_books.clone();
        let books_synced = tokio::spawn(async move {
            let report = books.sync_all().await;
            println!(
                "  reference books synchronized from the NSI simulator: {} books, {} rows{}",
                report.books.len(),
                report.rows(),
                if report.failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed: {:?})", report.failed.len(), report.failed)
                }
            );
        });
        let (store, txlog, url, fhir_url) = (
            gateway.store.clone(),
            gateway.state.txlog.clone(),
            mis.url.clone(),
            fhir_mis.url.clone(),
        );
        let (stats, base) = (gateway.job("daily-stats"), gateway.url());
        tokio::spawn(async move {
            let client_log = txlog.clone();
            let client = crate::adapters::emias::EmiasClient::new(
                &url,
                std::time::Duration::from_secs(30),
                txlog,
            );
            let mut slots = 0;
            for org in organizations() {
                match crate::services::schedule_sync::full_sync(
                    &store,
                    &client,
                    &org.oid,
                    today,
                    30,
                    crate::model::time::now_ms(),
                    &|_| {},
                )
                .await
                {
                    Ok(r) => slots += r.slots,
                    Err(e) => {
                        tracing::warn!(org = %org.oid, error = %e, "demo schedule sync failed")
                    }
                }
            }
            let fhir_client = crate::adapters::fhir_mis::FhirMisClient::new(
                &fhir_url,
                std::time::Duration::from_secs(30),
                client_log,
            );
            for org in &fhir_clinics {
                match crate::services::schedule_sync::full_sync(
                    &store,
                    &fhir_client,
                    &demo_oid(org),
                    today,
                    30,
                    crate::model::time::now_ms(),
                    &|_| {},
                )
                .await
                {
                    Ok(r) => slots += r.slots,
                    Err(e) => tracing::warn!(org = %org, error = %e, "demo schedule sync failed"),
                }
            }
            if let Err(e) = store.refresh_schedule_statistics().await {
                tracing::warn!(error = %e, "statistics refresh failed");
            }
            println!("  schedules synchronized from the city MIS and the FHIR clinic MIS simulators: {slots} slots");
            // A morning's traffic, so the dashboard has something to show on first start;
            // then today's figures (nightly after that).
            let _ = books_synced.await;
            match activity(&base).await {
                Ok((booked, documents)) => println!(
                    "  demo traffic: {booked} appointments booked, {documents} documents submitted"
                ),
                Err(e) => tracing::warn!(error = %e, "demo traffic incomplete"),
            }
            if let Some(stats) = stats {
                if let Err(e) = stats.step().await {
                    tracing::warn!(error = %e, "demo figures not counted");
                }
            }
        });
        Ok(Demo {
            gateway,
            peer,
            federation_ca: pki.ca(),
            registry,
            mis,
            fhir_mis,
            nsi,
        })
    }

    /// Tells the newcomer what runs where and what to try.
    pub fn print_welcome(&self) {
        let url = self.gateway.url();
        let t = DEMO_TOKEN;
        println!(
            "medgate demo on {url}\n  demo client token: {t}\n  registry simulator: {}\n  city MIS simulator: {}\n  FHIR clinic MIS simulator: {}\n  reference-book (NSI) simulator: {}/port/rest\n  \
             try: curl -H 'Authorization: Bearer {t}' {url}/fhir/Organization\n  \
             free slots: curl -H 'Authorization: Bearer {t}' '{url}/fhir/Slot?organization={DEMO_ORG}&status=free&_count=5'\n  \
             book one: see README (FHIR $find/$book, or the SOAP hub: WSDL at {url}/soap/hub?wsdl)\n  \
             reference books: curl -H 'Authorization: Bearer {t}' '{url}/fhir/ValueSet/$expand?url=urn:oid:1.2.643.5.1.13.13.11.1005&filter=I21&count=5'\n  \
             submit a document: curl -H 'Authorization: Bearer {t}' -H 'Content-Type: application/fhir+json' --data @adapters/remd/samples/document-reference.json {url}/fhir/DocumentReference\n  \
             second region ({SECOND_REGION}), a peer of this one: {} (same token; peers meet over mutual TLS, CA {})\n  \
             follow a referral across regions: README, \"Referrals across regions\"\n  \
             stop with Ctrl-C",
            self.registry.url,
            self.mis.url,
            self.fhir_mis.url,
            self.nsi.url,
            self.peer.url(),
            self.federation_ca
        );
    }

    /// Serves until stopped.
    pub async fn run(self) -> Result<(), String> {
        let Demo {
            gateway,
            peer,
            registry,
            mis,
            fhir_mis,
            nsi,
            ..
        } = self;
        let result = gateway.run_until_stopped().await.map_err(|e| e.to_string());
        peer.stop().await;
        registry.stop().await;
        mis.stop().await;
        fhir_mis.stop().await;
        nsi.stop().await;
        result
    }
}
