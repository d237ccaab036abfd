//! Client of the Ministry's reference-book service, FNSI REST (contract in `adapters/nsi/`):
//! a book's versions, a version's passport and its data pages. Each request is tried at
//! most `attempts` times when the service fails (5xx, no answer, an unreadable answer),
//! with a growing pause between; a refusal (`"result": "ERROR"`) is not retried.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::exchange::{exchange, Link, NoAnswer, PartnerFault, Request};
use crate::config::{NsiSettings, Secret};
use crate::exchange::partners::Partners;
use crate::exchange::txlog::TxLog;
use crate::model::nsi::{Passport, VersionInfo};
use crate::model::Oid;
use crate::services::nsi::{DataPage, NsiSource, SourceError};

/// Partner name (transaction log protocol, circuit breaker).
pub const PARTNER: &str = "nsi";
/// Versions asked for per page of the version list.
const VERSIONS_PAGE: u32 = 100;
/// Pages of the version list read at most (a book has tens of versions, not thousands).
const MAX_VERSION_PAGES: u32 = 50;
/// The pause after a failed attempt, times the attempt's number.
const BACKOFF: Duration = Duration::from_millis(250);

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NsiClientError {
    /// Timeout or transport failure.
    #[error("reference-book service unreachable: {0}")]
    NoAnswer(String),
    /// An error status without the service's own answer.
    #[error("reference-book service answered HTTP {status}")]
    Status {
        /// HTTP status.
        status: u16,
    },
    /// The service's refusal: `result` `ERROR` with its code and text.
    #[error("reference-book service refused ({code}): {text}")]
    Refused {
        /// `resultCode`.
        code: String,
        /// `resultText`.
        text: String,
    },
    /// The answer could not be read.
    #[error("unreadable reference-book service answer: {0}")]
    Malformed(String),
}

impl From<NoAnswer> for NsiClientError {
    fn from(e: NoAnswer) -> Self {
        NsiClientError::NoAnswer(e.to_string())
    }
}

impl PartnerFault for NsiClientError {
    fn is_partner_fault(&self) -> bool {
        match self {
            NsiClientError::NoAnswer(_) | NsiClientError::Malformed(_) => true,
            NsiClientError::Status { status } => *status >= 500,
            NsiClientError::Refused { .. } => false,
        }
    }
}

/// What every answer carries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    result: Option<String>,
    result_text: Option<String>,
    result_code: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionList {
    total: Option<u64>,
    #[serde(default)]
    list: Vec<VersionItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionItem {
    version: String,
    publish_date: Option<String>,
    create_date: Option<String>,
    last_update: Option<String>,
    #[serde(default)]
    archive: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PassportBody {
    oid: Option<String>,
    version: Option<String>,
    full_name: Option<String>,
    short_name: Option<String>,
    rows_count: Option<u64>,
    #[serde(default)]
    fields: Vec<FieldItem>,
    #[serde(default)]
    keys: Vec<KeyItem>,
}

#[derive(Deserialize)]
struct FieldItem {
    field: String,
}

#[derive(Deserialize)]
struct KeyItem {
    field: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct DataBody {
    total: Option<u64>,
    #[serde(default)]
    list: Vec<Vec<Cell>>,
}

#[derive(Deserialize)]
struct Cell {
    column: String,
    value: Option<serde_json::Value>,
}

/// A date of the service (`29.12.2021 13:58`, `29.12.2021` or ISO) as epoch ms.
fn date_ms(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    for f in [
        "%d.%m.%Y %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    for f in ["%d.%m.%Y", "%Y-%m-%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(raw, f) {
            return d
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis());
        }
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A configured client.
#[derive(Clone)]
pub struct NsiClient {
    link: Link,
    base: String,
    user_key: Secret,
    attempts: u32,
}

impl NsiClient {
    /// A client of the service `settings` name, recording its calls in `txlog`.
    pub fn new(settings: &NsiSettings, txlog: TxLog) -> NsiClient {
        NsiClient {
            link: Link::new(
                Duration::from_secs(settings.timeout_secs),
                txlog,
                Partners::default(),
            ),
            base: settings.url.trim_end_matches('/').to_string(),
            user_key: settings.user_key.clone(),
            attempts: settings.attempts.max(1),
        }
    }

    /// The same client reporting to the gateway's shared breakers.
    pub fn with_partners(mut self, partners: Partners) -> NsiClient {
        self.link.partners = partners;
        self
    }

    /// `GET /port/rest/<method>?userKey=...&<params>`, its JSON read as `T` once the
    /// service said `OK`; tried up to `attempts` times while the service fails.
    async fn get<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[(&str, String)],
    ) -> Result<T, SourceError> {
        let query = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("userKey", self.user_key.expose());
            for (k, v) in params {
                q.append_pair(k, v);
            }
            q.finish()
        };
        let url = format!("{}/port/rest/{method}?{query}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = Request {
                adapter: PARTNER,
                operation: format!("nsi.{method}"),
                method: reqwest::Method::GET,
                url: &url,
                correlation_id: method,
                headers: vec![("accept", "application/json".into())],
                body: String::new(),
            };
            let result = exchange(&self.link, request, |status, bytes| {
                let outcome: Result<Outcome, _> = serde_json::from_slice(bytes);
                match outcome {
                    Ok(o) if o.result.as_deref() == Some("ERROR") => Err(NsiClientError::Refused {
                        code: o
                            .result_code
                            .map(|c| c.to_string().trim_matches('"').to_string())
                            .unwrap_or_default(),
                        text: o.result_text.unwrap_or_default(),
                    }),
                    _ if status >= 400 => Err(NsiClientError::Status { status }),
                    Ok(_) => serde_json::from_slice::<T>(bytes)
                        .map_err(|e| NsiClientError::Malformed(e.to_string())),
                    Err(e) => Err(NsiClientError::Malformed(e.to_string())),
                }
            })
            .await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.is_partner_fault() && attempt < self.attempts => {
                    tracing::debug!(method, attempt, error = %e, "reference-book service failed; trying again");
                    tokio::time::sleep(BACKOFF * attempt).await;
                }
                Err(e) => {
                    return Err(SourceError(format!(
                        "{method}: {e} (attempt {attempt} of {})",
                        self.attempts
                    )))
                }
            }
        }
    }
}

