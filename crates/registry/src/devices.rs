//! Devices and their labels in the database: create, read, list (keyset pagination), update,
//! delete, attribute merges. Labels live both as JSON on the device row (read with it) and
//! as rows of `device_labels` (searched by index).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::AnyPool;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use crate::error::{database, is_unique_violation};
use crate::{Error, Result};
use fleetwire_model::MAX_LABELS;
use fleetwire_model::{
    Device, DeviceFilter, DeviceId, DevicePatch, IngestErrorRecord, Labels, NewDevice, Page,
};

/// Largest page.
const MAX_PAGE: u32 = 1000;
/// Largest reported-attributes document, serialized as JSON.
pub(crate) const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// How often a merge of attributes retries when other merges of the same device win.
const MERGE_ATTEMPTS: usize = 32;

/// The columns `device_from_row` reads, in its order.
const DEVICE_COLUMNS: &str = "d.id, d.name, d.device_type, d.labels, d.created_at, d.online, \
     d.last_seen, d.attributes, CAST(CASE WHEN d.secret_hash IS NULL THEN 0 ELSE 1 END AS BIGINT), \
     d.last_ingest_error_at, d.last_ingest_error_source, d.last_ingest_error";

fn device_from_row(row: &AnyRow) -> Result<Device> {
    let id: String = row.try_get(0).map_err(database("reading a device"))?;
    let context = || format!("reading device {id:?}");
    let labels: String = row.try_get(3).map_err(database(context()))?;
    let attributes: String = row.try_get(7).map_err(database(context()))?;
    let device = Device {
        name: row.try_get(1).map_err(database(context()))?,
        device_type: row.try_get(2).map_err(database(context()))?,
        labels: serde_json::from_str(&labels).map_err(|error| {
            Error::Inconsistent(format!(
                "{}: stored labels: expected a JSON object of strings, {error}",
                context()
            ))
        })?,
        created_at: row.try_get(4).map_err(database(context()))?,
        online: row.try_get::<i64, _>(5).map_err(database(context()))? != 0,
        last_seen: row.try_get(6).map_err(database(context()))?,
        attributes: serde_json::from_str(&attributes).map_err(|error| {
            Error::Inconsistent(format!(
                "{}: stored attributes: expected a JSON object, {error}",
                context()
            ))
        })?,
        has_credentials: row.try_get::<i64, _>(8).map_err(database(context()))? != 0,
        last_ingest_error: match row
            .try_get::<Option<i64>, _>(9)
            .map_err(database(context()))?
        {
            Some(at) => Some(IngestErrorRecord {
                at,
                source: row.try_get(10).map_err(database(context()))?,
                message: row.try_get(11).map_err(database(context()))?,
            }),
            None => None,
        },
        id: DeviceId::new(id.clone())
            .map_err(|error| Error::Inconsistent(format!("{}: stored id: {error}", context())))?,
    };
    Ok(device)
}

fn labels_json(labels: &Labels) -> Result<String> {
    serde_json::to_string(labels)
        .map_err(|error| Error::internal("serializing labels")(error.into()))
}

/// Generated device ids: `dev-` and 16 hex digits (64 random bits).
fn generated_id() -> Result<DeviceId> {
    Ok(DeviceId::new(format!(
        "dev-{}",
        crate::random::hex::<8>()?
    ))?)
}

pub(crate) async fn create(pool: &AnyPool, new: NewDevice, now: i64) -> Result<Device> {
    new.check()?;
    let chosen = new.id.is_some();
    // A generated id colliding with an existing one is a one-in-2^64 event per device;
    // a few attempts make it impossible in practice.
    for _ in 0..4 {
        let id = match &new.id {
            Some(id) => id.clone(),
            None => generated_id()?,
        };
        let device = Device {
            id,
            name: new.name.clone().unwrap_or_default(),
            device_type: new.device_type.clone().unwrap_or_default(),
            labels: new.labels.clone(),
            created_at: now,
            online: false,
            last_seen: None,
            attributes: serde_json::Map::new(),
            has_credentials: false,
            last_ingest_error: None,
        };
        match insert(pool, &device).await {
            Ok(()) => return Ok(device),
            Err(InsertError::Taken) if chosen => {
                return Err(Error::AlreadyExists(device.id.to_string()));
            }
            Err(InsertError::Taken) => continue,
            Err(InsertError::Other(error)) => return Err(error),
        }
    }
    Err(Error::Internal {
        context: "generating a device id: every attempt was taken".to_owned(),
        source: None,
    })
}

