//! Commands in the database: create, read (by their device), mark delivered, complete,
//! expire, the next deadline, and list newest first per device.
//!
//! The lifecycle is pending → delivered → succeeded | failed, with pending → succeeded |
//! failed allowed (a result may overtake the delivery receipt) and pending | delivered →
//! expired at the deadline. Each transition is one conditional `UPDATE`, so a result and
//! the expiry sweep racing each other leave exactly one of them applied. A deadline is a
//! deadline even before the sweep runs: a command whose `expires_at` has passed is neither
//! delivered nor completed any more. Parameters and results are JSON text.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::error::{database, is_foreign_key_violation, is_unique_violation};
use crate::pagination::{self, Parameter};
use crate::{Error, Result};
use fleetwire_model::bounded_json;
use fleetwire_model::{Command, CommandId, CommandStatus, DeviceId, NewCommand, Page};
use fleetwire_time::TimestampMs;

/// The columns `command_from_row` reads, in its order.
const COMMAND_COLUMNS: &str = "id, device_id, name, params, status, result, created_at, \
     updated_at, expires_at, delivered_at, completed_at";

/// Statuses from which a command can still move, as SQL, spelled like the partial index
/// `commands_unfinished_expiry` so queries can use it.
const UNFINISHED: &str = "status IN ('pending', 'delivered')";

fn command_from_row(row: &AnyRow) -> Result<Command> {
    let id: String = row.try_get(0).map_err(database("reading a command"))?;
    let context = format!("reading command {id:?}");
    let stored = |what: &str, error: String| {
        Error::Inconsistent(format!("{context}: stored {what}: {error}"))
    };
    let device_id: String = row.try_get(1).map_err(database(&context))?;
    let params: String = row.try_get(3).map_err(database(&context))?;
    let status: String = row.try_get(4).map_err(database(&context))?;
    let result: Option<String> = row.try_get(5).map_err(database(&context))?;
    Ok(Command {
        device_id: DeviceId::new(device_id)
            .map_err(|error| stored("device id", error.to_string()))?,
        name: row.try_get(2).map_err(database(&context))?,
        params: serde_json::from_str(&params)
            .map_err(|error| stored("params", format!("expected JSON, {error}")))?,
        status: CommandStatus::parse(&status)
            .map_err(|error| stored("status", error.to_string()))?,
        result: result
            .map(|result| serde_json::from_str(&result))
            .transpose()
            .map_err(|error| stored("result", format!("expected JSON, {error}")))?,
        created_at: row.try_get(6).map_err(database(&context))?,
        updated_at: row.try_get(7).map_err(database(&context))?,
        expires_at: row.try_get(8).map_err(database(&context))?,
        delivered_at: row.try_get(9).map_err(database(&context))?,
        completed_at: row.try_get(10).map_err(database(&context))?,
        id: CommandId::new(id).map_err(|error| stored("id", error.to_string()))?,
    })
}

fn not_found(id: &CommandId) -> Error {
    Error::NotFound {
        kind: "command",
        id: id.to_string(),
    }
}

/// Generated command ids: `cmd-` and 16 hex digits (64 random bits).
fn generated_id() -> Result<CommandId> {
    Ok(CommandId::new(format!(
        "cmd-{}",
        crate::random::hex::<8>()?
    ))?)
}

pub(crate) async fn create(pool: &AnyPool, new: NewCommand, at: TimestampMs) -> Result<Command> {
    let params = new.check()?;
    let expires_at = at.saturating_add(new.timeout_ms);
    let context = format!("creating a command for device {:?}", new.device_id.as_str());
    // A generated id colliding with an existing one is a one-in-2^64 event per command;
    // a few attempts make it impossible in practice.
    for _ in 0..4 {
        let id = generated_id()?;
        let inserted = sqlx::query(
            "INSERT INTO commands (id, device_id, name, params, status, created_at, updated_at, \
             expires_at) VALUES ($1, $2, $3, $4, 'pending', $5, $5, $6)",
        )
        .bind(id.as_str())
        .bind(new.device_id.as_str())
        .bind(&new.name)
        .bind(&params)
        .bind(at)
        .bind(expires_at)
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => {
                return Ok(Command {
                    id,
                    device_id: new.device_id,
                    name: new.name,
                    params: new.params,
                    status: CommandStatus::Pending,
                    result: None,
                    created_at: at,
                    updated_at: at,
                    expires_at,
                    delivered_at: None,
                    completed_at: None,
                });
            }
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(crate::devices::not_found(&new.device_id));
            }
            Err(error) if is_unique_violation(&error) => {}
            Err(error) => return Err(database(&context)(error)),
        }
    }
    Err(Error::Internal {
        context: "generating a command id: every attempt was taken".to_owned(),
        source: None,
    })
}

