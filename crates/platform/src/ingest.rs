//! The front door of the write path: device messages from MQTT, JSON from HTTP, line
//! protocol from collectors all end here, are parsed by `fleetwire-formats`, checked
//! against the device they claim, and written through the group-commit writer.
//!
//! A message is accepted whole or rejected whole. A rejection is never silent: it is
//! counted (per source, in [`IngestStats`]), remembered as the device's last ingest error,
//! logged at debug level, and answered (MQTT 5: 0x99; HTTP: 400 naming the problem).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fleetwire_broker::{Access, Inbound, Settled, Verdict};
use fleetwire_formats::{Precision, parse_attributes, parse_line_protocol_each, parse_telemetry};
use fleetwire_model::{DeviceId, IngestErrorRecord};
use fleetwire_mqtt_codec::{QoS, TopicFilter, TopicName};
use fleetwire_store::Timestamp;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::batch::PointBatch;
use crate::error::{Error, Result};
use crate::platform::Inner;
use fleetwire_model::DeviceInfo;

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

/// The device topics the platform consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceTopic<'a> {
    /// `devices/{id}/telemetry`
    Telemetry(&'a str),
    /// `devices/{id}/attributes`
    Attributes(&'a str),
    /// `devices/{id}/commands/{command}/response`
    CommandResponse { device: &'a str, command: &'a str },
}

impl<'a> DeviceTopic<'a> {
    /// The platform topic `topic` is, if any. Ids are one topic level each.
    pub(crate) fn parse(topic: &'a str) -> Option<DeviceTopic<'a>> {
        let rest = topic.strip_prefix("devices/")?;
        let (device, rest) = rest.split_once('/')?;
        if device.is_empty() {
            return None;
        }
        match rest {
            "telemetry" => Some(DeviceTopic::Telemetry(device)),
            "attributes" => Some(DeviceTopic::Attributes(device)),
            _ => {
                let command = rest.strip_prefix("commands/")?.strip_suffix("/response")?;
                (!command.is_empty() && !command.contains('/'))
                    .then_some(DeviceTopic::CommandResponse { device, command })
            }
        }
    }

    fn device(self) -> &'a str {
        match self {
            DeviceTopic::Telemetry(device) | DeviceTopic::Attributes(device) => device,
            DeviceTopic::CommandResponse { device, .. } => device,
        }
    }
}

/// What a device may do over MQTT, the other half of the topic contract: publish to its
/// own `devices/{id}/...` topics (not to `devices/{id}` itself), subscribe within its own
/// `devices/{id}/commands/#`. The broker's authenticator gives this access to a device
/// that logs in.
pub fn device_access(device: &DeviceId) -> Access {
    // A device id is plain text (no wildcards, no `/`): both filters are valid. Were one
    // not, the device would just not have that right.
    let filter = |text: String| TopicFilter::new(text).ok();
    Access::user(
        device.as_str(),
        filter(format!("devices/{device}/+/#")),
        filter(format!("devices/{device}/commands/#")),
    )
}

/// A [`DeviceTopic`] that owns its text: the topic it was parsed from and where the
/// parse found the parts, so that a message's topic is parsed once, when the broker
/// offers it, and read back by slicing.
#[derive(Debug, Clone)]
pub(crate) struct ParsedTopic {
    topic: TopicName,
    parts: Parts,
}

/// Byte ranges in a topic (topics are at most 65,535 bytes).
type Span = (u16, u16);

#[derive(Debug, Clone, Copy)]
enum Parts {
    Telemetry { device: Span },
    Attributes { device: Span },
    CommandResponse { device: Span, command: Span },
}

impl ParsedTopic {
    /// The platform topic `topic` is, if any (see [`DeviceTopic::parse`]).
    pub(crate) fn parse(topic: &TopicName) -> Option<ParsedTopic> {
        let text = topic.as_str();
        let span = |part: &str| -> Option<Span> {
            let start = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
            let end = start.checked_add(part.len())?;
            Some((u16::try_from(start).ok()?, u16::try_from(end).ok()?))
        };
        let parts = match DeviceTopic::parse(text)? {
            DeviceTopic::Telemetry(device) => Parts::Telemetry {
                device: span(device)?,
            },
            DeviceTopic::Attributes(device) => Parts::Attributes {
                device: span(device)?,
            },
            DeviceTopic::CommandResponse { device, command } => Parts::CommandResponse {
                device: span(device)?,
                command: span(command)?,
            },
        };
        Some(ParsedTopic {
            topic: topic.clone(),
            parts,
        })
    }

    /// The parsed topic.
    pub(crate) fn get(&self) -> DeviceTopic<'_> {
        let text = self.topic.as_str();
        // The spans come from parsing this very text: they always lie on its boundaries.
        let part = |(start, end): Span| {
            text.get(usize::from(start)..usize::from(end))
                .unwrap_or_default()
        };
        match self.parts {
            Parts::Telemetry { device } => DeviceTopic::Telemetry(part(device)),
            Parts::Attributes { device } => DeviceTopic::Attributes(part(device)),
            Parts::CommandResponse { device, command } => DeviceTopic::CommandResponse {
                device: part(device),
                command: part(command),
            },
        }
    }
}

