//! Referrals from one organization's doctor to another organization: their kind, urgency and
//! lifecycle (which transition is allowed from which state), and the acceptance rules a
//! target organization publishes (diagnoses, kinds, required documents).

use std::fmt;

use super::booking::Patient;
use super::{Icd10, Oid, Snils};

/// What the referral asks the target to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralKind {
    /// A specialist's consultation.
    Consultation,
    /// A diagnostic test.
    Diagnostic,
    /// Admission to a hospital.
    Hospitalization,
    /// A tele-consultation (e.g. with a federal centre).
    Teleconsultation,
}

impl ReferralKind {
    /// Every kind.
    pub const ALL: [ReferralKind; 4] = [
        ReferralKind::Consultation,
        ReferralKind::Diagnostic,
        ReferralKind::Hospitalization,
        ReferralKind::Teleconsultation,
    ];

    /// Stored and published name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralKind::Consultation => "consultation",
            ReferralKind::Diagnostic => "diagnostic",
            ReferralKind::Hospitalization => "hospitalization",
            ReferralKind::Teleconsultation => "teleconsultation",
        }
    }

    /// Reads a name.
    pub fn parse(s: &str) -> Option<ReferralKind> {
        ReferralKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// How soon the patient must be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Urgency {
    /// Planned.
    Routine,
    /// Within days.
    Urgent,
    /// At once.
    Emergency,
}

impl Urgency {
    /// Every urgency.
    pub const ALL: [Urgency; 3] = [Urgency::Routine, Urgency::Urgent, Urgency::Emergency];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
            Urgency::Emergency => "emergency",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Urgency> {
        Urgency::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// FHIR `request-priority` code.
    pub fn fhir_priority(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
            Urgency::Emergency => "stat",
        }
    }

    /// From a FHIR `request-priority` code (`asap` counts as urgent).
    pub fn from_fhir(code: &str) -> Option<Urgency> {
        match code {
            "routine" => Some(Urgency::Routine),
            "urgent" | "asap" => Some(Urgency::Urgent),
            "stat" => Some(Urgency::Emergency),
            _ => None,
        }
    }
}

/// Where a referral is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferralStatus {
    /// A patient's own request, waiting for the attending doctor to confirm it (then it is
    /// sent) or to decline it.
    Proposed,
    /// Sent; the target has not answered.
    Requested,
    /// The target accepted it; the patient may be booked.
    Accepted,
    /// The target refused it (with a reason).
    Rejected,
    /// A visit is booked for it.
    Booked,
    /// The target's conclusion is attached.
    Completed,
    /// Withdrawn by the referring side.
    Cancelled,
    /// Its validity ended before it was used.
    Expired,
}

impl ReferralStatus {
    /// Every state.
    pub const ALL: [ReferralStatus; 8] = [
        ReferralStatus::Proposed,
        ReferralStatus::Requested,
        ReferralStatus::Accepted,
        ReferralStatus::Rejected,
        ReferralStatus::Booked,
        ReferralStatus::Completed,
        ReferralStatus::Cancelled,
        ReferralStatus::Expired,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralStatus::Proposed => "proposed",
            ReferralStatus::Requested => "requested",
            ReferralStatus::Accepted => "accepted",
            ReferralStatus::Rejected => "rejected",
            ReferralStatus::Booked => "booked",
            ReferralStatus::Completed => "completed",
            ReferralStatus::Cancelled => "cancelled",
            ReferralStatus::Expired => "expired",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<ReferralStatus> {
        ReferralStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Still going somewhere: it can change, and its validity can end.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            ReferralStatus::Proposed
                | ReferralStatus::Requested
                | ReferralStatus::Accepted
                | ReferralStatus::Booked
        )
    }

    /// The lifecycle: whether a referral in this state may move to `to`.
    pub fn allows(self, to: ReferralStatus) -> bool {
        use ReferralStatus::*;
        matches!(
            (self, to),
            // The attending doctor confirms a patient's request (it is sent) or declines it.
            (Proposed, Requested | Cancelled | Expired)
                | (Requested, Accepted | Rejected | Cancelled | Expired)
                | (Accepted, Booked | Cancelled | Expired)
                // A cancelled booking returns the referral to accepted.
                | (Booked, Completed | Cancelled | Accepted)
        )
    }

