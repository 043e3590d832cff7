//! The log's errors.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result of log operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused a file operation.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What the log was doing, such as `writing log`.
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A log file is damaged before its last record (a torn tail of the newest file is
    /// repaired, not reported), or a record's payload makes no sense to its reader.
    #[error("corrupt log {} at byte {offset}: {detail}", path.display())]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What was expected and what was found.
        detail: String,
    },
    /// Writing or syncing the log failed. It refuses further writes (their durability
    /// could not be promised) until it is started again.
    #[error("log failed, no writes are accepted until it is reopened: {0}")]
    Failed(#[source] Arc<Error>),
    /// The log's thread panicked (a bug); what it had queued may be lost.
    #[error("the log thread panicked")]
    ThreadPanicked,
    /// The log was shut down.
    #[error("the log is closed")]
    Closed,
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
