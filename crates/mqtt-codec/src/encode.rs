//! Encoder: appends packets to an output buffer in their wire form.
//!
//! Encoding is two passes over the packet and none over the output: [`measure`] checks
//! every length prefix and adds up the body (and property block) sizes, then the writer
//! reserves the whole packet once and writes the fixed header and body straight into the
//! output, so no intermediate buffer is allocated.
//!
//! The encoder writes what it is given. It refuses only what the wire form cannot carry
//! (over-long fields, a body past the remaining-length limit, a `PUBLISH` whose packet id
//! does not fit its QoS, `AUTH` on 3.1.1); choosing properties and reason codes the
//! receiver accepts is the caller's job. For 3.1.1 properties and 5.0-only reason codes are
//! dropped or mapped to the nearest 3.1.1 code.

use bytes::{BufMut, BytesMut};

use crate::properties::MAX_VARIABLE_BYTE_INTEGER;
use crate::reason::{v3_connack_to_wire, v3_suback_to_wire};
use crate::{
    Connect, EncodeError, Packet, PacketId, PacketType, Properties, ProtocolVersion, QoS,
    ReasonCode, SubscriptionOptions,
};

/// The largest remaining length a packet can announce.
const MAX_REMAINING_LENGTH: usize = MAX_VARIABLE_BYTE_INTEGER as usize;

/// Appends `packet` in the wire form of `version` to `out`.
///
/// A `CONNECT` is written in the form of its own [`Connect::protocol`], whatever `version`
/// says, because it is the packet that announces the version. On error nothing has been
/// written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let sizes = measure(packet, version)?;
    out.reserve(1 + variable_byte_integer_len(sizes.body) + sizes.body);
    write_packet(packet, version, &sizes, out);
    Ok(())
}

/// [`encode`] into a `Vec`: for a packet kept inside a record of the caller's (the
/// broker's state log), written there without a buffer in between.
pub fn encode_to_vec(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let sizes = measure(packet, version)?;
    out.reserve(1 + variable_byte_integer_len(sizes.body) + sizes.body);
    write_packet(packet, version, &sizes, out);
    Ok(())
}

fn write_packet(packet: &Packet, version: ProtocolVersion, sizes: &Sizes, out: &mut impl BufMut) {
    out.put_u8(first_byte(packet));
    put_variable_byte_integer(out, sizes.body);
    write_body(packet, version, sizes, out);
}

/// The size of the encoded packet, fixed header included.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let body = measure(packet, version)?.body;
    Ok(1 + variable_byte_integer_len(body) + body)
}

/// What the measuring pass learned and the writing pass needs again.
struct Sizes {
    /// The remaining length.
    body: usize,
    /// The packet's property block, without its length prefix.
    properties: usize,
    /// The will's property block in a 5.0 `CONNECT`, without its length prefix.
    will_properties: usize,
}