    /// Which side may make the move: the target (performer) answers and completes; the
    /// referring side sends (confirms a patient's request) and withdraws. Expiry and
    /// booking are the gateway's.
    pub fn made_by(self) -> Side {
        match self {
            ReferralStatus::Accepted | ReferralStatus::Rejected | ReferralStatus::Completed => {
                Side::Target
            }
            ReferralStatus::Requested | ReferralStatus::Cancelled => Side::Referring,
            ReferralStatus::Proposed | ReferralStatus::Booked | ReferralStatus::Expired => {
                Side::Gateway
            }
        }
    }
}

impl fmt::Display for ReferralStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One side of a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The referring organization.
    Referring,
    /// The organization referred to.
    Target,
    /// The gateway itself (expiry, booking).
    Gateway,
}

/// A range of ICD-10 categories such as `I00-I99` or `O00-O9A`, or one category (`I21`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcdRange {
    from: String,
    to: String,
}

impl IcdRange {
    /// Parses `A00-B99` (a hyphen or an en dash) or a single category `A00`.
    pub fn parse(raw: &str) -> Result<IcdRange, String> {
        let category = |s: &str| {
            let s = s.trim().to_ascii_uppercase();
            let b = s.as_bytes();
            let ok = b.len() == 3
                && b[0].is_ascii_uppercase()
                && b[1].is_ascii_digit()
                && b[2].is_ascii_alphanumeric();
            ok.then_some(s)
        };
        let (from, to) = match raw.split_once(['-', '–']) {
            Some((a, b)) => (category(a), category(b)),
            None => (category(raw), category(raw)),
        };
        match (from, to) {
            (Some(from), Some(to)) if from <= to => Ok(IcdRange { from, to }),
            _ => Err(format!(
                "{:?} is not an ICD-10 range like I00-I99",
                raw.chars().take(32).collect::<String>()
            )),
        }
    }

    /// True when the code's category lies in the range (`O99` is inside `O00-O9A`).
    pub fn contains(&self, code: &Icd10) -> bool {
        let category = &code.as_str()[..3];
        self.from.as_str() <= category && category <= self.to.as_str()
    }
}

impl fmt::Display for IcdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            f.write_str(&self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

/// A document a target requires with a referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredDocument {
    /// Document kind: code of reference book 1.2.643.5.1.13.13.11.1522.
    pub kind: String,
    /// Its name, for the refusal.
    pub name: String,
    /// Asked for "when available": its absence does not refuse the referral.
    pub when_available: bool,
}

/// What a target organization accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptanceRule {
    /// The target organization.
    pub org: Oid,
    /// The rule's name, quoted in refusals.
    pub name: String,
    /// Kinds of referral accepted; empty: every kind.
    pub kinds: Vec<ReferralKind>,
    /// Diagnoses accepted; empty: every diagnosis.
    pub diagnoses: Vec<IcdRange>,
    /// Profiles (specialty codes) accepted; empty: every profile.
    pub profiles: Vec<String>,
    /// Documents that must come with the referral.
    pub required_documents: Vec<RequiredDocument>,
    /// Hours the target takes to answer; `None`: the region's default.
    pub answer_within_hours: Option<u32>,
}

/// Why a target's rules refuse a referral.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleRefusal {
    /// The target has no rule for this kind and profile.
    #[error("{org} accepts no referral of kind {kind} for profile {profile}")]
    NotAccepted {
        /// The target.
        org: String,
        /// The kind asked for.
        kind: &'static str,
        /// The profile asked for.
        profile: String,
    },
    /// The diagnosis is outside every range of the matching rules.
    #[error("diagnosis {diagnosis} is outside rule \"{rule}\" ({ranges})")]
    Diagnosis {
        /// The diagnosis given.
        diagnosis: String,
        /// The rule's name.
        rule: String,
        /// Its ranges.
        ranges: String,
    },
    /// Required documents are missing.
    #[error("missing required documents: {}", .0.iter().map(|d| format!("{} ({})", d.name, d.kind)).collect::<Vec<_>>().join(", "))]
    MissingDocuments(Vec<RequiredDocument>),
}

