//! A simulator of the Ministry's federal reference-book service (FNSI REST,
//! `/port/rest/...`), in its JSON shapes: `versions` (a book's versions), `passport` (one
//! version's names, size and columns) and `data` (a version's rows, paged), each asked with
//! the `userKey` it issued; a wrong key or an unknown book is answered `"result": "ERROR"`.
//!
//! Seeded with synthetic books under the real OIDs: specialties (1066), document kinds
//! (1522), ICD-10 (1005, about 17,000 rows a version) and the register of organizations
//! (1461), several versions each, holding every code the gateway's fixtures and demo use.
//! At run time a test publishes versions, renames or removes codes, injects latency and
//! faults, and counts requests.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Data, Query};
use actix_web::{App, HttpResponse, HttpServer};
use chrono::{Duration as Days, NaiveDate};
use serde_json::{json, Value};

use super::roll;
use crate::model::nsi::{BOOK_DOCUMENT_KINDS, BOOK_ICD10, BOOK_ORGANIZATIONS, BOOK_SPECIALTIES};

/// The largest data page the service gives.
pub const MAX_PAGE: usize = 500;

/// One row: `(column, value)` pairs in column order.
pub type Row = Vec<(String, String)>;

/// One version of a simulated book.
#[derive(Debug, Clone)]
pub struct SimVersion {
    /// The version, e.g. `5.12`.
    pub version: String,
    /// Publication, `dd.MM.yyyy HH:mm` as the service prints it.
    pub publish_date: String,
    /// The stamp of its last change (moves when a code is renamed or removed in place).
    pub last_update: String,
    /// Withdrawn from use.
    pub archive: bool,
    /// Its rows.
    pub rows: Arc<Vec<Row>>,
}

/// A simulated book.
#[derive(Debug, Clone)]
pub struct SimBook {
    /// Its OID.
    pub oid: String,
    /// Full name.
    pub full_name: String,
    /// Short name.
    pub short_name: String,
    /// Columns, in order.
    pub fields: Vec<String>,
    /// The primary key column.
    pub key: String,
    /// The column the gateway reads codes from (for run-time changes).
    pub code_column: String,
    /// The column of names.
    pub name_column: String,
    /// Versions in publication order.
    pub versions: Vec<SimVersion>,
}

/// Faults to inject; probabilities are in [0, 1].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added latency per request.
    pub latency: Duration,
    /// Probability of an HTTP 500.
    pub error_rate: f64,
    /// Probability of hanging for `hang` before answering.
    pub timeout_rate: f64,
    /// How long a hanging request hangs.
    pub hang: Duration,
    /// Data pages served before every later one fails with HTTP 500 (counted from when
    /// these faults were set): a load cut off part way.
    pub fail_data_after: Option<u64>,
}

/// Requests the simulator answered, by method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `versions` requests.
    pub versions: u64,
    /// `passport` requests.
    pub passport: u64,
    /// `data` requests.
    pub data: u64,
    /// Requests answered with a fault (HTTP 500).
    pub faulted: u64,
}

struct State {
    user_key: String,
    books: RwLock<Vec<SimBook>>,
    faults: RwLock<Faults>,
    versions: AtomicU64,
    passport: AtomicU64,
    data: AtomicU64,
    faulted: AtomicU64,
    stamp: AtomicU64,
    /// Data requests since the faults were last set.
    data_since_faults: AtomicU64,
}

/// A running simulator.
pub struct NsiSim {
    /// Base URL (`http://127.0.0.1:PORT`); the service is under `/port/rest/`.
    pub url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

/// `dd.MM.yyyy HH:mm` of `day` days after 2022-01-10, at 10:00.
fn printed_day(day: i64) -> String {
    let base = NaiveDate::from_ymd_opt(2022, 1, 10).unwrap_or_default();
    format!("{} 10:00", (base + Days::days(day)).format("%d.%m.%Y"))
}

fn row(cells: &[(&str, String)]) -> Row {
    cells
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Versions `names` of a book, each with the rows `rows_of(i)` gives, a quarter apart.
fn versions(names: &[&str], rows_of: impl Fn(usize) -> Vec<Row>) -> Vec<SimVersion> {
    names
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let day = i as i64 * 91;
            SimVersion {
                version: v.to_string(),
                publish_date: printed_day(day),
                last_update: printed_day(day),
                archive: false,
                rows: Arc::new(rows_of(i)),
            }
        })
        .collect()
}