/// Checks every field that has a length limit and adds up the body size.
fn measure(packet: &Packet, version: ProtocolVersion) -> Result<Sizes, EncodeError> {
    let is_v5 = version.is_v5();
    let mut sizes = Sizes {
        body: 0,
        properties: 0,
        will_properties: 0,
    };
    let properties = &mut sizes.properties;
    let body = match packet {
        Packet::Connect(connect) => {
            return measure_connect(connect);
        }
        Packet::ConnAck(connack) => 2 + property_block(is_v5, &connack.properties, properties)?,
        Packet::Publish(publish) => {
            match (publish.qos, publish.packet_id) {
                (QoS::AtMostOnce, Some(_)) => {
                    return Err(EncodeError::PacketIdMismatch {
                        qos: 0,
                        detail: "has a packet id",
                    });
                }
                (qos, None) if qos != QoS::AtMostOnce => {
                    return Err(EncodeError::PacketIdMismatch {
                        qos: qos as u8,
                        detail: "has no packet id",
                    });
                }
                _ => {}
            }
            let packet_id = if publish.packet_id.is_some() { 2 } else { 0 };
            string_len("topic", publish.topic.as_str().len())?
                + packet_id
                + property_block(is_v5, &publish.properties, properties)?
                + publish.payload.len()
        }
        Packet::PubAck(ack) => ack_len(ack.reason, &ack.properties, is_v5, properties)?,
        Packet::PubRec(ack) => ack_len(ack.reason, &ack.properties, is_v5, properties)?,
        Packet::PubRel(ack) => ack_len(ack.reason, &ack.properties, is_v5, properties)?,
        Packet::PubComp(ack) => ack_len(ack.reason, &ack.properties, is_v5, properties)?,
        Packet::Subscribe(subscribe) => {
            let mut len = 2 + property_block(is_v5, &subscribe.properties, properties)?;
            for (filter, _) in &subscribe.filters {
                len += string_len("topic filter", filter.as_str().len())? + 1;
            }
            len
        }
        Packet::SubAck(suback) => {
            2 + property_block(is_v5, &suback.properties, properties)? + suback.reasons.len()
        }
        Packet::Unsubscribe(unsubscribe) => {
            let mut len = 2 + property_block(is_v5, &unsubscribe.properties, properties)?;
            for filter in &unsubscribe.filters {
                len += string_len("topic filter", filter.as_str().len())?;
            }
            len
        }
        Packet::UnsubAck(unsuback) => {
            if is_v5 {
                2 + property_block(is_v5, &unsuback.properties, properties)?
                    + unsuback.reasons.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(disconnect) => {
            if is_v5 {
                reason_and_properties_len(disconnect.reason, &disconnect.properties, properties)?
            } else {
                0
            }
        }
        Packet::Auth(auth) => {
            if !is_v5 {
                return Err(EncodeError::PacketNotInVersion(PacketType::Auth));
            }
            reason_and_properties_len(auth.reason, &auth.properties, properties)?
        }
    };
    sizes.body = check_body_len(body)?;
    Ok(sizes)
}

fn measure_connect(connect: &Connect) -> Result<Sizes, EncodeError> {
    let is_v5 = connect.protocol.is_v5();
    let mut sizes = Sizes {
        body: 0,
        properties: 0,
        will_properties: 0,
    };
    // Protocol name, level, flags and keep-alive.
    let mut len = 2 + protocol_name(connect.protocol).len() + 1 + 1 + 2;
    if is_v5 {
        sizes.properties = properties_len(&connect.properties)?;
        len += block_len(sizes.properties);
    }
    len += string_len("client identifier", connect.client_id.len())?;
    if let Some(will) = &connect.will {
        if is_v5 {
            sizes.will_properties = properties_len(&will.properties)?;
            len += block_len(sizes.will_properties);
        }
        len += string_len("will topic", will.topic.as_str().len())?;
        len += string_len("will payload", will.payload.len())?;
    }
    if let Some(username) = &connect.username {
        len += string_len("user name", username.len())?;
    }
    if let Some(password) = &connect.password {
        len += string_len("password", password.len())?;
    }
    sizes.body = check_body_len(len)?;
    Ok(sizes)
}

/// `PUBACK`, `PUBREC`, `PUBREL`, `PUBCOMP`: 5.0 leaves out what is default from the end.
fn ack_len(
    reason: ReasonCode,
    properties: &Properties,
    is_v5: bool,
    properties_size: &mut usize,
) -> Result<usize, EncodeError> {
    if !is_v5 {
        return Ok(2);
    }
    *properties_size = properties_len(properties)?;
    Ok(match (reason, *properties_size) {
        (ReasonCode::SUCCESS, 0) => 2,
        (_, 0) => 3,
        (_, properties) => 3 + block_len(properties),
    })
}

/// 5.0 `DISCONNECT` and `AUTH`: an empty body for success without properties, else the
/// reason code, then properties if there are any.
fn reason_and_properties_len(
    reason: ReasonCode,
    properties: &Properties,
    properties_size: &mut usize,
) -> Result<usize, EncodeError> {
    *properties_size = properties_len(properties)?;
    Ok(match (reason, *properties_size) {
        (ReasonCode::SUCCESS, 0) => 0,
        (_, 0) => 1,
        (_, properties) => 1 + block_len(properties),
    })
}

/// The property block of a 5.0 packet with its length prefix (nothing on 3.1.1); the size
/// without the prefix goes to `properties_size` for the writer.
fn property_block(
    is_v5: bool,
    properties: &Properties,
    properties_size: &mut usize,
) -> Result<usize, EncodeError> {
    if !is_v5 {
        return Ok(0);
    }
    *properties_size = properties_len(properties)?;
    Ok(block_len(*properties_size))
}

fn check_body_len(len: usize) -> Result<usize, EncodeError> {
    if len > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(len));
    }
    Ok(len)
}