enum InsertError {
    Taken,
    Other(Error),
}

async fn insert(pool: &AnyPool, device: &Device) -> Result<(), InsertError> {
    let context = format!("creating device {:?}", device.id.as_str());
    let mut transaction = pool
        .begin()
        .await
        .map_err(|error| InsertError::Other(database(&context)(error)))?;
    let inserted = sqlx::query(
        "INSERT INTO devices (id, name, device_type, labels, attributes, created_at, online) \
         VALUES ($1, $2, $3, $4, '{}', $5, 0)",
    )
    .bind(device.id.as_str())
    .bind(&device.name)
    .bind(&device.device_type)
    .bind(labels_json(&device.labels).map_err(InsertError::Other)?)
    .bind(device.created_at)
    .execute(&mut *transaction)
    .await;
    match inserted {
        Ok(_) => {}
        Err(error) if is_unique_violation(&error) => return Err(InsertError::Taken),
        Err(error) => return Err(InsertError::Other(database(&context)(error))),
    }
    insert_labels(&mut transaction, &device.id, &device.labels)
        .await
        .map_err(InsertError::Other)?;
    transaction
        .commit()
        .await
        .map_err(|error| InsertError::Other(database(&context)(error)))
}

/// Inserts the label rows of a device, all in one statement.
async fn insert_labels(
    transaction: &mut Transaction<'_, Any>,
    id: &DeviceId,
    labels: &Labels,
) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("INSERT INTO device_labels (device_id, key, value) VALUES ");
    for index in 0..labels.len() {
        let first = index * 2 + 2;
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("($1, ${first}, ${})", first + 1));
    }
    let mut query = sqlx::query(&sql).bind(id.as_str());
    for (key, value) in labels {
        query = query.bind(key.as_str()).bind(value.as_str());
    }
    query
        .execute(&mut **transaction)
        .await
        .map_err(database(format_args!(
            "storing labels of device {:?}",
            id.as_str()
        )))?;
    Ok(())
}

pub(crate) async fn get<'e, E>(executor: E, id: &DeviceId) -> Result<Device>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.id = $1");
    let row = sqlx::query(&sql)
        .bind(id.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database(format_args!("reading device {:?}", id.as_str())))?;
    match row {
        Some(row) => device_from_row(&row),
        None => Err(not_found(id)),
    }
}

pub(crate) fn not_found(id: &DeviceId) -> Error {
    Error::NotFound {
        kind: "device",
        id: id.to_string(),
    }
}

/// Cursors are the last id of a page in base64url: opaque to callers, cheap to check.
fn encode_cursor(id: &DeviceId) -> String {
    URL_SAFE_NO_PAD.encode(id.as_str())
}

fn decode_cursor(cursor: &str) -> Result<DeviceId> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| Error::InvalidCursor)?;
    let id = String::from_utf8(bytes).map_err(|_| Error::InvalidCursor)?;
    DeviceId::new(id).map_err(|_| Error::InvalidCursor)
}

