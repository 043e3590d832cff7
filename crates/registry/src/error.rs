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
    /// A query failed; `context` says during which operation.
    #[error("registry database: {context}: {source}")]
    Database {
        /// What the registry was doing.
        context: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// What the database holds cannot be used: a stored value that does not read back, a
    /// schema newer than this build, an update that lost every race; the message says
    /// which.
    #[error("registry database: {0}")]
    Inconsistent(String),
    /// The data dir cannot be prepared.
    #[error("registry data dir: {context}: {source}")]
    DataDir {
        /// What the registry was doing, and where.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A background write (presence, ingest errors) that this call waited for failed.
    #[error("registry: {context}: {source}")]
    Background {
        /// Which writer.
        context: &'static str,
        /// Its error, shared by everyone who waited for that write.
        #[source]
        source: std::sync::Arc<Error>,
    },
    /// Something inside the process failed: the operating system's random source, the
    /// password hasher, serializing a record, the presence writer. Not caused by the
    /// caller's input.
    #[error("registry internal error: {context}")]
    Internal {
        /// What the registry was doing.
        context: String,
        /// What failed, when something did (not when a task is simply gone).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl From<fleetwire_model::Error> for Error {
    fn from(error: fleetwire_model::Error) -> Error {
        match error {
            fleetwire_model::Error::Invalid(message) => Error::Invalid(message),
            // A kind of refusal added to the model later: still the caller's input.
            other => Error::Invalid(other.to_string()),
        }
    }
}

impl Error {
    /// An internal failure while doing `context`, caused by `source`.
    pub(crate) fn internal(
        context: impl std::fmt::Display,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
        move |source| Error::Internal {
            context: context.to_string(),
            source: Some(source),
        }
    }
}

/// Wraps a database error with what the registry was doing.
pub(crate) fn database(context: impl std::fmt::Display) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database {
        context: context.to_string(),
        source,
    }
}

/// Whether a database error is a violated unique constraint (a taken primary key).
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_unique_violation())
}

/// Whether a database error is a violated foreign key (a row naming an unknown device).
pub(crate) fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database) if database.is_foreign_key_violation())
}
