//! Client of the city-wide MIS (EMIAS-style SOAP 1.1; contract in `adapters/emias/`): the
//! schedule source its clinics publish through it.

use std::time::Duration;

use chrono::NaiveDate;
use futures_util::future::BoxFuture;

use crate::codec::soap;
use crate::codec::xml::dom::{escape_text as esc, Element, Limits};
use crate::exchange::partners::Partners;
use crate::exchange::txlog::TxLog;
use crate::model::schedule::{
    Channels, Practitioner, Slot, SlotChange, SlotChangeKind, SlotStatus,
};
use crate::model::Oid;
use crate::services::schedule_sync::{Changes, SchedulePage, ScheduleSource, SyncError};

/// Namespace of the MIS operations.
pub const NS: &str = "urn:medgate:sim:emias:v1";

/// Source name of records that come from this system.
pub const SOURCE: &str = "emias";

/// Why a call to the MIS failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmiasError {
    /// No answer in time.
    #[error("MIS did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection failure.
    #[error("MIS unreachable: {0}")]
    Transport(String),
    /// The MIS answered with a Fault.
    #[error("MIS refused ({code}): {message}")]
    Fault {
        /// Machine code from the Fault detail.
        code: String,
        /// Message.
        message: String,
    },
    /// The answer could not be read.
    #[error("unreadable MIS answer: {0}")]
    Malformed(String),
}

impl From<super::exchange::NoAnswer> for EmiasError {
    fn from(e: super::exchange::NoAnswer) -> Self {
        match e {
            super::exchange::NoAnswer::Timeout(d) => EmiasError::Timeout(d),
            super::exchange::NoAnswer::Transport(m) => EmiasError::Transport(m),
            e @ super::exchange::NoAnswer::CircuitOpen(_) => EmiasError::Transport(e.to_string()),
        }
    }
}

impl super::exchange::PartnerFault for EmiasError {
    fn is_partner_fault(&self) -> bool {
        match self {
            EmiasError::Timeout(_) | EmiasError::Transport(_) | EmiasError::Malformed(_) => true,
            // Refusals of a request (slot taken, ...) are answers; its own failures are not.
            EmiasError::Fault { code, .. } => {
                matches!(code.as_str(), "INTERNAL_ERROR" | "UNAVAILABLE" | "UNKNOWN")
            }
        }
    }
}

/// A configured client.
#[derive(Clone)]
pub struct EmiasClient {
    link: super::exchange::Link,
    url: String,
}

impl EmiasClient {
    /// A client of the MIS at `url`.
    pub fn new(url: &str, timeout: Duration, txlog: TxLog) -> EmiasClient {
        EmiasClient {
            link: super::exchange::Link::new(timeout, txlog, Partners::default()),
            url: url.to_string(),
        }
    }

    /// The same client reporting to the gateway's shared breakers.
    pub fn with_partners(mut self, partners: Partners) -> EmiasClient {
        self.link.partners = partners;
        self
    }

    /// Calls operation `op` with the inner XML of its element; the answer's operation element.
    pub(crate) async fn call_op(&self, op: &str, inner: &str) -> Result<Element, EmiasError> {
        self.call(op, inner).await
    }

