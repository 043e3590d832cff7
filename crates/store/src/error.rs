//! The store's errors: one typed enum. Callers map [`Error::InvalidPoint`] and
//! [`Error::InvalidArgument`] to "bad request" answers (HTTP 400, MQTT 0x99) and everything
//! else to "the server failed" (HTTP 500/503, MQTT 0x80).

use std::io;
use std::path::PathBuf;

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What the store was doing, such as `reading segment`.
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A segment file failed its checks: bad magic, version, checksum or index.
    #[error("corrupt segment {}: {detail}", path.display())]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
    },
    /// A write-ahead log file is damaged before its last record (a torn tail of the newest
    /// file is repaired, not reported).
    #[error("corrupt write-ahead log {} at byte {offset}: {detail}", path.display())]
    CorruptWal {
        /// The log file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What was expected and what was found.
        detail: String,
    },
    /// The series catalog disagrees with itself or with the write-ahead log.
    #[error("corrupt series catalog {}: {detail}", path.display())]
    CorruptCatalog {
        /// The catalog file.
        path: PathBuf,
        /// What was expected and what was found.
        detail: String,
    },
    /// A point of a write batch breaks a rule; nothing of the batch was written.
    #[error("invalid point at index {index}: {detail}")]
    InvalidPoint {
        /// Position of the point in the batch.
        index: usize,
        /// What was expected and what came.
        detail: String,
    },
    /// A query argument breaks a rule, such as `from` after `to` or a zero `every`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The [`StoreConfig`](crate::StoreConfig) has a value out of range.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// Writing or syncing the write-ahead log failed. The store refuses further writes
    /// (their durability could not be promised) until it is reopened.
    #[error("write-ahead log failed, no writes are accepted until the store is reopened: {0}")]
    WalFailed(#[source] std::sync::Arc<fleetwire_journal::Error>),
    /// The write-ahead log's thread panicked (a bug); what it had queued may be lost.
    #[error("the write-ahead log thread panicked")]
    WalThreadPanicked,
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl Error {
    /// Whether the caller's input is at fault (bad point or argument) rather than the store.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidPoint { .. } | Error::InvalidArgument(_))
    }
}

/// Wraps an I/O error with the operation and path.
pub(crate) fn io(
    operation: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        operation,
        path,
        source,
    }
}
