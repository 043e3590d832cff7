//! The front door of the write path: device messages from MQTT, JSON from HTTP, line
//! protocol from collectors all end here, are parsed by `fleetwire-formats`, checked
//! against the device they claim, and written through the group-commit writer.
//!
//! A message is accepted whole or rejected whole. A rejection is never silent: it is
//! counted (per source, in [`IngestStats`]), remembered as the device's last ingest error,
//! logged at debug level, and answered (MQTT 5: 0x99; HTTP: 400 naming the problem).
//!
//! [`Ingest`] owns the write path's state: the writer, the counters and the last error of
//! every device; it shares the device directory (with the rules) and hands command
//! answers to the commands' owner.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fleetwire_broker::{Inbound, Settled, Verdict};
use fleetwire_formats::{
    Limits, Precision, parse_attributes, parse_line_protocol_each, parse_telemetry,
};
use fleetwire_model::{DeviceId, DeviceInfo, DeviceTopic, IngestErrorRecord};
use fleetwire_mqtt_codec::QoS;
use fleetwire_registry::Registry;
use fleetwire_time::Timestamp;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::batch::PointBatch;
use crate::commands::Commands;
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::writer::Writer;

/// Fields of a typical device message, to size batches before parsing.
const TYPICAL_FIELDS: usize = 8;
/// Fewest bytes a line protocol point usually takes (`f=1.5,` with its share of the
/// line's device and timestamp), to size a request's batch from its body.
const LINE_PROTOCOL_BYTES_PER_POINT: usize = 16;

/// Where a message came from, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An MQTT `PUBLISH`.
    Mqtt,
    /// `POST /api/v1/devices/{id}/telemetry`.
    Http,
    /// `POST /api/v2/write` (InfluxDB line protocol).
    LineProtocol,
}

impl Source {
    /// `mqtt`, `http` or `line_protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Http => "http",
            Source::LineProtocol => "line_protocol",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Every source, in counter order.
    pub const ALL: [Source; 3] = [Source::Mqtt, Source::Http, Source::LineProtocol];
}

/// Counters of the ingest front door, per [`Source`] (indexed by `Source as usize`).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Messages (MQTT publishes, HTTP bodies, line protocol requests) accepted.
    pub accepted: [AtomicU64; 3],
    /// Messages rejected because of their content (bad JSON, fields that cannot be
    /// stored, wrong device).
    pub rejected: [AtomicU64; 3],
    /// Messages that could not be stored (store failure, shutting down).
    pub failed: [AtomicU64; 3],
    /// String fields of line protocol that were skipped (they cannot be stored as numbers).
    pub skipped_string_fields: AtomicU64,
}

impl IngestStats {
    fn count(&self, counters: &[AtomicU64; 3], source: Source, amount: u64) {
        if amount > 0 {
            counters[source.index()].fetch_add(amount, Ordering::Relaxed);
        }
    }
}

/// The last payload of a device that was rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestError {
    /// When it was rejected.
    pub at: Timestamp,
    /// Where it came from.
    pub source: Source,
    /// Why, as the sender was told.
    pub message: String,
}

/// What an accepted HTTP write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    /// Points written.
    pub points: usize,
    /// String fields skipped (line protocol only).
    pub skipped_string_fields: usize,
}

/// A device message the broker offered and the platform kept for the connection's next
/// settlement: its topic parsed once (the parsed form shares the topic's buffer), its
/// payload shared with the broker's read buffer.
#[derive(Debug)]
pub(crate) struct DeviceMessage {
    topic: DeviceTopic,
    payload: Bytes,
    qos: QoS,
    /// Sent by an anonymous client (development mode), which may bring new devices.
    is_anonymous: bool,
}

impl DeviceMessage {
    /// Keeps `message` when its topic is one the platform consumes.
    pub(crate) fn keep(message: Inbound<'_>) -> Option<DeviceMessage> {
        Some(DeviceMessage {
            topic: DeviceTopic::parse(message.topic)?,
            payload: message.payload.clone(),
            qos: message.qos,
            is_anonymous: message.user.is_none(),
        })
    }
}

/// The last ingest error of every device that had one.
#[derive(Debug, Default)]
pub(crate) struct LastErrors {
    /// Each device's last error, and when one was last handed to the registry.
    by_device: Mutex<HashMap<Arc<str>, (IngestError, Timestamp)>>,
}

