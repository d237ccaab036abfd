//! Schedules: booking channels, slots and their states, practitioners, and the slot
//! changes clinic systems report.

use std::fmt;

use super::Oid;

/// A way a patient reaches a slot. Stored as one bit of a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Registry desk of the clinic.
    Registry,
    /// Phone / call centre.
    Phone,
    /// Self-service kiosk.
    Kiosk,
    /// Citizen portal.
    Internet,
    /// Doctor's workplace (repeat visit).
    Doctor,
    /// Referral from another organization.
    Referral,
}

impl Channel {
    /// Every channel, in bit order.
    pub const ALL: [Channel; 6] = [
        Channel::Registry,
        Channel::Phone,
        Channel::Kiosk,
        Channel::Internet,
        Channel::Doctor,
        Channel::Referral,
    ];

    /// The channel's bit in a mask.
    pub fn bit(self) -> i32 {
        1 << (Channel::ALL.iter().position(|c| *c == self).unwrap_or(0) as i32)
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Registry => "registry",
            Channel::Phone => "phone",
            Channel::Kiosk => "kiosk",
            Channel::Internet => "internet",
            Channel::Doctor => "doctor",
            Channel::Referral => "referral",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels(pub i32);

impl Channels {
    /// All six channels.
    pub const ALL: Channels = Channels(0b11_1111);

    /// True when `c` is in the set.
    pub fn contains(self, c: Channel) -> bool {
        self.0 & c.bit() != 0
    }

    /// The channels in the set.
    pub fn iter(self) -> impl Iterator<Item = Channel> {
        Channel::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Builds a set from channels.
    pub fn of(channels: &[Channel]) -> Channels {
        Channels(channels.iter().fold(0, |m, c| m | c.bit()))
    }

    /// Parses a comma-separated list of wire names.
    pub fn parse_list(s: &str) -> Option<Channels> {
        let mut m = 0;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            m |= Channel::parse(part)?.bit();
        }
        Some(Channels(m))
    }

    /// Comma-separated wire names.
    pub fn to_list(self) -> String {
        self.iter()
            .map(Channel::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// State of a slot as the gateway knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// Bookable.
    Free,
    /// Taken (by anyone, through any system).
    Busy,
    /// Removed by the owning system (doctor absent, schedule changed).
    Withdrawn,
}

impl SlotStatus {
    /// Stored name (also the FHIR `Slot.status` mapping base).
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Free => "free",
            SlotStatus::Busy => "busy",
            SlotStatus::Withdrawn => "withdrawn",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<SlotStatus> {
        match s {
            "free" => Some(SlotStatus::Free),
            "busy" => Some(SlotStatus::Busy),
            "withdrawn" => Some(SlotStatus::Withdrawn),
            _ => None,
        }
    }
}

/// A practitioner (doctor) as a clinic system publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Practitioner {
    /// `source:external id`.
    pub id: String,
    /// Organization.
    pub org: Oid,
    /// Source system.
    pub source: String,
    /// Id in the source system.
    pub external_id: String,
    /// SNILS digits.
    pub snils: String,
    /// Family name.
    pub family: String,
    /// Given names.
    pub given: String,
    /// Specialty code (reference book 1.2.643.5.1.13.13.11.1066).
    pub specialty_code: String,
    /// Version of that reference book.
    pub specialty_version: String,
    /// Position code (reference book 1.2.643.5.1.13.13.11.1002).
    pub position_code: String,
    /// Room.
    pub room: String,
}

/// A slot of a practitioner's schedule, owned by a clinic system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `source:external id`.
    pub id: String,
    /// Organization.
    pub org: Oid,
    /// Practitioner id.
    pub practitioner_id: String,
    /// Specialty code of the practitioner.
    pub specialty_code: String,
    /// Start (epoch ms).
    pub start_at: i64,
    /// End (epoch ms).
    pub end_at: i64,
    /// State.
    pub status: SlotStatus,
    /// Channels that may book it.
    pub channels: Channels,
    /// Source system (the prefix of `id`).
    pub source: String,
}

impl Slot {
    /// The slot's id in its clinic system (without the `source:` prefix).
    pub fn external_id(&self) -> &str {
        external_part(&self.id)
    }
}

/// The part of a gateway id after its `source:` prefix.
pub fn external_part(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, x)| x)
}

/// What happened to a slot, as a clinic system reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotChangeKind {
    /// Booked (in the clinic system itself or through us).
    Booked,
    /// Free again.
    Free,
    /// Withdrawn (doctor absent, schedule changed).
    Withdrawn,
    /// Times changed; the state did not.
    Moved,
}

impl SlotChangeKind {
    /// Reads the wire name (`booked`, `free`, `withdrawn`, `moved`).
    pub fn parse(s: &str) -> Option<SlotChangeKind> {
        match s {
            "booked" => Some(SlotChangeKind::Booked),
            "free" => Some(SlotChangeKind::Free),
            "withdrawn" => Some(SlotChangeKind::Withdrawn),
            "moved" => Some(SlotChangeKind::Moved),
            _ => None,
        }
    }

    /// The slot state this change leads to; `None` for a move.
    pub fn status(self) -> Option<SlotStatus> {
        match self {
            SlotChangeKind::Booked => Some(SlotStatus::Busy),
            SlotChangeKind::Free => Some(SlotStatus::Free),
            SlotChangeKind::Withdrawn => Some(SlotStatus::Withdrawn),
            SlotChangeKind::Moved => None,
        }
    }
}

/// One change of a slot reported by a clinic system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChange {
    /// Slot id (with the source prefix).
    pub id: String,
    /// What changed.
    pub kind: SlotChangeKind,
    /// The slot's current start and end (epoch ms), when the system reports them; a move
    /// always does.
    pub times: Option<(i64, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_masks_roundtrip() {
        let c = Channels::of(&[Channel::Registry, Channel::Internet]);
        assert_eq!(c.0, 1 | 8);
        assert!(c.contains(Channel::Internet) && !c.contains(Channel::Kiosk));
        assert_eq!(Channels::parse_list(&c.to_list()), Some(c));
        assert_eq!(Channels::parse_list("registry,nope"), None);
        assert_eq!(Channels::ALL.iter().count(), 6);
    }
}
