//! Why a benchmark could not run.

use fleetwire_client::ClientError;

/// A setting the generator refuses, a broker it cannot use, or a process it cannot
/// observe. Individual message failures during a run are counted, not raised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A setting is out of range.
    #[error("invalid benchmark setting: {0}")]
    InvalidConfig(String),
    /// Connections needed before the measurement could not be opened.
    #[error("{failed} of {total} {role} could not connect or subscribe; first error: {first}")]
    Setup {
        /// "publishers" or "subscribers".
        role: &'static str,
        /// How many failed.
        failed: usize,
        /// How many were needed.
        total: usize,
        /// The first failure.
        first: ClientError,
    },
    /// More connections were asked for than this process may open files.
    #[error(
        "{requested} connections need about {needed} file descriptors, but this process may open \
         only {limit} (RLIMIT_NOFILE); raise the hard limit (ulimit -Hn, as root) or ask for fewer"
    )]
    TooManyConnections {
        /// Requested connections.
        requested: usize,
        /// Descriptors needed.
        needed: u64,
        /// The soft limit after raising it as far as allowed.
        limit: u64,
    },
    /// The broker process given by pid cannot be read.
    #[error("cannot read process {pid} under /proc: {source}")]
    BrokerProcess {
        /// The pid given.
        pid: u32,
        /// What the operating system said.
        source: std::io::Error,
    },
}
