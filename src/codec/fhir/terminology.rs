//! Reference books as FHIR terminology: a kept version as a `CodeSystem` (its concepts
//! inline when few), and a page of its codes as a `ValueSet` expansion (`$expand`).

use serde_json::{json, Value};

use super::URI_SYSTEM;
use crate::model::nsi::{Entry, StoredVersion};
use crate::model::time::instant_secs;

/// Extension marking the book's current version.
pub const CURRENT_EXTENSION: &str = "https://medgate.example/fhir/StructureDefinition/nsi-current";

/// The canonical URL of a book: `urn:oid:<oid>`.
pub fn book_url(oid: &str) -> String {
    format!("urn:oid:{oid}")
}

/// The FHIR id of a kept version: `<oid>-<version>`.
pub fn code_system_id(v: &StoredVersion) -> String {
    format!("{}-{}", v.oid, v.version)
}

/// A kept version as a `CodeSystem`: with `concepts` inline (`content` complete), or
/// without (`not-present`: page them with `ValueSet/$expand`).
pub fn code_system(v: &StoredVersion, concepts: Option<&[Entry]>) -> Value {
    let mut cs = json!({
        "resourceType": "CodeSystem",
        "id": code_system_id(v),
        "url": book_url(&v.oid),
        "identifier": [{"system": URI_SYSTEM, "value": book_url(&v.oid)}],
        "version": v.version,
        "name": v.name,
        "title": v.name,
        "status": if v.archive { "retired" } else { "active" },
        "date": instant_secs(v.published_at),
        "publisher": "Ministry of Health of the Russian Federation (NSI)",
        "caseSensitive": true,
        "count": v.rows,
        "extension": [{"url": CURRENT_EXTENSION, "valueBoolean": v.current}],
        "meta": {"lastUpdated": instant_secs(v.synced_at)},
    });
    match concepts {
        Some(c) => {
            cs["content"] = json!("complete");
            cs["concept"] = c
                .iter()
                .map(|e| json!({"code": e.code, "display": e.display}))
                .collect();
        }
        None => {
            cs["content"] = json!("not-present");
            cs["text"] = json!({"status": "generated", "div": format!(
                "<div xmlns=\"http://www.w3.org/1999/xhtml\">{} codes: page them with ValueSet/$expand?url={}&amp;valueSetVersion={}</div>",
                v.rows, book_url(&v.oid), v.version
            )});
        }
    }
    cs
}

/// What an expansion was asked for.
pub struct Expansion<'a> {
    /// Its identifier (`urn:uuid:...`).
    pub identifier: String,
    /// When it was made (epoch ms).
    pub at: i64,
    /// Codes that match in all.
    pub total: u64,
    /// Codes skipped before this page.
    pub offset: u64,
    /// Codes asked for.
    pub count: u32,
    /// The text filter, if any.
    pub filter: Option<&'a str>,
}

/// A page of the codes of a kept version as an expanded `ValueSet`.
pub fn expanded_value_set(v: &StoredVersion, x: &Expansion<'_>, entries: &[Entry]) -> Value {
    let url = book_url(&v.oid);
    let mut parameter = vec![
        json!({"name": "version", "valueUri": format!("{url}|{}", v.version)}),
        json!({"name": "offset", "valueInteger": x.offset}),
        json!({"name": "count", "valueInteger": x.count}),
    ];
    if let Some(f) = x.filter {
        parameter.push(json!({"name": "filter", "valueString": f}));
    }
    json!({
        "resourceType": "ValueSet",
        "url": url,
        "version": v.version,
        "name": v.name,
        "status": if v.archive { "retired" } else { "active" },
        "compose": {"include": [{"system": url, "version": v.version}]},
        "expansion": {
            "identifier": x.identifier,
            "timestamp": instant_secs(x.at),
            "total": x.total,
            "offset": x.offset,
            "parameter": parameter,
            "contains": entries.iter().map(|e| json!({
                "system": url, "version": v.version, "code": e.code, "display": e.display,
            })).collect::<Vec<_>>(),
        },
    })
}
