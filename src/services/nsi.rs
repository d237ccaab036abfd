//! Reference books (NSI): every version of the configured books kept from the Ministry's
//! reference-book service (the [`NsiSource`] port), each book's current version known, their
//! rows paged for the FHIR terminology routes, and the coded values of documents and
//! referrals checked against the versions the registry accepts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;

use crate::model::nsi::{
    compare_versions, current_of, Entry, Passport, StoredVersion, VersionInfo, BOOK_ICD10,
};
use crate::model::time::SharedClock;
use crate::model::Oid;
use crate::store::{Store, StoreError};

/// One page of a version's rows: each row its `(column, value)` pairs, and the rows the
/// version has in all.
#[derive(Debug, Clone, Default)]
pub struct DataPage {
    /// Rows in the version.
    pub total: u64,
    /// The page's rows.
    pub rows: Vec<Vec<(String, String)>>,
}

/// The reference-book service failed or refused (after its adapter's own retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Port: the service that publishes the reference books.
pub trait NsiSource: Send + Sync {
    /// Every version of book `oid` as the publisher lists it.
    fn versions<'a>(&'a self, oid: &'a Oid)
        -> BoxFuture<'a, Result<Vec<VersionInfo>, SourceError>>;

    /// The passport of `version` of `oid`.
    fn passport<'a>(
        &'a self,
        oid: &'a Oid,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Passport, SourceError>>;

    /// Page `page` (from 1) of `size` rows of `version` of `oid`.
    fn page<'a>(
        &'a self,
        oid: &'a Oid,
        version: &'a str,
        page: u32,
        size: u32,
    ) -> BoxFuture<'a, Result<DataPage, SourceError>>;
}

