//! Why a payload was rejected: one typed enum. Every variant is the sender's fault, so the
//! caller answers HTTP 400 (`application/problem+json` with the message as `detail`) or
//! MQTT 5 reason code 0x99 (payload format invalid), and counts the reject.

use std::fmt;

/// Result of the parsers of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest name, in characters, quoted in an error message; longer names are cut and
/// end in `…` so that a 1 MiB key cannot make a 1 MiB log line.
const MAX_QUOTED_CHARS: usize = 64;

/// Why a payload was rejected. Nothing of a rejected payload is returned: a payload is
/// accepted whole or not at all.
///
/// Messages say what was expected and what came, without a trailing period, for example
/// `row 3: field "status": expected a number or boolean, got a string`. Rows of a JSON
/// array and lines of line protocol are counted from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is not JSON (syntax error, bad UTF-8, number out of range outside a
    /// field, trailing characters).
    #[error("not valid JSON at line {line} column {column}: {reason}")]
    InvalidJson {
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1 (0 when the payload is empty).
        column: usize,
        /// What the JSON parser expected, such as `expected value`.
        reason: String,
    },
    /// The JSON is well formed but not the shape the format takes, such as a string where
    /// an object of fields belongs, or both `ts` and `timestamp` in one row.
    #[error("{}{detail}", RowPrefix(*row))]
    InvalidShape {
        /// The row of a JSON array (from 1), `None` for a single object.
        row: Option<usize>,
        /// What was expected and what came.
        detail: String,
    },
    /// One field cannot be stored: a string, null or array value, an empty or too long
    /// name, a bad timestamp, a repeated name.
    #[error("{}field {name:?}: {detail}", RowPrefix(*row))]
    InvalidField {
        /// The row of a JSON array (from 1), `None` for a single object.
        row: Option<usize>,
        /// The field's (flattened) name, cut to 64 characters.
        name: String,
        /// What was expected and what came.
        detail: String,
    },
    /// A row (or the payload, when `row` is `None`) has no field to store: `{}`, `[]`, or
    /// only metadata such as `ts` and `device_id`.
    #[error("{}no fields to store", RowPrefix(*row))]
    NoFields {
        /// The row of a JSON array (from 1), `None` for the whole payload.
        row: Option<usize>,
    },
    /// The payload goes past one of the [`Limits`](crate::Limits): too many rows or fields.
    #[error("{}{detail}", RowPrefix(*row))]
    TooLarge {
        /// The row of a JSON array (from 1), `None` for the payload or a single object.
        row: Option<usize>,
        /// Which limit, and that more came.
        detail: String,
    },
    /// A line of line protocol is malformed or cannot be stored; nothing of the request is
    /// returned.
    #[error("line {line}: {detail}")]
    InvalidLine {
        /// The line, from 1, counting every newline of the body (blank lines, comments and
        /// newlines inside string field values included).
        line: usize,
        /// What was expected and what came.
        detail: String,
    },
    /// The `precision` of a line protocol write is not one of `ns`, `us`, `ms`, `s`.
    #[error("expected precision ns, us, ms or s, got {got:?}")]
    InvalidPrecision {
        /// The precision that came, cut to 64 characters.
        got: String,
    },
}

impl Error {
    /// The HTTP status to answer: 400 Bad Request for every variant today.
    pub fn http_status(&self) -> u16 {
        400
    }

    /// The MQTT 5 reason code to answer in PUBACK or PUBREC: 0x99, payload format invalid.
    pub fn mqtt_reason_code(&self) -> u8 {
        0x99
    }
}

/// `row N: ` for rows of a JSON array, nothing for a single object.
struct RowPrefix(Option<usize>);

impl fmt::Display for RowPrefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(row) => write!(formatter, "row {row}: "),
            None => Ok(()),
        }
    }
}

/// A name in double quotes, with `"`, `\` and control characters escaped as Rust does, and
/// cut to [`MAX_QUOTED_CHARS`] characters.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED_CHARS) {
            Some((cut, _)) => write!(formatter, "{:?}", format!("{}…", &self.0[..cut])),
            None => write!(formatter, "{:?}", self.0),
        }
    }
}

/// `name` cut for an error message, as [`Quoted`] cuts it (without the quotes).
pub(crate) fn cut_name(name: &str) -> String {
    match name.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}