impl NsiSource for NsiClient {
    fn versions<'a>(
        &'a self,
        oid: &'a Oid,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, SourceError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for page in 1..=MAX_VERSION_PAGES {
                let list: VersionList = self
                    .get(
                        "versions",
                        &[
                            ("identifier", oid.to_string()),
                            ("page", page.to_string()),
                            ("size", VERSIONS_PAGE.to_string()),
                        ],
                    )
                    .await?;
                let got = list.list.len();
                for v in list.list {
                    let published = v
                        .publish_date
                        .as_deref()
                        .or(v.create_date.as_deref())
                        .and_then(date_ms)
                        .ok_or_else(|| {
                            SourceError(format!(
                                "versions of {oid}: version {} has no readable publishDate",
                                v.version
                            ))
                        })?;
                    out.push(VersionInfo {
                        last_update: v.last_update.or(v.publish_date).unwrap_or_default(),
                        version: v.version,
                        published_at: published,
                        archive: v.archive,
                    });
                }
                let total = list.total.unwrap_or(out.len() as u64);
                if got < VERSIONS_PAGE as usize || out.len() as u64 >= total {
                    return Ok(out);
                }
            }
            Err(SourceError(format!(
                "versions of {oid}: more than {} pages",
                MAX_VERSION_PAGES
            )))
        })
    }

    fn passport<'a>(
        &'a self,
        oid: &'a Oid,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Passport, SourceError>> {
        Box::pin(async move {
            let p: PassportBody = self
                .get(
                    "passport",
                    &[
                        ("identifier", oid.to_string()),
                        ("version", version.to_string()),
                    ],
                )
                .await?;
            if p.oid.as_deref().is_some_and(|o| o != oid.as_str())
                || p.version.as_deref().is_some_and(|v| v != version)
            {
                return Err(SourceError(format!(
                    "passport of {oid} {version}: the service answered for {:?} {:?}",
                    p.oid, p.version
                )));
            }
            let primary_key = p
                .keys
                .iter()
                .find(|k| {
                    k.kind
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case("PRIMARY"))
                })
                .map(|k| k.field.clone());
            Ok(Passport {
                oid: oid.clone(),
                version: version.to_string(),
                full_name: p.full_name.unwrap_or_else(|| oid.to_string()),
                short_name: p.short_name.unwrap_or_default(),
                rows: p.rows_count.unwrap_or(0),
                fields: p.fields.into_iter().map(|f| f.field).collect(),
                primary_key,
            })
        })
    }

    fn page<'a>(
        &'a self,
        oid: &'a Oid,
        version: &'a str,
        page: u32,
        size: u32,
    ) -> BoxFuture<'a, Result<DataPage, SourceError>> {
        Box::pin(async move {
            let d: DataBody = self
                .get(
                    "data",
                    &[
                        ("identifier", oid.to_string()),
                        ("version", version.to_string()),
                        ("page", page.to_string()),
                        ("size", size.to_string()),
                    ],
                )
                .await?;
            let rows: Vec<Vec<(String, String)>> = d
                .list
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|c| {
                            let value = match c.value {
                                None | Some(serde_json::Value::Null) => String::new(),
                                Some(serde_json::Value::String(s)) => s,
                                Some(other) => other.to_string(),
                            };
                            (c.column, value)
                        })
                        .collect()
                })
                .collect();
            Ok(DataPage {
                total: d.total.unwrap_or(rows.len() as u64),
                rows,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::date_ms;

    #[test]
    fn the_services_dates_are_read() {
        let a = date_ms("29.12.2021 13:58").unwrap();
        let b = date_ms("29.12.2021").unwrap();
        assert_eq!(a - b, (13 * 60 + 58) * 60_000);
        assert_eq!(date_ms("2021-12-29"), Some(b));
        assert!(date_ms("yesterday").is_none());
    }
}
