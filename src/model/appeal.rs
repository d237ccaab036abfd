//! Citizens' appeals: where they come from, what they are about, what kind of appeal sets
//! their deadline, their states, and the working-day calendar deadlines are counted in.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{Datelike, Days, NaiveDate, TimeZone, Weekday};

use super::time::{from_ms, DAY_MS};

/// Where an appeal came from (and where its answer goes back to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppealChannel {
    /// The portal's pre-trial complaint service.
    PortalComplaint,
    /// A district's public chat.
    DistrictChat,
    /// A call to the ministry's or a clinic's line.
    Phone,
    /// In person, at a reception.
    InPerson,
}

/// What an appeal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppealTopic {
    /// Booking an appointment.
    Booking,
    /// Being routed from one doctor to another.
    Routing,
    /// A home visit.
    HomeVisit,
    /// Queues.
    Queues,
    /// Tests and examinations.
    Tests,
    /// Quality of care.
    Quality,
    /// Medicines.
    Medicines,
    /// The emergency service.
    Emergency,
    /// Anything else.
    Other,
}

/// The kind of appeal, which sets its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppealKind {
    /// A complaint about a refusal to accept documents or to correct an error in a public
    /// service (5 working days).
    Refusal,
    /// Any other complaint about a public service (15 working days).
    Complaint,
    /// A general appeal (30 days, one extension of 30 days).
    General,
    /// A district-chat message (2 hours to a first answer).
    Chat,
}

/// An appeal's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppealStatus {
    /// No organization is responsible yet: the ministry's operator routes it.
    Unrouted,
    /// With the responsible organization, waiting for its answer.
    Open,
    /// Answered: the answer goes back to the channel.
    Answered,
}

macro_rules! names {
    ($ty:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];

            /// Its name in the API and the store.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),+ }
            }

            /// Reads a name.
            pub fn parse(s: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(AppealChannel {
    PortalComplaint => "portal-complaint",
    DistrictChat => "district-chat",
    Phone => "phone",
    InPerson => "in-person",
});
names!(AppealTopic {
    Booking => "booking",
    Routing => "routing",
    HomeVisit => "home-visit",
    Queues => "queues",
    Tests => "tests",
    Quality => "quality",
    Medicines => "medicines",
    Emergency => "emergency",
    Other => "other",
});
names!(AppealKind {
    Refusal => "refusal",
    Complaint => "complaint",
    General => "general",
    Chat => "chat",
});
names!(AppealStatus {
    Unrouted => "unrouted",
    Open => "open",
    Answered => "answered",
});

impl AppealKind {
    /// The kind an appeal from `channel` has unless it says otherwise.
    pub fn default_for(channel: AppealChannel) -> AppealKind {
        match channel {
            AppealChannel::PortalComplaint => AppealKind::Complaint,
            AppealChannel::DistrictChat => AppealKind::Chat,
            AppealChannel::Phone | AppealChannel::InPerson => AppealKind::General,
        }
    }
}

/// A citizen's appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appeal {
    /// Gateway id (UUIDv7).
    pub id: String,
    /// Where it came from.
    pub channel: AppealChannel,
    /// Its id in that channel (a repeated intake is the same appeal).
    pub external_id: String,
    /// Its kind (sets the deadline).
    pub kind: AppealKind,
    /// The district it concerns.
    pub district: String,
    /// The organization responsible; `None` until routed.
    pub org: Option<super::Oid>,
    /// What it is about.
    pub topic: AppealTopic,
    /// The citizen's text (personal data).
    pub text: String,
    /// How to reach the citizen (personal data).
    pub contact: String,
    /// The citizen's SNILS, when given.
    pub snils: Option<super::Snils>,
    /// The citizen's policy number, when given.
    pub policy: Option<super::PolicyNumber>,
    /// State.
    pub status: AppealStatus,
    /// Received (epoch ms).
    pub received_at: i64,
    /// Must be answered by (epoch ms).
    pub due_at: i64,
    /// When its deadline was extended, and why.
    pub extension: Option<(i64, String)>,
    /// When it was escalated to the ministry's operator as overdue.
    pub escalated_at: Option<i64>,
    /// The answer: when, what, by which client.
    pub answer: Option<Answer>,
    /// The appointment or referral it concerns: (`appointment` | `referral`, id).
    pub linked: Option<(String, String)>,
    /// The API client that submitted it.
    pub client_id: String,
    /// Last change (epoch ms).
    pub updated_at: i64,
}

/// An organization's answer to an appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When (epoch ms).
    pub at: i64,
    /// The text.
    pub text: String,
    /// The API client that answered.
    pub by: String,
}

impl Appeal {
    /// Not answered and past its deadline at `now`.
    pub fn overdue(&self, now: i64) -> bool {
        self.answer.is_none() && now >= self.due_at
    }
}

/// One thing that happened to an appeal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppealEvent {
    /// Event id (UUIDv7).
    pub id: String,
    /// The appeal.
    pub appeal_id: String,
    /// When (epoch ms).
    pub at: i64,
    /// `received`, `routed`, `rerouted`, `extended`, `escalated`, `answered`.
    pub action: String,
    /// The organization responsible after it.
    pub org: Option<String>,
    /// What and why.
    pub detail: String,
    /// Who (an API client, or `gateway`).
    pub client_id: String,
}

