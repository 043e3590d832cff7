//! Alarms in the database: raise (at most one open alarm per rule and device, enforced by
//! a partial unique index), acknowledge, clear, read, list newest first with filters, and
//! count the open ones.
//!
//! Every transition is one conditional `UPDATE ... WHERE id = $1 AND status ...`, so
//! concurrent callers (two operators, the rule engine and an operator, two nodes) cannot
//! walk an alarm backwards: active → acknowledged → cleared, or active → cleared. The
//! triggering values are JSON text, `[["field", value], ...]`.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::error::{database, is_foreign_key_violation};
use crate::pagination::{self, Parameter};
use crate::{Error, Result};
use fleetwire_model::{
    Alarm, AlarmFilter, AlarmId, AlarmStatus, DeviceId, NewAlarm, Page, RuleId, Severity,
};
use fleetwire_model::{check_actor, check_alarm_values};
use fleetwire_time::TimestampMs;

/// The columns `alarm_from_row` reads, in its order.
const ALARM_COLUMNS: &str = "id, rule_id, rule_name, device_id, severity, status, \
     trigger_values, created_at, updated_at, acknowledged_at, acknowledged_by, cleared_at, \
     cleared_by, clear_values";

/// How often `raise` tries again when the open alarm it ran into is cleared before it
/// could read it.
const RAISE_ATTEMPTS: usize = 8;

fn alarm_from_row(row: &AnyRow) -> Result<Alarm> {
    let id: String = row.try_get(0).map_err(database("reading an alarm"))?;
    let context = format!("reading alarm {id:?}");
    let stored = |what: &str, error: String| {
        Error::Inconsistent(format!("{context}: stored {what}: {error}"))
    };
    let rule_id: String = row.try_get(1).map_err(database(&context))?;
    let device_id: String = row.try_get(3).map_err(database(&context))?;
    let severity: String = row.try_get(4).map_err(database(&context))?;
    let status: String = row.try_get(5).map_err(database(&context))?;
    let values: String = row.try_get(6).map_err(database(&context))?;
    let clear_values: String = row.try_get(13).map_err(database(&context))?;
    Ok(Alarm {
        rule_id: RuleId::new(rule_id).map_err(|error| stored("rule id", error.to_string()))?,
        rule_name: row.try_get(2).map_err(database(&context))?,
        device_id: DeviceId::new(device_id)
            .map_err(|error| stored("device id", error.to_string()))?,
        severity: Severity::parse(&severity)
            .map_err(|error| stored("severity", error.to_string()))?,
        status: AlarmStatus::parse(&status).map_err(|error| stored("status", error.to_string()))?,
        values: decode_values(&values).map_err(|error| stored("values", error))?,
        created_at: row.try_get(7).map_err(database(&context))?,
        updated_at: row.try_get(8).map_err(database(&context))?,
        acknowledged_at: row.try_get(9).map_err(database(&context))?,
        acknowledged_by: row.try_get(10).map_err(database(&context))?,
        cleared_at: row.try_get(11).map_err(database(&context))?,
        cleared_by: row.try_get(12).map_err(database(&context))?,
        clear_values: decode_values(&clear_values)
            .map_err(|error| stored("clear values", error))?,
        id: AlarmId::new(id).map_err(|error| stored("id", error.to_string()))?,
    })
}

fn encode_values(values: &[(String, f64)]) -> Result<String> {
    // Checked finite before: JSON has no NaN, serde_json would write `null`.
    serde_json::to_string(values)
        .map_err(|error| Error::internal("serializing alarm values")(error.into()))
}

fn decode_values(text: &str) -> Result<Vec<(String, f64)>, String> {
    serde_json::from_str(text)
        .map_err(|error| format!("expected a JSON array of [field, number] pairs, {error}"))
}

fn not_found(id: &AlarmId) -> Error {
    Error::NotFound {
        kind: "alarm",
        id: id.to_string(),
    }
}

fn is_cleared(id: &AlarmId) -> Error {
    Error::Conflict(format!(
        "alarm {:?} is cleared: expected an active or acknowledged alarm",
        id.as_str()
    ))
}

/// Generated alarm ids: `alm-` and 16 hex digits (64 random bits).
fn generated_id() -> Result<AlarmId> {
    Ok(AlarmId::new(format!("alm-{}", crate::random::hex::<8>()?))?)
}

