//! The platform's errors: one typed enum, which keeps the error it came from as its
//! source. [`Error::verdict`] is the one place it becomes an MQTT verdict; the API maps
//! it to HTTP statuses in one place of its own.

use std::sync::Arc;

use fleetwire_broker::Verdict;

/// Result of platform operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the platform.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload cannot be stored (HTTP 400, MQTT 0x99); nothing of it was written.
    #[error(transparent)]
    Payload(#[from] fleetwire_formats::Error),
    /// The payload is well formed but names the wrong device, or no valid device.
    #[error("{0}")]
    InvalidDevice(String),
    /// The device, rule, alarm, command or token does not exist (HTTP 404).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `device`, `rule`, `alarm`, `command` or `token`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// Input that breaks a rule of the API (HTTP 422): a bad expression, a bad duration,
    /// an alarm transition that is not allowed. The message says what and where.
    #[error("{0}")]
    Invalid(String),
    /// A listing's filter or cursor, or a query's range, that cannot be used (HTTP 400).
    #[error("{0}")]
    InvalidQuery(String),
    /// A rule's condition or clear expression does not compile (HTTP 422); the message
    /// names the expression, the column and what was expected.
    #[error("{detail}")]
    InvalidExpression {
        /// What is wrong, and where.
        detail: String,
        /// Byte offset of the problem in its expression, when known.
        position: Option<usize>,
    },
    /// A certificate given to pin that cannot be pinned (HTTP 400): not PEM, not exactly
    /// one certificate, not X.509, or not naming the device it is pinned to. The detail
    /// says which, and what was expected.
    #[error("{detail}")]
    InvalidCertificate {
        /// What is wrong with it, the parser's complaint included.
        detail: String,
        /// The TLS crate's error, when it came from reading the PEM text.
        #[source]
        source: Option<Box<fleetwire_tls::Error>>,
    },
    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The time-series store failed; nothing of the request is acknowledged. Shared by
    /// every request of the group write that failed.
    #[error("telemetry store: {0}")]
    Store(#[source] Arc<fleetwire_store::Error>),
    /// The registry database failed.
    #[error(transparent)]
    Registry(fleetwire_registry::Error),
    /// A thread of the platform could not be started.
    #[error("starting the {what}: {source}")]
    Start {
        /// Which thread.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The platform is stopping and takes no more writes (HTTP 503).
    #[error("the platform is shutting down")]
    ShuttingDown,
}

impl Error {
    /// What an MQTT publisher is told of a message that failed with this error: the
    /// sender's fault is [`Verdict::Invalid`] (5.0: 0x99, counted as rejected); anything
    /// else is [`Verdict::Failed`] (not acknowledged as accepted, counted as failed).
    pub fn verdict(&self) -> Verdict {
        match self {
            Error::Payload(_)
            | Error::InvalidDevice(_)
            | Error::NotFound { .. }
            | Error::Invalid(_)
            | Error::InvalidQuery(_)
            | Error::InvalidExpression { .. }
            | Error::InvalidCertificate { .. } => Verdict::Invalid,
            Error::Conflict(_)
            | Error::Store(_)
            | Error::Registry(_)
            | Error::Start { .. }
            | Error::ShuttingDown => Verdict::Failed,
        }
    }

    /// The same error, as a listing's bad query (HTTP 400) when the input was at fault.
    pub(crate) fn in_query(self) -> Error {
        match self {
            Error::Invalid(message) => Error::InvalidQuery(message),
            other => other,
        }
    }
}

impl From<fleetwire_registry::Error> for Error {
    fn from(error: fleetwire_registry::Error) -> Error {
        match error {
            fleetwire_registry::Error::NotFound { kind, id } => Error::NotFound { kind, id },
            fleetwire_registry::Error::Invalid(detail) => Error::Invalid(detail),
            fleetwire_registry::Error::InvalidCursor => Error::InvalidQuery(
                "invalid cursor: pass the next_cursor of a previous page unchanged".to_owned(),
            ),
            fleetwire_registry::Error::AlreadyExists(id) => {
                Error::Conflict(format!("device {id:?} already exists"))
            }
            error @ fleetwire_registry::Error::IdTaken { .. } => Error::Conflict(error.to_string()),
            fleetwire_registry::Error::Conflict(message) => Error::Conflict(message),
            other => Error::Registry(other),
        }
    }
}

impl From<fleetwire_model::Error> for Error {
    fn from(error: fleetwire_model::Error) -> Error {
        match error {
            fleetwire_model::Error::Invalid(message) => Error::Invalid(message),
            other => Error::Invalid(other.to_string()),
        }
    }
}

impl From<fleetwire_store::Error> for Error {
    fn from(error: fleetwire_store::Error) -> Error {
        match error {
            fleetwire_store::Error::InvalidArgument(detail) => Error::Invalid(detail),
            other => Error::Store(Arc::new(other)),
        }
    }
}
