//! `OperationOutcome`: the body of every FHIR error response.

use serde::Serialize;

/// FHIR `IssueType` codes the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueType {
    /// Content invalid against the specification or a profile.
    Invalid,
    /// A required element is missing.
    Required,
    /// An element value is invalid.
    Value,
    /// Authentication needed or failed.
    Login,
    /// Not allowed for this client.
    Forbidden,
    /// The resource or route does not exist.
    NotFound,
    /// The interaction or parameter is not supported.
    NotSupported,
    /// A conflict with the current state (e.g. slot taken).
    Conflict,
    /// A rule of the business was broken.
    BusinessRule,
    /// A duplicate was detected.
    Duplicate,
    /// The request is too large or expensive.
    TooCostly,
    /// An external system did not answer in time.
    Timeout,
    /// Too many requests.
    Throttled,
    /// Unexpected internal error.
    Exception,
    /// Processing failure in a system behind the gateway.
    Transient,
}

/// Severity of an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The operation failed.
    Error,
    /// Something the client should look at.
    Warning,
    /// For information.
    Information,
}

/// An `OperationOutcome` resource.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    resource_type: &'static str,
    /// The issues.
    pub issue: Vec<Issue>,
}

/// One issue of an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    /// Severity.
    pub severity: Severity,
    /// Issue type.
    pub code: IssueType,
    /// Machine code and human text.
    pub details: Details,
    /// Diagnostic hint (carries the request id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<String>,
    /// FHIRPath of the field at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expression: Vec<String>,
}

/// `CodeableConcept` with the gateway's stable error code.
#[derive(Debug, Clone, Serialize)]
pub struct Details {
    /// The coding.
    pub coding: Vec<Coding>,
    /// Human-readable message.
    pub text: String,
}

/// A `Coding`.
#[derive(Debug, Clone, Serialize)]
pub struct Coding {
    /// Code system.
    pub system: &'static str,
    /// Code.
    pub code: String,
}

/// Code system of the gateway's machine error codes.
pub const ERROR_SYSTEM: &str = "urn:medgate:error";

impl OperationOutcome {
    /// An outcome with one error issue.
    pub fn error(
        code: IssueType,
        machine_code: &str,
        message: &str,
        field: Option<&str>,
        request_id: &str,
    ) -> OperationOutcome {
        OperationOutcome {
            resource_type: "OperationOutcome",
            issue: vec![Issue {
                severity: Severity::Error,
                code,
                details: Details {
                    coding: vec![Coding {
                        system: ERROR_SYSTEM,
                        code: machine_code.to_string(),
                    }],
                    text: message.to_string(),
                },
                diagnostics: Some(format!("request id {request_id}")),
                expression: field.map(|f| vec![f.to_string()]).unwrap_or_default(),
            }],
        }
    }
}