/// Medical specialties: 100 codes, and 5 more in each later version; the fixtures' and the
/// simulators' specialties (therapist 27, cardiologist 76, ...) named as they are.
fn specialties() -> SimBook {
    const NAMED: [(u32, &str); 6] = [
        (20, "surgery"),
        (27, "therapy"),
        (39, "neurology"),
        (49, "general medical practice"),
        (76, "cardiology"),
        (93, "ophthalmology"),
    ];
    let rows = |last: u32| {
        (1..=last)
            .map(|n| {
                let name = NAMED
                    .iter()
                    .find(|(c, _)| *c == n)
                    .map_or_else(|| format!("specialty {n}"), |(_, s)| s.to_string());
                row(&[
                    ("ID", n.to_string()),
                    ("NAME", name),
                    ("PARENT", String::new()),
                ])
            })
            .collect()
    };
    SimBook {
        oid: BOOK_SPECIALTIES.into(),
        full_name:
            "Nomenclature of specialties of specialists with higher medical education (synthetic)"
                .into(),
        short_name: "Specialties".into(),
        fields: vec!["ID".into(), "NAME".into(), "PARENT".into()],
        key: "ID".into(),
        code_column: "ID".into(),
        name_column: "NAME".into(),
        versions: versions(&["4.10", "4.11", "4.12"], |i| rows(100 + 5 * i as u32)),
    }
}

/// Kinds of structured medical documents: the kinds the fixtures, rules and demo use (4
/// protocol of instrumental examination, 6, 25, 31 ECG, 32 echocardiography, 33 CT/MRI, 34
/// ultrasound) among 40 in 5.11, 45 in 5.12, 50 in 5.13.
fn document_kinds() -> SimBook {
    const NAMED: [(u32, &str); 8] = [
        (1, "Discharge summary"),
        (4, "Protocol of instrumental examination"),
        (6, "Referral for hospitalization"),
        (25, "Consultation report"),
        (31, "Electrocardiography report"),
        (32, "Echocardiography report"),
        (33, "CT or MRI report"),
        (34, "Ultrasound report"),
    ];
    let rows = |last: u32| {
        (1..=last)
            .map(|n| {
                let name = NAMED.iter().find(|(c, _)| *c == n).map_or_else(
                    || format!("Structured document kind {n}"),
                    |(_, s)| s.to_string(),
                );
                row(&[
                    ("ID", n.to_string()),
                    ("NAME", name),
                    ("TYPE", "CDA".into()),
                ])
            })
            .collect()
    };
    SimBook {
        oid: BOOK_DOCUMENT_KINDS.into(),
        full_name: "Kinds of structured electronic medical documents (synthetic)".into(),
        short_name: "SEMD kinds".into(),
        fields: vec!["ID".into(), "NAME".into(), "TYPE".into()],
        key: "ID".into(),
        code_column: "ID".into(),
        name_column: "NAME".into(),
        versions: versions(&["5.11", "5.12", "5.13"], |i| rows(40 + 5 * i as u32)),
    }
}