/// A device's errors go to the registry at most this often: a fleet flooding bad payloads
/// costs a row update per device and second, not per message.
const STORE_ERROR_EVERY_MS: i64 = 1000;

impl LastErrors {
    /// Keeps `error` as the device's last; what to store in the registry, when it is due.
    fn record(&self, device: &str, error: IngestError) -> Option<IngestErrorRecord> {
        let at = error.at;
        let to_store = |error: &IngestError| IngestErrorRecord {
            at: at.as_millis(),
            source: error.source.as_str().to_owned(),
            message: error.message.clone(),
        };
        let mut by_device = self.by_device.lock();
        match by_device.get_mut(device) {
            Some((slot, stored_at)) => {
                let is_due =
                    at.as_millis().saturating_sub(stored_at.as_millis()) >= STORE_ERROR_EVERY_MS;
                let stored = is_due.then(|| {
                    *stored_at = at;
                    to_store(&error)
                });
                *slot = error;
                stored
            }
            None => {
                let stored = to_store(&error);
                by_device.insert(Arc::from(device), (error, at));
                Some(stored)
            }
        }
    }

    pub(crate) fn get(&self, device: &str) -> Option<IngestError> {
        self.by_device
            .lock()
            .get(device)
            .map(|(error, _)| error.clone())
    }

    pub(crate) fn forget(&self, device: &str) {
        self.by_device.lock().remove(device);
    }
}

/// How ingest behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IngestConfig {
    /// Limits on payloads.
    pub(crate) limits: Limits,
    /// Whether anonymous MQTT clients and line protocol register unknown devices.
    pub(crate) auto_register_devices: bool,
}

/// The write path's owner (see the module's notes).
pub(crate) struct Ingest {
    config: IngestConfig,
    registry: Registry,
    directory: Arc<Directory>,
    writer: Writer,
    commands: Arc<Commands>,
    last_errors: LastErrors,
    stats: IngestStats,
}