    async fn call(&self, op: &str, inner: &str) -> Result<Element, EmiasError> {
        let body = format!(r#"<{op} xmlns="{NS}">{inner}</{op}>"#);
        let envelope = soap::envelope(soap::SoapVersion::V11, "", &body);
        let limits = Limits {
            max_bytes: 64 * 1024 * 1024,
            max_elements: 2_000_000,
            ..Limits::default()
        };
        let request = super::exchange::Request {
            method: reqwest::Method::POST,
            adapter: SOURCE,
            operation: format!("emias.{op}"),
            url: &self.url,
            correlation_id: op,
            headers: vec![
                ("content-type", "text/xml; charset=utf-8".into()),
                ("soapaction", format!("\"{NS}/{op}\"")),
            ],
            body: envelope,
        };
        super::exchange::exchange(&self.link, request, |_, bytes| {
            match soap::parse_request(bytes, &limits) {
                Err(e) => Err(EmiasError::Malformed(e.to_string())),
                Ok(p) if p.operation.name == "Fault" => {
                    let detail = p.operation.path(&["detail", "error"]);
                    Err(EmiasError::Fault {
                        code: detail
                            .and_then(|d| d.child_text("code"))
                            .unwrap_or("UNKNOWN")
                            .to_string(),
                        message: detail
                            .and_then(|d| d.child_text("message"))
                            .unwrap_or("")
                            .to_string(),
                    })
                }
                Ok(p) => Ok(p.operation),
            }
        })
        .await
    }

    /// Doctors of an organization.
    pub async fn resources(&self, org: &Oid) -> Result<Vec<Practitioner>, EmiasError> {
        let el = self
            .call(
                "GetResources",
                &format!("<OrgOid>{}</OrgOid>", esc(org.as_str())),
            )
            .await?;
        el.children_named("Resource")
            .map(|r| {
                let need = |n: &str| {
                    r.child_text(n)
                        .map(str::to_string)
                        .ok_or_else(|| EmiasError::Malformed(format!("Resource/{n} missing")))
                };
                let id = need("Id")?;
                let org = need("OrgOid")?;
                Ok(Practitioner {
                    id: format!("{SOURCE}:{id}"),
                    org: Oid::parse_organization(&org)
                        .map_err(|e| EmiasError::Malformed(format!("Resource/OrgOid: {e}")))?,
                    source: SOURCE.into(),
                    external_id: id,
                    snils: need("Snils")?,
                    family: need("Family")?,
                    given: need("Given")?,
                    specialty_code: r
                        .child("Specialty")
                        .and_then(|s| s.attr("code"))
                        .unwrap_or("")
                        .to_string(),
                    specialty_version: r
                        .child("Specialty")
                        .and_then(|s| s.attr("version"))
                        .unwrap_or("")
                        .to_string(),
                    position_code: r
                        .child("Position")
                        .and_then(|s| s.attr("code"))
                        .unwrap_or("")
                        .to_string(),
                    room: r.child_text("Room").unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    /// One page of an organization's schedule; the second value is the next page token.
    pub async fn schedule_page(
        &self,
        org: &Oid,
        from: NaiveDate,
        to: NaiveDate,
        page: Option<&str>,
        specialty_of: &(dyn Fn(&str) -> String + Sync),
    ) -> Result<(Vec<Slot>, Option<String>), EmiasError> {
        let inner = format!(
            "<OrgOid>{}</OrgOid><From>{from}</From><To>{to}</To><PageSize>5000</PageSize>{}",
            esc(org.as_str()),
            page.map(|p| format!("<PageToken>{}</PageToken>", esc(p)))
                .unwrap_or_default()
        );
        let el = self.call("GetSchedule", &inner).await?;
        let time = |s: Option<&str>, what: &str| -> Result<i64, EmiasError> {
            s.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| EmiasError::Malformed(format!("Slot/{what} is not a time")))
        };
        let mut rows = Vec::new();
        for s in el
            .child("Slots")
            .map(|x| x.children_named("Slot").collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let id = s
                .child_text("Id")
                .ok_or_else(|| EmiasError::Malformed("Slot/Id missing".into()))?;
            let resource = s.child_text("ResourceId").unwrap_or("");
            let practitioner_id = format!("{SOURCE}:{resource}");
            let status = s.child_text("Status").unwrap_or("free");
            rows.push(Slot {
                id: format!("{SOURCE}:{id}"),
                org: org.clone(),
                specialty_code: specialty_of(&practitioner_id),
                practitioner_id,
                start_at: time(s.child_text("Start"), "Start")?,
                end_at: time(s.child_text("End"), "End")?,
                status: SlotStatus::parse(status).ok_or_else(|| {
                    EmiasError::Malformed(format!("Slot/Status {status:?} is unknown"))
                })?,
                channels: Channels::parse_list(s.child_text("Channels").unwrap_or("")).ok_or_else(
                    || EmiasError::Malformed("Slot/Channels has an unknown channel".into()),
                )?,
                source: SOURCE.into(),
            });
        }
        Ok((rows, el.child_text("NextPageToken").map(str::to_string)))
    }

    /// Slot changes since `token` and the new token.
    pub async fn changes(&self, token: &str) -> Result<(Vec<SlotChange>, String), EmiasError> {
        let el = self
            .call("GetChanges", &format!("<Token>{}</Token>", esc(token)))
            .await?;
        let changes = el
            .child("Changes")
            .map(|c| {
                c.children_named("Change")
                    .filter_map(|x| {
                        let time = |n: &str| {
                            chrono::DateTime::parse_from_rfc3339(x.child_text(n)?)
                                .ok()
                                .map(|t| t.timestamp_millis())
                        };
                        Some(SlotChange {
                            id: format!("{SOURCE}:{}", x.child_text("SlotId")?),
                            kind: SlotChangeKind::parse(x.child_text("Kind")?)?,
                            times: time("Start").zip(time("End")),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let token = el
            .child_text("Token")
            .ok_or_else(|| EmiasError::Malformed("Token missing".into()))?;
        Ok((changes, token.to_string()))
    }
}

impl From<EmiasError> for SyncError {
    fn from(e: EmiasError) -> Self {
        SyncError::Source(e.to_string())
    }
}

impl ScheduleSource for EmiasClient {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn resources<'a>(
        &'a self,
        org: &'a Oid,
    ) -> BoxFuture<'a, Result<Vec<Practitioner>, SyncError>> {
        Box::pin(async move { Ok(EmiasClient::resources(self, org).await?) })
    }

    fn schedule_page<'a>(
        &'a self,
        org: &'a Oid,
        from: NaiveDate,
        to: NaiveDate,
        page: Option<&'a str>,
        specialty_of: &'a (dyn Fn(&str) -> String + Sync),
    ) -> BoxFuture<'a, Result<SchedulePage, SyncError>> {
        Box::pin(async move {
            Ok(EmiasClient::schedule_page(self, org, from, to, page, specialty_of).await?)
        })
    }

    fn changes<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Changes, SyncError>> {
        Box::pin(async move { Ok(EmiasClient::changes(self, token).await?) })
    }
}
