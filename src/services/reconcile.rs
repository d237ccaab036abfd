//! Schedule reconciliation: the gateway's slots and appointments of one organization compared
//! with the clinic system that owns them over the next days, and the drift repaired in the
//! right direction. The clinic system owns slots (their existence, times, channels and
//! whether its own desk booked them); the gateway owns the bookings it confirmed, so one the
//! clinic lost is booked there again, or marked for a person when the clinic refuses.

use std::collections::HashMap;

use chrono::Days;
use serde::Serialize;

use super::booking::{Booking, BookingError, Rebook};
use super::schedule_sync::{ScheduleSource, SyncError};
use crate::model::booking::AppointmentStatus;
use crate::model::schedule::{Slot, SlotStatus};
use crate::model::time::{day_start_ms, SharedClock};
use crate::model::Oid;
use crate::store::{Store, StoreError};

/// Appointments followed per call of the booking service (its own batch size).
const FOLLOW_BATCH: usize = 1000;

/// Flagged appointments named in a report; the rest are counted.
const MAX_NAMED: usize = 50;

/// What the reconciliation of one organization found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrgReport {
    /// Slots compared (the clinic's and the gateway's, once each).
    pub examined: u64,
    /// Slots the clinic has and the gateway lacked (or had withdrawn): stored.
    pub added: u64,
    /// Slots the clinic withdrew or no longer has: withdrawn here.
    pub withdrawn: u64,
    /// Slots whose times or channels changed at the clinic: taken over.
    pub changed: u64,
    /// Slots the clinic's own desk booked: busy here.
    pub booked_at_clinic: u64,
    /// Slots busy here with no booking of ours that the clinic has free: free again.
    pub freed: u64,
    /// Bookings of ours the clinic lost, booked there again.
    pub resent: u64,
    /// Bookings of ours the clinic lost and refused to book again: marked for a person.
    pub flagged: u64,
    /// The first flagged appointments, with the reason.
    pub flagged_appointments: Vec<(String, String)>,
    /// Differences left for the next run (a hold or our own effect under way, the clinic
    /// unreachable for a re-booking).
    pub pending: u64,
    /// Appointments that followed withdrawn or moved slots (patients notified).
    pub appointments_followed: u64,
}

impl OrgReport {
    /// Differences found.
    pub fn found(&self) -> u64 {
        self.repaired() + self.flagged + self.pending
    }

    /// Differences put right.
    pub fn repaired(&self) -> u64 {
        self.added
            + self.withdrawn
            + self.changed
            + self.booked_at_clinic
            + self.freed
            + self.resent
    }
}

