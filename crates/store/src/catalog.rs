//! The series catalog: which (device, field) pair has which [`SeriesId`], in memory and in
//! `series.log`.
//!
//! New series are first made durable by the write-ahead log record that uses them. When a
//! flush is about to delete log files, the series they defined are appended to
//! `series.log` (checksummed records, fsynced) so segments, which store only ids, can be
//! read back after the log is gone.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use fleetwire_journal::record::{self, Cursor, Next};

use crate::error::{Error, Result, io};
use crate::types::SeriesId;

/// File name of the catalog inside the store's directory.
pub(crate) const FILE_NAME: &str = "series.log";

/// A map keyed by names from outside (device and field names): foldhash, seeded at
/// random per map like the standard library's SipHash (so crafted names cannot collide
/// on purpose) but several times cheaper on short keys. Every stored point looks its
/// series up here, so the hash is on the write path.
pub(crate) type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// All known series.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    devices: NameMap<NameMap<SeriesId>>,
    keys: Vec<(String, String)>,
    /// Series `0..persisted` are in `series.log`.
    persisted: usize,
}

impl Catalog {
    /// Reads `series.log` in `directory`; a torn last record is cut off.
    pub(crate) fn load(directory: &Path) -> Result<Catalog> {
        let path = directory.join(FILE_NAME);
        let mut catalog = Catalog::default();
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(catalog),
            Err(error) => return Err(io("reading series catalog", &path)(error)),
        };
        let mut offset = 0;
        loop {
            match record::next(&data, offset) {
                Next::Record(payload, next) => {
                    let mut cursor = Cursor::new(payload);
                    let parsed = (|| Some((cursor.varint()?, cursor.str()?, cursor.str()?)))();
                    let Some((id, device, field)) = parsed else {
                        return Err(Error::CorruptCatalog {
                            path,
                            detail: format!("record at byte {offset} is not a series definition"),
                        });
                    };
                    catalog
                        .define(id, device, field)
                        .map_err(|detail| Error::CorruptCatalog {
                            path: path.clone(),
                            detail,
                        })?;
                    offset = next;
                }
                Next::End => break,
                Next::Torn(detail) => {
                    tracing::warn!(path = %path.display(), offset, %detail, "series catalog has a torn tail; cutting it off");
                    truncate(&path, offset as u64)?;
                    break;
                }
            }
        }
        catalog.persisted = catalog.keys.len();
        Ok(catalog)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    pub(crate) fn get(&self, device: &str, field: &str) -> Option<SeriesId> {
        self.devices.get(device)?.get(field).copied()
    }

    /// The fields of a device and their ids.
    pub(crate) fn fields(&self, device: &str) -> Option<&NameMap<SeriesId>> {
        self.devices.get(device)
    }

    /// The id of a series, created if new (`true`).
    pub(crate) fn intern(&mut self, device: &str, field: &str) -> (SeriesId, bool) {
        if let Some(id) = self.get(device, field) {
            return (id, false);
        }
        let id = SeriesId::new(u32::try_from(self.keys.len()).unwrap_or(u32::MAX));
        self.devices
            .entry(device.to_owned())
            .or_default()
            .insert(field.to_owned(), id);
        self.keys.push((device.to_owned(), field.to_owned()));
        (id, true)
    }

    /// Records a definition read back from disk: the next id, or a repeat of a known one.
    pub(crate) fn define(&mut self, id: u64, device: &str, field: &str) -> Result<(), String> {
        let expected = self.keys.len() as u64;
        if id < expected {
            let (known_device, known_field) = &self.keys[id as usize];
            if known_device != device || known_field != field {
                return Err(format!(
                    "series #{id} is {known_device:?}/{known_field:?}, a later record says {device:?}/{field:?}"
                ));
            }
            return Ok(());
        }
        if id > expected {
            return Err(format!(
                "expected the definition of series #{expected}, got #{id}"
            ));
        }
        let (_, is_new) = self.intern(device, field);
        if !is_new {
            return Err(format!(
                "{device:?}/{field:?} is defined twice, the second time as #{id}"
            ));
        }
        Ok(())
    }

    /// Appends the series not yet in `series.log` and fsyncs it.
    pub(crate) fn persist(&mut self, directory: &Path) -> Result<()> {
        if self.persisted == self.keys.len() {
            return Ok(());
        }
        let path = directory.join(FILE_NAME);
        let is_new = !path.exists();
        let mut data = Vec::new();
        let mut payload = Vec::new();
        for (id, (device, field)) in self.keys.iter().enumerate().skip(self.persisted) {
            payload.clear();
            record::put_varint(&mut payload, id as u64);
            record::put_str(&mut payload, device);
            record::put_str(&mut payload, field);
            record::frame(&mut data, &payload);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("opening series catalog", &path))?;
        file.write_all(&data)
            .map_err(io("writing series catalog", &path))?;
        file.sync_data()
            .map_err(io("syncing series catalog", &path))?;
        if is_new {
            sync_directory(directory)?;
        }
        self.persisted = self.keys.len();
        Ok(())
    }
}

/// Cuts `path` to `length` bytes and syncs it.
pub(crate) fn truncate(path: &Path, length: u64) -> Result<()> {
    Ok(fleetwire_journal::truncate(path, length)?)
}

/// Makes creations, renames and deletions in `directory` durable.
pub(crate) fn sync_directory(directory: &Path) -> Result<()> {
    Ok(fleetwire_journal::sync_directory(directory)?)
}
