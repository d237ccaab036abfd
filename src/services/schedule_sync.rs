//! Synchronization of schedules from clinic systems: full (a window of days, idempotent,
//! bulk writes, slots that vanished are withdrawn) and incremental (change tokens), and the
//! port every clinic system that publishes schedules implements.

use std::collections::HashMap;

use chrono::{Days, NaiveDate};

use futures_util::future::BoxFuture;

use crate::model::schedule::{Practitioner, Slot, SlotChange, SlotStatus};
use crate::model::time::day_start_ms;
use crate::model::Oid;
use crate::store::{Store, StoreError};

/// One page of slots and the token of the next page.
pub type SchedulePage = (Vec<Slot>, Option<String>);
/// Slot changes and the next change token.
pub type Changes = (Vec<SlotChange>, String);

/// Port: a clinic system whose schedules the gateway synchronizes.
pub trait ScheduleSource: Send + Sync {
    /// Source name: the prefix of its slot and practitioner ids (`emias`, `fhir-mis`).
    fn source(&self) -> &'static str;

    /// Practitioners of an organization.
    fn resources<'a>(&'a self, org: &'a Oid)
        -> BoxFuture<'a, Result<Vec<Practitioner>, SyncError>>;

    /// One page of an organization's slots in `[from, to)` and the next page token.
    fn schedule_page<'a>(
        &'a self,
        org: &'a Oid,
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
    /// The clinic system failed or answered something unreadable.
    #[error("{0}")]
    Source(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Full sync of one organization for `days` days from `from`, at `now` (epoch ms).
/// `progress` is called with the number of slots written so far.
pub async fn full_sync(
    store: &Store,
    client: &dyn ScheduleSource,
    org: &Oid,
    from: NaiveDate,
    days: u32,
    now: i64,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<SyncReport, SyncError> {
    let started = now;
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
    let withdrawn = store
        .withdraw_unseen_slots(
            client.source(),
            org,
            day_start_ms(from),
            day_start_ms(to),
            started,
        )
        .await?;
    // Recorded so that a running gateway checks every active appointment against its slot
    // in its next round: a full sync changes slots outside the change feed.
    store
        .set_change_token(
            client.source(),
            &format!("full:{org}"),
            &started.to_string(),
            started,
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

/// Incremental sync at `now` (epoch ms): applies the clinic system's slot changes since the
/// stored token.
pub async fn incremental_sync(
    store: &Store,
    client: &dyn ScheduleSource,
    now: i64,
) -> Result<SyncReport, SyncError> {
    let token = store
        .change_token(client.source(), "slots")
        .await?
        .unwrap_or_else(|| client.initial_token());
    let (changes, next) = client.changes(&token).await?;
    // The last status change of each slot wins; a move changes times, not status.
    let last: HashMap<&str, SlotStatus> = changes
        .iter()
        .filter_map(|c| Some((c.id.as_str(), c.kind.status()?)))
        .collect();
    let of_status = |status: SlotStatus| -> Vec<String> {
        last.iter()
            .filter(|(_, s)| **s == status)
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
    for status in [SlotStatus::Busy, SlotStatus::Free] {
        store
            .set_slots_status(&of_status(status), status, now)
            .await?;
    }
    let withdrawn = of_status(SlotStatus::Withdrawn);
    let n = store
        .set_slots_status(&withdrawn, SlotStatus::Withdrawn, now)
        .await?;
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
