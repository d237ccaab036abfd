//! The registry of electronic medical documents (REMD): error codes and who must act on them.

use serde::Serialize;

/// Who must act on a registry error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// Transient: the gateway retries on its schedule.
    Retryable,
    /// The document or its metadata is wrong: the clinic must fix it; retrying cannot help.
    Data,
    /// The gateway's own configuration or keys are wrong: the regional operator must fix it.
    Gateway,
    /// A code this gateway does not know: held for an operator to review, not retried.
    Unknown,
    /// The registry holds another document under this document's UID: a person must
    /// decide which is right; retrying cannot help.
    Conflict,
}

impl ErrorClass {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Data => "data",
            ErrorClass::Gateway => "gateway",
            ErrorClass::Unknown => "unknown",
            ErrorClass::Conflict => "conflict",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<ErrorClass> {
        [
            ErrorClass::Retryable,
            ErrorClass::Data,
            ErrorClass::Gateway,
            ErrorClass::Unknown,
            ErrorClass::Conflict,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whom the operator should contact, in words.
    pub fn who_fixes(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "nobody: the gateway retries automatically",
            ErrorClass::Data => "the clinic that submitted the document",
            ErrorClass::Gateway => "the regional gateway operator",
            ErrorClass::Unknown => "the regional gateway operator (unknown code, review)",
            ErrorClass::Conflict => {
                "the clinic with the regional operator: the registry holds another document under this UID"
            }
        }
    }
}

/// Every registry code the gateway knows, with its class and a short explanation.
pub const KNOWN_CODES: &[(&str, ErrorClass, &str)] = &[
    (
        "RATE_LIMIT",
        ErrorClass::Retryable,
        "request rate limit exceeded",
    ),
    (
        "INTERNAL_ERROR",
        ErrorClass::Retryable,
        "registry internal error",
    ),
    (
        "ASYNC_RESPONSE_TIMEOUT",
        ErrorClass::Retryable,
        "registry timed out preparing the answer",
    ),
    (
        "VALSYS_INTERNAL_ERROR",
        ErrorClass::Retryable,
        "validation subsystem failure",
    ),
    (
        "CA_INACCESSIBILITY",
        ErrorClass::Retryable,
        "certificate authority unreachable for revocation checks",
    ),
    (
        "DOCUMENT_FILE_UNAVAILABLE",
        ErrorClass::Retryable,
        "registry could not fetch the document file from the gateway",
    ),
    (
        "NOT_UNIQUE_PROVIDED_ID",
        ErrorClass::Data,
        "a document with this local UID is already registered",
    ),
    (
        "ORG_NOT_FOUND_IN_FRMO",
        ErrorClass::Data,
        "organization OID not found in the FRMO register",
    ),
    (
        "PERSON_NOT_FOUND",
        ErrorClass::Data,
        "patient or signer not found by SNILS",
    ),
    (
        "SIGNATURE_VERIFICATION_ERROR",
        ErrorClass::Data,
        "a signature does not verify",
    ),
    (
        "MULTIPLE_SIGNERS",
        ErrorClass::Data,
        "a signature container holds more than one signer",
    ),
    (
        "INVALID_DICTIONARY_VERSION",
        ErrorClass::Data,
        "the document cites a reference book version the registry does not accept",
    ),
    (
        "INVALID_ELEMENT_VALUE_CODE",
        ErrorClass::Data,
        "a coded element holds a code not in its reference book",
    ),
    (
        "DIGEST_MISMATCH",
        ErrorClass::Data,
        "the fetched file does not match the registered digest",
    ),
    (
        "DOCUMENT_KIND_NOT_SUPPORTED",
        ErrorClass::Data,
        "the registry does not accept this document kind",
    ),
    (
        "SCHEMA_VALIDATION_ERROR",
        ErrorClass::Data,
        "the document fails the registry's schema for its kind",
    ),
    (
        "MESSAGE_SIGNATURE_INVALID",
        ErrorClass::Gateway,
        "the gateway's message signature (XMLDSig) is missing or invalid",
    ),
    (
        "CLIENT_NOT_AUTHORIZED",
        ErrorClass::Gateway,
        "the gateway's client system id is not authorized",
    ),
    (
        "CERTIFICATE_EXPIRED",
        ErrorClass::Gateway,
        "a signing certificate held by the gateway expired",
    ),
];

/// Classifies a registry error code.
pub fn classify(code: &str) -> ErrorClass {
    KNOWN_CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, class, _)| *class)
        .unwrap_or(ErrorClass::Unknown)
}

/// The most severe class of a set of codes (any non-retryable code makes the set final).
pub fn classify_all<'a>(codes: impl IntoIterator<Item = &'a str>) -> ErrorClass {
    let mut worst = ErrorClass::Retryable;
    for code in codes {
        let c = classify(code);
        worst = match (worst, c) {
            (ErrorClass::Data, _) | (_, ErrorClass::Data) => ErrorClass::Data,
            (ErrorClass::Gateway, _) | (_, ErrorClass::Gateway) => ErrorClass::Gateway,
            (ErrorClass::Unknown, _) | (_, ErrorClass::Unknown) => ErrorClass::Unknown,
            _ => ErrorClass::Retryable,
        };
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_design_code_is_classified() {
        for code in [
            "RATE_LIMIT",
            "INTERNAL_ERROR",
            "ASYNC_RESPONSE_TIMEOUT",
            "VALSYS_INTERNAL_ERROR",
            "CA_INACCESSIBILITY",
        ] {
            assert_eq!(classify(code), ErrorClass::Retryable, "{code}");
        }
        for code in [
            "NOT_UNIQUE_PROVIDED_ID",
            "ORG_NOT_FOUND_IN_FRMO",
            "PERSON_NOT_FOUND",
            "SIGNATURE_VERIFICATION_ERROR",
            "MULTIPLE_SIGNERS",
            "INVALID_DICTIONARY_VERSION",
            "INVALID_ELEMENT_VALUE_CODE",
            "DIGEST_MISMATCH",
        ] {
            assert_eq!(classify(code), ErrorClass::Data, "{code}");
        }
        assert_eq!(classify("SOMETHING_NEW"), ErrorClass::Unknown);
        assert_eq!(
            classify_all(["RATE_LIMIT", "DIGEST_MISMATCH"]),
            ErrorClass::Data
        );
        assert_eq!(
            classify_all(["RATE_LIMIT", "INTERNAL_ERROR"]),
            ErrorClass::Retryable
        );
    }
}