/// Why a sync of a book failed.
#[derive(Debug, thiserror::Error)]
pub enum NsiError {
    /// The reference-book service failed or answered something unusable.
    #[error("reference-book service: {0}")]
    Source(#[from] SourceError),
    /// A version's rows did not add up to what its passport announced.
    #[error("{oid} version {version}: {detail}")]
    Incomplete {
        /// The book.
        oid: String,
        /// The version.
        version: String,
        /// What was wrong.
        detail: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A book the gateway keeps, as configured.
#[derive(Debug, Clone)]
pub struct Book {
    /// Its OID.
    pub oid: Oid,
    /// A name for logs; `None`: the passport's.
    pub name: Option<String>,
    /// The versions the registry accepts; `None`: every kept version.
    pub accepts: Option<Vec<String>>,
    /// The column of the code; `None`: the book's usual one or the primary key.
    pub code_column: Option<String>,
    /// The column of the name; `None`: the first usual name column the passport lists.
    pub display_column: Option<String>,
}

/// What a sync did to one book.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookReport {
    /// The book.
    pub oid: String,
    /// Versions the publisher lists.
    pub versions: usize,
    /// Versions loaded (new, or changed since their last load).
    pub loaded: usize,
    /// Versions already held as published, not fetched again.
    pub skipped: usize,
    /// Rows loaded.
    pub rows: u64,
    /// The current version afterwards.
    pub current: Option<String>,
}

/// What a sync of every book did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Books synchronized.
    pub books: Vec<BookReport>,
    /// Books whose sync failed, and why (their current versions stand as they were).
    pub failed: Vec<(String, String)>,
}

impl SyncReport {
    /// Rows loaded in all.
    pub fn rows(&self) -> u64 {
        self.books.iter().map(|b| b.rows).sum()
    }
}

/// Why a coded value was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodeRefusal {
    /// The value cites a version the registry does not accept.
    #[error(
        "version {version} of reference book {book} is not one the registry accepts ({accepted})"
    )]
    Version {
        /// The book.
        book: String,
        /// The version cited.
        version: String,
        /// The versions accepted, comma-separated.
        accepted: String,
    },
    /// The code is not in the version.
    #[error("code {code:?} is not in version {version} of reference book {book}")]
    Code {
        /// The book.
        book: String,
        /// The version looked in.
        version: String,
        /// The code.
        code: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Kept versions of one book: the fully loaded ones and the current one.
#[derive(Debug, Clone, Default)]
struct Held {
    versions: Vec<String>,
    current: Option<String>,
}

/// What the checks read without a query: the books' versions (re-read after a sync and at
/// least every [`CATALOG_TTL_MS`], as another replica may have synced) and codes found.
#[derive(Debug, Default)]
struct Catalog {
    read_at: Option<i64>,
    books: HashMap<String, Held>,
    found: HashSet<(String, String, String)>,
}

/// How long the books' versions are trusted before they are read again.
const CATALOG_TTL_MS: i64 = 60_000;
/// Codes remembered as found at most; then the memory starts over.
const FOUND_CAPACITY: usize = 100_000;
/// Usual name columns of the federal books, in order of preference.
const NAME_COLUMNS: [&str; 4] = ["NAME", "MKB_NAME", "NAME_FULL", "NAME_SHORT"];

struct Inner {
    store: Store,
    clock: SharedClock,
    source: Option<Arc<dyn NsiSource>>,
    books: Vec<Book>,
    page_size: u32,
    catalog: RwLock<Catalog>,
    warned: Mutex<HashSet<String>>,
}

/// The reference-books service.
#[derive(Clone)]
pub struct ReferenceBooks {
    inner: Arc<Inner>,
}

impl ReferenceBooks {
    /// Reads of the books kept in `store`; nothing synced, nothing checked.
    pub fn new(store: Store, clock: SharedClock) -> ReferenceBooks {
        ReferenceBooks {
            inner: Arc::new(Inner {
                store,
                clock,
                source: None,
                books: Vec::new(),
                page_size: 500,
                catalog: RwLock::new(Catalog::default()),
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The same service keeping `books` from `source` in pages of `page_size` rows, and
    /// checking coded values against them.
    pub fn with_source(
        self,
        source: Arc<dyn NsiSource>,
        books: Vec<Book>,
        page_size: u32,
    ) -> ReferenceBooks {
        ReferenceBooks {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                clock: self.inner.clock.clone(),
                source: Some(source),
                books,
                page_size: page_size.max(1),
                catalog: RwLock::new(Catalog::default()),
                warned: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// True when books are kept from a source (and values checked against them).
    pub fn syncs(&self) -> bool {
        self.inner.source.is_some()
    }

    /// Synchronizes every configured book; a book that fails leaves its versions and its
    /// current version as they were and the others go on.
    pub async fn sync_all(&self) -> SyncReport {
        let mut report = SyncReport::default();
        for book in &self.inner.books {
            match self.sync_book(book).await {
                Ok(r) => {
                    tracing::info!(book = %r.oid, versions = r.versions, loaded = r.loaded, skipped = r.skipped, rows = r.rows, current = ?r.current, "reference book synchronized");
                    report.books.push(r);
                }
                Err(e) => {
                    tracing::warn!(book = %book.oid, error = %e, "reference book sync failed");
                    report.failed.push((book.oid.to_string(), e.to_string()));
                }
            }
        }
        self.forget();
        report
    }

    /// Synchronizes one book: every listed version not held as published is loaded (a
    /// load cut off earlier resumes), then the current version is set.
    pub async fn sync_book(&self, book: &Book) -> Result<BookReport, NsiError> {
        let Some(source) = &self.inner.source else {
            return Ok(BookReport::default());
        };
        let store = &self.inner.store;
        let oid = book.oid.as_str();
        let mut listed = source.versions(&book.oid).await?;
        listed.sort_by(|a, b| {
            a.published_at
                .cmp(&b.published_at)
                .then_with(|| compare_versions(&a.version, &b.version))
        });
        let held: HashMap<String, StoredVersion> = store
            .nsi_versions(Some(oid))
            .await?
            .into_iter()
            .map(|v| (v.version.clone(), v))
            .collect();
        let mut report = BookReport {
            oid: oid.to_string(),
            versions: listed.len(),
            ..BookReport::default()
        };
        let mut name = book.name.clone();
        for v in &listed {
            if let Some(h) = held.get(&v.version) {
                if h.loaded && h.last_update == v.last_update {
                    if h.archive != v.archive || h.published_at != v.published_at {
                        store.nsi_update_listing(oid, v).await?;
                    }
                    name.get_or_insert_with(|| h.name.clone());
                    report.skipped += 1;
                    continue;
                }
            }
            let (rows, full_name) = self.load_version(source.as_ref(), book, v).await?;
            name.get_or_insert(full_name);
            report.loaded += 1;
            report.rows += rows;
        }
        if let Some(current) = current_of(&listed) {
            if store.nsi_set_current(oid, &current.version).await? {
                report.current = Some(current.version.clone());
            }
        }
        store
            .nsi_upsert_book(
                oid,
                name.as_deref().unwrap_or(oid),
                self.inner.clock.now_ms(),
            )
            .await?;
        self.forget();
        Ok(report)
    }

    /// Loads the rows of version `v` of `book` page by page (resuming a load cut off
    /// earlier), then makes them its rows at once; the rows and the book's full name.
    async fn load_version(
        &self,
        source: &dyn NsiSource,
        book: &Book,
        v: &VersionInfo,
    ) -> Result<(u64, String), NsiError> {
        let store = &self.inner.store;
        let oid = book.oid.as_str();
        let incomplete = |detail: String| NsiError::Incomplete {
            oid: oid.to_string(),
            version: v.version.clone(),
            detail,
        };
        let passport = source.passport(&book.oid, &v.version).await?;
        let (code_column, display_column) = columns(book, &passport).map_err(incomplete)?;
        let size = self.inner.page_size;
        let now = self.inner.clock.now_ms();
        let load = store
            .nsi_begin_load(oid, v, &passport.full_name, now, size, now)
            .await?;
        let mut loaded = load.loaded;
        let mut total = passport.rows;
        let mut page = u32::try_from(loaded / u64::from(size)).unwrap_or(u32::MAX - 1) + 1;
        // Bounded by what was announced: a source that never stops paging is refused.
        let last_page = u32::try_from(total / u64::from(size)).unwrap_or(u32::MAX - 2) + 2;
        while loaded < total {
            if page > last_page {
                return Err(incomplete(format!(
                    "more pages than the {total} rows announced"
                )));
            }
            let data = source.page(&book.oid, &v.version, page, size).await?;
            total = data.total;
            if data.rows.is_empty() {
                break;
            }
            let entries = data
                .rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    entry(row, &code_column, &display_column).ok_or_else(|| {
                        incomplete(format!(
                            "row {} has no {code_column}",
                            loaded + i as u64 + 1
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            store
                .nsi_insert_entries(oid, &v.version, load.generation, loaded, &entries)
                .await?;
            loaded += entries.len() as u64;
            page += 1;
            if entries.len() < size as usize {
                break;
            }
        }
        if loaded != total {
            return Err(incomplete(format!(
                "the service gave {loaded} rows of {total}"
            )));
        }
        store
            .nsi_finish_load(
                oid,
                &v.version,
                load.generation,
                &v.last_update,
                loaded,
                self.inner.clock.now_ms(),
            )
            .await?;
        Ok((loaded, passport.full_name))
    }

    /// Makes the checks read the books' versions again.
    fn forget(&self) {
        if let Ok(mut c) = self.inner.catalog.write() {
            *c = Catalog::default();
        }
    }

    /// The kept versions of `oid` as the checks see them.
    async fn held(&self, oid: &str) -> Result<Held, StoreError> {
        let now = self.inner.clock.now_ms();
        if let Ok(c) = self.inner.catalog.read() {
            if c.read_at
                .is_some_and(|t| now - t < CATALOG_TTL_MS && t <= now)
            {
                return Ok(c.books.get(oid).cloned().unwrap_or_default());
            }
        }
        let mut books: HashMap<String, Held> = HashMap::new();
        for v in self.inner.store.nsi_versions(None).await? {
            if !v.loaded {
                continue;
            }
            let held = books.entry(v.oid.clone()).or_default();
            if v.current {
                held.current = Some(v.version.clone());
            }
            held.versions.push(v.version);
        }
        let held = books.get(oid).cloned().unwrap_or_default();
        if let Ok(mut c) = self.inner.catalog.write() {
            c.read_at = Some(now);
            c.books = books;
        }
        Ok(held)
    }

    /// Checks a coded value of book `book`: the version it cites (`None`: the current one)
    /// must be one the registry accepts and the code must be in it. Books not configured
    /// are not checked; a configured book with no version kept yet is not either (the
    /// gateway cannot know), with one warning.
    pub async fn check(
        &self,
        book: &str,
        version: Option<&str>,
        code: &str,
    ) -> Result<(), CodeRefusal> {
        let Some(spec) = self
            .inner
            .books
            .iter()
            .find(|b| b.oid.as_str() == book)
            .filter(|_| self.syncs())
        else {
            return Ok(());
        };
        let held = self.held(book).await?;
        let cited = match version {
            Some(v) => {
                let accepted = spec.accepts.as_ref().unwrap_or(&held.versions);
                if !held.versions.is_empty() && !accepted.iter().any(|a| a == v) {
                    return Err(CodeRefusal::Version {
                        book: book.to_string(),
                        version: v.to_string(),
                        accepted: accepted.join(", "),
                    });
                }
                Some(v.to_string())
            }
            None => held
                .current
                .clone()
                .or_else(|| held.versions.last().cloned()),
        };
        let Some(version) = cited.filter(|v| held.versions.contains(v)) else {
            self.warn_once(book, version);
            return Ok(());
        };
        let key = (book.to_string(), version.clone(), code.to_string());
        if self
            .inner
            .catalog
            .read()
            .is_ok_and(|c| c.found.contains(&key))
        {
            return Ok(());
        }
        if !self.inner.store.nsi_has_code(book, &version, code).await? {
            return Err(CodeRefusal::Code {
                book: book.to_string(),
                version,
                code: code.to_string(),
            });
        }
        if let Ok(mut c) = self.inner.catalog.write() {
            if c.found.len() >= FOUND_CAPACITY {
                c.found.clear();
            }
            c.found.insert(key);
        }
        Ok(())
    }

    /// Says once per book and version that its values go unchecked for want of its rows.
    fn warn_once(&self, book: &str, version: Option<&str>) {
        let key = format!("{book} {}", version.unwrap_or("current"));
        let first = self
            .inner
            .warned
            .lock()
            .map(|mut w| w.insert(key))
            .unwrap_or(false);
        if first {
            tracing::warn!(book, version = version.unwrap_or("current"), "no kept version of the reference book to check against yet: its codes pass unchecked until the nsi-sync job loads it");
        }
    }

    /// The fully loaded versions kept of `oid` (of every book when `None`).
    pub async fn versions(&self, oid: Option<&Oid>) -> Result<Vec<StoredVersion>, StoreError> {
        Ok(self
            .inner
            .store
            .nsi_versions(oid.map(Oid::as_str))
            .await?
            .into_iter()
            .filter(|v| v.loaded)
            .collect())
    }

    /// Version `version` of `oid`, or its current one (else the latest kept), if kept.
    pub async fn version(
        &self,
        oid: &Oid,
        version: Option<&str>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let kept = self.versions(Some(oid)).await?;
        Ok(match version {
            Some(v) => kept.into_iter().find(|k| k.version == v),
            None => {
                let current = kept.iter().find(|k| k.current).cloned();
                current.or_else(|| kept.into_iter().last())
            }
        })
    }

    /// `count` rows of a kept version after `offset`, of those whose name contains
    /// `filter` or whose code starts with it, and how many match in all.
    pub async fn rows(
        &self,
        v: &StoredVersion,
        filter: Option<&str>,
        offset: u64,
        count: u32,
    ) -> Result<(u64, Vec<Entry>), StoreError> {
        self.inner
            .store
            .nsi_entries(&v.oid, &v.version, filter, offset, count)
            .await
    }
}

/// The code and name columns of `book` in a version with `passport`.
fn columns(book: &Book, passport: &Passport) -> Result<(String, String), String> {
    let has = |c: &str| passport.fields.iter().any(|f| f == c);
    let code = match &book.code_column {
        Some(c) => c.clone(),
        None if book.oid.as_str() == BOOK_ICD10 && has("MKB_CODE") => "MKB_CODE".into(),
        None => passport
            .primary_key
            .clone()
            .unwrap_or_else(|| "ID".to_string()),
    };
    if !has(&code) {
        return Err(format!(
            "the passport lists no column {code} (columns: {})",
            passport.fields.join(", ")
        ));
    }
    let display = match &book.display_column {
        Some(d) if has(d) => d.clone(),
        Some(d) => return Err(format!("the passport lists no column {d}")),
        None => NAME_COLUMNS
            .iter()
            .find(|c| has(c))
            .map_or_else(|| code.clone(), |c| c.to_string()),
    };
    Ok((code, display))
}

/// A row as an entry: its code (none: `None`), name and every column as JSON.
fn entry(row: &[(String, String)], code: &str, display: &str) -> Option<Entry> {
    let value = |c: &str| row.iter().find(|(k, _)| k == c).map(|(_, v)| v.trim());
    let code = value(code).filter(|c| !c.is_empty())?.to_string();
    let raw: serde_json::Map<String, serde_json::Value> = row
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    Some(Entry {
        display: value(display).unwrap_or("").to_string(),
        code,
        raw: serde_json::Value::Object(raw).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passport(fields: &[&str], key: Option<&str>) -> Passport {
        Passport {
            oid: Oid::parse(BOOK_ICD10).unwrap(),
            version: "2.1".into(),
            full_name: "ICD-10".into(),
            short_name: "ICD-10".into(),
            rows: 1,
            fields: fields.iter().map(|f| f.to_string()).collect(),
            primary_key: key.map(str::to_string),
        }
    }

    fn book(oid: &str) -> Book {
        Book {
            oid: Oid::parse(oid).unwrap(),
            name: None,
            accepts: None,
            code_column: None,
            display_column: None,
        }
    }

    #[test]
    fn columns_follow_the_book_then_the_passport() {
        let p = passport(&["ID", "MKB_CODE", "MKB_NAME"], Some("ID"));
        assert_eq!(
            columns(&book(BOOK_ICD10), &p).unwrap(),
            ("MKB_CODE".into(), "MKB_NAME".into())
        );
        let p = passport(&["ID", "NAME"], Some("ID"));
        assert_eq!(
            columns(&book("1.2.643.5.1.13.13.11.1522"), &p).unwrap(),
            ("ID".into(), "NAME".into())
        );
        let mut b = book("1.2.643.5.1.13.13.11.1522");
        b.code_column = Some("CODE".into());
        assert!(columns(&b, &p).unwrap_err().contains("CODE"));
    }

    #[test]
    fn a_row_without_its_code_is_no_entry() {
        let row = vec![
            ("ID".to_string(), " 4 ".to_string()),
            ("NAME".into(), "x".into()),
        ];
        let e = entry(&row, "ID", "NAME").unwrap();
        assert_eq!((e.code.as_str(), e.display.as_str()), ("4", "x"));
        assert!(e.raw.contains("\"NAME\":\"x\""));
        assert!(entry(&row, "CODE", "NAME").is_none());
    }
}
