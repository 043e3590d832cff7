//! The one way a domain value is refused: [`Error::Invalid`], whose message names the
//! field, what was expected and what came.

/// A value that breaks a rule of the domain (id syntax, sizes, a bad action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message says which field, what was expected and what came.
    #[error("{0}")]
    Invalid(String),
}

/// Result of the domain's checks.
pub type Result<T, E = Error> = std::result::Result<T, E>;
