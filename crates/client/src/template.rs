//! Pre-encoded `PUBLISH` packets, for senders that publish the same topic over and over.

use bytes::{Bytes, BytesMut};
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, TopicName, encode,
};

use crate::ClientError;

/// A `PUBLISH` encoded once and copied into the write buffer for each send; only the
/// packet id and (through a callback) the payload bytes are patched per message.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    packet_id_at: Option<usize>,
    payload_at: usize,
    qos: QoS,
    version: ProtocolVersion,
}

impl PublishTemplate {
    /// Encodes a message to `topic` whose payload starts as `payload`.
    pub fn new(
        topic: TopicName,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        version: ProtocolVersion,
    ) -> Result<PublishTemplate, ClientError> {
        let topic_len = topic.as_str().len();
        let placeholder = (qos != QoS::AtMostOnce).then(|| PacketId::new(1)).flatten();
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: placeholder,
            payload: Bytes::copy_from_slice(payload),
            properties: Properties::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, version, &mut out)?;
        // The fixed header is the type byte plus a variable byte integer, whose last byte
        // has the continuation bit clear; the topic follows with its 2-byte length, then
        // the packet id. The payload is always the end of the packet.
        let header_len = 1 + out
            .iter()
            .skip(1)
            .position(|byte| byte & 0x80 == 0)
            .map_or(4, |index| index + 1);
        let packet_id_at = placeholder.map(|_| header_len + 2 + topic_len);
        let payload_at = out.len() - payload.len();
        Ok(PublishTemplate {
            bytes: out.to_vec(),
            packet_id_at,
            payload_at,
            qos,
            version,
        })
    }

    /// The QoS the template was encoded with.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// The protocol version the template was encoded for.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The size of one encoded message.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one copy to `out` with `packet_id` patched in, and lets `fill` rewrite the
    /// payload in place.
    pub(crate) fn write_to(
        &self,
        out: &mut BytesMut,
        packet_id: Option<PacketId>,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let (Some(at), Some(packet_id)) = (self.packet_id_at, packet_id) {
            let at = start + at;
            out[at..at + 2].copy_from_slice(&packet_id.get().to_be_bytes());
        }
        fill(&mut out[start + self.payload_at..]);
    }
}

#[cfg(test)]
mod tests {
    use fleetwire_mqtt_codec::decode;

    use super::*;

    fn roundtrip(qos: QoS, version: ProtocolVersion, payload_len: usize) {
        let topic = TopicName::new("bench/run/pairs/7").unwrap();
        let payload = vec![b'x'; payload_len];
        let template = PublishTemplate::new(topic.clone(), &payload, qos, false, version).unwrap();
        let mut out = BytesMut::new();
        let packet_id = PacketId::new(0xBEEF).filter(|_| qos != QoS::AtMostOnce);
        template.write_to(&mut out, packet_id, |bytes| {
            bytes[..4].copy_from_slice(b"abcd")
        });
        let Some(Packet::Publish(publish)) = decode(&mut out, version, usize::MAX).unwrap() else {
            panic!("expected a PUBLISH");
        };
        assert_eq!(publish.topic, topic);
        assert_eq!(publish.qos, qos);
        assert_eq!(publish.packet_id, packet_id);
        assert_eq!(&publish.payload[..4], b"abcd");
        assert_eq!(publish.payload.len(), payload_len);
        assert!(out.is_empty());
    }

    #[test]
    fn template_patches_packet_id_and_payload_in_every_version_and_qos() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for payload_len in [8, 64, 200, 20_000] {
                    roundtrip(qos, version, payload_len);
                }
            }
        }
    }
}
