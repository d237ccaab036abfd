//! Medical organizations known to the gateway (clinics, hospitals, federal centres).

use super::Oid;

/// A medical organization identified by its FRMO OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// FRMO OID.
    pub oid: Oid,
    /// Full name.
    pub name: String,
    /// Short name shown to patients.
    pub short_name: String,
    /// Postal address.
    pub address: String,
    /// District (used by the portal to group clinics).
    pub district: String,
    /// Where the record came from: `config`, `emias`, `fhir-mis`, ...
    pub source: String,
    /// False when the organization is switched off.
    pub active: bool,
}

/// A region of the federation (a subject code, e.g. 77 Moscow, 78 St Petersburg), which one
/// gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(u16);

impl Region {
    /// Parses a region code: 1 to 3 digits, 1 to 999 (`"07"` and `"7"` are one region).
    pub fn parse(raw: &str) -> Option<Region> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u16>().ok().filter(|n| *n > 0).map(Region)
    }

    /// The region an organization belongs to, read from its FRMO OID
    /// (`1.2.643.5.1.13.13.12.<type>.<region>.<number>`); `None` for an OID without one.
    pub fn of(org: &Oid) -> Option<Region> {
        let rest = org.as_str().strip_prefix("1.2.643.5.1.13.13.12.")?;
        let mut arcs = rest.split('.');
        let _kind = arcs.next()?;
        let region = arcs.next()?;
        // The organization's own number follows; an OID that stops at the region names none.
        arcs.next()?;
        Region::parse(region)
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_frmo_oid() {
        let of = |s: &str| Region::of(&Oid::parse(s).unwrap()).map(|r| r.to_string());
        assert_eq!(of("1.2.643.5.1.13.13.12.2.77.7001").as_deref(), Some("77"));
        assert_eq!(of("1.2.643.5.1.13.13.12.1.7.12").as_deref(), Some("07"));
        assert_eq!(of("1.2.643.5.1.13.13.12.1.1"), None);
        assert_eq!(of("1.2.643.5.1.13.13.11.1461.77.1"), None);
        assert_eq!(Region::parse("07"), Region::parse("7"));
        assert_eq!(Region::parse("0"), None);
        assert_eq!(Region::parse("1234"), None);
        assert_eq!(Region::parse("7a"), None);
    }
}
