//! Structured medical documents at the gateway: a submission as it arrives, the registration
//! states, and the record kept of each (bytes exactly as accepted, digests, signatures, the
//! registry's answer).

use std::fmt;

use super::remd::ErrorClass;
use super::{Oid, Snils};

/// Where a document stands on its way to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentStatus {
    /// Accepted and waiting to be sent (first time or again).
    Queued,
    /// The registry acknowledged receipt; its verdict is awaited.
    Sent,
    /// Registered: the registry gave it a number.
    Registered,
    /// Refused by the registry for a reason retrying cannot fix.
    Rejected,
    /// Retrying ran out.
    DeadLettered,
}

impl DocumentStatus {
    /// Every state.
    pub const ALL: [DocumentStatus; 5] = [
        DocumentStatus::Queued,
        DocumentStatus::Sent,
        DocumentStatus::Registered,
        DocumentStatus::Rejected,
        DocumentStatus::DeadLettered,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Queued => "queued",
            DocumentStatus::Sent => "sent",
            DocumentStatus::Registered => "registered",
            DocumentStatus::Rejected => "rejected",
            DocumentStatus::DeadLettered => "dead-lettered",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<DocumentStatus> {
        DocumentStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// An operator may send it again: the registry refused it, or retrying ran out.
    pub fn is_rerunnable(self) -> bool {
        matches!(
            self,
            DocumentStatus::Rejected | DocumentStatus::DeadLettered
        )
    }
}

impl fmt::Display for DocumentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document as the gateway keeps it.
#[derive(Debug, Clone)]
pub struct Document {
    /// Local UID given by the submitter (unique forever).
    pub id: String,
    /// Organization (custodian).
    pub org: Oid,
    /// Document kind code (reference book 1.2.643.5.1.13.13.11.1522).
    pub kind_code: String,
    /// Version of the kind reference book.
    pub kind_version: String,
    /// Patient.
    pub patient: Snils,
    /// Author.
    pub author: Snils,
    /// Client that submitted it.
    pub submitted_by: String,
    /// Hash of the submission, to tell a replay from a different document with the same UID.
    pub request_hash: String,
    /// The exact accepted bytes.
    pub content: Vec<u8>,
    /// Media type of the content.
    pub content_type: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// GOST R 34.11-2012 (256) of the content, hex.
    pub streebog256: String,
    /// Detached CMS of the organization.
    pub org_signature: Vec<u8>,
    /// Detached CMS of the doctor.
    pub doctor_signature: Vec<u8>,
    /// True when the gateway made the signatures.
    pub signed_by_gateway: bool,
    /// Registration state.
    pub status: DocumentStatus,
    /// Registry number once registered.
    pub emdr_id: Option<String>,
    /// Registration time (epoch ms).
    pub registered_at: Option<i64>,
    /// WS-Addressing MessageID of the last registration request.
    pub message_id: Option<String>,
    /// Who must act on the last registry error.
    pub error_class: Option<ErrorClass>,
    /// Registry error codes, comma separated.
    pub error_codes: Option<String>,
    /// Registry error messages.
    pub error_message: Option<String>,
    /// The document this one re-submits, for reruns.
    pub rerun_of: Option<String>,
    /// Accepted at (epoch ms).
    pub created_at: i64,
    /// Last change (epoch ms).
    pub updated_at: i64,
}

/// A document as a clinic submits it, before any rule is checked: the edges read it from
/// their protocol, the documents service validates it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Local UID (UUID).
    pub local_uid: String,
    /// Kind code from book 1522.
    pub kind_code: String,
    /// Version of book 1522.
    pub kind_version: String,
    /// Organization OID.
    pub org_oid: String,
    /// Patient SNILS.
    pub patient_snils: String,
    /// Author SNILS.
    pub author_snils: String,
    /// The document bytes.
    pub content: Vec<u8>,
    /// Media type.
    pub content_type: String,
    /// The organization's detached CMS, if the clinic signed.
    pub org_signature: Option<Vec<u8>>,
    /// The doctor's detached CMS, if the clinic signed.
    pub doctor_signature: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_roundtrip_and_only_refused_ones_rerun() {
        for s in DocumentStatus::ALL {
            assert_eq!(DocumentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DocumentStatus::parse("dead_lettered"), None);
        let rerunnable: Vec<_> = DocumentStatus::ALL
            .into_iter()
            .filter(|s| s.is_rerunnable())
            .collect();
        assert_eq!(
            rerunnable,
            [DocumentStatus::Rejected, DocumentStatus::DeadLettered]
        );
    }
}
