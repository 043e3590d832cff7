//! Streaming decoder: turns the front of a growing read buffer into one [`Packet`].
//!
//! [`decode`] first looks at the fixed header only. While the header or the body is
//! incomplete it returns `Ok(None)` and leaves the buffer untouched, so the caller can read
//! more bytes and call again. Once the whole packet is there it splits exactly that many
//! bytes off the buffer and freezes them; every payload, binary field and topic of the
//! decoded packet is a slice of that one allocation, never a copy. (Other strings, such as
//! the client id and property strings, are `String`s in the packet types and are copied.)
//!
//! Bytes come from the network, so every read is checked: a short or malformed packet is a
//! [`DecodeError`], never a panic.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use crate::properties::{
    ACK_PROPERTIES, AUTH_PROPERTIES, CONNACK_PROPERTIES, CONNECT_PROPERTIES, DISCONNECT_PROPERTIES,
    KNOWN_PROPERTIES, PUBLISH_PROPERTIES, SUBSCRIBE_PROPERTIES, UNSUBSCRIBE_PROPERTIES,
    WILL_PROPERTIES, property_bit,
};
use crate::reason::{self, v3_connack_from_wire};
use crate::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketId, PacketType, ProtocolVersion,
    PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, TopicError, TopicFilter, TopicName, UnsubAck, Unsubscribe, Will,
};
use crate::{Properties, properties::MAX_VARIABLE_BYTE_INTEGER};

