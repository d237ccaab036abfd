//! Port: the federal registry of electronic medical documents (REMD-style), as the
//! documents service sees it: register a document, ask what the registry holds.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::codec::remd::{RegisterDocument, RegistryError, RegistryItem};

/// Why a registry call did not give an answer we can use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryCallError {
    /// No answer in time.
    #[error("registry did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS...
    #[error("registry unreachable: {0}")]
    Transport(String),
    /// The registry answered with error codes.
    #[error("registry refused: {}", .0.iter().map(|e| format!("{} ({})", e.code, e.message)).collect::<Vec<_>>().join(", "))]
    Refused(Vec<RegistryError>),
    /// The answer could not be read.
    #[error("unreadable registry answer: {0}")]
    Malformed(String),
}

impl RegistryCallError {
    /// Error codes for classification (transport failures count as retryable codes).
    pub fn codes(&self) -> Vec<String> {
        match self {
            RegistryCallError::Refused(errors) => errors.iter().map(|e| e.code.clone()).collect(),
            RegistryCallError::Timeout(_) => vec!["ASYNC_RESPONSE_TIMEOUT".into()],
            RegistryCallError::Transport(_) | RegistryCallError::Malformed(_) => {
                vec!["INTERNAL_ERROR".into()]
            }
        }
    }
}

/// What the registry holds under a local UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Registered.
    Registered(RegistryItem),
    /// Received, verdict pending.
    InProgress,
    /// The registry never saw it or rejected it.
    NotFound,
}

/// The registry.
pub trait Registry: Send + Sync {
    /// Sends `registerDocument` with WS-Addressing `message_id`; `Ok` means the registry
    /// acknowledged receipt (its verdict comes later by callback).
    fn register<'a>(
        &'a self,
        request: &'a RegisterDocument,
        message_id: &'a str,
    ) -> BoxFuture<'a, Result<(), RegistryCallError>>;

    /// Asks the registry about a document by local UID.
    fn registry_item<'a>(
        &'a self,
        local_uid: &'a str,
    ) -> BoxFuture<'a, Result<ItemStatus, RegistryCallError>>;
}
