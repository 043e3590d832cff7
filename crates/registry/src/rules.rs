//! Rules in the database: create, read, list (keyset pagination by id), load all, replace,
//! delete. A rule's device match and actions are stored as JSON text in the registry's own
//! shape (not the API's, which may change independently); the condition and clear
//! expressions are stored as written, compiled by the rules crate, never here.

use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::error::{database, is_unique_violation};
use crate::pagination::{self, Parameter};
use crate::{Error, Result};
use fleetwire_model::{
    DeviceId, Labels, Page, Rule, RuleAction, RuleId, RuleMatch, RuleSpec, Severity,
};
use fleetwire_time::TimestampMs;

/// The columns `rule_from_row` reads, in its order.
const RULE_COLUMNS: &str = "id, name, matcher, condition_expression, for_ms, clear_expression, \
     severity, actions, enabled, created_at, updated_at";

fn rule_from_row(row: &AnyRow) -> Result<Rule> {
    let id: String = row.try_get(0).map_err(database("reading a rule"))?;
    let context = format!("reading rule {id:?}");
    let stored = |what: &str, error: String| {
        Error::Inconsistent(format!("{context}: stored {what}: {error}"))
    };
    let matcher: String = row.try_get(2).map_err(database(&context))?;
    let severity: String = row.try_get(6).map_err(database(&context))?;
    let actions: String = row.try_get(7).map_err(database(&context))?;
    let spec = RuleSpec {
        name: row.try_get(1).map_err(database(&context))?,
        matcher: decode_matcher(&matcher).map_err(|error| stored("match", error))?,
        condition: row.try_get(3).map_err(database(&context))?,
        for_ms: row.try_get(4).map_err(database(&context))?,
        clear: row.try_get(5).map_err(database(&context))?,
        severity: Severity::parse(&severity)
            .map_err(|error| stored("severity", error.to_string()))?,
        actions: decode_actions(&actions).map_err(|error| stored("actions", error))?,
        enabled: row.try_get::<i64, _>(8).map_err(database(&context))? != 0,
    };
    Ok(Rule {
        spec,
        created_at: row.try_get(9).map_err(database(&context))?,
        updated_at: row.try_get(10).map_err(database(&context))?,
        id: RuleId::new(id).map_err(|error| stored("id", error.to_string()))?,
    })
}

fn encode_matcher(matcher: &RuleMatch) -> String {
    let devices: Vec<&str> = matcher.devices.iter().map(DeviceId::as_str).collect();
    json!({
        "devices": devices,
        "type": matcher.device_type,
        "labels": matcher.labels,
    })
    .to_string()
}

fn decode_matcher(text: &str) -> Result<RuleMatch, String> {
    let expected = "expected a JSON object with devices, type and labels";
    let value: Value =
        serde_json::from_str(text).map_err(|error| format!("{expected}, {error}"))?;
    let object = value.as_object().ok_or(expected)?;
    let devices = match object.get("devices") {
        Some(Value::Array(devices)) => devices
            .iter()
            .map(|device| {
                let text = device.as_str().ok_or("devices: expected strings")?;
                DeviceId::new(text).map_err(|error| error.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err(format!("devices: {expected}")),
    };
    let device_type = match object.get("type") {
        Some(Value::String(device_type)) => Some(device_type.clone()),
        Some(Value::Null) => None,
        _ => return Err("type: expected a string or null".to_owned()),
    };
    let labels = match object.get("labels") {
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(key, value)| match value {
                Value::String(value) => Ok((key.clone(), value.clone())),
                _ => Err(format!("label {key:?}: expected a string")),
            })
            .collect::<Result<Labels, String>>()?,
        _ => return Err("labels: expected an object".to_owned()),
    };
    Ok(RuleMatch {
        devices,
        device_type,
        labels,
    })
}

fn encode_actions(actions: &[RuleAction]) -> String {
    let actions: Vec<Value> = actions
        .iter()
        .map(|action| match action {
            RuleAction::Alarm => json!({"type": "alarm"}),
            RuleAction::Webhook { url } => json!({"type": "webhook", "url": url}),
            RuleAction::Republish { topic } => json!({"type": "republish", "topic": topic}),
            RuleAction::Command { name, params } => {
                json!({"type": "command", "name": name, "params": params})
            }
        })
        .collect();
    Value::Array(actions).to_string()
}

fn decode_actions(text: &str) -> Result<Vec<RuleAction>, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| format!("expected a JSON array of actions, {error}"))?;
    let Value::Array(actions) = value else {
        return Err("expected a JSON array of actions".to_owned());
    };
    actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            decode_action(action.as_object().ok_or("expected an object")?)
                .map_err(|error| format!("action {index}: {error}"))
        })
        .collect()
}

fn decode_action(action: &Map<String, Value>) -> Result<RuleAction, String> {
    let text = |field: &str| {
        action
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{field}: expected a string"))
    };
    match action.get("type").and_then(Value::as_str) {
        Some("alarm") => Ok(RuleAction::Alarm),
        Some("webhook") => Ok(RuleAction::Webhook { url: text("url")? }),
        Some("republish") => Ok(RuleAction::Republish {
            topic: text("topic")?,
        }),
        Some("command") => Ok(RuleAction::Command {
            name: text("name")?,
            params: action.get("params").cloned().unwrap_or(Value::Null),
        }),
        other => Err(format!(
            "type {other:?}: expected alarm, webhook, republish or command"
        )),
    }
}

