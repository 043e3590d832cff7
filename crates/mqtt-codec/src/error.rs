//! Errors of decoding and encoding.

use crate::{PacketType, ReasonCode, TopicError};

/// Why bytes from the network are not a valid MQTT packet. Every variant says what was
/// expected and what arrived; [`DecodeError::reason_code`] gives the 5.0 code to send in
/// `DISCONNECT` (or `CONNACK`) before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header announces more bytes than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Announced size of the whole packet.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The remaining length uses more than four bytes.
    #[error("remaining length is encoded in more than 4 bytes")]
    MalformedRemainingLength,
    /// Packet type 0 is reserved.
    #[error("packet type {0} is reserved")]
    ReservedPacketType(u8),
    /// The low nibble of the first byte is not what the packet type requires.
    #[error("{packet:?} has flags {flags:#06b}, expected {expected:#06b}")]
    InvalidFlags {
        /// Packet type.
        packet: PacketType,
        /// Flags received.
        flags: u8,
        /// Flags required.
        expected: u8,
    },
    /// `CONNECT` protocol name is not `MQTT` (or `MQIsdp` for level 3).
    #[error("protocol name {0:?} is not MQTT")]
    InvalidProtocolName(String),
    /// Protocol level other than 3, 4 or 5.
    #[error("protocol level {0} is not supported (expected 3, 4 or 5)")]
    UnsupportedProtocolLevel(u8),
    /// The first packet was not `CONNECT`, or a second `CONNECT` arrived, or a packet only a
    /// server sends came from a client (and the reverse).
    #[error("unexpected {0:?} packet")]
    UnexpectedPacket(PacketType),
    /// A packet type that does not exist in the negotiated version (`AUTH` on 3.1.1).
    #[error("{packet:?} does not exist in protocol level {level}")]
    PacketNotInVersion {
        /// Packet type.
        packet: PacketType,
        /// Protocol level.
        level: u8,
    },
    /// The packet body ended before a field was complete, or bytes were left over.
    #[error("{packet:?} is malformed: {detail}")]
    Malformed {
        /// Packet type.
        packet: PacketType,
        /// What was wrong.
        detail: &'static str,
    },
    /// A string field is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string field contains U+0000.
    #[error("string contains the null character U+0000")]
    NullCharacter,
    /// A topic name or filter breaks the topic rules.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// A QoS of 3 (in a publish header, will flags or subscription options).
    #[error("QoS 3 is not a valid quality of service")]
    InvalidQoS,
    /// A packet id of zero where one is required.
    #[error("{0:?} carries packet id 0")]
    ZeroPacketId(PacketType),
    /// A reason code that is not allowed on this packet.
    #[error("reason code {code:#04x} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// Packet type.
        packet: PacketType,
        /// Code received.
        code: u8,
    },
    /// A property identifier that does not exist.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property that is not allowed on this packet.
    #[error("property {id:#04x} is not allowed in {packet:?}")]
    PropertyNotAllowed {
        /// Packet type.
        packet: PacketType,
        /// Property identifier.
        id: u8,
    },
    /// A single-valued property appears twice.
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A property value outside its allowed range (0 where non-zero is required, a
    /// boolean other than 0/1, ...).
    #[error("property {id:#04x} has invalid value {value}")]
    InvalidPropertyValue {
        /// Property identifier.
        id: u8,
        /// Value received.
        value: u32,
    },
}

impl DecodeError {
    /// The 5.0 reason code that reports this error to the peer.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            // A topic alias of 0 (MQTT-3.3.2-8) has a code of its own.
            DecodeError::InvalidPropertyValue { id: 0x23, .. } => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::UnexpectedPacket(_)
            | DecodeError::PacketNotInVersion { .. }
            | DecodeError::DuplicateProperty(_)
            | DecodeError::PropertyNotAllowed { .. }
            | DecodeError::InvalidPropertyValue { .. } => ReasonCode::PROTOCOL_ERROR,
            DecodeError::InvalidTopic(_) => ReasonCode::TOPIC_NAME_INVALID,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet would exceed the 268,435,455-byte limit of the remaining length.
    #[error("packet body of {0} bytes exceeds the MQTT maximum of 268435455")]
    PacketTooLarge(usize),
    /// A string or binary field is longer than 65,535 bytes.
    #[error("{field} is {len} bytes, more than the 65535 a length prefix can carry")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A `PUBLISH` with QoS > 0 has no packet id, or one with QoS 0 has one.
    #[error("PUBLISH with QoS {qos} {detail}")]
    PacketIdMismatch {
        /// The QoS.
        qos: u8,
        /// What is wrong.
        detail: &'static str,
    },
    /// A packet type that 3.1.1 does not have (`AUTH`).
    #[error("{0:?} cannot be encoded for protocol level 3.1.1")]
    PacketNotInVersion(PacketType),
    /// A property value the wire form cannot carry: a subscription identifier outside
    /// 1..=268,435,455 (it is a variable byte integer of at most four bytes, and 0 is
    /// forbidden).
    #[error("property {id:#04x} has value {value}, expected 1..=268435455")]
    InvalidPropertyValue {
        /// Property identifier.
        id: u8,
        /// The value given.
        value: u32,
    },
}