/// Reported when a field needs more bytes than the body (or property block) has left.
const TRUNCATED: &str = "expected more bytes, the body ends inside a field";
/// Reported when the fields of a packet end before its remaining length does.
const LEFTOVER: &str = "expected the body to end after the last field, bytes are left over";

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)`, consuming nothing, while the packet is incomplete; on success
/// exactly the decoded packet's bytes are removed from `buf`. `version` is the protocol
/// level negotiated by `CONNECT` (pass any version before it: a `CONNECT` is decoded by the
/// level it carries). `max_packet_size` bounds the whole packet, fixed header included, and
/// is enforced as soon as the remaining length is known, before the body arrives.
///
/// After an error the connection must be closed: the buffer is left where the error was
/// found (a packet whose body was complete has been consumed, a bad header has not).
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = check_first_byte(first, version)?;

    // The remaining length is a variable byte integer of at most four bytes after the
    // first byte; a fourth byte with the continuation bit set is malformed.
    let mut remaining_len = 0usize;
    let mut header_len = 0usize;
    for index in 0..4 {
        let Some(&byte) = buf.get(1 + index) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            header_len = 2 + index;
            break;
        }
    }
    if header_len == 0 {
        return Err(DecodeError::MalformedRemainingLength);
    }

    let size = header_len + remaining_len;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }

    let mut bytes = buf.split_to(size).freeze();
    bytes.advance(header_len);
    let reader = Reader {
        buf: bytes,
        packet: packet_type,
    };
    decode_body(packet_type, first & 0x0F, reader, version)
}

/// Maps the high nibble to a packet type and checks the flags in the low nibble.
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    let flags = first & 0x0F;
    let packet_type = match first >> 4 {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => PacketType::Publish,
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 => PacketType::Auth,
        reserved => return Err(DecodeError::ReservedPacketType(reserved)),
    };
    let expected = match packet_type {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed {
                    packet: PacketType::Publish,
                    detail: "expected DUP 0 on a QoS 0 message, DUP is 1",
                });
            }
            return Ok(packet_type);
        }
        PacketType::Auth if !version.is_v5() => {
            return Err(DecodeError::PacketNotInVersion {
                packet: PacketType::Auth,
                level: version.level(),
            });
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::InvalidFlags {
            packet: packet_type,
            flags,
            expected,
        });
    }
    Ok(packet_type)
}

// Inlined so that a `PUBLISH` is built straight into the return slot of `decode`.
#[inline(always)]
fn decode_body(
    packet_type: PacketType,
    flags: u8,
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let packet = match packet_type {
        PacketType::Publish => return decode_publish(flags, &mut r, version),
        PacketType::PubAck => {
            let (packet_id, reason, properties) = decode_ack(&mut r, version, reason::is_puback)?;
            Packet::PubAck(PubAck {
                packet_id,
                reason,
                properties,
            })
        }
        PacketType::PubRec => {
            let (packet_id, reason, properties) = decode_ack(&mut r, version, reason::is_puback)?;
            Packet::PubRec(PubRec {
                packet_id,
                reason,
                properties,
            })
        }
        PacketType::PubRel => {
            let (packet_id, reason, properties) = decode_ack(&mut r, version, reason::is_pubrel)?;
            Packet::PubRel(PubRel {
                packet_id,
                reason,
                properties,
            })
        }
        PacketType::PubComp => {
            let (packet_id, reason, properties) = decode_ack(&mut r, version, reason::is_pubrel)?;
            Packet::PubComp(PubComp {
                packet_id,
                reason,
                properties,
            })
        }
        PacketType::Connect => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(decode_connack(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason, properties) = decode_reason_and_properties(
                &mut r,
                version,
                reason::is_disconnect,
                DISCONNECT_PROPERTIES,
            )?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        PacketType::Auth => {
            let (reason, properties) =
                decode_reason_and_properties(&mut r, version, reason::is_auth, AUTH_PROPERTIES)?;
            Packet::Auth(Auth { reason, properties })
        }
    };
    // Unlike a `PUBLISH`, whose payload is the rest of the body, these packets have to end
    // exactly after their last field.
    r.finish()?;
    Ok(Some(packet))
}

/// The hot path: one string, maybe a packet id and properties, and the rest is payload.
///
/// The packet is over 400 bytes, so it is built in one expression straight into the
/// caller's return slot; building it in a local and wrapping it afterwards costs a copy
/// per level, which showed up as a third of the decoding time.
#[inline(always)]
fn decode_publish(
    flags: u8,
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Option<Packet>, DecodeError> {
    let qos = match (flags >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let topic = r.byte_string()?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(r.packet_id()?),
    };
    // An empty topic stands for the one a topic alias was bound to earlier (5.0 only);
    // `read_publish_properties` checks that the alias is there.
    let is_aliased = topic.is_empty() && version.is_v5();
    let topic = if is_aliased {
        TopicName::empty()
    } else {
        TopicName::new(topic)?
    };
    // Fields are evaluated in the order written: the properties come before the payload.
    Ok(Some(Packet::Publish(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties: if version.is_v5() {
            read_publish_properties(r, is_aliased)?
        } else {
            Properties::default()
        },
        payload: r.rest(),
    })))
}

fn read_publish_properties(r: &mut Reader, is_aliased: bool) -> Result<Properties, DecodeError> {
    let properties = read_properties(r, PUBLISH_PROPERTIES)?;
    if is_aliased && properties.topic_alias.is_none() {
        return Err(DecodeError::InvalidTopic(TopicError::Empty));
    }
    Ok(properties)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        (other, _) => {
            return Err(DecodeError::InvalidProtocolName(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    let flags = r.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(r.malformed("expected reserved connect flag 0, it is 1"));
    }
    let clean_start = flags & 0b0000_0010 != 0;
    let has_will = flags & 0b0000_0100 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(r.malformed("expected will QoS 0 and will retain 0 without the will flag"));
    }
    if has_password && !has_username && !protocol.is_v5() {
        return Err(r.malformed("expected the user name flag with the password flag"));
    }
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        read_properties(r, CONNECT_PROPERTIES)?
    } else {
        Properties::default()
    };
    let client_id = r.string()?;
    let will = if has_will {
        let properties = if protocol.is_v5() {
            read_properties(r, WILL_PROPERTIES)?
        } else {
            Properties::default()
        };
        let topic = TopicName::new(r.byte_string()?)?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0b1111_1110 != 0 {
        return Err(r.malformed("expected reserved acknowledge flags 0, some are 1"));
    }
    let session_present = flags & 1 != 0;
    let raw = r.u8()?;
    let code = if version.is_v5() {
        if !reason::is_connack(raw) {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: raw,
            });
        }
        ReasonCode(raw)
    } else {
        v3_connack_from_wire(raw).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: raw,
        })?
    };
    if session_present && code.is_error() {
        return Err(r.malformed("expected session present 0 on a refused connection, it is 1"));
    }
    let properties = if version.is_v5() {
        read_properties(r, CONNACK_PROPERTIES)?
    } else {
        Properties::default()
    };
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// `PUBACK`, `PUBREC`, `PUBREL` and `PUBCOMP` share one layout. In 5.0 the reason code and
/// the properties may be left out from the end (remaining length 2 or 3).
fn decode_ack(
    r: &mut Reader,
    version: ProtocolVersion,
    is_valid_reason: fn(u8) -> bool,
) -> Result<(PacketId, ReasonCode, Properties), DecodeError> {
    let packet_id = r.packet_id()?;
    if !version.is_v5() || r.is_empty() {
        return Ok((packet_id, ReasonCode::SUCCESS, Properties::default()));
    }
    let reason = r.reason(is_valid_reason)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, ACK_PROPERTIES)?
    };
    Ok((packet_id, reason, properties))
}

/// `DISCONNECT` and `AUTH`: an empty body means success without properties; a body of
/// one byte is a reason code without properties.
fn decode_reason_and_properties(
    r: &mut Reader,
    version: ProtocolVersion,
    is_valid_reason: fn(u8) -> bool,
    allowed_properties: u64,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !version.is_v5() || r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let reason = r.reason(is_valid_reason)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        read_properties(r, allowed_properties)?
    };
    Ok((reason, properties))
}

fn decode_subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        read_properties(r, SUBSCRIBE_PROPERTIES)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.byte_string()?)?;
        let options = r.u8()?;
        let options = if version.is_v5() {
            if options & 0b1100_0000 != 0 {
                return Err(r.malformed("expected reserved subscription option bits 6-7 to be 0"));
            }
            let retain_handling = match (options >> 4) & 0b11 {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscription,
                2 => RetainHandling::Never,
                _ => return Err(r.malformed("expected retain handling 0, 1 or 2, got 3")),
            };
            let no_local = options & 0b0000_0100 != 0;
            if no_local && filter.share().is_some() {
                return Err(r.malformed("expected no local 0 on a shared subscription, it is 1"));
            }
            SubscriptionOptions {
                qos: QoS::from_u8(options & 0b11).ok_or(DecodeError::InvalidQoS)?,
                no_local,
                retain_as_published: options & 0b0000_1000 != 0,
                retain_handling,
            }
        } else {
            if options & 0b1111_1100 != 0 {
                return Err(r.malformed("expected reserved subscription option bits 2-7 to be 0"));
            }
            SubscriptionOptions::with_qos(QoS::from_u8(options).ok_or(DecodeError::InvalidQoS)?)
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(r.malformed("expected at least one topic filter, got none"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        read_properties(r, ACK_PROPERTIES)?
    } else {
        Properties::default()
    };
    let is_valid: fn(u8) -> bool = if version.is_v5() {
        reason::is_suback
    } else {
        reason::is_v3_suback
    };
    let reasons = r.reasons(is_valid)?;
    Ok(SubAck {
        packet_id,
        reasons,
        properties,
    })
}

fn decode_unsubscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        read_properties(r, UNSUBSCRIBE_PROPERTIES)?
    } else {
        Properties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.byte_string()?)?);
    }
    if filters.is_empty() {
        return Err(r.malformed("expected at least one topic filter, got none"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        return Ok(UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = read_properties(r, ACK_PROPERTIES)?;
    let reasons = r.reasons(reason::is_unsuback)?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}

/// Reads a property length and the properties after it, allowing only the identifiers in
/// `allowed` (a bit per identifier) and rejecting repeats of single-valued ones.
fn read_properties(r: &mut Reader, allowed: u64) -> Result<Properties, DecodeError> {
    let len = r.variable_byte_integer()?;
    let mut properties = Properties::default();
    if len == 0 {
        return Ok(properties);
    }
    let packet = r.packet;
    let mut block = Reader {
        buf: r.take(len as usize)?,
        packet,
    };
    let mut seen = 0u64;
    while !block.is_empty() {
        // Identifiers are variable byte integers, but every defined one fits in one byte;
        // a first byte with the continuation bit is therefore unknown too.
        let id = block.u8()?;
        let bit = property_bit(id);
        if bit & KNOWN_PROPERTIES == 0 {
            return Err(DecodeError::UnknownProperty(id));
        }
        if bit & allowed == 0 {
            return Err(DecodeError::PropertyNotAllowed { packet, id });
        }
        let is_repeatable = id == 0x26 || (id == 0x0B && packet == PacketType::Publish);
        if seen & bit != 0 && !is_repeatable {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        let p = &mut properties;
        match id {
            0x01 => p.payload_format_indicator = Some(block.boolean(id)?),
            0x02 => p.message_expiry_interval = Some(block.u32()?),
            0x03 => p.content_type = Some(block.string()?),
            0x08 => p.response_topic = Some(TopicName::new(block.byte_string()?)?),
            0x09 => p.correlation_data = Some(block.binary()?),
            0x0B => {
                let value = block.variable_byte_integer()?;
                if value == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id, value });
                }
                p.subscription_identifiers.push(value);
            }
            0x11 => p.session_expiry_interval = Some(block.u32()?),
            0x12 => p.assigned_client_identifier = Some(block.string()?),
            0x13 => p.server_keep_alive = Some(block.u16()?),
            0x15 => p.authentication_method = Some(block.string()?),
            0x16 => p.authentication_data = Some(block.binary()?),
            0x17 => p.request_problem_information = Some(block.boolean(id)?),
            0x18 => p.will_delay_interval = Some(block.u32()?),
            0x19 => p.request_response_information = Some(block.boolean(id)?),
            0x1A => p.response_information = Some(block.string()?),
            0x1C => p.server_reference = Some(block.string()?),
            0x1F => p.reason_string = Some(block.string()?),
            0x21 => p.receive_maximum = Some(block.non_zero_u16(id)?),
            0x22 => p.topic_alias_maximum = Some(block.u16()?),
            0x23 => p.topic_alias = Some(block.non_zero_u16(id)?),
            0x24 => p.maximum_qos = Some(block.boolean(id)?),
            0x25 => p.retain_available = Some(block.boolean(id)?),
            0x26 => {
                let name = block.string()?;
                let value = block.string()?;
                p.user_properties.push((name, value));
            }
            0x27 => {
                let value = block.u32()?;
                if value == 0 {
                    return Err(DecodeError::InvalidPropertyValue { id, value });
                }
                p.maximum_packet_size = Some(value);
            }
            0x28 => p.wildcard_subscription_available = Some(block.boolean(id)?),
            0x29 => p.subscription_identifier_available = Some(block.boolean(id)?),
            0x2A => p.shared_subscription_available = Some(block.boolean(id)?),
            _ => return Err(DecodeError::UnknownProperty(id)),
        }
    }
    Ok(properties)
}

/// Checked reads from the body of one packet. The body is owned, so the payload of a
/// `PUBLISH` is the reader's remaining buffer itself, without another reference count.
struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    fn malformed(&self, detail: &'static str) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            detail,
        }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(LEFTOVER))
        }
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        match *self.buf {
            [byte, ..] => {
                self.buf.advance(1);
                Ok(byte)
            }
            [] => Err(self.malformed(TRUNCATED)),
        }
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.buf {
            [high, low, ..] => {
                self.buf.advance(2);
                Ok(u16::from_be_bytes([high, low]))
            }
            _ => Err(self.malformed(TRUNCATED)),
        }
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.buf {
            [a, b, c, d, ..] => {
                self.buf.advance(4);
                Ok(u32::from_be_bytes([a, b, c, d]))
            }
            _ => Err(self.malformed(TRUNCATED)),
        }
    }

    /// A one-byte property that may only be 0 or 1.
    fn boolean(&mut self, id: u8) -> Result<u8, DecodeError> {
        let value = self.u8()?;
        if value > 1 {
            return Err(DecodeError::InvalidPropertyValue {
                id,
                value: value.into(),
            });
        }
        Ok(value)
    }

    fn non_zero_u16(&mut self, id: u8) -> Result<u16, DecodeError> {
        let value = self.u16()?;
        if value == 0 {
            return Err(DecodeError::InvalidPropertyValue { id, value: 0 });
        }
        Ok(value)
    }

    fn variable_byte_integer(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                debug_assert!(value <= MAX_VARIABLE_BYTE_INTEGER);
                return Ok(value);
            }
        }
        Err(self.malformed("expected a variable byte integer of at most 4 bytes, got more"))
    }

    fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        let raw = self.u16()?;
        PacketId::new(raw).ok_or(DecodeError::ZeroPacketId(self.packet))
    }

    fn reason(&mut self, is_valid: fn(u8) -> bool) -> Result<ReasonCode, DecodeError> {
        let code = self.u8()?;
        if !is_valid(code) {
            return Err(DecodeError::InvalidReasonCode {
                packet: self.packet,
                code,
            });
        }
        Ok(ReasonCode(code))
    }

    /// The rest of the body as reason codes, one per filter of the acknowledged request.
    fn reasons(&mut self, is_valid: fn(u8) -> bool) -> Result<Vec<ReasonCode>, DecodeError> {
        if self.buf.is_empty() {
            return Err(self.malformed("expected at least one reason code, got none"));
        }
        let reasons = self
            .buf
            .iter()
            .map(|&code| {
                if is_valid(code) {
                    Ok(ReasonCode(code))
                } else {
                    Err(DecodeError::InvalidReasonCode {
                        packet: self.packet,
                        code,
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.buf.clear();
        Ok(reasons)
    }

    fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.buf.len() {
            return Err(self.malformed(TRUNCATED));
        }
        Ok(self.buf.split_to(len))
    }

    /// Binary data: a two-byte length and that many bytes, shared with the read buffer.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(len.into())
    }

    /// A UTF-8 string without U+0000, shared with the read buffer (for topics).
    fn byte_string(&mut self) -> Result<ByteString, DecodeError> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A UTF-8 string without U+0000, copied into an owned `String`.
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let bytes = self.buf.get(..len).ok_or(DecodeError::Malformed {
            packet: self.packet,
            detail: TRUNCATED,
        })?;
        if bytes.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| DecodeError::InvalidUtf8)?
            .to_owned();
        self.buf.advance(len);
        Ok(text)
    }
}
