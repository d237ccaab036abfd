//! The directory and the read side of schedules: organizations (and the place of care each
//! runs), practitioners, slot search, and the free slots a booking channel may take. Every
//! edge asks here instead of reading the store; the known-organization rule lives here.

use crate::model::organization::Organization;
use crate::model::schedule::{Channel, Channels, Practitioner, Slot, SlotStatus};
use crate::model::time::SharedClock;
use crate::model::Oid;
pub use crate::store::schedules::SlotQuery;
use crate::store::{Store, StoreError};

/// Why a directory or schedule question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The organization is not known to the gateway.
    #[error("organization {0} is not known to the gateway")]
    UnknownOrganization(Oid),
    /// The organization has no such practitioner.
    #[error("clinic {org} has no doctor {id}")]
    UnknownPractitioner {
        /// Organization.
        org: Oid,
        /// Practitioner id as asked.
        id: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A search for free slots a channel may take.
#[derive(Debug, Clone)]
pub struct FreeSlots {
    /// Organization.
    pub org: Option<Oid>,
    /// Practitioner id.
    pub practitioner_id: Option<String>,
    /// Specialty code.
    pub specialty_code: Option<String>,
    /// Earliest start (epoch ms); never before now.
    pub from: Option<i64>,
    /// Start before (epoch ms).
    pub to: Option<i64>,
    /// The channel that would book.
    pub channel: Channel,
    /// At most this many slots.
    pub limit: usize,
    /// At most this many free slots examined before giving up on finding `limit` (slots
    /// the channel may not take are skipped).
    pub scan: usize,
}

/// How free slots are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountBy<'a> {
    /// Per specialty.
    Specialty,
    /// Per practitioner of one specialty.
    Practitioner(&'a str),
}

/// The directory and schedule reads.
#[derive(Clone, Debug)]
pub struct Schedules {
    store: Store,
    clock: SharedClock,
}

impl Schedules {
    /// Reads over `store`; "now" comes from `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Schedules {
        Schedules { store, clock }
    }

    /// Now, as the services see it.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The organization, if the gateway knows it: the one rule every edge applies to an
    /// organization named in a request.
    pub async fn known_organization(&self, org: &Oid) -> Result<Organization, ScheduleError> {
        self.store
            .get_organization(org)
            .await?
            .ok_or_else(|| ScheduleError::UnknownOrganization(org.clone()))
    }

    /// Active organizations ordered by OID, optionally of one district or with a name part.
    pub async fn organizations(
        &self,
        district: Option<&str>,
        name_contains: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<Vec<Organization>, ScheduleError> {
        Ok(self
            .store
            .list_organizations(district, name_contains, offset, limit)
            .await?)
    }

    /// Practitioners of an organization (or all), ordered by id.
    pub async fn practitioners(
        &self,
        org: Option<&Oid>,
        limit: u32,
    ) -> Result<Vec<Practitioner>, ScheduleError> {
        Ok(self.store.list_practitioners(org, limit).await?)
    }

    /// A practitioner of `org`. A practitioner of the organization vouches for it (one
    /// lookup); otherwise the answer says whether the organization or the practitioner is
    /// unknown.
    pub async fn practitioner_of(
        &self,
        org: &Oid,
        id: &str,
    ) -> Result<Practitioner, ScheduleError> {
        match self.store.get_practitioner(id).await? {
            Some(p) if &p.org == org => Ok(p),
            _ => {
                self.known_organization(org).await?;
                Err(ScheduleError::UnknownPractitioner {
                    org: org.clone(),
                    id: id.to_string(),
                })
            }
        }
    }

    /// Slots matching `q`, ordered by (start, id), at most `limit`.
    pub async fn slots(&self, q: &SlotQuery, limit: u32) -> Result<Vec<Slot>, ScheduleError> {
        Ok(self.store.search_slots(q, limit).await?)
    }

    /// One slot.
    pub async fn slot(&self, id: &str) -> Result<Option<Slot>, ScheduleError> {
        Ok(self.store.slot(id).await?)
    }

    /// Free slots ahead that `q.channel` may take, in start order: the one search behind
    /// FHIR `$find`, the hub's dates and appointments, and the alternatives offered to a
    /// patient whose slot was withdrawn.
    pub async fn find_free(&self, q: &FreeSlots) -> Result<Vec<Slot>, ScheduleError> {
        let now = self.clock.now_ms();
        let mut query = SlotQuery {
            org: q.org.clone(),
            practitioner_id: q.practitioner_id.clone(),
            specialty_code: q.specialty_code.clone(),
            status: Some(SlotStatus::Free),
            start_from: Some(q.from.map_or(now, |f| f.max(now))),
            start_to: q.to,
            after: None,
        };
        // Pages as large as the answer (at least 200, at most 1000): one query usually.
        let page = q.limit.clamp(200, 1000) as u32;
        let mut out = Vec::new();
        let mut examined = 0;
        while out.len() < q.limit && examined < q.scan {
            let rows = self.store.search_slots(&query, page).await?;
            let Some(last) = rows.last() else { break };
            query.after = Some((last.start_at, last.id.clone()));
            let full = rows.len() == page as usize;
            examined += rows.len();
            out.extend(rows.into_iter().filter(|s| s.channels.contains(q.channel)));
            if !full {
                break;
            }
        }
        out.truncate(q.limit);
        Ok(out)
    }

    /// Free slots ahead of an organization that `channel` may take, counted.
    pub async fn free_counts(
        &self,
        org: &Oid,
        channel: Channel,
        by: CountBy<'_>,
    ) -> Result<Vec<(String, i64)>, ScheduleError> {
        let (by_practitioner, specialty) = match by {
            CountBy::Specialty => (false, None),
            CountBy::Practitioner(s) => (true, Some(s)),
        };
        Ok(self
            .store
            .free_slot_counts(
                org,
                self.clock.now_ms(),
                Channels::of(&[channel]),
                by_practitioner,
                specialty,
            )
            .await?)
    }
}
