//! Client certificates pinned to devices (table `device_certificates`): pinning,
//! listing, unpinning, and the check a certificate login makes.
//!
//! There is no cache in front of the login check: it is one query on the primary keys
//! (the device's row, and its pins in key order), as cheap as the secret check's read of
//! the device row, and it stays right when another node sharing the database pins or
//! unpins a certificate. A cache here would have to be invalidated across nodes.

use fleetwire_model::{DeviceId, Fingerprint, NewPinnedCertificate, PinnedCertificate};
use fleetwire_time::TimestampMs;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

use crate::devices::not_found;
use crate::error::{database, is_foreign_key_violation};
use crate::{Error, Result};

/// The columns `certificate_from_row` reads, joined to the device row (NULL when the
/// device has no pins).
const JOINED: &str = "SELECT d.id, c.fingerprint, c.common_name, c.not_after, c.added_at \
                      FROM devices d LEFT JOIN device_certificates c ON c.device_id = d.id \
                      WHERE d.id = $1";

/// Pins a certificate to a device; with `true` when it was new, the one stored before
/// (unchanged) with `false` when it was pinned already.
pub(crate) async fn pin(
    pool: &AnyPool,
    device: &DeviceId,
    new: NewPinnedCertificate,
    at: TimestampMs,
) -> Result<(PinnedCertificate, bool)> {
    let fingerprint = new.fingerprint.to_string();
    let context = format!(
        "pinning certificate {fingerprint} to device {:?}",
        device.as_str()
    );
    // Concurrent pins of one certificate: one inserts, the others find its row.
    let inserted = sqlx::query(
        "INSERT INTO device_certificates (device_id, fingerprint, common_name, not_after, added_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (device_id, fingerprint) DO NOTHING",
    )
    .bind(device.as_str())
    .bind(&fingerprint)
    .bind(new.common_name.as_deref())
    .bind(new.not_after)
    .bind(at)
    .execute(pool)
    .await;
    match inserted {
        Ok(done) if done.rows_affected() == 1 => Ok((
            PinnedCertificate {
                fingerprint: new.fingerprint,
                common_name: new.common_name,
                not_after: new.not_after,
                added_at: at,
            },
            true,
        )),
        Ok(_) => {
            let row = sqlx::query(
                "SELECT device_id, fingerprint, common_name, not_after, added_at
                 FROM device_certificates WHERE device_id = $1 AND fingerprint = $2",
            )
            .bind(device.as_str())
            .bind(&fingerprint)
            .fetch_optional(pool)
            .await
            .map_err(database(&context))?;
            match row.as_ref().map(certificate_from_row).transpose()? {
                Some(Some(stored)) => Ok((stored, false)),
                // Unpinned between the two statements: the caller may simply try again.
                _ => Err(Error::Conflict(format!(
                    "certificate {fingerprint} of device {:?} was unpinned while being \
                     pinned again: expected no concurrent change, try again",
                    device.as_str()
                ))),
            }
        }
        Err(error) if is_foreign_key_violation(&error) => Err(not_found(device)),
        Err(error) => Err(database(&context)(error)),
    }
}

/// A device's pinned certificates, oldest first; `Error::NotFound` for an unknown device.
pub(crate) async fn list(pool: &AnyPool, device: &DeviceId) -> Result<Vec<PinnedCertificate>> {
    let sql = format!("{JOINED} ORDER BY c.added_at, c.fingerprint");
    let rows = sqlx::query(&sql)
        .bind(device.as_str())
        .fetch_all(pool)
        .await
        .map_err(database(format_args!(
            "listing certificates of device {:?}",
            device.as_str()
        )))?;
    if rows.is_empty() {
        return Err(not_found(device));
    }
    let mut pinned = Vec::with_capacity(rows.len());
    for row in &rows {
        pinned.extend(certificate_from_row(row)?);
    }
    Ok(pinned)
}

/// Unpins a certificate; `Error::NotFound` when the device is unknown or the certificate
/// is not pinned to it.
pub(crate) async fn unpin(
    pool: &AnyPool,
    device: &DeviceId,
    fingerprint: &Fingerprint,
) -> Result<()> {
    let fingerprint = fingerprint.to_string();
    let context = format!(
        "unpinning certificate {fingerprint} from device {:?}",
        device.as_str()
    );
    let deleted =
        sqlx::query("DELETE FROM device_certificates WHERE device_id = $1 AND fingerprint = $2")
            .bind(device.as_str())
            .bind(&fingerprint)
            .execute(pool)
            .await
            .map_err(database(&context))?;
    if deleted.rows_affected() == 1 {
        return Ok(());
    }
    // Say which of the two is missing.
    let device_exists = sqlx::query("SELECT id FROM devices WHERE id = $1")
        .bind(device.as_str())
        .fetch_optional(pool)
        .await
        .map_err(database(&context))?
        .is_some();
    if device_exists {
        Err(Error::NotFound {
            kind: "certificate",
            id: fingerprint,
        })
    } else {
        Err(not_found(device))
    }
}

/// Whether a certificate login may go on: `None` for an unknown device, `Some(true)` when
/// the device has no pins or `fingerprint` is one of them, `Some(false)` otherwise.
pub(crate) async fn admits(
    pool: &AnyPool,
    device: &DeviceId,
    fingerprint: &Fingerprint,
) -> Result<Option<bool>> {
    let rows = sqlx::query(JOINED)
        .bind(device.as_str())
        .fetch_all(pool)
        .await
        .map_err(database(format_args!(
            "checking a certificate of device {:?}",
            device.as_str()
        )))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let wanted = fingerprint.to_string();
    let mut is_pinned = false;
    let mut has_pins = false;
    for row in &rows {
        let stored: Option<String> = row
            .try_get(1)
            .map_err(database("reading a pinned certificate"))?;
        if let Some(stored) = stored {
            has_pins = true;
            is_pinned |= stored == wanted;
        }
    }
    Ok(Some(is_pinned || !has_pins))
}

/// A pinned certificate from a row of `JOINED`'s columns; `None` for the NULL row of a
/// device without pins.
fn certificate_from_row(row: &AnyRow) -> Result<Option<PinnedCertificate>> {
    let context = "reading a pinned certificate";
    let fingerprint: Option<String> = row.try_get(1).map_err(database(context))?;
    let Some(fingerprint) = fingerprint else {
        return Ok(None);
    };
    let added_at: Option<TimestampMs> = row.try_get(4).map_err(database(context))?;
    Ok(Some(PinnedCertificate {
        fingerprint: Fingerprint::parse(&fingerprint).map_err(|error| {
            Error::Inconsistent(format!("{context}: stored fingerprint: {error}"))
        })?,
        common_name: row.try_get(2).map_err(database(context))?,
        not_after: row.try_get(3).map_err(database(context))?,
        added_at: added_at.ok_or_else(|| {
            Error::Inconsistent(format!(
                "{context}: certificate {fingerprint} has no added_at: expected a time"
            ))
        })?,
    }))
}
