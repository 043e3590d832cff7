//! Why a simulation cannot start.

use std::path::PathBuf;

/// A configuration the simulator refuses, or a credentials file it cannot read. Failures
/// of individual devices at run time are not errors: they are counted and retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is out of range.
    #[error("invalid simulation setting: {0}")]
    InvalidConfig(String),
    /// The credentials file cannot be read.
    #[error("cannot read credentials file {}: {source}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A line of the credentials file is not a credential.
    #[error("credentials file {}, line {line}: {detail}", path.display())]
    CredentialsSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}
