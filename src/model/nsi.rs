//! Reference books of the Ministry's NSI (normative reference information): a book's
//! versions as its publisher lists them, their passports and rows, the versions the gateway
//! keeps, and the order of versions (which one is current).

use std::cmp::Ordering;

use super::Oid;

/// Medical specialties (the nomenclature of specialties).
pub const BOOK_SPECIALTIES: &str = "1.2.643.5.1.13.13.11.1066";
/// Kinds of structured medical documents.
pub const BOOK_DOCUMENT_KINDS: &str = "1.2.643.5.1.13.13.11.1522";
/// ICD-10, the international classification of diseases.
pub const BOOK_ICD10: &str = "1.2.643.5.1.13.13.11.1005";
/// The federal register of medical organizations (FRMO).
pub const BOOK_ORGANIZATIONS: &str = "1.2.643.5.1.13.13.11.1461";

/// One version of a book as the publisher lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version, e.g. `5.12`.
    pub version: String,
    /// When it was published (epoch ms).
    pub published_at: i64,
    /// The publisher's stamp of its last change: a version whose stamp moved is loaded again.
    pub last_update: String,
    /// Withdrawn from use (kept, never current).
    pub archive: bool,
}

/// The passport of one version: its names, size and columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passport {
    /// The book.
    pub oid: Oid,
    /// The version.
    pub version: String,
    /// Full name.
    pub full_name: String,
    /// Short name.
    pub short_name: String,
    /// Rows in the version.
    pub rows: u64,
    /// Column names, in order.
    pub fields: Vec<String>,
    /// The column the publisher names as the primary key.
    pub primary_key: Option<String>,
}

/// One row of a version: its code, what it is called, and every column as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The code (the value a document or referral carries).
    pub code: String,
    /// Its name.
    pub display: String,
    /// Every column of the row as a JSON object.
    pub raw: String,
}

/// A version as the gateway keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The book.
    pub oid: String,
    /// The version.
    pub version: String,
    /// The book's name in this version.
    pub name: String,
    /// When it was published (epoch ms).
    pub published_at: i64,
    /// The publisher's stamp of the loaded rows.
    pub last_update: String,
    /// Withdrawn from use.
    pub archive: bool,
    /// Rows loaded.
    pub rows: u64,
    /// Every row is loaded (a version being loaded for the first time is not).
    pub loaded: bool,
    /// The book's current version.
    pub current: bool,
    /// When it was last loaded (epoch ms).
    pub synced_at: i64,
}

/// Compares versions as dotted numbers (`5.9` < `5.12`), falling back to text for parts
/// that are not numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The current version among `versions`: the latest published that is not archived (ties
/// broken by the higher version number).
pub fn current_of<'a>(
    versions: impl IntoIterator<Item = &'a VersionInfo>,
) -> Option<&'a VersionInfo> {
    versions.into_iter().filter(|v| !v.archive).max_by(|a, b| {
        a.published_at
            .cmp(&b.published_at)
            .then_with(|| compare_versions(&a.version, &b.version))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: &str, published_at: i64, archive: bool) -> VersionInfo {
        VersionInfo {
            version: version.into(),
            published_at,
            last_update: String::new(),
            archive,
        }
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(compare_versions("5.9", "5.12"), Ordering::Less);
        assert_eq!(compare_versions("5.12", "5.12"), Ordering::Equal);
        assert_eq!(compare_versions("5.12.1", "5.12"), Ordering::Greater);
        assert_eq!(compare_versions("2.a", "2.b"), Ordering::Less);
    }

    #[test]
    fn the_current_version_is_the_latest_published_not_archived() {
        let all = [v("5.11", 1, false), v("5.13", 3, true), v("5.12", 2, false)];
        assert_eq!(current_of(&all).map(|v| v.version.as_str()), Some("5.12"));
        let tie = [v("1.9", 5, false), v("1.10", 5, false)];
        assert_eq!(current_of(&tie).map(|v| v.version.as_str()), Some("1.10"));
        assert!(current_of(&[v("1", 1, true)]).is_none());
    }
}