/// Why an organization was not reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The clinic system failed or answered something unreadable: nothing was changed.
    #[error(transparent)]
    Source(#[from] SyncError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Following appointments failed.
    #[error(transparent)]
    Booking(#[from] BookingError),
}

/// The reconciliation of schedules with their clinic systems.
#[derive(Clone)]
pub struct ScheduleReconciliation {
    store: Store,
    booking: Booking,
    days: u32,
    clock: SharedClock,
}

impl ScheduleReconciliation {
    /// Compares `days` days ahead, repairing through `store` and `booking`.
    pub fn new(
        store: Store,
        booking: Booking,
        days: u32,
        clock: SharedClock,
    ) -> ScheduleReconciliation {
        ScheduleReconciliation {
            store,
            booking,
            days,
            clock,
        }
    }

    /// The (source, organization) pairs to compare.
    pub async fn organizations(&self) -> Result<Vec<(String, Oid)>, StoreError> {
        self.store.schedule_organizations().await
    }

    /// Reconciles `org`'s schedule from `source`, from today on. Everything is read from
    /// the clinic system before anything changes here.
    pub async fn reconcile(
        &self,
        source: &dyn ScheduleSource,
        org: &Oid,
    ) -> Result<OrgReport, ReconcileError> {
        let now = self.clock.now_ms();
        let from = crate::model::time::from_ms(now).date_naive();
        let to = from + Days::new(u64::from(self.days));
        let practitioners = source.resources(org).await.map_err(ReconcileError::from)?;
        let specialty: HashMap<String, String> = practitioners
            .iter()
            .map(|p| (p.id.clone(), p.specialty_code.clone()))
            .collect();
        let specialty_of = |id: &str| specialty.get(id).cloned().unwrap_or_default();
        let mut theirs: HashMap<String, Slot> = HashMap::new();
        let mut page: Option<String> = None;
        loop {
            let (rows, next) = source
                .schedule_page(org, from, to, page.as_deref(), &specialty_of)
                .await?;
            theirs.extend(rows.into_iter().map(|s| (s.id.clone(), s)));
            match next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        self.store.upsert_practitioners(&practitioners, now).await?;
        let ours = self
            .store
            .slots_of(source.source(), org, day_start_ms(from), day_start_ms(to))
            .await?;
        let diff = Diff::of(&theirs, &ours);
        self.repair(diff, theirs.len() + ours.len(), now, &theirs)
            .await
    }

    async fn repair(
        &self,
        diff: Diff,
        examined: usize,
        now: i64,
        theirs: &HashMap<String, Slot>,
    ) -> Result<OrgReport, ReconcileError> {
        let mut report = OrgReport {
            examined: examined as u64,
            ..OrgReport::default()
        };
        let take = |ids: &[String]| -> Vec<Slot> {
            ids.iter()
                .filter_map(|id| theirs.get(id).cloned())
                .collect()
        };
        self.store.upsert_slots(&take(&diff.add), now).await?;
        report.added = diff.add.len() as u64;
        self.store.upsert_slots(&take(&diff.change), now).await?;
        report.changed = diff.change.len() as u64;
        report.withdrawn = self
            .store
            .set_slots_status(&diff.withdraw, SlotStatus::Withdrawn, now)
            .await?;
        report.booked_at_clinic = self
            .store
            .set_slots_status(&diff.busy, SlotStatus::Busy, now)
            .await?;
        // Free there, busy here: a booking of ours the clinic lost, or a desk booking it
        // cancelled without a word.
        let active: HashMap<String, crate::model::booking::Appointment> = self
            .store
            .active_on_slots(&diff.free)
            .await?
            .into_iter()
            .filter_map(|a| Some((a.slot_id.clone()?, a)))
            .collect();
        for slot in &diff.free {
            match active.get(slot) {
                None => {
                    self.store.free_slot_if_unheld(slot).await?;
                    report.freed += 1;
                }
                Some(a) if a.status == AppointmentStatus::Held => report.pending += 1,
                Some(a) => match self.booking.rebook_lost(a).await? {
                    Rebook::Resent => report.resent += 1,
                    Rebook::Pending => report.pending += 1,
                    Rebook::Flagged(why) => {
                        report.flagged += 1;
                        if report.flagged_appointments.len() < MAX_NAMED {
                            report.flagged_appointments.push((a.id.clone(), why));
                        }
                    }
                },
            }
        }
        // Appointments follow their slots, patients told (as after a schedule round).
        for chunk in diff.withdraw.chunks(FOLLOW_BATCH) {
            report.appointments_followed +=
                self.booking.handle_withdrawn_slots(Some(chunk)).await? as u64;
        }
        for chunk in diff.change.chunks(FOLLOW_BATCH) {
            report.appointments_followed +=
                self.booking.handle_moved_slots(Some(chunk)).await? as u64;
        }
        Ok(report)
    }
}

/// Where the two sides differ, by slot id.
#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    /// The clinic has it (not withdrawn); here it is missing or withdrawn.
    add: Vec<String>,
    /// Times or channels differ.
    change: Vec<String>,
    /// Withdrawn there or gone; open here.
    withdraw: Vec<String>,
    /// Busy there, free here.
    busy: Vec<String>,
    /// Free there, busy here.
    free: Vec<String>,
}

impl Diff {
    fn of(theirs: &HashMap<String, Slot>, ours: &[Slot]) -> Diff {
        use SlotStatus::{Busy, Free, Withdrawn};
        let mut d = Diff::default();
        let mine: HashMap<&str, &Slot> = ours.iter().map(|s| (s.id.as_str(), s)).collect();
        for (id, t) in theirs {
            match mine.get(id.as_str()) {
                None if t.status != Withdrawn => d.add.push(id.clone()),
                None => {}
                Some(m) if m.status == Withdrawn && t.status != Withdrawn => d.add.push(id.clone()),
                Some(m) if t.status == Withdrawn && m.status != Withdrawn => {
                    d.withdraw.push(id.clone())
                }
                Some(_) if t.status == Withdrawn => {}
                Some(m) => {
                    if (m.start_at, m.end_at, m.channels) != (t.start_at, t.end_at, t.channels) {
                        d.change.push(id.clone());
                    }
                    match (t.status, m.status) {
                        (Busy, Free) => d.busy.push(id.clone()),
                        (Free, Busy) => d.free.push(id.clone()),
                        _ => {}
                    }
                }
            }
        }
        for m in ours {
            if m.status != Withdrawn && !theirs.contains_key(&m.id) {
                d.withdraw.push(m.id.clone());
            }
        }
        // One order whatever the maps' order: repairs reach the store alike every run.
        for v in [
            &mut d.add,
            &mut d.change,
            &mut d.withdraw,
            &mut d.busy,
            &mut d.free,
        ] {
            v.sort();
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schedule::Channels;

    fn slot(id: &str, status: SlotStatus, start: i64) -> Slot {
        Slot {
            id: id.into(),
            org: Oid::parse_organization("1.2.643.5.1.13.13.12.2.77.7001").unwrap(),
            practitioner_id: "emias:D00001".into(),
            specialty_code: "27".into(),
            start_at: start,
            end_at: start + 1_200_000,
            status,
            channels: Channels::ALL,
            source: "emias".into(),
        }
    }

    #[test]
    fn each_kind_of_drift_lands_in_its_repair() {
        use SlotStatus::{Busy, Free, Withdrawn};
        let theirs: HashMap<String, Slot> = [
            slot("a", Free, 0),      // missing here
            slot("b", Withdrawn, 0), // withdrawn there
            slot("c", Free, 60_000), // moved there
            slot("d", Busy, 0),      // desk booking
            slot("e", Free, 0),      // free there, busy here
            slot("f", Free, 0),      // withdrawn here, open there
            slot("g", Free, 0),      // equal
        ]
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
        let ours = vec![
            slot("b", Free, 0),
            slot("c", Free, 0),
            slot("d", Free, 0),
            slot("e", Busy, 0),
            slot("f", Withdrawn, 0),
            slot("g", Free, 0),
            slot("h", Busy, 0), // gone there
        ];
        let d = Diff::of(&theirs, &ours);
        assert_eq!(d.add, ["a", "f"]);
        assert_eq!(d.withdraw, ["b", "h"]);
        assert_eq!(d.change, ["c"]);
        assert_eq!(d.busy, ["d"]);
        assert_eq!(d.free, ["e"]);
    }
}
