//! Synchronization of schedules from clinic systems: full (a window of days, idempotent,
//! bulk writes, slots that vanished are withdrawn) and incremental (change tokens).

use std::collections::HashMap;

use chrono::{Days, NaiveDate};

use futures_util::future::BoxFuture;

use crate::adapters::emias::{EmiasClient, EmiasError};
use crate::store::schedules::{Practitioner, SlotRow};
use crate::store::{now_ms, Store, StoreError};

/// One page of slots and the token of the next page.
pub type SchedulePage = (Vec<SlotRow>, Option<String>);
/// Slot changes and the next change token.
pub type Changes = (Vec<SlotChange>, String);

/// One change of a slot reported by a clinic system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChange {
    /// Slot id (with the source prefix).
    pub id: String,
    /// `booked`, `free`, `withdrawn` or `moved` (times changed, status kept).
    pub kind: String,
    /// The slot's current start and end (epoch ms), when the system reports them; a
    /// `moved` change always does.
    pub times: Option<(i64, i64)>,
}

/// A clinic system whose schedules the gateway synchronizes.
pub trait ScheduleSource: Send + Sync {
    /// Source name: the prefix of its slot and practitioner ids (`emias`, `fhir-mis`).
    fn source(&self) -> &'static str;

    /// Practitioners of an organization.
    fn resources<'a>(&'a self, org: &'a str)
        -> BoxFuture<'a, Result<Vec<Practitioner>, SyncError>>;

    /// One page of an organization's slots in `[from, to)` and the next page token.
    fn schedule_page<'a>(
        &'a self,
        org: &'a str,
        from: NaiveDate,
        to: NaiveDate,
        page: Option<&'a str>,
        specialty_of: &'a (dyn Fn(&str) -> String + Sync),
    ) -> BoxFuture<'a, Result<SchedulePage, SyncError>>;

    /// Slot changes since `token`, and the next token.
    fn changes<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Changes, SyncError>>;

    /// The token to start from when none is stored.
    fn initial_token(&self) -> String {
        "0".into()
    }
}

impl ScheduleSource for EmiasClient {
    fn source(&self) -> &'static str {
        crate::adapters::emias::SOURCE
    }

    fn resources<'a>(
        &'a self,
        org: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Practitioner>, SyncError>> {
        Box::pin(async move { Ok(EmiasClient::resources(self, org).await?) })
    }

    fn schedule_page<'a>(
        &'a self,
        org: &'a str,
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

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Practitioners written.
    pub practitioners: usize,
    /// Slots written.
    pub slots: usize,
    /// Slots marked withdrawn.
    pub withdrawn: usize,
    /// Slots whose times changed (incremental sync).
    pub moved: usize,
    /// Ids of the slots an incremental sync withdrew or moved: where appointments may need
    /// to follow.
    pub changed: Vec<String>,
}

/// Sync failures. Nothing is withdrawn unless every page of a full sync was read.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The city MIS failed.
    #[error(transparent)]
    Mis(#[from] EmiasError),
    /// Another clinic system failed.
    #[error("{0}")]
    Source(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Full sync of one organization for `days` days from `from`. `progress` is called with the
/// number of slots written so far.
pub async fn full_sync(
    store: &Store,
    client: &dyn ScheduleSource,
    org: &str,
    from: NaiveDate,
    days: u32,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<SyncReport, SyncError> {
    let started = now_ms();
    let practitioners = client.resources(org).await?;
    store.upsert_practitioners(&practitioners, started).await?;
    let specialty: HashMap<String, String> = practitioners
        .iter()
        .map(|p| (p.id.clone(), p.specialty_code.clone()))
        .collect();
    let specialty_of = |id: &str| specialty.get(id).cloned().unwrap_or_default();
    let to = from + Days::new(u64::from(days));
    let mut page: Option<String> = None;
    let mut slots = 0;
    loop {
        let (rows, next) = client
            .schedule_page(org, from, to, page.as_deref(), &specialty_of)
            .await?;
        store.upsert_slots(&rows, started).await?;
        slots += rows.len();
        progress(slots);
        match next {
            Some(n) => page = Some(n),
            None => break,
        }
    }
    let ms = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
            .unwrap_or_default()
    };
    let withdrawn = store
        .withdraw_unseen_slots(client.source(), org, ms(from), ms(to), started)
        .await?;
    // Recorded so that a running gateway checks every active appointment against its slot
    // in its next round: a full sync changes slots outside the change feed.
    store
        .set_change_token(
            client.source(),
            &format!("full:{org}"),
            &started.to_string(),
            now_ms(),
        )
        .await?;
    Ok(SyncReport {
        practitioners: practitioners.len(),
        slots,
        withdrawn: withdrawn.len(),
        moved: 0,
        changed: Vec::new(),
    })
}

/// Incremental sync: applies the MIS's slot changes since the stored token.
pub async fn incremental_sync(
    store: &Store,
    client: &dyn ScheduleSource,
) -> Result<SyncReport, SyncError> {
    let token = store
        .change_token(client.source(), "slots")
        .await?
        .unwrap_or_else(|| client.initial_token());
    let (changes, next) = client.changes(&token).await?;
    let now = now_ms();
    // The last status change of each slot wins; a move changes times, not status.
    let last: HashMap<&str, &str> = changes
        .iter()
        .filter(|c| c.kind != "moved")
        .map(|c| (c.id.as_str(), c.kind.as_str()))
        .collect();
    let of_kind = |kind: &str| -> Vec<String> {
        last.iter()
            .filter(|(_, k)| **k == kind)
            .map(|(id, _)| id.to_string())
            .collect()
    };
    // The last reported times of each slot; the store changes only those that differ.
    let times: HashMap<&str, (i64, i64)> = changes
        .iter()
        .filter_map(|c| Some((c.id.as_str(), c.times?)))
        .collect();
    let times: Vec<(String, i64, i64)> = times
        .into_iter()
        .map(|(id, (s, e))| (id.to_string(), s, e))
        .collect();
    let moved = store.set_slots_times(&times, now).await?;
    // Bookings and cancellations made directly in the MIS (its own registry desk).
    store
        .set_slots_status(&of_kind("booked"), "busy", now)
        .await?;
    store
        .set_slots_status(&of_kind("free"), "free", now)
        .await?;
    let withdrawn = of_kind("withdrawn");
    let n = store.set_slots_status(&withdrawn, "withdrawn", now).await?;
    store
        .set_change_token(client.source(), "slots", &next, now)
        .await?;
    Ok(SyncReport {
        practitioners: 0,
        slots: 0,
        withdrawn: n as usize,
        moved: moved.len(),
        changed: withdrawn.into_iter().chain(moved).collect(),
    })
}