pub(crate) async fn get(pool: &AnyPool, device: &DeviceId, id: &CommandId) -> Result<Command> {
    // Asking for the command through the wrong device is the same as asking for an
    // unknown one: ids are not a way to read another device's commands.
    let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1 AND device_id = $2");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .bind(device.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!("reading command {:?}", id.as_str())))?;
    match row {
        Some(row) => command_from_row(&row),
        None => Err(not_found(id)),
    }
}

pub(crate) async fn mark_delivered(
    pool: &AnyPool,
    id: &CommandId,
    at: TimestampMs,
) -> Result<Option<Command>> {
    let sql = format!(
        "UPDATE commands SET status = 'delivered', delivered_at = $1, updated_at = $1 \
         WHERE id = $2 AND status = 'pending' AND expires_at > $1 RETURNING {COMMAND_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(at)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!(
            "marking command {:?} delivered",
            id.as_str()
        )))?;
    row.as_ref().map(command_from_row).transpose()
}

pub(crate) async fn complete(
    pool: &AnyPool,
    id: &CommandId,
    is_success: bool,
    result: Option<serde_json::Value>,
    at: TimestampMs,
) -> Result<Option<Command>> {
    let result = result
        .as_ref()
        .map(|result| bounded_json("command result", result))
        .transpose()?;
    let status = if is_success {
        CommandStatus::Succeeded
    } else {
        CommandStatus::Failed
    };
    let sql = format!(
        "UPDATE commands SET status = $1, result = $2, completed_at = $3, updated_at = $3 \
         WHERE id = $4 AND {UNFINISHED} AND expires_at > $3 RETURNING {COMMAND_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(status.as_str())
        .bind(result)
        .bind(at)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!(
            "completing command {:?}",
            id.as_str()
        )))?;
    row.as_ref().map(command_from_row).transpose()
}

pub(crate) async fn expire(pool: &AnyPool, now: TimestampMs) -> Result<Vec<Command>> {
    let sql = format!(
        "UPDATE commands SET status = 'expired', completed_at = $1, updated_at = $1 \
         WHERE {UNFINISHED} AND expires_at <= $1 RETURNING {COMMAND_COLUMNS}"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(database("expiring commands"))?;
    let mut expired = rows
        .iter()
        .map(command_from_row)
        .collect::<Result<Vec<_>>>()?;
    // RETURNING promises no order; callers get them in deadline order.
    expired.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
    Ok(expired)
}

pub(crate) async fn pending(pool: &AnyPool, now: TimestampMs) -> Result<Vec<Command>> {
    // Repeating the partial index's predicate lets the planner scan that index.
    let sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM commands \
         WHERE {UNFINISHED} AND status = 'pending' AND expires_at > $1 ORDER BY expires_at, id"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(database("reading pending commands"))?;
    rows.iter().map(command_from_row).collect()
}

pub(crate) async fn next_expiry(pool: &AnyPool) -> Result<Option<TimestampMs>> {
    let sql = format!("SELECT MIN(expires_at) FROM commands WHERE {UNFINISHED}");
    sqlx::query_scalar::<_, Option<i64>>(&sql)
        .fetch_one(pool)
        .await
        .map_err(database("reading the next command deadline"))
}

pub(crate) async fn list(
    pool: &AnyPool,
    device: &DeviceId,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<Command>> {
    pagination::check_limit(limit)?;
    let after = cursor
        .map(|cursor| pagination::decode_time_id(cursor, CommandId::new))
        .transpose()?;
    let mut parameters = vec![Parameter::Text(device.to_string())];
    let mut sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE device_id = $1");
    // Keyset pagination, newest first, backwards along (device_id, created_at, id).
    if let Some((created_at, id)) = after {
        parameters.push(Parameter::Integer(created_at));
        parameters.push(Parameter::Text(id.to_string()));
        sql.push_str(" AND (created_at, id) < ($2, $3)");
    }
    parameters.push(Parameter::Integer(i64::from(limit) + 1));
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${}",
        parameters.len()
    ));
    let rows = pagination::bind_all(sqlx::query(&sql), parameters)
        .fetch_all(pool)
        .await
        .map_err(database(format_args!(
            "listing commands of device {:?}",
            device.as_str()
        )))?;
    let items = rows
        .iter()
        .map(command_from_row)
        .collect::<Result<Vec<_>>>()?;
    if items.is_empty() && cursor.is_none() {
        // No commands, or no device: tell them apart (the latter is `NotFound`).
        crate::devices::get(pool, device).await?;
    }
    Ok(pagination::page(items, limit, |command| {
        pagination::encode_time_id(command.created_at, command.id.as_str())
    }))
}