/// ICD-10 codes: every category A00–Z99 and, under each, 2 to 10 subcategories (.0 …);
/// about 17,000 rows. Version `i` of 3 leaves out what later versions added.
fn icd10_rows(version: usize) -> Vec<Row> {
    // The fixtures' diagnoses, whatever the pattern gives.
    const PINNED: [&str; 6] = ["I20.8", "I21.0", "I21.4", "I50.1", "J18.9", "O99.4"];
    let mut rows = Vec::with_capacity(17_500);
    let mut id = 0u32;
    for (l, letter) in ('A'..='Z').enumerate() {
        for n in 0..100u32 {
            let k = l as u32 * 100 + n;
            let category = format!("{letter}{n:02}");
            // Chapter U (emergency use) came with the second version.
            if letter == 'U' && version == 0 {
                continue;
            }
            let mut push = |code: String, name: String| {
                id += 1;
                rows.push(row(&[
                    ("ID", id.to_string()),
                    ("MKB_CODE", code),
                    ("MKB_NAME", name),
                    ("ACTUAL", "1".into()),
                ]));
            };
            push(
                category.clone(),
                format!("Diagnostic category {category} (synthetic)"),
            );
            let subs = 2 + (k * 7 + 3) % 9 - u32::from(k % 3 == 0) * 2;
            for s in 0..10u32 {
                let code = format!("{category}.{s}");
                let added_later = version < 2 && k % 50 == 49 && s == subs.saturating_sub(1);
                if (s < subs || PINNED.contains(&code.as_str())) && !added_later {
                    push(
                        code,
                        format!("Diagnostic category {category}, subcategory {s} (synthetic)"),
                    );
                }
            }
        }
    }
    rows
}

fn icd10() -> SimBook {
    SimBook {
        oid: BOOK_ICD10.into(),
        full_name:
            "International statistical classification of diseases, 10th revision (synthetic)".into(),
        short_name: "ICD-10".into(),
        fields: vec![
            "ID".into(),
            "MKB_CODE".into(),
            "MKB_NAME".into(),
            "ACTUAL".into(),
        ],
        key: "ID".into(),
        code_column: "MKB_CODE".into(),
        name_column: "MKB_NAME".into(),
        versions: versions(&["2.18", "2.19", "2.20"], icd10_rows),
    }
}

/// The register of medical organizations: the demo region's polyclinics and specialist
/// centres (77.7001–7050), the second region's clinics (78.8001–8010) and the federal
/// centres (1.77.9001–9005); the later version registers five more polyclinics.
fn organizations() -> SimBook {
    let rows = |version: usize| {
        let mut out = Vec::new();
        let mut push = |oid: String, name: String, region: &str| {
            out.push(row(&[
                ("OID", oid),
                ("NAME_FULL", name),
                ("REGION", region.into()),
            ]));
        };
        for n in 7001..=7045 + version as u32 * 5 {
            push(
                format!("1.2.643.5.1.13.13.12.2.77.{n}"),
                format!("City Polyclinic {n} (synthetic)"),
                "77",
            );
        }
        for n in 8001..=8010 {
            push(
                format!("1.2.643.5.1.13.13.12.2.78.{n}"),
                format!("City Polyclinic {n} of region 78 (synthetic)"),
                "78",
            );
        }
        for n in 9001..=9005 {
            push(
                format!("1.2.643.5.1.13.13.12.1.77.{n}"),
                format!("Federal Medical Centre {n} (synthetic)"),
                "77",
            );
        }
        out
    };
    SimBook {
        oid: BOOK_ORGANIZATIONS.into(),
        full_name: "Register of medical organizations of the Russian Federation (synthetic)".into(),
        short_name: "FRMO".into(),
        fields: vec!["OID".into(), "NAME_FULL".into(), "REGION".into()],
        key: "OID".into(),
        code_column: "OID".into(),
        name_column: "NAME_FULL".into(),
        versions: versions(&["3.3", "3.4"], rows),
    }
}

/// The four federal books, seeded.
pub fn federal_books() -> Vec<SimBook> {
    vec![specialties(), document_kinds(), icd10(), organizations()]
}

/// An answer in the service's JSON.
fn ok(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json;charset=UTF-8")
        .body(body.to_string())
}

/// The service's refusal.
fn refusal(code: &str, text: &str) -> HttpResponse {
    ok(json!({"result": "ERROR", "resultText": text, "resultCode": code}))
}

impl NsiSim {
    /// Starts on a random loopback port with the federal books, issuing `user_key`.
    pub fn start(user_key: &str) -> std::io::Result<NsiSim> {
        Self::start_with(user_key, federal_books())
    }

