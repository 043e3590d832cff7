//! The packet types of MQTT 3.1.1 and 5.0, as plain data.
//!
//! One struct per control packet; version differences are carried by fields that 3.1.1
//! ignores (properties, reason codes). Validation happens in the decoder and in the
//! constructors of the newtypes ([`PacketId`], [`crate::TopicName`], [`crate::TopicFilter`]).

use std::num::NonZeroU16;

use bytes::Bytes;

use crate::{Properties, ReasonCode, TopicFilter, TopicName};

/// The protocol level a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3): accepted and treated as 3.1.1.
    V31,
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

impl ProtocolVersion {
    /// Whether this version has properties and reason codes on the wire.
    pub fn is_v5(self) -> bool {
        matches!(self, ProtocolVersion::V5)
    }

    /// The protocol level byte of `CONNECT`.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
}

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// Fire and forget.
    AtMostOnce = 0,
    /// Acknowledged with `PUBACK`; may arrive more than once.
    AtLeastOnce = 1,
    /// Four-step handshake; arrives exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this wire value, if it is 0, 1 or 2.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A non-zero packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// A packet id, or `None` for 0 (which the protocol forbids).
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    /// The wire value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    /// The id after this one, wrapping from 65535 to 1.
    pub fn next(self) -> PacketId {
        PacketId(NonZeroU16::new(self.0.get().wrapping_add(1)).unwrap_or(NonZeroU16::MIN))
    }
}

/// The control packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The type of this packet.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// `CONNECT`: the first packet of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol: ProtocolVersion,
    /// 3.1.1 "clean session", 5.0 "clean start".
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one, if allowed).
    pub client_id: String,
    /// Will message, published when the connection ends abnormally.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary data in both versions).
    pub password: Option<Bytes>,
    /// 5.0 connect properties.
    pub properties: Properties,
}

/// The will message of a `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the will message.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// 5.0 will properties (will delay, expiry, content type, ...).
    pub properties: Properties,
}

/// `CONNACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed an existing session.
    pub session_present: bool,
    /// Result; 3.1.1 encodes it as a return code 0..=5.
    pub code: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

/// `PUBLISH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic; may be empty only in 5.0 when a topic alias property is set.
    pub topic: TopicName,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// Application payload, a slice of the read buffer.
    pub payload: Bytes,
    /// 5.0 publish properties.
    pub properties: Properties,
}

impl Publish {
    /// A message kept or passed on away from any connection (a broker's saved state,
    /// another node of a cluster): not a redelivery, and packet id 1 as a placeholder when
    /// its QoS needs one (ids belong to the connection that finally sends it).
    pub fn detached(
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Publish {
        Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(1)).flatten(),
            payload,
            properties,
        }
    }

    /// Reads back a detached message written as its MQTT 5.0 `PUBLISH` (see
    /// [`Publish::detached`]): `bytes` must hold that one packet and nothing else.
    pub fn decode_detached(bytes: &[u8]) -> Result<Publish, String> {
        let mut buffer = bytes::BytesMut::from(bytes);
        match crate::decode(&mut buffer, crate::ProtocolVersion::V5, usize::MAX) {
            Ok(Some(crate::Packet::Publish(publish))) if buffer.is_empty() => Ok(publish),
            Ok(_) => Err("not one whole MQTT PUBLISH".to_owned()),
            Err(error) => Err(format!("does not decode: {error}")),
        }
    }

    /// The QoS of the `PUBLISH` packet `bytes` starts with, read from its first byte
    /// alone (without decoding the packet); `None` if it is not a `PUBLISH`.
    pub fn peek_qos(bytes: &[u8]) -> Option<QoS> {
        let first = *bytes.first()?;
        if first >> 4 != 3 {
            return None;
        }
        QoS::from_u8((first >> 1) & 0b11)
    }
}

macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The acknowledged packet.
            pub packet_id: PacketId,
            /// 5.0 reason code; `SUCCESS` on 3.1.1.
            pub reason: ReasonCode,
            /// 5.0 properties (reason string, user properties).
            pub properties: Properties,
        }

        impl $name {
            /// A successful acknowledgement without properties.
            pub fn new(packet_id: PacketId) -> $name {
                $name { packet_id, reason: ReasonCode::SUCCESS, properties: Properties::default() }
            }
        }
    };
}

ack_packet!(
    /// `PUBACK`: QoS 1 acknowledgement.
    PubAck
);
ack_packet!(
    /// `PUBREC`: first QoS 2 acknowledgement.
    PubRec
);
ack_packet!(
    /// `PUBREL`: QoS 2 release.
    PubRel
);
ack_packet!(
    /// `PUBCOMP`: QoS 2 completion.
    PubComp
);

/// How retained messages are sent for a new subscription (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages on subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not exist.
    OnNewSubscription = 1,
    /// Never send them.
    Never = 2,
}

/// Per-filter options of `SUBSCRIBE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS for messages delivered on this subscription.
    pub qos: QoS,
    /// 5.0: do not deliver the client's own publications.
    pub no_local: bool,
    /// 5.0: keep the retain flag of forwarded messages.
    pub retain_as_published: bool,
    /// 5.0: when to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a QoS (the 3.1.1 form).
    pub fn with_qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }
    }
}

/// `SUBSCRIBE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id.
    pub packet_id: PacketId,
    /// At least one filter with its options.
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
    /// 5.0 properties (subscription identifier, user properties).
    pub properties: Properties,
}

/// `SUBACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet id of the `SUBSCRIBE`.
    pub packet_id: PacketId,
    /// One per filter: granted QoS (0x00..=0x02) or a failure code (>= 0x80).
    pub reasons: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// `UNSUBSCRIBE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet id.
    pub packet_id: PacketId,
    /// At least one filter.
    pub filters: Vec<TopicFilter>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// `UNSUBACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet id of the `UNSUBSCRIBE`.
    pub packet_id: PacketId,
    /// 5.0: one per filter; empty and not encoded on 3.1.1.
    pub reasons: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// `DISCONNECT`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code; `NORMAL_DISCONNECTION` (0) on 3.1.1.
    pub reason: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

/// `AUTH` (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code.
    pub reason: ReasonCode,
    /// Properties (authentication method and data).
    pub properties: Properties,
}