impl Ingest {
    pub(crate) fn new(
        config: IngestConfig,
        registry: Registry,
        directory: Arc<Directory>,
        writer: Writer,
        commands: Arc<Commands>,
    ) -> Ingest {
        Ingest {
            config,
            registry,
            directory,
            writer,
            commands,
            last_errors: LastErrors::default(),
            stats: IngestStats::default(),
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// The last rejected payload of a device, and why.
    pub(crate) fn last_error(&self, device: &str) -> Option<IngestError> {
        self.last_errors.get(device)
    }

    /// A device was deleted: its last error goes with it.
    pub(crate) fn forget(&self, device: &str) {
        self.last_errors.forget(device);
    }

    /// Writes what is queued and stops the writer threads (blocking).
    pub(crate) fn stop(&self) {
        self.writer.stop();
    }

    /// Judges the messages of one MQTT read: parses their payloads, writes the telemetry
    /// of all of them in one batch, and answers one verdict per message. When every
    /// message with telemetry came with QoS 0, which nobody acknowledges, the batch is
    /// only queued for the writer (in order, after waiting for room): the connection reads
    /// on without waiting for the disk, as a broker does for QoS 0.
    ///
    /// For an anonymous client (development mode) that does not act as a device yet
    /// (`wants_user`), the answer also names the device of its first accepted message: the
    /// broker then counts the client as one of that device's connections (presence,
    /// disconnection).
    pub(crate) async fn mqtt(&self, batch: Vec<DeviceMessage>, wants_user: bool) -> Settled {
        let received_at = Timestamp::now();
        let mut verdicts = vec![Verdict::Accepted; batch.len()];
        // Most reads carry one message of a few fields: size for that, grow for more.
        let mut points = PointBatch::with_capacity(batch.len() * TYPICAL_FIELDS);
        let mut writes: SmallVec<[usize; 8]> = SmallVec::new();
        // The first message of an anonymous client taken so far, with its device: of
        // telemetry (accepted only once written) and of anything else.
        let mut first_telemetry: Option<(usize, Arc<str>)> = None;
        let mut first_other: Option<(usize, Arc<str>)> = None;
        for (index, message) in batch.iter().enumerate() {
            let topic = &message.topic;
            // Anonymous clients (development mode) may bring devices the registry does
            // not know yet; authenticated ones exist by definition.
            let may_register = message.is_anonymous && self.config.auto_register_devices;
            let outcome = match topic {
                DeviceTopic::Telemetry { device } => self
                    .prepare_telemetry(
                        device,
                        &message.payload,
                        received_at,
                        may_register,
                        &mut points,
                    )
                    .await
                    .map(|(_, info)| {
                        writes.push(index);
                        Some(info)
                    }),
                DeviceTopic::Attributes { device } => self
                    .merge_attributes(device, &message.payload, may_register)
                    .await
                    .map(Some),
                DeviceTopic::CommandResponse { device, command } => self
                    .commands
                    .respond(device, command, &message.payload)
                    .await
                    .map(|()| None),
            };
            match outcome {
                Ok(info) if message.is_anonymous && wants_user => {
                    let first = match topic {
                        DeviceTopic::Telemetry { .. } => &mut first_telemetry,
                        _ => &mut first_other,
                    };
                    if first.is_none() {
                        let device = info.map_or_else(
                            || Arc::from(topic.device()),
                            |info| Arc::from(info.id.as_str()),
                        );
                        *first = Some((index, device));
                    }
                }
                Ok(_) => {}
                Err(error) => verdicts[index] = self.reject(topic.device(), Source::Mqtt, &error),
            }
        }
        let is_unacknowledged = writes
            .iter()
            .all(|index| batch[*index].qos == QoS::AtMostOnce);
        if !points.is_empty() {
            let written = if is_unacknowledged {
                self.writer.submit(points).await
            } else {
                self.writer.write(points).await.map(|_| ())
            };
            if let Err(error) = written {
                tracing::warn!(%error, messages = writes.len(), "MQTT telemetry not stored");
                for index in &writes {
                    verdicts[*index] = Verdict::Failed;
                }
                first_telemetry = None;
            }
        }
        let accepted = verdicts
            .iter()
            .filter(|verdict| **verdict == Verdict::Accepted)
            .count();
        self.stats
            .count(&self.stats.accepted, Source::Mqtt, accepted as u64);
        let failed = verdicts
            .iter()
            .filter(|verdict| **verdict == Verdict::Failed)
            .count();
        self.stats
            .count(&self.stats.failed, Source::Mqtt, failed as u64);
        let acting_as = first_telemetry
            .into_iter()
            .chain(first_other)
            .min_by_key(|(index, _)| *index)
            .map(|(_, device)| device);
        Settled {
            verdicts,
            acting_as,
        }
    }

    /// Parses one telemetry payload of `device`, checks the device, and appends the
    /// points to `into` (nothing when it fails); the number of points appended, and the
    /// device.
    async fn prepare_telemetry(
        &self,
        device: &str,
        payload: &[u8],
        received_at: Timestamp,
        may_register: bool,
        into: &mut PointBatch,
    ) -> Result<(usize, Arc<DeviceInfo>)> {
        // The device first, so that a registered device's bad payload is recorded on it.
        let info = self.directory.resolve(device, may_register).await?;
        let telemetry = parse_telemetry(payload, received_at, &self.config.limits)?;
        if let Some(claimed) = &telemetry.device_id {
            if claimed != device {
                return Err(Error::InvalidDevice(format!(
                    "device_id {claimed:?} does not match the device of the topic or URL, {device:?}"
                )));
            }
        }
        // Appended straight into the caller's batch: the points of one MQTT read (or one
        // HTTP body) are copied once, from the payload into the batch that is written.
        into.extend(telemetry.points(device));
        Ok((telemetry.fields.len(), info))
    }

    /// Merges an attributes payload into what `device` reported before; the device.
    async fn merge_attributes(
        &self,
        device: &str,
        payload: &[u8],
        may_register: bool,
    ) -> Result<Arc<DeviceInfo>> {
        let info = self.directory.resolve(device, may_register).await?;
        let attributes = parse_attributes(payload)?;
        self.registry.merge_attributes(&info.id, attributes).await?;
        Ok(info)
    }

    /// Counts and records a rejected message; the verdict to answer.
    fn reject(&self, device: &str, source: Source, error: &Error) -> Verdict {
        let verdict = error.verdict();
        if verdict == Verdict::Failed {
            tracing::warn!(
                device,
                error = error as &dyn std::error::Error,
                source = source.as_str(),
                "message not stored"
            );
            self.stats.count(&self.stats.failed, source, 1);
            return verdict;
        }
        tracing::debug!(device, %error, source = source.as_str(), "message rejected");
        self.stats.count(&self.stats.rejected, source, 1);
        // Only registered devices keep a last error: made-up ids must not grow the table.
        if self.directory.cached(device).is_none() {
            return Verdict::Invalid;
        }
        let error = IngestError {
            at: Timestamp::now(),
            source,
            message: error.to_string(),
        };
        // Also in the registry (queued, written in batches), so it outlives a restart.
        if let Some(stored) = self.last_errors.record(device, error) {
            if let Ok(id) = DeviceId::new(device) {
                self.registry.record_ingest_error(&id, stored);
            }
        }
        Verdict::Invalid
    }

    /// `POST /api/v1/devices/{id}/telemetry`: the device must exist.
    pub(crate) async fn json(&self, device: &DeviceId, body: &[u8]) -> Result<WriteReport> {
        let result = async {
            let mut batch = PointBatch::with_capacity(TYPICAL_FIELDS);
            let (points, _) = self
                .prepare_telemetry(device.as_str(), body, Timestamp::now(), false, &mut batch)
                .await?;
            self.writer.write(batch).await?;
            Ok(WriteReport {
                points,
                skipped_string_fields: 0,
            })
        }
        .await;
        self.account(device.as_str(), Source::Http, result)
    }

    /// `POST /api/v2/write`: unknown devices are registered when the configuration
    /// allows it.
    pub(crate) async fn line_protocol(
        &self,
        body: &[u8],
        precision: Precision,
    ) -> Result<WriteReport> {
        // The parser puts the points straight into the batch that is written; a body that
        // turns out malformed drops the batch whole, so nothing of it is written.
        let mut batch = PointBatch::with_capacity(body.len() / LINE_PROTOCOL_BYTES_PER_POINT);
        let parsed = parse_line_protocol_each(
            body,
            precision,
            Timestamp::now(),
            &self.config.limits,
            |point| batch.push(point),
        );
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                self.stats
                    .count(&self.stats.rejected, Source::LineProtocol, 1);
                return Err(error.into());
            }
        };
        // Each device once per request, in the order they first appear: a body usually
        // goes round its devices line after line, so checking at every change of device
        // would look most of them up many times.
        let mut resolved: HashSet<&str, foldhash::fast::RandomState> = HashSet::default();
        for device in batch.device_runs() {
            if !resolved.insert(device) {
                continue;
            }
            if let Err(error) = self
                .directory
                .resolve(device, self.config.auto_register_devices)
                .await
            {
                self.stats
                    .count(&self.stats.rejected, Source::LineProtocol, 1);
                return Err(error);
            }
        }
        drop(resolved);
        let skipped = parsed.skipped_count();
        if skipped > 0 {
            self.stats
                .skipped_string_fields
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        let points = batch.len();
        match self.writer.write(batch).await {
            Ok(_) => {
                self.stats
                    .count(&self.stats.accepted, Source::LineProtocol, 1);
                Ok(WriteReport {
                    points,
                    skipped_string_fields: skipped,
                })
            }
            Err(error) => {
                self.stats
                    .count(&self.stats.failed, Source::LineProtocol, 1);
                Err(error)
            }
        }
    }

    /// Counts the outcome of a write for one device, recording a rejection.
    fn account<T>(&self, device: &str, source: Source, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.stats.count(&self.stats.accepted, source, 1);
                Ok(value)
            }
            Err(error) => {
                self.reject(device, source, &error);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IngestError, LastErrors, Source, Timestamp};

    #[test]
    fn a_device_s_errors_are_stored_at_most_once_a_second_and_the_newest_is_kept() {
        let errors = LastErrors::default();
        let error = |at: i64, message: &str| IngestError {
            at: Timestamp::from_millis(at),
            source: Source::Mqtt,
            message: message.to_owned(),
        };
        let stored: Vec<bool> = [
            (10_000, "a"),
            (10_400, "b"),
            (10_999, "c"),
            (11_000, "d"),
            (11_500, "e"),
        ]
        .into_iter()
        .map(|(at, message)| errors.record("d1", error(at, message)).is_some())
        .collect();
        assert_eq!(stored, [true, false, false, true, false]);
        assert_eq!(errors.get("d1"), Some(error(11_500, "e")));
        // Each device on its own.
        let stored = errors.record("d2", error(11_600, "f")).unwrap();
        assert_eq!(
            (stored.at, stored.source.as_str(), stored.message.as_str()),
            (11_600, "mqtt", "f")
        );
    }
}