    /// Starts with `books`.
    pub fn start_with(user_key: &str, books: Vec<SimBook>) -> std::io::Result<NsiSim> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            user_key: user_key.to_string(),
            books: RwLock::new(books),
            faults: RwLock::new(Faults::default()),
            versions: AtomicU64::new(0),
            passport: AtomicU64::new(0),
            data: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
            data_since_faults: AtomicU64::new(0),
        });
        let data = Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/port/rest/versions", web::get().to(versions_endpoint))
                .route("/port/rest/passport", web::get().to(passport_endpoint))
                .route("/port/rest/data", web::get().to(data_endpoint))
        })
        .workers(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(NsiSim {
            url: format!("http://{addr}"),
            state,
            handle,
        })
    }

    /// Replaces the active faults.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.state.faults.write() {
            *f = faults;
            self.state.data_since_faults.store(0, Ordering::Relaxed);
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> Requests {
        let s = &self.state;
        Requests {
            versions: s.versions.load(Ordering::Relaxed),
            passport: s.passport.load(Ordering::Relaxed),
            data: s.data.load(Ordering::Relaxed),
            faulted: s.faulted.load(Ordering::Relaxed),
        }
    }

    /// The versions of book `oid`, in publication order.
    pub fn versions(&self, oid: &str) -> Vec<String> {
        self.state
            .books
            .read()
            .map(|b| {
                b.iter()
                    .filter(|b| b.oid == oid)
                    .flat_map(|b| b.versions.iter().map(|v| v.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rows of `version` of `oid`.
    pub fn rows(&self, oid: &str, version: &str) -> usize {
        self.with_version(oid, version, |_, v| v.rows.len())
            .unwrap_or(0)
    }

    fn with_version<T>(
        &self,
        oid: &str,
        version: &str,
        f: impl FnOnce(&SimBook, &mut SimVersion) -> T,
    ) -> Option<T> {
        let mut books = self.state.books.write().ok()?;
        let book = books.iter_mut().find(|b| b.oid == oid)?;
        let shape = SimBook {
            versions: Vec::new(),
            ..book.clone()
        };
        let v = book.versions.iter_mut().find(|v| v.version == version)?;
        Some(f(&shape, v))
    }

    /// A fresh stamp for a change made now (later than every publication).
    fn stamp(&self) -> String {
        let n = self.state.stamp.fetch_add(1, Ordering::Relaxed);
        let at = chrono::Utc::now();
        format!("{} #{n}", at.format("%d.%m.%Y %H:%M:%S"))
    }

    /// Publishes `version` of `oid` today: the rows of its latest version. False when the
    /// book is unknown or the version exists.
    pub fn publish(&self, oid: &str, version: &str) -> bool {
        let stamp = self.stamp();
        let Ok(mut books) = self.state.books.write() else {
            return false;
        };
        let Some(book) = books.iter_mut().find(|b| b.oid == oid) else {
            return false;
        };
        if book.versions.iter().any(|v| v.version == version) {
            return false;
        }
        let rows = book
            .versions
            .last()
            .map(|v| v.rows.clone())
            .unwrap_or_default();
        let today = chrono::Utc::now().format("%d.%m.%Y %H:%M").to_string();
        book.versions.push(SimVersion {
            version: version.to_string(),
            publish_date: today,
            last_update: stamp,
            archive: false,
            rows,
        });
        true
    }

    /// Renames `code` in `version` of `oid` (its stamp moves); false when there is none.
    pub fn rename(&self, oid: &str, version: &str, code: &str, name: &str) -> bool {
        let stamp = self.stamp();
        self.with_version(oid, version, |book, v| {
            let mut rows = (*v.rows).clone();
            let mut found = false;
            for r in rows
                .iter_mut()
                .filter(|r| has_code(r, &book.code_column, code))
            {
                for (k, value) in r.iter_mut() {
                    if *k == book.name_column {
                        *value = name.to_string();
                        found = true;
                    }
                }
            }
            v.rows = Arc::new(rows);
            v.last_update = stamp;
            found
        })
        .unwrap_or(false)
    }

    /// Removes `code` from `version` of `oid` (its stamp moves); false when there is none.
    pub fn remove(&self, oid: &str, version: &str, code: &str) -> bool {
        let stamp = self.stamp();
        self.with_version(oid, version, |book, v| {
            let before = v.rows.len();
            let rows: Vec<Row> = v
                .rows
                .iter()
                .filter(|r| !has_code(r, &book.code_column, code))
                .cloned()
                .collect();
            let found = rows.len() < before;
            v.rows = Arc::new(rows);
            v.last_update = stamp;
            found
        })
        .unwrap_or(false)
    }

    /// Archives `version` of `oid` (or brings it back).
    pub fn archive(&self, oid: &str, version: &str, archive: bool) -> bool {
        self.with_version(oid, version, |_, v| v.archive = archive)
            .is_some()
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn has_code(row: &Row, column: &str, code: &str) -> bool {
    row.iter().any(|(k, v)| k == column && v == code)
}

/// Latency and faults, the key checked, the request counted: `Err` is the answer to give.
async fn admit(
    state: &State,
    q: &HashMap<String, String>,
    counter: &AtomicU64,
) -> Result<(), HttpResponse> {
    counter.fetch_add(1, Ordering::Relaxed);
    let faults = state.faults.read().map(|f| f.clone()).unwrap_or_default();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.timeout_rate > 0.0 && roll() < faults.timeout_rate {
        tokio::time::sleep(faults.hang).await;
    }
    let cut_off = std::ptr::eq(counter, &state.data)
        && faults
            .fail_data_after
            .is_some_and(|n| state.data_since_faults.fetch_add(1, Ordering::Relaxed) >= n);
    if cut_off || (faults.error_rate > 0.0 && roll() < faults.error_rate) {
        state.faulted.fetch_add(1, Ordering::Relaxed);
        return Err(HttpResponse::InternalServerError()
            .content_type("text/html")
            .body("<html><body><h1>500 Internal Server Error</h1></body></html>"));
    }
    if q.get("userKey").map(String::as_str) != Some(state.user_key.as_str()) {
        return Err(refusal("4", "Неверный ключ пользователя (invalid userKey)"));
    }
    Ok(())
}

/// A refusal in the service's shape: its code and text.
struct Refusal(&'static str, String);

impl Refusal {
    fn answer(self) -> HttpResponse {
        refusal(self.0, &self.1)
    }
}

/// `page` (from 1) and `size` (1 to [`MAX_PAGE`]) of a request, or the refusal.
fn paging(q: &HashMap<String, String>, default_size: usize) -> Result<(usize, usize), Refusal> {
    let page = match q.get("page") {
        None => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| Refusal("3", "page must be a positive integer".into()))?,
    };
    let size = match q.get("size") {
        None => default_size,
        Some(s) => s
            .parse()
            .ok()
            .filter(|s| (1..=MAX_PAGE).contains(s))
            .ok_or_else(|| Refusal("3", "size must be 1 to 500".into()))?,
    };
    Ok((page, size))
}

fn book_of<'a>(books: &'a [SimBook], q: &HashMap<String, String>) -> Result<&'a SimBook, Refusal> {
    let id = q.get("identifier").map(String::as_str).unwrap_or("");
    books
        .iter()
        .find(|b| b.oid == id)
        .ok_or_else(|| Refusal("2", format!("Справочник {id} не найден (no such book)")))
}

/// The version a request names, else the latest.
fn version_of<'a>(
    book: &'a SimBook,
    q: &HashMap<String, String>,
) -> Result<&'a SimVersion, Refusal> {
    match q.get("version") {
        None => book
            .versions
            .iter()
            .rfind(|v| !v.archive)
            .ok_or_else(|| Refusal("2", "no version published".into())),
        Some(want) => book
            .versions
            .iter()
            .find(|v| &v.version == want)
            .ok_or_else(|| Refusal("2", format!("version {want} of {} not found", book.oid))),
    }
}

async fn versions_endpoint(state: Data<State>, q: Query<HashMap<String, String>>) -> HttpResponse {
    if let Err(r) = admit(&state, &q, &state.versions).await {
        return r;
    }
    let (page, size) = match paging(&q, 200) {
        Ok(p) => p,
        Err(r) => return r.answer(),
    };
    let Ok(books) = state.books.read() else {
        return HttpResponse::InternalServerError().finish();
    };
    let book = match book_of(&books, &q) {
        Ok(b) => b,
        Err(r) => return r.answer(),
    };
    let list: Vec<Value> = book
        .versions
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|v| {
            json!({"version": v.version, "createDate": v.publish_date, "publishDate": v.publish_date,
                   "lastUpdate": v.last_update, "approveDate": v.publish_date, "archive": v.archive,
                   "rowsCount": v.rows.len()})
        })
        .collect();
    ok(
        json!({"result": "OK", "resultText": null, "resultCode": 0, "total": book.versions.len(), "list": list}),
    )
}

async fn passport_endpoint(state: Data<State>, q: Query<HashMap<String, String>>) -> HttpResponse {
    if let Err(r) = admit(&state, &q, &state.passport).await {
        return r;
    }
    let Ok(books) = state.books.read() else {
        return HttpResponse::InternalServerError().finish();
    };
    let (book, v) = match book_of(&books, &q).and_then(|b| Ok((b, version_of(b, &q)?))) {
        Ok(x) => x,
        Err(r) => return r.answer(),
    };
    let fields: Vec<Value> = book
        .fields
        .iter()
        .map(|f| json!({"field": f, "dataType": if *f == "ID" { "integer" } else { "varchar" }, "description": f}))
        .collect();
    ok(json!({
        "result": "OK", "resultText": null, "resultCode": 0,
        "oid": book.oid, "version": v.version, "fullName": book.full_name, "shortName": book.short_name,
        "publishDate": v.publish_date, "lastUpdate": v.last_update, "approveDate": v.publish_date,
        "rowsCount": v.rows.len(), "archive": v.archive,
        "fields": fields, "keys": [{"field": book.key, "type": "PRIMARY"}],
    }))
}

async fn data_endpoint(state: Data<State>, q: Query<HashMap<String, String>>) -> HttpResponse {
    if let Err(r) = admit(&state, &q, &state.data).await {
        return r;
    }
    let (page, size) = match paging(&q, 200) {
        Ok(p) => p,
        Err(r) => return r.answer(),
    };
    // The rows are shared, not copied, while the page is built.
    let (total, rows) = {
        let Ok(books) = state.books.read() else {
            return HttpResponse::InternalServerError().finish();
        };
        match book_of(&books, &q).and_then(|b| version_of(b, &q)) {
            Ok(v) => (v.rows.len(), v.rows.clone()),
            Err(r) => return r.answer(),
        }
    };
    let list: Vec<Value> = rows
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|r| {
            Value::Array(
                r.iter()
                    .map(|(k, v)| json!({"column": k, "value": v}))
                    .collect(),
            )
        })
        .collect();
    ok(json!({"result": "OK", "resultText": null, "resultCode": 0, "total": total, "list": list}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icd10_is_about_seventeen_thousand_rows_with_the_fixtures_codes() {
        let rows = icd10_rows(2);
        assert!((16_000..=18_500).contains(&rows.len()), "{}", rows.len());
        let codes: std::collections::HashSet<&str> = rows.iter().map(|r| r[1].1.as_str()).collect();
        for c in [
            "I20.8", "I21.0", "I21.4", "I50.1", "J18.9", "O99.4", "I21", "P00", "I00",
        ] {
            assert!(codes.contains(c), "{c}");
        }
        assert_eq!(codes.len(), rows.len(), "codes are unique");
        assert!(icd10_rows(0).len() < icd10_rows(1).len());
        assert!(icd10_rows(1).len() < rows.len());
    }
}