pub(crate) async fn raise(pool: &AnyPool, new: NewAlarm, at: TimestampMs) -> Result<(Alarm, bool)> {
    new.check()?;
    let values = encode_values(&new.values)?;
    let context = format!(
        "raising an alarm of rule {:?} for device {:?}",
        new.rule_id.as_str(),
        new.device_id.as_str()
    );
    for _ in 0..RAISE_ATTEMPTS {
        let alarm = Alarm {
            id: generated_id()?,
            rule_id: new.rule_id.clone(),
            rule_name: new.rule_name.clone(),
            device_id: new.device_id.clone(),
            severity: new.severity,
            status: AlarmStatus::Active,
            values: new.values.clone(),
            created_at: at,
            updated_at: at,
            acknowledged_at: None,
            acknowledged_by: None,
            cleared_at: None,
            cleared_by: None,
            clear_values: Vec::new(),
        };
        // An open alarm of the same rule and device makes the insert do nothing (the
        // partial unique index): a concurrent raise waits for the first to commit, then
        // finds its alarm. (So would a generated id that is taken; the loop covers both.)
        let inserted = sqlx::query(
            "INSERT INTO alarms (id, rule_id, rule_name, device_id, severity, status, \
             trigger_values, created_at, updated_at, clear_values) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7, '[]') ON CONFLICT DO NOTHING",
        )
        .bind(alarm.id.as_str())
        .bind(alarm.rule_id.as_str())
        .bind(&alarm.rule_name)
        .bind(alarm.device_id.as_str())
        .bind(alarm.severity.as_str())
        .bind(&values)
        .bind(at)
        .execute(pool)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => return Ok((alarm, true)),
            Ok(_) => {}
            Err(error) if is_foreign_key_violation(&error) => {
                return Err(crate::devices::not_found(&new.device_id));
            }
            Err(error) => return Err(database(&context)(error)),
        }
        if let Some(open) = open(pool, &new.rule_id, &new.device_id).await? {
            return Ok((open, false));
        }
    }
    Err(Error::Inconsistent(format!(
        "{context}: gave up after {RAISE_ATTEMPTS} attempts lost to concurrent changes"
    )))
}

pub(crate) async fn get(pool: &AnyPool, id: &AlarmId) -> Result<Alarm> {
    let sql = format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!("reading alarm {:?}", id.as_str())))?;
    match row {
        Some(row) => alarm_from_row(&row),
        None => Err(not_found(id)),
    }
}

pub(crate) async fn open(
    pool: &AnyPool,
    rule: &RuleId,
    device: &DeviceId,
) -> Result<Option<Alarm>> {
    let sql = format!(
        "SELECT {ALARM_COLUMNS} FROM alarms \
         WHERE rule_id = $1 AND device_id = $2 AND status <> 'cleared'"
    );
    let row = sqlx::query(&sql)
        .bind(rule.as_str())
        .bind(device.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!(
            "reading the open alarm of rule {:?} for device {:?}",
            rule.as_str(),
            device.as_str()
        )))?;
    row.as_ref().map(alarm_from_row).transpose()
}

pub(crate) async fn all_open(pool: &AnyPool) -> Result<Vec<Alarm>> {
    let sql = format!(
        "SELECT {ALARM_COLUMNS} FROM alarms WHERE status <> 'cleared' ORDER BY created_at, id"
    );
    let rows = sqlx::query(&sql)
        .fetch_all(pool)
        .await
        .map_err(database("loading open alarms"))?;
    rows.iter().map(alarm_from_row).collect()
}

pub(crate) async fn acknowledge(
    pool: &AnyPool,
    id: &AlarmId,
    by: &str,
    at: TimestampMs,
) -> Result<Alarm> {
    check_actor("alarm acknowledged by", by)?;
    let sql = format!(
        "UPDATE alarms SET status = 'acknowledged', acknowledged_at = $1, acknowledged_by = $2, \
         updated_at = $1 WHERE id = $3 AND status = 'active' RETURNING {ALARM_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(at)
        .bind(by)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!(
            "acknowledging alarm {:?}",
            id.as_str()
        )))?;
    if let Some(row) = row {
        return alarm_from_row(&row);
    }
    // Not active: acknowledged already (answered as it is), cleared, or unknown. An alarm
    // never goes back to active, so what is read now is the reason the update missed.
    let alarm = get(pool, id).await?;
    match alarm.status {
        AlarmStatus::Acknowledged => Ok(alarm),
        AlarmStatus::Cleared => Err(is_cleared(id)),
        AlarmStatus::Active => Err(Error::Inconsistent(format!(
            "acknowledging alarm {:?}: it is active yet the update matched nothing",
            id.as_str()
        ))),
    }
}

