//! The errors of a call, the same four in every Mandate client.

use std::time::Duration;

/// Why a call gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The connection failed: refused, reset, TLS.
    #[error("cannot reach Mandate: {0}")]
    Transport(String),
    /// The call's deadline passed.
    #[error("no answer from Mandate within {0:?}")]
    Timeout(Duration),
    /// A 200 that is not Mandate's answer.
    #[error("not Mandate's answer: {0}")]
    Protocol(String),
    /// A non-200, with Mandate's error when it sent one.
    #[error("Mandate answered {status}{}", code.as_ref().map(|c| format!(" {c}: {}", message.as_deref().unwrap_or(""))).unwrap_or_default())]
    Server {
        /// the HTTP status
        status: u16,
        /// Mandate's error code (`invalid_request`, …)
        code: Option<String>,
        /// what is wrong, for a person
        message: Option<String>,
        /// the request field at fault
        field: Option<String>,
    },
    /// The client cannot be built: a bad URL or TLS file.
    #[error("bad client configuration: {0}")]
    Config(String),
}
