//! The registry's errors: one typed enum that the API maps to HTTP statuses and the broker
//! to MQTT reason codes.

/// Result of registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device, token, rule, alarm or command does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `device`, `token`, `rule`, `alarm` or `command`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// A device with this id exists already.
    #[error("device {0:?} already exists")]
    AlreadyExists(String),
    /// The id chosen for a new rule (or, later, another kind of record) is taken.
    /// Devices keep reporting `AlreadyExists`, which their callers match on.
    #[error("{kind} {id:?} already exists")]
    IdTaken {
        /// `rule`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The record is in a state that does not allow the change, e.g. clearing an alarm
    /// that is cleared already; the message says which record and which state.
    #[error("{0}")]
    Conflict(String),
    /// Input that breaks a rule (id syntax, sizes); the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A pagination cursor this registry did not issue.
    #[error("invalid cursor")]
    InvalidCursor,
    /// The database failed; the message says during which operation.
    #[error("registry database: {0}")]
    Database(String),
    /// Something inside the process failed: the operating system's random source, the
    /// password hasher or the presence writer. Not caused by the caller's input.
    #[error("registry internal error: {0}")]
    Internal(String),
}

/// Wraps a database error with what the registry was doing.
pub(crate) fn database(context: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> Error {
    move |error| Error::Database(format!("{context}: {error}"))
}

/// Whether a database error is a violated unique constraint (a taken primary key).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}

/// Whether a database error is a violated foreign key (a row naming an unknown device).
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_foreign_key_violation())
}