pub(crate) async fn clear(
    pool: &AnyPool,
    id: &AlarmId,
    by: &str,
    values: Vec<(String, f64)>,
    at: TimestampMs,
) -> Result<Alarm> {
    check_actor("alarm cleared by", by)?;
    check_alarm_values("alarm clear values", &values)?;
    let sql = format!(
        "UPDATE alarms SET status = 'cleared', cleared_at = $1, cleared_by = $2, \
         clear_values = $3, updated_at = $1 \
         WHERE id = $4 AND status <> 'cleared' RETURNING {ALARM_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(at)
        .bind(by)
        .bind(encode_values(&values)?)
        .bind(id.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(format_args!("clearing alarm {:?}", id.as_str())))?;
    match row {
        Some(row) => alarm_from_row(&row),
        // Cleared already (a cleared alarm stays cleared), or unknown.
        None => get(pool, id).await.and_then(|_| Err(is_cleared(id))),
    }
}

pub(crate) async fn list(pool: &AnyPool, filter: &AlarmFilter) -> Result<Page<Alarm>> {
    pagination::check_limit(filter.limit)?;
    let after = filter
        .cursor
        .as_deref()
        .map(|cursor| pagination::decode_time_id(cursor, AlarmId::new))
        .transpose()?;
    let (sql, parameters) = list_query(filter, after.as_ref().map(|(at, id)| (*at, id)));
    let rows = pagination::bind_all(sqlx::query(&sql), parameters)
        .fetch_all(pool)
        .await
        .map_err(database("listing alarms"))?;
    let items = rows
        .iter()
        .map(alarm_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(pagination::page(items, filter.limit, |alarm| {
        pagination::encode_time_id(alarm.created_at, alarm.id.as_str())
    }))
}

/// The SQL of one page of `filter` after the alarm `after` (its creation time and id),
/// and its parameters.
fn list_query(
    filter: &AlarmFilter,
    after: Option<(TimestampMs, &AlarmId)>,
) -> (String, Vec<Parameter>) {
    let mut parameters = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let mut parameter = |value: Parameter| {
        parameters.push(value);
        format!("${}", parameters.len())
    };
    // Spelled literally, so that the partial indexes on open alarms apply; active and
    // acknowledged alarms are open too, and use them.
    let is_open_status = filter.status.is_some_and(AlarmStatus::is_open);
    if filter.open_only || is_open_status {
        conditions.push("status <> 'cleared'".to_owned());
    }
    if let Some(status) = filter.status {
        let status = parameter(Parameter::Text(status.as_str().to_owned()));
        conditions.push(format!("status = {status}"));
    }
    if let Some(device) = &filter.device {
        let device = parameter(Parameter::Text(device.to_string()));
        conditions.push(format!("device_id = {device}"));
    }
    if let Some(rule) = &filter.rule {
        let rule = parameter(Parameter::Text(rule.to_string()));
        conditions.push(format!("rule_id = {rule}"));
    }
    if let Some(severity) = filter.severity {
        let severity = parameter(Parameter::Text(severity.as_str().to_owned()));
        conditions.push(format!("severity = {severity}"));
    }
    // Keyset pagination, newest first: every index ends in (created_at, id), walked
    // backwards from the cursor; no sort, no offset.
    if let Some((created_at, id)) = after {
        let created_at = parameter(Parameter::Integer(created_at));
        let id = parameter(Parameter::Text(id.to_string()));
        conditions.push(format!("(created_at, id) < ({created_at}, {id})"));
    }
    // One row more than asked, to learn whether a next page exists.
    let limit = parameter(Parameter::Integer(i64::from(filter.limit) + 1));
    let conditions = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {ALARM_COLUMNS} FROM alarms{conditions} \
         ORDER BY created_at DESC, id DESC LIMIT {limit}"
    );
    (sql, parameters)
}

pub(crate) async fn counts(pool: &AnyPool) -> Result<Vec<(Severity, AlarmStatus, u64)>> {
    let context = "counting open alarms";
    let rows = sqlx::query(
        "SELECT severity, status, COUNT(*) FROM alarms WHERE status <> 'cleared' \
         GROUP BY severity, status",
    )
    .fetch_all(pool)
    .await
    .map_err(database(context))?;
    let mut counts = rows
        .iter()
        .map(|row| {
            let severity: String = row.try_get(0).map_err(database(context))?;
            let status: String = row.try_get(1).map_err(database(context))?;
            let count: i64 = row.try_get(2).map_err(database(context))?;
            let stored = |error: fleetwire_model::Error| {
                Error::Inconsistent(format!("{context}: stored {error}"))
            };
            Ok((
                Severity::parse(&severity).map_err(stored)?,
                AlarmStatus::parse(&status).map_err(stored)?,
                u64::try_from(count).unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // Gravest first, then active before acknowledged: the order a dashboard shows them.
    counts.sort_by_key(|(severity, status, _)| {
        (std::cmp::Reverse(*severity), *status != AlarmStatus::Active)
    });
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;
    use crate::Registry;

    /// SQLite's plan of `sql` (bound to `parameters`), one line per step.
    async fn query_plan(registry: &Registry, sql: &str, parameters: Vec<Parameter>) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let rows = pagination::bind_all(sqlx::query(&explain), parameters)
            .fetch_all(&registry.inner.pool)
            .await
            .expect("explaining");
        let steps: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String, _>(3).expect("plan detail"))
            .collect();
        steps.join("\n")
    }

    /// Every shape of alarm listing walks an index in (created_at, id) order, from the
    /// cursor: no full scan of the history, no sort. (What keeps a page fast at a million
    /// alarms.) And the lifecycle's lookups use the partial indexes of open alarms.
    #[tokio::test]
    async fn alarm_queries_walk_an_index_without_sorting() {
        let dir = std::env::temp_dir().join(format!(
            "fleetwire-registry-alarm-plan-{}",
            std::process::id()
        ));
        let registry = Registry::open_in_dir(&dir)
            .await
            .expect("opening a registry");
        let device = || Some(DeviceId::new("boiler-7").expect("a device id"));
        let rule = || Some(RuleId::new("overheat").expect("a rule id"));
        let open = AlarmFilter {
            open_only: true,
            ..AlarmFilter::default()
        };
        let cases = [
            (AlarmFilter::default(), "USING INDEX alarms_created"),
            (open.clone(), "USING INDEX alarms_open_created"),
            (
                AlarmFilter {
                    status: Some(AlarmStatus::Active),
                    ..AlarmFilter::default()
                },
                "USING INDEX alarms_open_created",
            ),
            (
                AlarmFilter {
                    status: Some(AlarmStatus::Cleared),
                    severity: Some(Severity::High),
                    ..AlarmFilter::default()
                },
                "USING INDEX alarms_created",
            ),
            (
                AlarmFilter {
                    device: device(),
                    ..AlarmFilter::default()
                },
                "USING INDEX alarms_device_created (device_id=?",
            ),
            (
                AlarmFilter {
                    device: device(),
                    ..open.clone()
                },
                "USING INDEX alarms_open_device_created (device_id=?",
            ),
            (
                AlarmFilter {
                    device: device(),
                    status: Some(AlarmStatus::Acknowledged),
                    ..AlarmFilter::default()
                },
                "USING INDEX alarms_open_device_created (device_id=?",
            ),
            (
                AlarmFilter {
                    rule: rule(),
                    ..AlarmFilter::default()
                },
                "USING INDEX alarms_rule_created (rule_id=?",
            ),
            (
                AlarmFilter {
                    rule: rule(),
                    ..open.clone()
                },
                "USING INDEX alarms_open_rule_created (rule_id=?",
            ),
        ];
        let last = AlarmId::new("alm-0123456789abcdef").expect("an alarm id");
        for (filter, expected) in cases {
            for after in [None, Some((1_700_000_000_000, &last))] {
                let (sql, parameters) = list_query(&filter, after);
                let plan = query_plan(&registry, &sql, parameters).await;
                assert!(plan.contains(expected), "{filter:?}:\n{plan}");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts:\n{plan}");
                if after.is_some() {
                    assert!(
                        plan.contains("(created_at,id)<(?,?)"),
                        "{filter:?}:\n{plan}"
                    );
                }
            }
        }
        // One rule and one device: at most one open alarm, found by the unique index.
        let (sql, parameters) = list_query(
            &AlarmFilter {
                rule: rule(),
                device: device(),
                ..open
            },
            None,
        );
        let plan = query_plan(&registry, &sql, parameters).await;
        assert!(
            plan.contains("USING INDEX alarms_open_rule_device"),
            "{plan}"
        );

        let lookups = [
            (
                "SELECT id FROM alarms WHERE rule_id = $1 AND device_id = $2 \
                 AND status <> 'cleared'",
                "USING INDEX alarms_open_rule_device (rule_id=? AND device_id=?)",
            ),
            (
                "SELECT id FROM alarms WHERE status <> 'cleared' ORDER BY created_at, id",
                "USING INDEX alarms_open_created",
            ),
            (
                "SELECT MIN(expires_at) FROM commands WHERE status IN ('pending', 'delivered')",
                "USING INDEX commands_unfinished_expiry",
            ),
            (
                "UPDATE commands SET status = 'expired' \
                 WHERE status IN ('pending', 'delivered') AND expires_at <= $1",
                "USING INDEX commands_unfinished_expiry (expires_at<?)",
            ),
        ];
        for (sql, expected) in lookups {
            let parameters = (1..=sql.matches('$').count())
                .map(|_| Parameter::Text("x".to_owned()))
                .collect();
            let plan = query_plan(&registry, sql, parameters).await;
            assert!(plan.contains(expected), "{sql}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts:\n{plan}");
        }
        registry.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