/// A device message the broker offered and the platform kept for the connection's next
/// settlement: its topic parsed once, its payload shared with the broker's read buffer.
#[derive(Debug)]
pub(crate) struct DeviceMessage {
    topic: ParsedTopic,
    payload: Bytes,
    qos: QoS,
    /// Sent by an anonymous client (development mode), which may bring new devices.
    is_anonymous: bool,
}

impl DeviceMessage {
    /// Keeps `message` when its topic is one the platform consumes.
    pub(crate) fn keep(message: Inbound<'_>) -> Option<DeviceMessage> {
        Some(DeviceMessage {
            topic: ParsedTopic::parse(message.topic)?,
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

impl Inner {
    /// Judges the messages of one MQTT read: parses their payloads, writes the telemetry
    /// of all of them in one batch, and answers one verdict per message. When every
    /// message with telemetry came with QoS 0, which nobody acknowledges, the batch is
    /// only queued for the writer (in order, after waiting for room): the connection reads
    /// on without waiting for the disk, as a broker does for QoS 0.
    ///
    /// For an anonymous client (development mode) the answer also names the device of
    /// its first accepted message: the broker then counts the client as one of that
    /// device's connections (presence, disconnection).
    pub(crate) async fn ingest_mqtt(&self, batch: Vec<DeviceMessage>) -> Settled {
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
            let topic = message.topic.get();
            // Anonymous clients (development mode) may bring devices the registry does
            // not know yet; authenticated ones exist by definition.
            let may_register = message.is_anonymous && self.config.auto_register_devices;
            let outcome = match topic {
                DeviceTopic::Telemetry(device) => self
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
                DeviceTopic::Attributes(device) => self
                    .merge_attributes(device, &message.payload, may_register)
                    .await
                    .map(Some),
                DeviceTopic::CommandResponse { device, command } => self
                    .commands
                    .respond(self, device, command, &message.payload)
                    .await
                    .map(|()| None),
            };
            match outcome {
                Ok(info) if message.is_anonymous => {
                    let first = match topic {
                        DeviceTopic::Telemetry(_) => &mut first_telemetry,
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
        self.ingest_stats
            .count(&self.ingest_stats.accepted, Source::Mqtt, accepted as u64);
        let failed = verdicts
            .iter()
            .filter(|verdict| **verdict == Verdict::Failed)
            .count();
        self.ingest_stats
            .count(&self.ingest_stats.failed, Source::Mqtt, failed as u64);
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
        let is_sender_fault = matches!(
            error,
            Error::Payload(_)
                | Error::InvalidDevice(_)
                | Error::NotFound { .. }
                | Error::Invalid(_)
        );
        if !is_sender_fault {
            tracing::warn!(device, %error, source = source.as_str(), "message not stored");
            self.ingest_stats
                .count(&self.ingest_stats.failed, source, 1);
            return Verdict::Failed;
        }
        tracing::debug!(device, %error, source = source.as_str(), "message rejected");
        self.ingest_stats
            .count(&self.ingest_stats.rejected, source, 1);
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
    pub(crate) async fn ingest_json(&self, device: &DeviceId, body: &[u8]) -> Result<WriteReport> {
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
    pub(crate) async fn ingest_line_protocol(
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
                self.ingest_stats
                    .count(&self.ingest_stats.rejected, Source::LineProtocol, 1);
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
                self.ingest_stats
                    .count(&self.ingest_stats.rejected, Source::LineProtocol, 1);
                return Err(error);
            }
        }
        drop(resolved);
        let skipped = parsed.skipped_count();
        if skipped > 0 {
            self.ingest_stats
                .skipped_string_fields
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        let points = batch.len();
        match self.writer.write(batch).await {
            Ok(_) => {
                self.ingest_stats
                    .count(&self.ingest_stats.accepted, Source::LineProtocol, 1);
                Ok(WriteReport {
                    points,
                    skipped_string_fields: skipped,
                })
            }
            Err(error) => {
                self.ingest_stats
                    .count(&self.ingest_stats.failed, Source::LineProtocol, 1);
                Err(error)
            }
        }
    }

    /// Counts the outcome of a write for one device, recording a rejection.
    fn account<T>(&self, device: &str, source: Source, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.ingest_stats
                    .count(&self.ingest_stats.accepted, source, 1);
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
    use fleetwire_broker::Access;
    use fleetwire_model::DeviceId;
    use fleetwire_mqtt_codec::{TopicFilter, TopicName};

    use super::{
        DeviceTopic, IngestError, LastErrors, ParsedTopic, Source, Timestamp, device_access,
    };

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

    #[test]
    fn device_topics_are_recognised_and_nothing_else() {
        let table = [
            ("devices/d1/telemetry", Some(DeviceTopic::Telemetry("d1"))),
            ("devices/d1/attributes", Some(DeviceTopic::Attributes("d1"))),
            (
                "devices/d1/commands/cmd-1/response",
                Some(DeviceTopic::CommandResponse {
                    device: "d1",
                    command: "cmd-1",
                }),
            ),
            ("devices/d1/commands/cmd-1", None),
            ("devices/d1/commands//response", None),
            ("devices/d1/commands/a/b/response", None),
            ("devices//telemetry", None),
            ("devices/d1/telemetry/extra", None),
            ("devices/d1", None),
            ("sensors/d1/telemetry", None),
        ];
        for (topic, expected) in table {
            assert_eq!(DeviceTopic::parse(topic), expected, "{topic}");
            // Parsed once and kept, it reads back the same.
            let kept = ParsedTopic::parse(&TopicName::new(topic).unwrap());
            assert_eq!(kept.as_ref().map(ParsedTopic::get), expected, "{topic}");
        }
    }

    #[test]
    fn a_device_publishes_to_its_own_topics_and_subscribes_to_its_own_commands() {
        let access = device_access(&DeviceId::new("d1").unwrap());
        assert_eq!(access.user_name().map(|name| &**name), Some("d1"));
        let published = ["devices/d1/telemetry", "devices/d1", "devices/d2/telemetry"]
            .map(|topic| access.may_publish(&TopicName::new(topic).unwrap()));
        assert_eq!(published, [true, false, false]);
        let subscribed = [
            "devices/d1/commands/#",
            "devices/d1/#",
            "devices/d2/commands/#",
        ]
        .map(|filter| access.may_subscribe(&TopicFilter::new(filter).unwrap()));
        assert_eq!(subscribed, [true, false, false]);
        assert_ne!(access, Access::Full);
    }
}
