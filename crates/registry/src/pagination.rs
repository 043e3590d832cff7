//! Keyset pagination for rules, alarms and commands: the page size check and the cursors,
//! which are base64url text (opaque to callers, cheap to check) holding the key of the
//! last item of a page.
//!
//! Rules are listed by id, so their cursor is the last id. Alarms and commands are listed
//! newest first, by `(created_at, id)` descending, so theirs is that pair.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result};
use fleetwire_time::TimestampMs;

/// Largest page.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Checks a page size: 1-1000.
pub(crate) fn check_limit(limit: u32) -> Result<()> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "limit {limit}: expected 1-{MAX_PAGE}"
        )))
    }
}

/// The cursor after the item with this id.
pub(crate) fn encode_id(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The id in a cursor of `encode_id`; `parse` checks its syntax.
pub(crate) fn decode_id<T, E>(
    cursor: &str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| Error::InvalidCursor)?;
    let id = String::from_utf8(bytes).map_err(|_| Error::InvalidCursor)?;
    parse(id).map_err(|_| Error::InvalidCursor)
}

/// The cursor after the item created at `created_at` with this id. Ids never hold `:`.
pub(crate) fn encode_time_id(created_at: TimestampMs, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

/// The creation time and id in a cursor of `encode_time_id`; `parse` checks the id.
pub(crate) fn decode_time_id<T, E>(
    cursor: &str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<(TimestampMs, T)> {
    let text = decode_id(cursor, Ok::<String, Error>)?;
    let (created_at, id) = text.split_once(':').ok_or(Error::InvalidCursor)?;
    let created_at = created_at.parse().map_err(|_| Error::InvalidCursor)?;
    let id = parse(id.to_owned()).map_err(|_| Error::InvalidCursor)?;
    Ok((created_at, id))
}

/// Cuts `items` (fetched with one row more than `limit`) to a page, with the cursor of its
/// last item when a next page exists.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl FnOnce(&T) -> String,
) -> fleetwire_model::Page<T> {
    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    fleetwire_model::Page { items, next_cursor }
}

/// A query parameter of a listing built at run time: text or an integer.
pub(crate) enum Parameter {
    Text(String),
    Integer(i64),
}

/// Binds `parameters` to `query`, in order.
pub(crate) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    parameters: Vec<Parameter>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for parameter in parameters {
        query = match parameter {
            Parameter::Text(text) => query.bind(text),
            Parameter::Integer(integer) => query.bind(integer),
        };
    }
    query
}
