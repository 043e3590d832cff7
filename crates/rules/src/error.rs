//! The crate's errors: [`ExprError`] for an expression that does not compile (with its
//! position, for the API's 422 answer) and [`Error`] for everything the engine refuses.

use std::borrow::Cow;
use std::fmt;

use fleetwire_model::RuleId;

/// Result of rule engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An expression that does not compile: a syntax error, an unknown function or a type
/// error, at a position of the source text.
///
/// Its [`Display`](fmt::Display) says where, what was expected and what was found:
/// `at column 15: expected an operand, found ")"`, or, when the text ended too early,
/// `unexpected end of expression: expected ")"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    position: usize,
    column: usize,
    expected: Cow<'static, str>,
    found: Option<String>,
}

impl ExprError {
    /// An error at byte `position` of `source`; `found: None` means the text ended there.
    pub(crate) fn new(
        source: &str,
        position: usize,
        expected: impl Into<Cow<'static, str>>,
        found: Option<String>,
    ) -> ExprError {
        let position = position.min(source.len());
        // Positions always fall on character boundaries (they are token starts), but a
        // column must never panic, so count up to the nearest boundary below.
        let mut boundary = position;
        while !source.is_char_boundary(boundary) {
            boundary -= 1;
        }
        ExprError {
            position,
            column: source[..boundary].chars().count() + 1,
            expected: expected.into(),
            found,
        }
    }

    /// The byte offset (0-based) in the expression text where the problem is; the length
    /// of the text when it ended too early.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The column (1-based, in characters) of [`position`](ExprError::position).
    pub fn column(&self) -> usize {
        self.column
    }

    /// What the compiler expected there, such as `an operand` or `")"`.
    pub fn expected(&self) -> &str {
        &self.expected
    }

    /// What it found instead, quoted when it is source text (`")"`) or described when it
    /// is a type (`a number`); `None` when the expression ended too early.
    pub fn found(&self) -> Option<&str> {
        self.found.as_deref()
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.found {
            Some(found) => write!(
                formatter,
                "at column {}: expected {}, found {found}",
                self.column, self.expected
            ),
            None => write!(
                formatter,
                "unexpected end of expression: expected {}",
                self.expected
            ),
        }
    }
}

impl std::error::Error for ExprError {}

/// Which expression of a rule an [`Error::Expression`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpressionPart {
    /// The rule's `condition`.
    Condition,
    /// The rule's `clear` expression.
    Clear,
}

impl ExpressionPart {
    /// `condition` or `clear`, as the rule's JSON calls them.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpressionPart::Condition => "condition",
            ExpressionPart::Clear => "clear",
        }
    }
}

impl fmt::Display for ExpressionPart {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What the rule engine refuses. Every variant is the caller's input at fault: the API
/// answers 422 for [`Error::Expression`] (with [`Error::position`]), 409 for a duplicate
/// and 404 for an unknown rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The rule's condition or clear expression does not compile.
    #[error("rule \"{rule}\": {part}: {source}")]
    Expression {
        /// The rule.
        rule: RuleId,
        /// Which of its expressions.
        part: ExpressionPart,
        /// Where and why.
        source: ExprError,
    },
    /// Two definitions given to [`Engine::new`](crate::Engine::new) share an id.
    #[error("rule \"{0}\" is defined twice")]
    DuplicateRule(RuleId),
    /// No rule has this id.
    #[error("rule \"{0}\" not found")]
    UnknownRule(String),
}

impl Error {
    /// The byte offset of the problem in the expression text, for [`Error::Expression`].
    pub fn position(&self) -> Option<usize> {
        match self {
            Error::Expression { source, .. } => Some(source.position()),
            _ => None,
        }
    }

    /// The 1-based column of the problem in the expression text, for
    /// [`Error::Expression`].
    pub fn column(&self) -> Option<usize> {
        match self {
            Error::Expression { source, .. } => Some(source.column()),
            _ => None,
        }
    }
}
