//! The platform's errors: one typed enum that the API maps to HTTP statuses and the
//! broker glue to MQTT verdicts.

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
    /// The device, rule, alarm or command does not exist (HTTP 404).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `device`, `rule`, `alarm` or `command`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// Input that breaks a rule of the API (HTTP 422): a bad expression, a bad duration,
    /// an alarm transition that is not allowed. The message says what and where.
    #[error("{0}")]
    Invalid(String),
    /// A rule's condition or clear expression does not compile (HTTP 422); the message
    /// names the expression, the column and what was expected.
    #[error("{detail}")]
    InvalidExpression {
        /// What is wrong, and where.
        detail: String,
        /// Byte offset of the problem in its expression, when known.
        position: Option<usize>,
    },
    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The time-series store failed; nothing of the request is acknowledged.
    #[error("telemetry store: {0}")]
    Store(String),
    /// The registry database failed.
    #[error(transparent)]
    Registry(fleetwire_registry::Error),
    /// The platform is stopping and takes no more writes (HTTP 503).
    #[error("the platform is shutting down")]
    ShuttingDown,
}

impl From<fleetwire_registry::Error> for Error {
    fn from(error: fleetwire_registry::Error) -> Error {
        match error {
            fleetwire_registry::Error::NotFound { kind, id } => Error::NotFound { kind, id },
            fleetwire_registry::Error::Invalid(detail) => Error::Invalid(detail),
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
            other => Error::Store(other.to_string()),
        }
    }
}
