//! Fleetwire's device payload formats: the bytes devices and collectors send, turned into
//! points for the store, or into a clear error.
//!
//! | payload | where it comes from | parser | gives |
//! |---|---|---|---|
//! | JSON telemetry | `devices/{id}/telemetry`, `POST /api/v1/devices/{id}/telemetry` | [`parse_telemetry`] | [`Telemetry`]: fields with timestamps, the payload's `device_id` |
//! | attributes | `devices/{id}/attributes` | [`parse_attributes`] | a JSON object to merge |
//! | command response | `devices/{id}/commands/{cmd}/response` | [`parse_command_response`] | [`CommandResponse`] |
//! | InfluxDB line protocol | `POST /api/v2/write` (Telegraf) | [`parse_line_protocol`] | [`LineBatch`]: points, skipped string fields |
//!
//! Every parser takes the whole payload and either returns all of it or an [`Error`]:
//! nothing half-parsed ever reaches the caller, so a rejected message writes nothing. The
//! errors say what was expected and what came, naming the row, line and field
//! (`row 2: field "status": expected a number or boolean, got a string`), and are all the
//! sender's fault (HTTP 400, MQTT 0x99). Limits on rows, fields, nesting and the accepted
//! time range are in [`Limits`].
//!
//! Names are borrowed from the payload whenever they need no unescaping or flattening, so
//! turning a result into store [`Point`](fleetwire_store::Point)s costs no allocation:
//! [`Telemetry::points`] and [`LineBatch::store_points`].
//!
//! The crate is pure and synchronous: no I/O, no clock (the caller passes the time of
//! receipt), no async runtime.
//!
//! ```
//! use fleetwire_formats::{Limits, Precision, parse_line_protocol, parse_telemetry};
//! use fleetwire_store::Timestamp;
//!
//! # fn main() -> Result<(), fleetwire_formats::Error> {
//! let received_at = Timestamp::from_millis(1_700_000_000_000);
//! let limits = Limits::default();
//!
//! // What a device publishes on devices/sensor-1/telemetry.
//! let payload = br#"{"temperature": 21.5, "door_open": false, "gps": {"lat": 52.1}}"#;
//! let telemetry = parse_telemetry(payload, received_at, &limits)?;
//! let points: Vec<_> = telemetry.points("sensor-1").collect();
//! assert_eq!(points.len(), 3);
//! assert_eq!((points[2].field, points[2].value), ("gps.lat", 52.1));
//! assert_eq!(points[1].timestamp, received_at); // no `ts`: the time of receipt
//!
//! // The flat form names its device, and gives seconds.
//! let flat = br#"{"device_id": "sensor-1", "humidity": 40.0, "timestamp": 1700000000.25}"#;
//! let telemetry = parse_telemetry(flat, received_at, &limits)?;
//! assert_eq!(telemetry.device_id.as_deref(), Some("sensor-1"));
//! assert_eq!(telemetry.fields[0].timestamp, Timestamp::from_millis(1_700_000_000_250));
//!
//! // Fields that cannot be stored reject the whole message.
//! let error = parse_telemetry(br#"{"temperature": 21.5, "status": "on"}"#, received_at, &limits)
//!     .unwrap_err();
//! assert_eq!(error.to_string(), r#"field "status": expected a number or boolean, got a string"#);
//!
//! // What Telegraf writes to /api/v2/write?precision=ns.
//! let body = b"cpu,host=h1,device=d42 usage_user=12.5,usage_idle=84.25,state=\"ok\" 1700000000000000000\n";
//! let batch = parse_line_protocol(body, Precision::Nanoseconds, received_at, &limits)?;
//! let point = batch.points[0].to_point();
//! assert_eq!((point.device, point.field, point.value), ("d42", "usage_user", 12.5));
//! assert_eq!(point.timestamp, Timestamp::from_millis(1_700_000_000_000));
//! assert_eq!(batch.skipped_count(), 1); // the string field `state`
//!
//! let error = parse_line_protocol(b"cpu temp 1\n", Precision::Seconds, received_at, &limits)
//!     .unwrap_err();
//! assert_eq!(error.to_string(), r#"line 1: expected "=" after field key "temp", found " ""#);
//! # Ok(())
//! # }
//! ```

mod attributes;
mod command_response;
mod error;
mod json;
mod limits;
mod line_protocol;
mod telemetry;

pub use attributes::parse_attributes;
pub use command_response::{CommandResponse, CommandStatus, parse_command_response};
pub use error::{Error, Result};
pub use limits::Limits;
pub use line_protocol::{
    LineBatch, LinePoint, LineSummary, MAX_SKIPPED_NAMES, Precision, SkippedStringFields,
    parse_line_protocol, parse_line_protocol_each,
};
pub use telemetry::{Telemetry, TelemetryField, parse_telemetry};
