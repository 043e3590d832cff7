//! MQTT 5.0 properties.
//!
//! One struct holds every property; the decoder rejects a property that is not allowed on
//! the packet it came with (and duplicates of single-valued ones), so code reading a
//! decoded packet only sees what the specification permits there.

use bytes::Bytes;

use crate::TopicName;

/// The properties of a 5.0 packet. Empty (`Default`) on 3.1.1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01: 0 = unspecified bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<String>,
    /// 0x08.
    pub response_topic: Option<TopicName>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: variable byte integer 1..=268,435,455; more than one on `PUBLISH`.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<String>,
    /// 0x13: seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<String>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17: 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19: 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A.
    pub response_information: Option<String>,
    /// 0x1C.
    pub server_reference: Option<String>,
    /// 0x1F.
    pub reason_string: Option<String>,
    /// 0x21: non-zero.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24: 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25: 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26: name/value pairs, order kept, repeats allowed.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// Whether no property is set. On the hot path for every message, so it checks the
    /// fields directly instead of building and comparing a default value.
    pub fn is_empty(&self) -> bool {
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }
}

/// The largest value a variable byte integer (remaining length, property length,
/// subscription identifier) can carry in four bytes.
pub(crate) const MAX_VARIABLE_BYTE_INTEGER: u32 = 268_435_455;

/// The bit that stands for property `id` in the sets below; 0 for identifiers past 63,
/// which are all unknown.
pub(crate) const fn property_bit(id: u8) -> u64 {
    if id < 64 { 1 << id } else { 0 }
}

/// A set of property identifiers as a bit mask, so checking a property against the
/// packet it came with is one `and`.
const fn property_set(ids: &[u8]) -> u64 {
    let mut set = 0;
    let mut index = 0;
    while index < ids.len() {
        set |= property_bit(ids[index]);
        index += 1;
    }
    set
}

// Which packet may carry which property, from table 2-4 of the 5.0 specification.

/// Every identifier that 5.0 defines.
pub(crate) const KNOWN_PROPERTIES: u64 = property_set(&[
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
]);
/// `CONNECT`.
pub(crate) const CONNECT_PROPERTIES: u64 =
    property_set(&[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]);
/// The will properties inside `CONNECT`.
pub(crate) const WILL_PROPERTIES: u64 = property_set(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]);
/// `CONNACK`.
pub(crate) const CONNACK_PROPERTIES: u64 = property_set(&[
    0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A,
]);
/// `PUBLISH`.
pub(crate) const PUBLISH_PROPERTIES: u64 =
    property_set(&[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]);
/// `PUBACK`, `PUBREC`, `PUBREL`, `PUBCOMP`, `SUBACK` and `UNSUBACK`.
pub(crate) const ACK_PROPERTIES: u64 = property_set(&[0x1F, 0x26]);
/// `SUBSCRIBE`.
pub(crate) const SUBSCRIBE_PROPERTIES: u64 = property_set(&[0x0B, 0x26]);
/// `UNSUBSCRIBE`.
pub(crate) const UNSUBSCRIBE_PROPERTIES: u64 = property_set(&[0x26]);
/// `DISCONNECT`.
pub(crate) const DISCONNECT_PROPERTIES: u64 = property_set(&[0x11, 0x1C, 0x1F, 0x26]);
/// `AUTH`.
pub(crate) const AUTH_PROPERTIES: u64 = property_set(&[0x15, 0x16, 0x1F, 0x26]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_empty_notices_any_single_property() {
        assert!(Properties::default().is_empty());
        let one_each = [
            Properties {
                payload_format_indicator: Some(1),
                ..Properties::default()
            },
            Properties {
                subscription_identifiers: vec![1],
                ..Properties::default()
            },
            Properties {
                user_properties: vec![("a".into(), "b".into())],
                ..Properties::default()
            },
            Properties {
                shared_subscription_available: Some(0),
                ..Properties::default()
            },
            Properties {
                topic_alias: Some(3),
                ..Properties::default()
            },
        ];
        for properties in one_each {
            assert!(!properties.is_empty(), "{properties:?}");
        }
    }
}