pub(crate) async fn list(pool: &AnyPool, filter: &DeviceFilter) -> Result<Page<Device>> {
    if !(1..=MAX_PAGE).contains(&filter.limit) {
        return Err(Error::Invalid(format!(
            "limit {}: expected 1-{MAX_PAGE}",
            filter.limit
        )));
    }
    if filter.labels.len() > MAX_LABELS {
        return Err(Error::Invalid(format!(
            "label filter: expected at most {MAX_LABELS} labels, got {}",
            filter.labels.len()
        )));
    }
    let after = filter.cursor.as_deref().map(decode_cursor).transpose()?;
    // Every id is longer than the empty string, so the first page needs no other query.
    let after = after.as_ref().map_or("", DeviceId::as_str);

    // Ids use only `A-Z a-z 0-9 _ . -`, all below `~`: `prefix <= id < prefix~` is
    // exactly the ids starting with the prefix, and a primary key range.
    let prefix_end = match &filter.prefix {
        Some(prefix) => {
            if !fleetwire_model::is_plain_name_prefix(prefix) {
                return Err(Error::Invalid(format!(
                    "prefix {prefix:?}: expected at most 128 characters of [A-Za-z0-9_.-]"
                )));
            }
            Some(format!("{prefix}~"))
        }
        None => None,
    };
    let (sql, parameters) = list_query(filter, after, prefix_end.as_deref());
    let mut query = sqlx::query(&sql);
    for parameter in parameters {
        query = query.bind(parameter);
    }
    // One row more than asked, to learn whether a next page exists.
    let rows = query
        .bind(i64::from(filter.limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(database("listing devices"))?;
    let mut items = rows
        .iter()
        .map(device_from_row)
        .collect::<Result<Vec<_>>>()?;
    let next_cursor = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|device| encode_cursor(&device.id))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The SQL of one page of `filter` after the id `after`, and its text parameters; the
/// page size (plus one) is the last parameter.
fn list_query<'a>(
    filter: &'a DeviceFilter,
    after: &'a str,
    prefix_end: Option<&'a str>,
) -> (String, Vec<&'a str>) {
    // Keyset pagination: `id > last id of the previous page`, in id order. With a label filter the first
    // label's index (key, value, device_id) drives the scan, already in device id order;
    // without one the primary key, or the (type, id) index, does. Either way no sort and no
    // offset: the cost of a page does not grow with its position.
    let mut sql = format!("SELECT {DEVICE_COLUMNS} FROM ");
    let mut labels = filter.labels.iter();
    let mut parameters: Vec<&str> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    match labels.next() {
        Some((key, value)) => {
            sql.push_str("device_labels l JOIN devices d ON d.id = l.device_id");
            parameters.extend([key.as_str(), value.as_str(), after]);
            conditions.push("l.key = $1 AND l.value = $2 AND l.device_id > $3".to_owned());
        }
        None => {
            sql.push_str("devices d");
            parameters.push(after);
            conditions.push("d.id > $1".to_owned());
        }
    }
    if let (Some(prefix), Some(end)) = (&filter.prefix, prefix_end) {
        parameters.extend([prefix.as_str(), end]);
        let count = parameters.len();
        conditions.push(format!("d.id >= ${} AND d.id < ${count}", count - 1));
    }
    if let Some(device_type) = &filter.device_type {
        parameters.push(device_type);
        conditions.push(format!("d.device_type = ${}", parameters.len()));
    }
    for (key, value) in labels {
        parameters.extend([key.as_str(), value.as_str()]);
        let count = parameters.len();
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM device_labels o WHERE o.device_id = d.id \
             AND o.key = ${} AND o.value = ${count})",
            count - 1
        ));
    }
    let order = if filter.labels.is_empty() {
        "d.id"
    } else {
        "l.device_id"
    };
    sql.push_str(&format!(
        " WHERE {} ORDER BY {order} LIMIT ${}",
        conditions.join(" AND "),
        parameters.len() + 1
    ));
    (sql, parameters)
}

pub(crate) async fn update(pool: &AnyPool, id: &DeviceId, patch: DevicePatch) -> Result<Device> {
    patch.check()?;
    let context = format!("updating device {:?}", id.as_str());
    let labels = patch.labels.as_ref().map(labels_json).transpose()?;
    let mut transaction = pool.begin().await.map_err(database(&context))?;
    // The update comes first, so SQLite takes the write lock at once instead of upgrading a
    // read lock, which could fail with SQLITE_BUSY under concurrent writers.
    let updated = sqlx::query(
        "UPDATE devices SET name = COALESCE($1, name), device_type = COALESCE($2, device_type), \
         labels = COALESCE($3, labels) WHERE id = $4",
    )
    .bind(patch.name)
    .bind(patch.device_type)
    .bind(labels)
    .bind(id.as_str())
    .execute(&mut *transaction)
    .await
    .map_err(database(&context))?;
    if updated.rows_affected() == 0 {
        return Err(not_found(id));
    }
    if let Some(labels) = &patch.labels {
        sqlx::query("DELETE FROM device_labels WHERE device_id = $1")
            .bind(id.as_str())
            .execute(&mut *transaction)
            .await
            .map_err(database(&context))?;
        insert_labels(&mut transaction, id, labels).await?;
    }
    let device = get(&mut *transaction, id).await?;
    transaction.commit().await.map_err(database(&context))?;
    Ok(device)
}

pub(crate) async fn delete(pool: &AnyPool, id: &DeviceId) -> Result<()> {
    // Labels, pinned certificates, alarms and commands go with the device (ON DELETE
    // CASCADE), credentials are a column of it.
    let deleted = sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(id.as_str())
        .execute(pool)
        .await
        .map_err(database(format_args!("deleting device {:?}", id.as_str())))?;
    if deleted.rows_affected() == 0 {
        return Err(not_found(id));
    }
    Ok(())
}

