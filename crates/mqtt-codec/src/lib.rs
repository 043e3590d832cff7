//! MQTT 3.1.1 and 5.0 packets: types, encoding and streaming decoding.
//!
//! This crate does no I/O. A connection reads bytes into a [`bytes::BytesMut`] and calls
//! [`decode`] until it returns `Ok(None)` (more bytes needed); payloads of decoded
//! `PUBLISH` packets are slices of the read buffer ([`bytes::Bytes`]), never copied.
//! [`encode`] appends a packet to an output buffer so many packets can be written with
//! one system call.
//!
//! The protocol version decides the wire form of everything after `CONNECT` (3.1.1 has no
//! properties and fewer reason codes), so both functions take it; a `CONNECT` carries its
//! own version and [`decode`] reads it from the packet.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use fleetwire_mqtt_codec::{decode, encode, Packet, ProtocolVersion, Publish, QoS, TopicName};
//!
//! let publish = Publish {
//!     dup: false,
//!     qos: QoS::AtMostOnce,
//!     retain: false,
//!     topic: TopicName::new("devices/d1/telemetry").unwrap(),
//!     packet_id: None,
//!     payload: Bytes::from_static(b"{\"t\":21.5}"),
//!     properties: Default::default(),
//! };
//! let mut wire = BytesMut::new();
//! encode(&Packet::Publish(publish.clone()), ProtocolVersion::V311, &mut wire).unwrap();
//! let decoded = decode(&mut wire, ProtocolVersion::V311, 1024).unwrap();
//! assert_eq!(decoded, Some(Packet::Publish(publish)));
//! assert!(wire.is_empty());
//! ```

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
mod topic;

pub use decode::decode;
pub use encode::{encode, encode_to_vec, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
pub use properties::Properties;
pub use reason::ReasonCode;
pub use topic::{TopicError, TopicFilter, TopicName};