impl AcceptanceRule {
    /// True when this rule speaks for a referral of `kind` and `profile`.
    pub fn covers(&self, kind: ReferralKind, profile: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.profiles.is_empty() || self.profiles.iter().any(|p| p == profile))
    }

    /// Checks a referral's diagnosis and the kinds of the documents attached to it.
    pub fn check(&self, diagnosis: &Icd10, attached_kinds: &[String]) -> Result<(), RuleRefusal> {
        if !self.diagnoses.is_empty() && !self.diagnoses.iter().any(|r| r.contains(diagnosis)) {
            return Err(RuleRefusal::Diagnosis {
                diagnosis: diagnosis.to_string(),
                rule: self.name.clone(),
                ranges: self
                    .diagnoses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let missing: Vec<RequiredDocument> = self
            .required_documents
            .iter()
            .filter(|d| !d.when_available && !attached_kinds.contains(&d.kind))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RuleRefusal::MissingDocuments(missing))
        }
    }
}

/// Checks a referral against a target's rules: some rule covering its kind and profile
/// must accept it; the refusal of the first covering rule is reported otherwise.
pub fn check_rules(
    rules: &[&AcceptanceRule],
    org: &Oid,
    kind: ReferralKind,
    profile: &str,
    diagnosis: &Icd10,
    attached_kinds: &[String],
) -> Result<(), RuleRefusal> {
    let covering: Vec<&&AcceptanceRule> =
        rules.iter().filter(|r| r.covers(kind, profile)).collect();
    let mut first = None;
    for rule in &covering {
        match rule.check(diagnosis, attached_kinds) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| RuleRefusal::NotAccepted {
        org: org.to_string(),
        kind: kind.as_str(),
        profile: profile.to_string(),
    }))
}

/// A referral at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referral {
    /// Gateway id (UUIDv7): the ServiceRequest's and the Task's id.
    pub id: String,
    /// The patient.
    pub patient: Patient,
    /// Diagnosis.
    pub diagnosis: Icd10,
    /// Why the patient is referred, in the doctor's words.
    pub reason: String,
    /// The referring organization.
    pub requester_org: Oid,
    /// The referring doctor.
    pub requester_snils: Snils,
    /// Target profile or specialty code.
    pub profile: String,
    /// The organization referred to.
    pub target_org: Oid,
    /// How soon.
    pub urgency: Urgency,
    /// What is asked for.
    pub kind: ReferralKind,
    /// End of validity (epoch ms).
    pub valid_until: i64,
    /// When the target must have answered (epoch ms).
    pub answer_due: i64,
    /// When an unanswered referral was escalated to the region's operator (epoch ms).
    pub escalated_at: Option<i64>,
    /// The video-visit link of a tele-consultation, given by the target.
    pub video_url: Option<String>,
    /// Ids of the documents attached (documents the gateway, or the referring region's
    /// gateway, registered).
    pub documents: Vec<String>,
    /// The kinds of those documents (NSI 1.2.643.5.1.13.13.11.1522 codes), in their order.
    pub document_kinds: Vec<String>,
    /// The peer gateway that forwarded the referral here (its referring side is there).
    pub origin_peer: Option<String>,
    /// The peer gateway the referral was forwarded to (its target is there).
    pub peer: Option<String>,
    /// When that peer took the referral; `None` while it waits for the peer.
    pub forwarded_at: Option<i64>,
    /// The conclusion as it came back from a peer (the document stays registered there).
    pub conclusion: Option<RemoteDocument>,
    /// State.
    pub status: ReferralStatus,
    /// Why it is in this state (a rejection's reason), if said.
    pub status_reason: Option<String>,
    /// The appointment booked for it.
    pub appointment_id: Option<String>,
    /// The target's conclusion (a document id).
    pub conclusion_id: Option<String>,
    /// The client that created it.
    pub client_id: String,
    /// Created (epoch ms).
    pub created_at: i64,
    /// Last change (epoch ms).
    pub updated_at: i64,
}

/// A move of a referral as one gateway tells another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The referral (the same id in every gateway).
    pub referral_id: String,
    /// The state it entered.
    pub status: ReferralStatus,
    /// Why, if said.
    pub reason: Option<String>,
    /// The booked visit (an appointment of the target's gateway).
    pub appointment_id: Option<String>,
    /// A tele-consultation's video-visit link.
    pub video_url: Option<String>,
    /// The conclusion, carried with the completion.
    pub conclusion: Option<RemoteDocument>,
}