/// A string or binary field: two bytes of length and the bytes.
fn string_len(field: &'static str, len: usize) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong { field, len });
    }
    Ok(2 + len)
}

/// A property block with its length prefix.
fn block_len(properties_len: usize) -> usize {
    variable_byte_integer_len(properties_len) + properties_len
}

fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn protocol_name(protocol: ProtocolVersion) -> &'static [u8] {
    match protocol {
        ProtocolVersion::V31 => b"MQIsdp",
        ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
    }
}

/// Size of the properties without the length prefix, checking the lengths of their strings
/// and the range of subscription identifiers.
fn properties_len(p: &Properties) -> Result<usize, EncodeError> {
    fn fixed<T>(value: &Option<T>, size: usize) -> usize {
        if value.is_some() { 1 + size } else { 0 }
    }
    fn text(field: &'static str, value: Option<&[u8]>) -> Result<usize, EncodeError> {
        match value {
            Some(bytes) => Ok(1 + string_len(field, bytes.len())?),
            None => Ok(0),
        }
    }
    let mut len = fixed(&p.payload_format_indicator, 1)
        + fixed(&p.message_expiry_interval, 4)
        + fixed(&p.session_expiry_interval, 4)
        + fixed(&p.server_keep_alive, 2)
        + fixed(&p.request_problem_information, 1)
        + fixed(&p.will_delay_interval, 4)
        + fixed(&p.request_response_information, 1)
        + fixed(&p.receive_maximum, 2)
        + fixed(&p.topic_alias_maximum, 2)
        + fixed(&p.topic_alias, 2)
        + fixed(&p.maximum_qos, 1)
        + fixed(&p.retain_available, 1)
        + fixed(&p.maximum_packet_size, 4)
        + fixed(&p.wildcard_subscription_available, 1)
        + fixed(&p.subscription_identifier_available, 1)
        + fixed(&p.shared_subscription_available, 1);
    len += text("content type", p.content_type.as_deref().map(str::as_bytes))?;
    len += text(
        "response topic",
        p.response_topic
            .as_ref()
            .map(|topic| topic.as_str().as_bytes()),
    )?;
    len += text("correlation data", p.correlation_data.as_deref())?;
    len += text(
        "assigned client identifier",
        p.assigned_client_identifier.as_deref().map(str::as_bytes),
    )?;
    len += text(
        "authentication method",
        p.authentication_method.as_deref().map(str::as_bytes),
    )?;
    len += text("authentication data", p.authentication_data.as_deref())?;
    len += text(
        "response information",
        p.response_information.as_deref().map(str::as_bytes),
    )?;
    len += text(
        "server reference",
        p.server_reference.as_deref().map(str::as_bytes),
    )?;
    len += text(
        "reason string",
        p.reason_string.as_deref().map(str::as_bytes),
    )?;
    for &identifier in &p.subscription_identifiers {
        if identifier == 0 || identifier > MAX_VARIABLE_BYTE_INTEGER {
            return Err(EncodeError::InvalidPropertyValue {
                id: 0x0B,
                value: identifier,
            });
        }
        len += 1 + variable_byte_integer_len(identifier as usize);
    }
    for (name, value) in &p.user_properties {
        len += 1
            + string_len("user property name", name.len())?
            + string_len("user property value", value.len())?;
    }
    Ok(len)
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Publish(publish) => {
            0x30 | (u8::from(publish.dup) << 3)
                | ((publish.qos as u8) << 1)
                | u8::from(publish.retain)
        }
        // These three carry the fixed flags 0b0010 [MQTT-3.6.1-1, 3.8.1-1, 3.10.1-1].
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => {
            ((packet.packet_type() as u8) << 4) | 0b0010
        }
        _ => (packet.packet_type() as u8) << 4,
    }
}

