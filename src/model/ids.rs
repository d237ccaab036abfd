//! Identifiers of Russian healthcare: SNILS, OMS policy numbers, OIDs, NSI codes, ICD-10.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Wrong number of digits or a non-digit character.
    #[error("{kind} must have {expected} digits, got {found:?}")]
    Format {
        /// Identifier kind, e.g. `SNILS`.
        kind: &'static str,
        /// What was expected, e.g. `11`.
        expected: &'static str,
        /// The offending input, masked where it may be personal data.
        found: String,
    },
    /// The SNILS check number does not match.
    #[error("SNILS checksum mismatch: expected {expected:02}, got {found:02}")]
    Checksum {
        /// The check number computed from the first nine digits.
        expected: u32,
        /// The check number given.
        found: u32,
    },
    /// Not a dotted-decimal object identifier.
    #[error("invalid OID {0:?}: expected dotted decimal arcs like 1.2.643.5.1.13.13.12.1.77.1")]
    Oid(String),
    /// An OID that is valid but not under the FRMO organization branch.
    #[error("OID {0} is not a medical organization OID (must be under 1.2.643.5.1.13.13.12)")]
    NotOrganization(String),
    /// An NSI code with a missing part.
    #[error("invalid NSI code: {0}")]
    Nsi(String),
    /// Not an ICD-10 code.
    #[error("invalid ICD-10 code {0:?}: expected a letter, two digits and an optional .N or .NN")]
    Icd10(String),
}

/// Masks all but the last `keep` characters of a value with `*`.
fn mask_tail(s: &str, keep: usize) -> String {
    let n = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| if i + keep < n { '*' } else { c })
        .collect()
}

fn digits_only(raw: &str, skip: &[char]) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            out.push(c);
        } else if !skip.contains(&c) {
            return None;
        }
    }
    Some(out)
}

/// SNILS: the 11-digit insurance number of a person (patient or doctor), checksum validated.
///
/// `Display` and `Debug` are masked (`***-***-*** 12`) so that it never leaks into logs;
/// use [`Snils::formatted`] or [`Snils::digits`] where the full value is needed.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snils([u8; 11]);

impl Snils {
    /// Parses `XXX-XXX-XXX YY`, `XXXXXXXXXXX` or any mix of digits, dashes and spaces.
    pub fn parse(raw: &str) -> Result<Snils, IdError> {
        let digits = digits_only(raw, &['-', ' ']).filter(|d| d.len() == 11);
        let Some(digits) = digits else {
            return Err(IdError::Format {
                kind: "SNILS",
                expected: "11",
                found: mask_tail(raw, 2),
            });
        };
        let mut d = [0u8; 11];
        for (i, b) in digits.bytes().enumerate() {
            d[i] = b - b'0';
        }
        let number: u32 = d[..9].iter().fold(0, |acc, &x| acc * 10 + u32::from(x));
        let found = u32::from(d[9]) * 10 + u32::from(d[10]);
        // Numbers up to 001-001-998 were issued before check numbers existed.
        if number > 1_001_998 {
            let expected = Self::check_number(&d[..9]);
            if expected != found {
                return Err(IdError::Checksum { expected, found });
            }
        }
        Ok(Snils(d))
    }

    /// The check number for the first nine digits (weights 9..1, modulo 101, 100 → 00).
    pub fn check_number(first9: &[u8]) -> u32 {
        let sum: u32 = first9
            .iter()
            .enumerate()
            .map(|(i, &x)| u32::from(x) * (9 - i as u32))
            .sum();
        let r = if sum < 100 { sum } else { sum % 101 };
        if r == 100 {
            0
        } else {
            r
        }
    }

    /// Eleven digits without separators.
    pub fn digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// The canonical printed form `XXX-XXX-XXX YY`.
    pub fn formatted(&self) -> String {
        let s = self.digits();
        format!("{}-{}-{} {}", &s[0..3], &s[3..6], &s[6..9], &s[9..11])
    }
}

impl fmt::Display for Snils {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "***-***-*** {}{}", self.0[9], self.0[10])
    }
}

impl fmt::Debug for Snils {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snils({self})")
    }
}

impl FromStr for Snils {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Snils::parse(s)
    }
}

/// OMS policy number (the unified policy number, ENP): 16 digits.
///
/// `Display` and `Debug` are masked; use [`PolicyNumber::digits`] for the value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyNumber(String);

