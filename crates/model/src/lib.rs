//! Fleetwire's domain vocabulary, shared by the registry (which stores it), the rules
//! engine, the platform (which acts on it) and the API (which shows it): devices and their
//! [`DeviceInfo`], API tokens and [`Role`]s, the rule model ([`RuleSpec`], [`RuleAction`],
//! [`Severity`]), alarms, commands, their ids, the device topics ([`DeviceTopic`]) and the
//! client certificates pinned to devices ([`PinnedCertificate`]).
//!
//! Every value is checked in one place, here: an id in its constructor
//! ([`DeviceId::new`]), a record before it is stored (`check` methods, which the registry
//! calls), plain names and free text by [`check_plain_name`] and [`check_text`]. No I/O,
//! no clock, no serialization: the API maps these types to its JSON shapes.
//!
//! ```
//! use fleetwire_model::{DeviceId, DeviceInfo, DeviceTopic, RuleAction, RuleMatch};
//!
//! let device = DeviceId::new("boiler-7")?;
//! assert!(DeviceId::new("boiler/7").is_err());
//! let topic = DeviceTopic::telemetry(&device);
//! assert_eq!(topic.as_str(), "devices/boiler-7/telemetry");
//! assert_eq!(DeviceTopic::parse(&topic).map(|parsed| parsed.device().to_owned()), Some("boiler-7".to_owned()));
//!
//! let sensors = RuleMatch { device_type: Some("sensor".to_owned()), ..RuleMatch::default() };
//! assert!(!sensors.matches(&DeviceInfo::new(device)));
//! let bad = RuleAction::Republish { topic: "alerts/#".to_owned() };
//! assert!(bad.check(0).is_err());
//! # Ok::<(), fleetwire_model::Error>(())
//! ```

mod alarm;
mod certificate;
mod command;
mod device;
mod error;
mod id;
mod name;
mod page;
mod rule;
mod token;
mod topic;

pub use alarm::{
    Alarm, AlarmFilter, AlarmStatus, CLEARED_BY_RULE, MAX_ACTOR_CHARS, MAX_ALARM_VALUES,
    MAX_FIELD_CHARS, NewAlarm, check_actor, check_alarm_values,
};
pub use certificate::{FINGERPRINT_PATTERN, Fingerprint, NewPinnedCertificate, PinnedCertificate};
pub use command::{
    Command, CommandStatus, MAX_COMMAND_JSON_BYTES, MAX_COMMAND_TIMEOUT_MS, MIN_COMMAND_TIMEOUT_MS,
    NewCommand, bounded_json, check_command_name, command_params_json, json_kind,
};
pub use device::{
    Device, DeviceFilter, DeviceInfo, DevicePatch, IngestErrorRecord, Labels, MAX_LABEL_KEY_CHARS,
    MAX_LABEL_VALUE_CHARS, MAX_LABELS, MAX_NAME_CHARS, MAX_TYPE_CHARS, NewDevice, check_labels,
};
pub use error::{Error, Result};
pub use id::{AlarmId, CommandId, DeviceId, RuleId, TokenId};
pub use name::{
    PLAIN_NAME_MAX_LEN, PLAIN_NAME_PATTERN, PLAIN_NAME_PREFIX_PATTERN, check_plain_name,
    check_text, is_plain_name, is_plain_name_byte, is_plain_name_prefix,
};
pub use page::Page;
pub use rule::{
    MAX_EXPRESSION_BYTES, MAX_RULE_ACTIONS, MAX_RULE_DEVICES, MAX_RULE_NAME_CHARS, MAX_TOPIC_CHARS,
    MAX_URL_CHARS, Rule, RuleAction, RuleMatch, RuleSpec, Severity, republish_topic,
};
pub use token::{ApiToken, BOOTSTRAP_TOKEN_NAME, MAX_TOKEN_NAME_CHARS, NewToken, Role};
pub use topic::DeviceTopic;
