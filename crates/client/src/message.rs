//! Small values for what the server sends, so the hot path of a subscriber moves a few
//! dozen bytes per message instead of the codec's full packet (whose 5.0 properties make
//! it over 400 bytes; copying it between the decoder, the event and the caller showed up
//! as 40 % of a load generator's profile).

use bytes::Bytes;
use fleetwire_mqtt_codec::{PacketId, Properties, Publish, QoS, ReasonCode, TopicName};

/// An application message received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic it was published to.
    pub topic: TopicName,
    /// Payload, a slice of the connection's read buffer (no copy).
    pub payload: Bytes,
    /// QoS it was delivered with.
    pub qos: QoS,
    /// Whether it is a retained message.
    pub is_retained: bool,
    /// Whether the server sent it before (redelivery).
    pub is_duplicate: bool,
    /// Packet id (QoS 1/2); already acknowledged by the connection.
    pub packet_id: Option<PacketId>,
    /// 5.0 properties, when the message carried any.
    pub properties: Option<Box<Properties>>,
}

impl Message {
    /// The message of a decoded `PUBLISH`. Properties exist only on 5.0, so 3.1.1
    /// connections skip looking at them (`Properties::is_empty` compares every field).
    pub(crate) fn from_publish(publish: Publish, is_v5: bool) -> Message {
        let properties =
            (is_v5 && !publish.properties.is_empty()).then(|| Box::new(publish.properties));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            is_retained: publish.retain,
            is_duplicate: publish.dup,
            packet_id: publish.packet_id,
            properties,
        }
    }
}

/// An acknowledgement of one of our QoS 1/2 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The acknowledged message.
    pub packet_id: PacketId,
    /// 5.0 reason code (0x80 and above is a refusal); always success on 3.1.1.
    pub reason: ReasonCode,
}
