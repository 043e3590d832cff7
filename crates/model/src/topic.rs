//! The device side of the MQTT contract: the topics a device publishes on
//! (`devices/{id}/telemetry`, `devices/{id}/attributes`,
//! `devices/{id}/commands/{command}/response`), the topic it receives commands on
//! (`devices/{id}/commands/{command}`), and the topic filters of its access (publish under
//! `devices/{id}/`, subscribe within `devices/{id}/commands/#`).
//!
//! [`DeviceTopic::parse`] is the one parser of these topics; everything that builds one
//! goes through the functions here.

use bytestring::ByteString;
use fleetwire_mqtt_codec::{TopicFilter, TopicName};

use crate::id::{CommandId, DeviceId};

/// The first level of every device topic.
const PREFIX: &str = "devices/";

/// A topic a device publishes on and the platform consumes, parsed. The names are slices
/// of the topic's own buffer: parsing allocates nothing, and the parsed form owns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic {
    /// `devices/{id}/telemetry`.
    Telemetry {
        /// The device the topic names.
        device: ByteString,
    },
    /// `devices/{id}/attributes`.
    Attributes {
        /// The device the topic names.
        device: ByteString,
    },
    /// `devices/{id}/commands/{command}/response`.
    CommandResponse {
        /// The device the topic names.
        device: ByteString,
        /// The command answered (its id, not yet checked).
        command: ByteString,
    },
}

impl DeviceTopic {
    /// The device topic `topic` is, if it is one the platform consumes. The device (and
    /// command) are single, non-empty levels; their syntax is checked by whoever looks
    /// them up.
    pub fn parse(topic: &TopicName) -> Option<DeviceTopic> {
        let text = topic.as_str();
        let rest = text.strip_prefix(PREFIX)?;
        let (device, rest) = rest.split_once('/')?;
        if device.is_empty() {
            return None;
        }
        let whole = topic.as_byte_string();
        let device_slice = || whole.slice_ref(device);
        match rest {
            "telemetry" => Some(DeviceTopic::Telemetry {
                device: device_slice(),
            }),
            "attributes" => Some(DeviceTopic::Attributes {
                device: device_slice(),
            }),
            _ => {
                let command = rest.strip_prefix("commands/")?.strip_suffix("/response")?;
                (!command.is_empty() && !command.contains('/')).then(|| {
                    DeviceTopic::CommandResponse {
                        device: device_slice(),
                        command: whole.slice_ref(command),
                    }
                })
            }
        }
    }

    /// The device the topic names.
    pub fn device(&self) -> &str {
        match self {
            DeviceTopic::Telemetry { device }
            | DeviceTopic::Attributes { device }
            | DeviceTopic::CommandResponse { device, .. } => device,
        }
    }

    /// `devices/{device}/telemetry`.
    pub fn telemetry(device: &DeviceId) -> TopicName {
        device_topic(device, "telemetry")
    }

    /// `devices/{device}/commands/{command}`: where a device receives a command.
    pub fn command(device: &DeviceId, command: &CommandId) -> TopicName {
        device_topic(device, &format!("commands/{command}"))
    }

    /// The topics a device may publish to: every topic under `devices/{device}/`
    /// (`devices/{device}/+/#`, which does not match `devices/{device}` itself).
    pub fn publish_filter(device: &DeviceId) -> TopicFilter {
        device_filter(device, "+/#")
    }

    /// The filter a device's subscriptions must stay within: `devices/{device}/commands/#`.
    pub fn commands_filter(device: &DeviceId) -> TopicFilter {
        device_filter(device, "commands/#")
    }
}

// A device id is a plain name (no wildcard, no `/`, not empty) and the rests are ours, so
// these texts are always a valid topic name and filter.

fn device_topic(device: &DeviceId, rest: &str) -> TopicName {
    TopicName::new(format!("{PREFIX}{device}/{rest}"))
        .expect("a device id and our levels make a valid topic name")
}

fn device_filter(device: &DeviceId, rest: &str) -> TopicFilter {
    TopicFilter::new(format!("{PREFIX}{device}/{rest}"))
        .expect("a device id and our levels make a valid topic filter")
}

#[cfg(test)]
mod tests {
    use fleetwire_mqtt_codec::TopicName;

    use super::DeviceTopic;
    use crate::id::{CommandId, DeviceId};

    fn parse(topic: &str) -> Option<DeviceTopic> {
        DeviceTopic::parse(&TopicName::new(topic).expect("a valid topic"))
    }

    #[test]
    fn device_topics_are_recognised_and_nothing_else() {
        let telemetry = |device: &str| DeviceTopic::Telemetry {
            device: device.into(),
        };
        let table = [
            ("devices/d1/telemetry", Some(telemetry("d1"))),
            (
                "devices/d1/attributes",
                Some(DeviceTopic::Attributes {
                    device: "d1".into(),
                }),
            ),
            (
                "devices/d1/commands/cmd-1/response",
                Some(DeviceTopic::CommandResponse {
                    device: "d1".into(),
                    command: "cmd-1".into(),
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
            assert_eq!(parse(topic), expected, "{topic}");
        }
        assert_eq!(
            parse("devices/boiler-7/telemetry").map(|t| t.device().to_owned()),
            Some("boiler-7".to_owned())
        );
    }

    #[test]
    fn topics_are_built_as_they_are_parsed() {
        let device = DeviceId::new("d1").expect("a valid id");
        let telemetry = DeviceTopic::telemetry(&device);
        assert_eq!(telemetry.as_str(), "devices/d1/telemetry");
        assert_eq!(
            parse(telemetry.as_str()).map(|t| t.device().to_owned()),
            Some("d1".to_owned())
        );
        let command = CommandId::new("cmd-1").expect("a valid id");
        assert_eq!(
            DeviceTopic::command(&device, &command).as_str(),
            "devices/d1/commands/cmd-1"
        );
    }

    #[test]
    fn a_device_s_filters_are_its_publish_prefix_and_its_commands() {
        let device = DeviceId::new("d1").expect("a valid id");
        assert_eq!(
            DeviceTopic::publish_filter(&device).as_str(),
            "devices/d1/+/#"
        );
        assert_eq!(
            DeviceTopic::commands_filter(&device).as_str(),
            "devices/d1/commands/#"
        );
    }
}