fn write_body(packet: &Packet, version: ProtocolVersion, sizes: &Sizes, out: &mut impl BufMut) {
    let is_v5 = version.is_v5();
    match packet {
        Packet::Connect(connect) => write_connect(connect, sizes, out),
        Packet::ConnAck(connack) => {
            out.put_u8(u8::from(connack.session_present));
            if is_v5 {
                out.put_u8(connack.code.0);
                write_properties(&connack.properties, sizes.properties, out);
            } else {
                out.put_u8(v3_connack_to_wire(connack.code));
            }
        }
        Packet::Publish(publish) => {
            put_bytes(out, publish.topic.as_str().as_bytes());
            if let Some(packet_id) = publish.packet_id {
                out.put_u16(packet_id.get());
            }
            if is_v5 {
                write_properties(&publish.properties, sizes.properties, out);
            }
            out.put_slice(&publish.payload);
        }
        Packet::PubAck(ack) => write_ack(
            ack.packet_id,
            ack.reason,
            &ack.properties,
            is_v5,
            sizes,
            out,
        ),
        Packet::PubRec(ack) => write_ack(
            ack.packet_id,
            ack.reason,
            &ack.properties,
            is_v5,
            sizes,
            out,
        ),
        Packet::PubRel(ack) => write_ack(
            ack.packet_id,
            ack.reason,
            &ack.properties,
            is_v5,
            sizes,
            out,
        ),
        Packet::PubComp(ack) => write_ack(
            ack.packet_id,
            ack.reason,
            &ack.properties,
            is_v5,
            sizes,
            out,
        ),
        Packet::Subscribe(subscribe) => {
            out.put_u16(subscribe.packet_id.get());
            if is_v5 {
                write_properties(&subscribe.properties, sizes.properties, out);
            }
            for (filter, options) in &subscribe.filters {
                put_bytes(out, filter.as_str().as_bytes());
                out.put_u8(subscription_options(options, is_v5));
            }
        }
        Packet::SubAck(suback) => {
            out.put_u16(suback.packet_id.get());
            if is_v5 {
                write_properties(&suback.properties, sizes.properties, out);
                for reason in &suback.reasons {
                    out.put_u8(reason.0);
                }
            } else {
                for &reason in &suback.reasons {
                    out.put_u8(v3_suback_to_wire(reason));
                }
            }
        }
        Packet::Unsubscribe(unsubscribe) => {
            out.put_u16(unsubscribe.packet_id.get());
            if is_v5 {
                write_properties(&unsubscribe.properties, sizes.properties, out);
            }
            for filter in &unsubscribe.filters {
                put_bytes(out, filter.as_str().as_bytes());
            }
        }
        Packet::UnsubAck(unsuback) => {
            out.put_u16(unsuback.packet_id.get());
            if is_v5 {
                write_properties(&unsuback.properties, sizes.properties, out);
                for reason in &unsuback.reasons {
                    out.put_u8(reason.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => {
            if is_v5 {
                write_reason_and_properties(disconnect.reason, &disconnect.properties, sizes, out);
            }
        }
        Packet::Auth(auth) => {
            write_reason_and_properties(auth.reason, &auth.properties, sizes, out)
        }
    }
}

fn write_connect(connect: &Connect, sizes: &Sizes, out: &mut impl BufMut) {
    let is_v5 = connect.protocol.is_v5();
    put_bytes(out, protocol_name(connect.protocol));
    out.put_u8(connect.protocol.level());
    let mut flags = u8::from(connect.clean_start) << 1;
    if let Some(will) = &connect.will {
        flags |= 0b0000_0100 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    if connect.password.is_some() {
        flags |= 0b0100_0000;
    }
    if connect.username.is_some() {
        flags |= 0b1000_0000;
    }
    out.put_u8(flags);
    out.put_u16(connect.keep_alive);
    if is_v5 {
        write_properties(&connect.properties, sizes.properties, out);
    }
    put_bytes(out, connect.client_id.as_bytes());
    if let Some(will) = &connect.will {
        if is_v5 {
            write_properties(&will.properties, sizes.will_properties, out);
        }
        put_bytes(out, will.topic.as_str().as_bytes());
        put_bytes(out, &will.payload);
    }
    if let Some(username) = &connect.username {
        put_bytes(out, username.as_bytes());
    }
    if let Some(password) = &connect.password {
        put_bytes(out, password);
    }
}

fn write_ack(
    packet_id: PacketId,
    reason: ReasonCode,
    properties: &Properties,
    is_v5: bool,
    sizes: &Sizes,
    out: &mut impl BufMut,
) {
    out.put_u16(packet_id.get());
    if !is_v5 {
        return;
    }
    match (reason, sizes.properties) {
        (ReasonCode::SUCCESS, 0) => {}
        (_, 0) => out.put_u8(reason.0),
        (_, len) => {
            out.put_u8(reason.0);
            write_properties(properties, len, out);
        }
    }
}

fn write_reason_and_properties(
    reason: ReasonCode,
    properties: &Properties,
    sizes: &Sizes,
    out: &mut impl BufMut,
) {
    match (reason, sizes.properties) {
        (ReasonCode::SUCCESS, 0) => {}
        (_, 0) => out.put_u8(reason.0),
        (_, len) => {
            out.put_u8(reason.0);
            write_properties(properties, len, out);
        }
    }
}

fn subscription_options(options: &SubscriptionOptions, is_v5: bool) -> u8 {
    let qos = options.qos as u8;
    if !is_v5 {
        return qos;
    }
    qos | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | ((options.retain_handling as u8) << 4)
}

/// Writes the property length `len` (from [`properties_len`]) and the properties in
/// identifier order.
fn write_properties(p: &Properties, len: usize, out: &mut impl BufMut) {
    put_variable_byte_integer(out, len);
    if len == 0 {
        return;
    }
    fn byte(out: &mut impl BufMut, id: u8, value: Option<u8>) {
        if let Some(value) = value {
            out.put_u8(id);
            out.put_u8(value);
        }
    }
    fn two(out: &mut impl BufMut, id: u8, value: Option<u16>) {
        if let Some(value) = value {
            out.put_u8(id);
            out.put_u16(value);
        }
    }
    fn four(out: &mut impl BufMut, id: u8, value: Option<u32>) {
        if let Some(value) = value {
            out.put_u8(id);
            out.put_u32(value);
        }
    }
    fn text(out: &mut impl BufMut, id: u8, value: Option<&[u8]>) {
        if let Some(value) = value {
            out.put_u8(id);
            put_bytes(out, value);
        }
    }
    byte(out, 0x01, p.payload_format_indicator);
    four(out, 0x02, p.message_expiry_interval);
    text(out, 0x03, p.content_type.as_deref().map(str::as_bytes));
    text(
        out,
        0x08,
        p.response_topic
            .as_ref()
            .map(|topic| topic.as_str().as_bytes()),
    );
    text(out, 0x09, p.correlation_data.as_deref());
    for &identifier in &p.subscription_identifiers {
        out.put_u8(0x0B);
        put_variable_byte_integer(out, identifier as usize);
    }
    four(out, 0x11, p.session_expiry_interval);
    text(
        out,
        0x12,
        p.assigned_client_identifier.as_deref().map(str::as_bytes),
    );
    two(out, 0x13, p.server_keep_alive);
    text(
        out,
        0x15,
        p.authentication_method.as_deref().map(str::as_bytes),
    );
    text(out, 0x16, p.authentication_data.as_deref());
    byte(out, 0x17, p.request_problem_information);
    four(out, 0x18, p.will_delay_interval);
    byte(out, 0x19, p.request_response_information);
    text(
        out,
        0x1A,
        p.response_information.as_deref().map(str::as_bytes),
    );
    text(out, 0x1C, p.server_reference.as_deref().map(str::as_bytes));
    text(out, 0x1F, p.reason_string.as_deref().map(str::as_bytes));
    two(out, 0x21, p.receive_maximum);
    two(out, 0x22, p.topic_alias_maximum);
    two(out, 0x23, p.topic_alias);
    byte(out, 0x24, p.maximum_qos);
    byte(out, 0x25, p.retain_available);
    for (name, value) in &p.user_properties {
        out.put_u8(0x26);
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    four(out, 0x27, p.maximum_packet_size);
    byte(out, 0x28, p.wildcard_subscription_available);
    byte(out, 0x29, p.subscription_identifier_available);
    byte(out, 0x2A, p.shared_subscription_available);
}

/// A two-byte length and the bytes; the length was checked by [`measure`].
fn put_bytes(out: &mut impl BufMut, bytes: &[u8]) {
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

fn put_variable_byte_integer(out: &mut impl BufMut, mut value: usize) {
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}