/// A document of another region's gateway, carried back with a referral's conclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDocument {
    /// Its id at the gateway that registered it.
    pub id: String,
    /// Document kind (NSI 1.2.643.5.1.13.13.11.1522 code).
    pub kind: String,
    /// Its number in the federal registry, once registered.
    pub registry_number: Option<String>,
    /// Media type of the content.
    pub content_type: String,
    /// The document itself (the CDA as registered).
    pub content: Vec<u8>,
}

impl Referral {
    /// True while it waits for the peer gateway it is forwarded to.
    pub fn waiting_for_peer(&self) -> bool {
        self.peer.is_some() && self.forwarded_at.is_none()
    }

    /// The peer gateways linked to this copy of the referral: where it came from and where
    /// it went.
    pub fn linked_peers(&self) -> impl Iterator<Item = &str> {
        self.origin_peer
            .iter()
            .chain(self.peer.iter())
            .map(String::as_str)
    }

    /// True when `org` is one of the referral's two organizations.
    pub fn involves(&self, org: &Oid) -> bool {
        &self.requester_org == org || &self.target_org == org
    }
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralEvent {
    /// The referral.
    pub referral_id: String,
    /// When (epoch ms).
    pub at: i64,
    /// The state entered.
    pub status: ReferralStatus,
    /// The client that made it (`gateway` for expiry).
    pub client_id: String,
    /// Why, if said.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icd(s: &str) -> Icd10 {
        Icd10::parse(s).unwrap()
    }

    #[test]
    fn ranges_hold_their_categories() {
        let circulatory = IcdRange::parse("I00-I99").unwrap();
        assert!(circulatory.contains(&icd("I21.0")));
        assert!(circulatory.contains(&icd("I00")));
        assert!(!circulatory.contains(&icd("J18.9")));
        let obstetrics = IcdRange::parse("O00–O9A").unwrap();
        assert!(obstetrics.contains(&icd("O99.4")));
        assert!(!obstetrics.contains(&icd("P00")));
        assert_eq!(IcdRange::parse("I21").unwrap().to_string(), "I21");
        assert!(IcdRange::parse("I99-I00").is_err());
        assert!(IcdRange::parse("cardio").is_err());
    }

    #[test]
    fn the_lifecycle_allows_only_its_moves() {
        use ReferralStatus::*;
        assert!(Requested.allows(Accepted));
        assert!(Accepted.allows(Booked));
        assert!(Booked.allows(Completed));
        assert!(Booked.allows(Accepted));
        assert!(!Requested.allows(Completed));
        assert!(!Requested.allows(Booked));
        for end in [Rejected, Completed, Cancelled, Expired] {
            assert!(!end.is_open());
            assert!(ReferralStatus::ALL.iter().all(|to| !end.allows(*to)));
        }
    }

    #[test]
    fn rules_name_what_is_missing() {
        let rule = AcceptanceRule {
            org: Oid::parse("1.2.643.5.1.13.13.12.2.77.9001").unwrap(),
            name: "cardiology".into(),
            kinds: vec![ReferralKind::Teleconsultation],
            diagnoses: vec![IcdRange::parse("I00-I99").unwrap()],
            profiles: vec![],
            answer_within_hours: None,
            required_documents: vec![
                RequiredDocument {
                    kind: "6".into(),
                    name: "discharge summary".into(),
                    when_available: false,
                },
                RequiredDocument {
                    kind: "25".into(),
                    name: "CT".into(),
                    when_available: true,
                },
            ],
        };
        let org = rule.org.clone();
        let rules = [&rule];
        let check = |kind, dx: &str, docs: &[&str]| {
            let docs: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
            check_rules(&rules, &org, kind, "any", &icd(dx), &docs)
        };
        assert_eq!(
            check(ReferralKind::Teleconsultation, "I21.0", &["6"]),
            Ok(())
        );
        match check(ReferralKind::Teleconsultation, "I21.0", &[]) {
            Err(RuleRefusal::MissingDocuments(d)) => assert_eq!(d.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check(ReferralKind::Teleconsultation, "J18.9", &["6"]),
            Err(RuleRefusal::Diagnosis { .. })
        ));
        assert!(matches!(
            check(ReferralKind::Hospitalization, "I21.0", &["6"]),
            Err(RuleRefusal::NotAccepted { .. })
        ));
    }
}