impl PolicyNumber {
    /// Parses 16 digits; spaces are ignored.
    pub fn parse(raw: &str) -> Result<PolicyNumber, IdError> {
        match digits_only(raw, &[' ']) {
            Some(d) if d.len() == 16 => Ok(PolicyNumber(d)),
            _ => Err(IdError::Format {
                kind: "OMS policy number",
                expected: "16",
                found: mask_tail(raw, 4),
            }),
        }
    }

    /// Sixteen digits.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "************{}", &self.0[12..])
    }
}

impl fmt::Debug for PolicyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyNumber({self})")
    }
}

/// The FRMO branch under which every medical organization OID sits.
pub const FRMO_BRANCH: &str = "1.2.643.5.1.13.13.12";

/// An ISO object identifier in dotted-decimal form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(String);

impl Oid {
    /// Parses dotted decimal arcs: at least two, first arc 0-2, no leading zeros.
    pub fn parse(raw: &str) -> Result<Oid, IdError> {
        let s = raw.trim();
        let s = s.strip_prefix("urn:oid:").unwrap_or(s);
        let bad = || IdError::Oid(raw.chars().take(80).collect());
        if s.is_empty() || s.len() > 256 {
            return Err(bad());
        }
        let mut arcs = 0;
        for (i, arc) in s.split('.').enumerate() {
            let ok = !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
                && arc.len() <= 20;
            if !ok || (i == 0 && !matches!(arc, "0" | "1" | "2")) {
                return Err(bad());
            }
            arcs += 1;
        }
        if arcs < 2 {
            return Err(bad());
        }
        Ok(Oid(s.to_string()))
    }

    /// Parses an OID and checks it is a medical organization from FRMO.
    pub fn parse_organization(raw: &str) -> Result<Oid, IdError> {
        let oid = Oid::parse(raw)?;
        if oid.is_organization() {
            Ok(oid)
        } else {
            Err(IdError::NotOrganization(oid.0))
        }
    }

    /// True when the OID sits strictly under the FRMO branch.
    pub fn is_organization(&self) -> bool {
        self.0
            .strip_prefix(FRMO_BRANCH)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.0)
    }
}

impl FromStr for Oid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Oid::parse(s)
    }
}

impl Serialize for Oid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Oid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Oid::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A code from a Ministry NSI reference book, pinned to the book's version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsiCode {
    /// Reference book OID, e.g. `1.2.643.5.1.13.13.11.1522`.
    pub book: Oid,
    /// Reference book version, e.g. `5.12`.
    pub version: String,
    /// The code within the book.
    pub code: String,
}

impl NsiCode {
    /// Builds a code, checking that version and code are present and printable.
    pub fn new(book: Oid, version: &str, code: &str) -> Result<NsiCode, IdError> {
        let version = version.trim();
        let code = code.trim();
        if version.is_empty() || version.len() > 32 || version.chars().any(char::is_whitespace) {
            return Err(IdError::Nsi(format!(
                "version {version:?} of {book} must be non-empty, at most 32 characters, no spaces"
            )));
        }
        if code.is_empty() || code.len() > 64 || code.chars().any(char::is_control) {
            return Err(IdError::Nsi(format!(
                "code {code:?} of {book} must be non-empty and at most 64 characters"
            )));
        }
        Ok(NsiCode {
            book,
            version: version.to_string(),
            code: code.to_string(),
        })
    }
}

/// An ICD-10 diagnosis code such as `I21.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Icd10(String);