pub(crate) async fn merge_attributes(
    pool: &AnyPool,
    id: &DeviceId,
    attributes: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let context = format!("merging attributes of device {:?}", id.as_str());
    // Optimistic concurrency, portable to both databases: read, merge, and write only if
    // nobody wrote in between (compare-and-set on the stored text); otherwise start over.
    for _ in 0..MERGE_ATTEMPTS {
        let stored: Option<String> =
            sqlx::query_scalar::<_, String>("SELECT attributes FROM devices WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(database(&context))?;
        let Some(stored) = stored else {
            return Err(not_found(id));
        };
        let mut merged: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&stored)
            .map_err(|error| {
                Error::Inconsistent(format!(
                    "{context}: stored attributes: expected a JSON object, {error}"
                ))
            })?;
        merged.extend(
            attributes
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        let text = serde_json::to_string(&merged)
            .map_err(|error| Error::internal(format!("{context}: serializing"))(error.into()))?;
        if text.len() > MAX_ATTRIBUTES_BYTES {
            return Err(Error::Invalid(format!(
                "attributes of device {:?}: expected at most {MAX_ATTRIBUTES_BYTES} bytes of JSON once merged, got {}",
                id.as_str(),
                text.len()
            )));
        }
        if text == stored {
            return Ok(());
        }
        let written =
            sqlx::query("UPDATE devices SET attributes = $1 WHERE id = $2 AND attributes = $3")
                .bind(text)
                .bind(id.as_str())
                .bind(stored)
                .execute(pool)
                .await
                .map_err(database(&context))?;
        if written.rows_affected() == 1 {
            return Ok(());
        }
    }
    Err(Error::Inconsistent(format!(
        "{context}: gave up after {MERGE_ATTEMPTS} attempts lost to concurrent merges"
    )))
}

/// How many devices are registered, and how many of them are online (as last written by
/// the presence writer). One pass over the table: fine for a dashboard's overview, not
/// for every request.
pub(crate) async fn count(pool: &AnyPool) -> Result<(u64, u64)> {
    let context = "counting devices";
    // COUNT rather than SUM: PostgreSQL sums BIGINTs into NUMERIC, which the `Any` driver
    // cannot decode.
    let row = sqlx::query("SELECT COUNT(*), COUNT(CASE WHEN online <> 0 THEN 1 END) FROM devices")
        .fetch_one(pool)
        .await
        .map_err(database(context))?;
    let total: i64 = row.try_get(0).map_err(database(context))?;
    let online: i64 = row.try_get(1).map_err(database(context))?;
    Ok((
        u64::try_from(total).unwrap_or(0),
        u64::try_from(online).unwrap_or(0),
    ))
}

/// Marks every device offline: at open, nobody is connected to this node yet.
pub(crate) async fn mark_all_offline(pool: &AnyPool) -> Result<()> {
    sqlx::query("UPDATE devices SET online = 0 WHERE online <> 0")
        .execute(pool)
        .await
        .map_err(database("marking devices offline at open"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;
    use crate::Registry;

    /// SQLite's plan for each shape of listing walks an index in id order: no full scan of
    /// the devices, no sort. (What keeps a page fast at a million devices.)
    #[tokio::test]
    async fn listing_walks_an_index_without_sorting() {
        let dir =
            std::env::temp_dir().join(format!("fleetwire-registry-plan-{}", std::process::id()));
        let registry = Registry::open_in_dir(&dir)
            .await
            .expect("opening a registry");
        let labels = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };
        let filters = [
            (
                None,
                labels(&[]),
                "USING INDEX sqlite_autoindex_devices_1 (id>?)",
            ),
            (
                Some("sensor"),
                labels(&[]),
                "USING INDEX devices_type_id (device_type=? AND id>?)",
            ),
            (
                None,
                labels(&[("site", "berlin")]),
                "device_labels_key_value_device (key=? AND value=? AND device_id>?)",
            ),
            (
                Some("sensor"),
                labels(&[("site", "berlin"), ("tier", "gold")]),
                "device_labels_key_value_device (key=? AND value=? AND device_id>?)",
            ),
        ];
        for (device_type, labels, expected) in filters {
            let filter = DeviceFilter {
                device_type: device_type.map(str::to_owned),
                labels,
                ..DeviceFilter::default()
            };
            let (sql, parameters) = list_query(&filter, "", None);
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&explain);
            for parameter in parameters {
                query = query.bind(parameter);
            }
            let rows = query
                .bind(101_i64)
                .fetch_all(&registry.inner.pool)
                .await
                .expect("explaining");
            let plan: Vec<String> = rows
                .iter()
                .map(|row| row.try_get::<String, _>(3).expect("plan detail"))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains(expected), "{filter:?}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts:\n{plan}");
        }
        registry.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