/// Generated rule ids: `rule-` and 16 hex digits (64 random bits).
fn generated_id() -> Result<RuleId> {
    Ok(RuleId::new(format!("rule-{}", crate::random::hex::<8>()?))?)
}

pub(crate) async fn create(
    pool: &AnyPool,
    id: Option<RuleId>,
    spec: RuleSpec,
    now: TimestampMs,
) -> Result<Rule> {
    spec.check()?;
    let matcher = encode_matcher(&spec.matcher);
    let actions = encode_actions(&spec.actions);
    // A generated id colliding with an existing one is a one-in-2^64 event per rule; a few
    // attempts make it impossible in practice.
    for _ in 0..4 {
        let rule_id = match &id {
            Some(id) => id.clone(),
            None => generated_id()?,
        };
        let inserted = sqlx::query(
            "INSERT INTO rules (id, name, matcher, condition_expression, for_ms, \
             clear_expression, severity, actions, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(rule_id.as_str())
        .bind(&spec.name)
        .bind(&matcher)
        .bind(&spec.condition)
        .bind(spec.for_ms)
        .bind(spec.clear.as_deref())
        .bind(spec.severity.as_str())
        .bind(&actions)
        .bind(i64::from(spec.enabled))
        .bind(now)
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => {
                return Ok(Rule {
                    id: rule_id,
                    spec,
                    created_at: now,
                    updated_at: now,
                });
            }
            Err(error) if is_unique_violation(&error) => {
                if id.is_some() {
                    return Err(Error::IdTaken {
                        kind: "rule",
                        id: rule_id.to_string(),
                    });
                }
            }
            Err(error) => {
                return Err(database(format_args!(
                    "creating rule {:?}",
                    rule_id.as_str()
                ))(error));
            }
        }
    }
    Err(Error::Internal {
        context: "generating a rule id: every attempt was taken".to_owned(),
        source: None,
    })
}

pub(crate) async fn get(pool: &AnyPool, id: &RuleId) -> Result<Rule> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM rules WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!("reading rule {:?}", id.as_str())))?;
    match row {
        Some(row) => rule_from_row(&row),
        None => Err(not_found(id)),
    }
}

fn not_found(id: &RuleId) -> Error {
    Error::NotFound {
        kind: "rule",
        id: id.to_string(),
    }
}

pub(crate) async fn list(pool: &AnyPool, limit: u32, cursor: Option<&str>) -> Result<Page<Rule>> {
    pagination::check_limit(limit)?;
    let after = cursor
        .map(|cursor| pagination::decode_id(cursor, RuleId::new))
        .transpose()?;
    // Every id is longer than the empty string, so the first page needs no other query.
    let after = after.as_ref().map_or("", RuleId::as_str);
    let sql = format!("SELECT {RULE_COLUMNS} FROM rules WHERE id > $1 ORDER BY id LIMIT $2");
    let query = pagination::bind_all(
        sqlx::query(&sql),
        vec![
            Parameter::Text(after.to_owned()),
            // One row more than asked, to learn whether a next page exists.
            Parameter::Integer(i64::from(limit) + 1),
        ],
    );
    let rows = query
        .fetch_all(pool)
        .await
        .map_err(database("listing rules"))?;
    let items = rows.iter().map(rule_from_row).collect::<Result<Vec<_>>>()?;
    Ok(pagination::page(items, limit, |rule| {
        pagination::encode_id(rule.id.as_str())
    }))
}

pub(crate) async fn all(pool: &AnyPool) -> Result<Vec<Rule>> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY id");
    let rows = sqlx::query(&sql)
        .fetch_all(pool)
        .await
        .map_err(database("loading all rules"))?;
    rows.iter().map(rule_from_row).collect()
}

pub(crate) async fn replace(
    pool: &AnyPool,
    id: &RuleId,
    spec: RuleSpec,
    now: TimestampMs,
) -> Result<Rule> {
    spec.check()?;
    // `updated_at` always grows, even when two replacements fall in one millisecond (or
    // the clock stepped back), so callers can tell versions apart by it.
    let sql = format!(
        "UPDATE rules SET name = $1, matcher = $2, condition_expression = $3, for_ms = $4, \
         clear_expression = $5, severity = $6, actions = $7, enabled = $8, \
         updated_at = CASE WHEN $9 > updated_at THEN $9 ELSE updated_at + 1 END \
         WHERE id = $10 RETURNING {RULE_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&spec.name)
        .bind(encode_matcher(&spec.matcher))
        .bind(&spec.condition)
        .bind(spec.for_ms)
        .bind(spec.clear.as_deref())
        .bind(spec.severity.as_str())
        .bind(encode_actions(&spec.actions))
        .bind(i64::from(spec.enabled))
        .bind(now)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!("replacing rule {:?}", id.as_str())))?;
    match row {
        Some(row) => rule_from_row(&row),
        None => Err(not_found(id)),
    }
}

pub(crate) async fn delete(pool: &AnyPool, id: &RuleId) -> Result<()> {
    // The rule's alarms stay: they are history (see the schema).
    let deleted = sqlx::query("DELETE FROM rules WHERE id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await
        .map_err(database(format_args!("deleting rule {:?}", id.as_str())))?;
    if deleted.rows_affected() == 0 {
        return Err(not_found(id));
    }
    Ok(())
}