/// How long each kind of appeal may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlines {
    /// Working days for a complaint about a refusal.
    pub refusal_working_days: u32,
    /// Working days for any other complaint.
    pub complaint_working_days: u32,
    /// Calendar days for a general appeal.
    pub general_days: u32,
    /// Calendar days one extension of a general appeal adds.
    pub extension_days: u32,
    /// Minutes to a first answer in a district chat.
    pub chat_minutes: u32,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            refusal_working_days: 5,
            complaint_working_days: 15,
            general_days: 30,
            extension_days: 30,
            chat_minutes: 120,
        }
    }
}

/// Working days: Monday to Friday, except the holidays, plus the weekend days declared
/// working (a transferred day off), in the region's time zone.
#[derive(Debug, Clone)]
pub struct WorkCalendar {
    /// Days off that would otherwise be working days.
    pub holidays: BTreeSet<NaiveDate>,
    /// Saturdays and Sundays that are working days.
    pub working_weekends: BTreeSet<NaiveDate>,
    /// The time zone days are counted in.
    pub time_zone: chrono_tz::Tz,
}

impl WorkCalendar {
    /// True when `day` is a working day.
    pub fn is_working(&self, day: NaiveDate) -> bool {
        if self.working_weekends.contains(&day) {
            return true;
        }
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&day)
    }

    /// The local day of an instant (epoch ms).
    pub fn day_of(&self, at: i64) -> NaiveDate {
        from_ms(at).with_timezone(&self.time_zone).date_naive()
    }

    /// The first instant (epoch ms) of the local day after `day`: the end of `day`.
    pub fn end_of(&self, day: NaiveDate) -> i64 {
        let next = day + Days::new(1);
        let midnight = next.and_hms_opt(0, 0, 0).unwrap_or_default();
        self.time_zone
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|| midnight.and_utc().timestamp_millis())
    }

    /// The end of the `n`th working day after the day of `at`.
    pub fn after_working_days(&self, at: i64, n: u32) -> i64 {
        let mut day = self.day_of(at);
        let mut left = n;
        // Bounded: a year of days off in a row is a configuration error, not a loop.
        for _ in 0..(n as usize + 400) {
            if left == 0 {
                break;
            }
            day = day + Days::new(1);
            if self.is_working(day) {
                left -= 1;
            }
        }
        self.end_of(day)
    }
}

impl Deadlines {
    /// When an appeal of `kind` received at `at` must be answered.
    pub fn due(&self, kind: AppealKind, at: i64, calendar: &WorkCalendar) -> i64 {
        match kind {
            AppealKind::Refusal => calendar.after_working_days(at, self.refusal_working_days),
            AppealKind::Complaint => calendar.after_working_days(at, self.complaint_working_days),
            AppealKind::General => {
                calendar.end_of(calendar.day_of(at) + Days::new(u64::from(self.general_days)))
            }
            AppealKind::Chat => at + i64::from(self.chat_minutes) * 60_000,
        }
    }

    /// The new deadline of a general appeal extended once from `due`.
    pub fn extended(&self, due: i64) -> i64 {
        due + i64::from(self.extension_days) * DAY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moscow(holidays: &[&str], working: &[&str]) -> WorkCalendar {
        let days = |v: &[&str]| v.iter().map(|d| d.parse().unwrap()).collect();
        WorkCalendar {
            holidays: days(holidays),
            working_weekends: days(working),
            time_zone: chrono_tz::Europe::Moscow,
        }
    }

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn working_days_skip_weekends_and_holidays_and_count_transferred_days() {
        // New Year holidays: 1-8 January 2027 off; Saturday 9 January declared working.
        let cal = moscow(
            &[
                "2027-01-01",
                "2027-01-04",
                "2027-01-05",
                "2027-01-06",
                "2027-01-07",
                "2027-01-08",
            ],
            &["2027-01-09"],
        );
        let d = Deadlines::default();
        // Received on Thursday 31 December 2026 at 15:00 Moscow time.
        let received = at("2026-12-31T15:00:00+03:00");
        // Working days after it: Sat 9, Mon 11, Tue 12, Wed 13, Thu 14 January.
        assert_eq!(
            d.due(AppealKind::Refusal, received, &cal),
            at("2027-01-15T00:00:00+03:00")
        );
        // Fifteen: ... up to Thursday 28 January.
        assert_eq!(
            d.due(AppealKind::Complaint, received, &cal),
            at("2027-01-29T00:00:00+03:00")
        );
        // Calendar days for a general appeal: to the end of 30 January.
        assert_eq!(
            d.due(AppealKind::General, received, &cal),
            at("2027-01-31T00:00:00+03:00")
        );
        assert_eq!(
            d.due(AppealKind::Chat, received, &cal),
            received + 2 * 3_600_000
        );
        // Without the calendar, the same refusal would be due a week earlier.
        let plain = moscow(&[], &[]);
        assert_eq!(
            d.due(AppealKind::Refusal, received, &plain),
            at("2027-01-08T00:00:00+03:00")
        );
        // Late evening in Moscow is already the next day's count in UTC terms: local days.
        let late = at("2027-01-14T23:30:00+03:00");
        assert_eq!(
            d.due(AppealKind::Refusal, late, &cal),
            at("2027-01-22T00:00:00+03:00")
        );
    }

    #[test]
    fn names_read_back() {
        for c in AppealChannel::ALL {
            assert_eq!(AppealChannel::parse(c.as_str()), Some(*c));
        }
        for t in AppealTopic::ALL {
            assert_eq!(AppealTopic::parse(t.as_str()), Some(*t));
        }
        assert_eq!(AppealKind::parse("nonsense"), None);
    }
}