impl Icd10 {
    /// Parses a letter, two digits and an optional `.N` or `.NN`; lower case is accepted.
    pub fn parse(raw: &str) -> Result<Icd10, IdError> {
        let s = raw.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        let head = b.len() >= 3
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit();
        let tail = match &b.get(3..) {
            Some([]) => true,
            Some([b'.', rest @ ..]) => {
                (1..=2).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit)
            }
            _ => false,
        };
        if head && tail {
            Ok(Icd10(s))
        } else {
            Err(IdError::Icd10(raw.chars().take(16).collect()))
        }
    }

    /// The code in upper case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Icd10 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a valid SNILS from nine digits above the checksum threshold.
    fn snils_from(n: u32) -> String {
        let s = format!("{n:09}");
        let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
        format!("{s}{:02}", Snils::check_number(&d))
    }

    #[test]
    fn known_snils() {
        // 112-233-445 95 is the textbook example of the checksum rule.
        let s = Snils::parse("112-233-445 95").unwrap();
        assert_eq!(s.digits(), "11223344595");
        assert_eq!(s.formatted(), "112-233-445 95");
        assert_eq!(s.to_string(), "***-***-*** 95");
        assert!(matches!(
            Snils::parse("11223344594"),
            Err(IdError::Checksum {
                expected: 95,
                found: 94
            })
        ));
        assert!(Snils::parse("1122334459").is_err());
        assert!(Snils::parse("1122334459a").is_err());
    }

    #[test]
    fn old_snils_skip_checksum() {
        assert!(Snils::parse("001-001-998 00").is_ok());
    }

    #[test]
    fn oid_rules() {
        assert!(Oid::parse("1.2.643.5.1.13.13.11.1522").is_ok());
        assert!(Oid::parse("urn:oid:1.2.643").is_ok());
        assert!(Oid::parse("3.1").is_err());
        assert!(Oid::parse("1.02").is_err());
        assert!(Oid::parse("1").is_err());
        assert!(Oid::parse("1..2").is_err());
        assert!(Oid::parse_organization("1.2.643.5.1.13.13.12.2.77.7973").is_ok());
        assert!(matches!(
            Oid::parse_organization("1.2.643.5.1.13.13.12"),
            Err(IdError::NotOrganization(_))
        ));
        assert!(Oid::parse_organization("1.2.643.5.1.13.13.120.1").is_err());
    }

    #[test]
    fn policy_and_icd() {
        let p = PolicyNumber::parse("7700 0000 0000 0001").unwrap();
        assert_eq!(p.digits(), "7700000000000001");
        assert_eq!(p.to_string(), "************0001");
        assert!(PolicyNumber::parse("770000000000000").is_err());
        assert_eq!(Icd10::parse("i21.0").unwrap().as_str(), "I21.0");
        assert!(Icd10::parse("I21.").is_err());
        assert!(Icd10::parse("I2").is_err());
        assert!(Icd10::parse("I21.123").is_err());
    }

    proptest! {
        #[test]
        fn snils_roundtrip(n in 1_001_999u32..999_999_999) {
            let raw = snils_from(n);
            let s = Snils::parse(&raw).unwrap();
            prop_assert_eq!(s.digits(), raw.clone());
            prop_assert_eq!(Snils::parse(&s.formatted()).unwrap(), s.clone());
            prop_assert!(!s.to_string().contains(&raw[..9]));
        }

        #[test]
        fn snils_single_digit_change_detected(n in 1_001_999u32..999_999_999, pos in 0usize..11, delta in 1u8..10) {
            let raw = snils_from(n);
            let mut b = raw.clone().into_bytes();
            b[pos] = b'0' + (b[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(b).unwrap();
            // A changed digit in the first nine either breaks the checksum or drops below the
            // threshold; a changed check number always breaks it.
            if let Ok(s) = Snils::parse(&changed) {
                prop_assert!(pos < 9);
                let first: u32 = changed[..9].parse().unwrap();
                prop_assert!(first <= 1_001_998 || Snils::check_number(&s.0[..9]) == u32::from(s.0[9]) * 10 + u32::from(s.0[10]));
            }
        }

        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = Snils::parse(&s);
            let _ = PolicyNumber::parse(&s);
            let _ = Oid::parse(&s);
            let _ = Icd10::parse(&s);
        }

        #[test]
        fn oid_roundtrip(arcs in proptest::collection::vec(0u64..100_000, 1..12), first in 0u8..3) {
            let text = std::iter::once(first.to_string()).chain(arcs.iter().map(u64::to_string)).collect::<Vec<_>>().join(".");
            let oid = Oid::parse(&text).unwrap();
            prop_assert_eq!(oid.as_str(), text.as_str());
        }

        #[test]
        fn policy_roundtrip(n in 0u64..10_000_000_000_000_000) {
            let raw = format!("{n:016}");
            let p = PolicyNumber::parse(&raw).unwrap();
            prop_assert_eq!(p.digits(), raw.as_str());
        }

        #[test]
        fn icd_roundtrip(l in "[A-Z]", d in 0u8..100, sub in proptest::option::of(0u8..100)) {
            let code = match sub { Some(s) => format!("{l}{d:02}.{s}"), None => format!("{l}{d:02}") };
            let c = Icd10::parse(&code).unwrap();
            prop_assert_eq!(c.as_str(), code.as_str());
        }
    }
}
