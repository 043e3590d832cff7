//! Property tests: every valid packet survives encode then decode, `encoded_len` is the
//! number of bytes `encode` writes, and no input makes the decoder panic.
//!
//! The strategies generate only what the decoder accepts for the version: 5.0 packets get
//! arbitrary properties from the set allowed on that packet type and reason codes from the
//! packet's table; 3.1.1 packets get default properties and the reason codes 3.1.1 can
//! carry.

use bytes::{Bytes, BytesMut};
use fleetwire_mqtt_codec::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, Will, decode, encode,
    encode_to_vec, encoded_len,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use ProtocolVersion::{V5, V31, V311};

// Reason codes each packet may carry in 5.0 (tables in chapter 3 of the specification).
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const V311_CONNACK_REASONS: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_REASONS: &[u8] = &[0x00, 0x92];
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const V311_SUBACK_REASONS: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];

// Properties allowed on each packet type (table 2-4 of the 5.0 specification).
const CONNECT_PROPERTIES: &[u8] = &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27];
const WILL_PROPERTIES: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26];
const CONNACK_PROPERTIES: &[u8] = &[
    0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2A,
];
const PUBLISH_PROPERTIES: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26];
const ACK_PROPERTIES: &[u8] = &[0x1F, 0x26];
const SUBSCRIBE_PROPERTIES: &[u8] = &[0x0B, 0x26];
const UNSUBSCRIBE_PROPERTIES: &[u8] = &[0x26];
const DISCONNECT_PROPERTIES: &[u8] = &[0x11, 0x1C, 0x1F, 0x26];
const AUTH_PROPERTIES: &[u8] = &[0x15, 0x16, 0x1F, 0x26];

/// Any MQTT string: UTF-8 without U+0000, multi-byte characters included.
fn string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn level() -> impl Strategy<Value = String> {
    "[^\u{0}+#/]{0,6}"
}

fn topic_name() -> impl Strategy<Value = TopicName> {
    vec(level(), 1..5).prop_filter_map("a topic name is not empty", |levels| {
        TopicName::new(levels.join("/")).ok()
    })
}

fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (
        prop::option::of("[a-z]{1,4}"),
        vec(filter_level, 1..5),
        any::<bool>(),
    )
        .prop_filter_map(
            "a topic filter is valid",
            |(share, mut levels, ends_with_hash)| {
                if ends_with_hash {
                    levels.push("#".to_owned());
                }
                let filter = levels.join("/");
                let text = match share {
                    Some(group) => format!("$share/{group}/{filter}"),
                    None => filter,
                };
                TopicFilter::new(text).ok()
            },
        )
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|value| PacketId::new(value).expect("range excludes 0"))
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(ReasonCode)
}

fn boolean() -> impl Strategy<Value = u8> {
    0..=1u8
}

/// One property with a value in its allowed range, as a `Properties` holding only it.
fn property(id: u8) -> BoxedStrategy<Properties> {
    fn set<T: std::fmt::Debug + 'static>(
        strategy: impl Strategy<Value = T> + 'static,
        apply: fn(&mut Properties, T),
    ) -> BoxedStrategy<Properties> {
        strategy
            .prop_map(move |value| {
                let mut properties = Properties::default();
                apply(&mut properties, value);
                properties
            })
            .boxed()
    }
    match id {
        0x01 => set(boolean(), |p, v| p.payload_format_indicator = Some(v)),
        0x02 => set(any::<u32>(), |p, v| p.message_expiry_interval = Some(v)),
        0x03 => set(string(), |p, v| p.content_type = Some(v)),
        0x08 => set(topic_name(), |p, v| p.response_topic = Some(v)),
        0x09 => set(binary(), |p, v| p.correlation_data = Some(v)),
        0x0B => set(1..=268_435_455u32, |p, v| {
            p.subscription_identifiers.push(v)
        }),
        0x11 => set(any::<u32>(), |p, v| p.session_expiry_interval = Some(v)),
        0x12 => set(string(), |p, v| p.assigned_client_identifier = Some(v)),
        0x13 => set(any::<u16>(), |p, v| p.server_keep_alive = Some(v)),
        0x15 => set(string(), |p, v| p.authentication_method = Some(v)),
        0x16 => set(binary(), |p, v| p.authentication_data = Some(v)),
        0x17 => set(boolean(), |p, v| p.request_problem_information = Some(v)),
        0x18 => set(any::<u32>(), |p, v| p.will_delay_interval = Some(v)),
        0x19 => set(boolean(), |p, v| p.request_response_information = Some(v)),
        0x1A => set(string(), |p, v| p.response_information = Some(v)),
        0x1C => set(string(), |p, v| p.server_reference = Some(v)),
        0x1F => set(string(), |p, v| p.reason_string = Some(v)),
        0x21 => set(1..=u16::MAX, |p, v| p.receive_maximum = Some(v)),
        0x22 => set(any::<u16>(), |p, v| p.topic_alias_maximum = Some(v)),
        0x23 => set(1..=u16::MAX, |p, v| p.topic_alias = Some(v)),
        0x24 => set(boolean(), |p, v| p.maximum_qos = Some(v)),
        0x25 => set(boolean(), |p, v| p.retain_available = Some(v)),
        0x26 => set((string(), string()), |p, v| p.user_properties.push(v)),
        0x27 => set(1..=u32::MAX, |p, v| p.maximum_packet_size = Some(v)),
        0x28 => set(boolean(), |p, v| {
            p.wildcard_subscription_available = Some(v)
        }),
        0x29 => set(boolean(), |p, v| {
            p.subscription_identifier_available = Some(v)
        }),
        0x2A => set(boolean(), |p, v| p.shared_subscription_available = Some(v)),
        other => panic!("no strategy for property {other:#04x}"),
    }
}

/// Properties drawn from `allowed`. A single-valued property drawn twice keeps its last
/// value, so what is encoded is what the decoder accepts.
fn properties(allowed: &'static [u8]) -> impl Strategy<Value = Properties> {
    vec(select(allowed).prop_flat_map(property), 0..8).prop_map(|parts| {
        let mut merged = Properties::default();
        for part in parts {
            merge(&mut merged, part);
        }
        merged
    })
}

/// Moves every property set in `part` into `into`.
fn merge(into: &mut Properties, part: Properties) {
    macro_rules! take {
        ($($single:ident),*; $($repeated:ident),*) => {
            $( if part.$single.is_some() { into.$single = part.$single; } )*
            $( into.$repeated.extend(part.$repeated); )*
        };
    }
    take!(
        payload_format_indicator, message_expiry_interval, content_type, response_topic,
        correlation_data, session_expiry_interval, assigned_client_identifier, server_keep_alive,
        authentication_method, authentication_data, request_problem_information,
        will_delay_interval, request_response_information, response_information,
        server_reference, reason_string, receive_maximum, topic_alias_maximum, topic_alias,
        maximum_qos, retain_available, maximum_packet_size, wildcard_subscription_available,
        subscription_identifier_available, shared_subscription_available;
        subscription_identifiers, user_properties
    );
}

/// Properties for the version: arbitrary allowed ones on 5.0, none on 3.1.1.
fn properties_for(version: ProtocolVersion, allowed: &'static [u8]) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        properties(allowed).boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let protocol = if version.is_v5() {
        Just(V5).boxed()
    } else {
        select(&[V31, V311][..]).boxed()
    };
    let will = prop::option::of((
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        properties_for(version, WILL_PROPERTIES),
    ));
    (
        protocol,
        any::<bool>(),
        any::<u16>(),
        string(),
        will,
        prop::option::of(string()),
        prop::option::of(binary()),
        properties_for(version, CONNECT_PROPERTIES),
    )
        .prop_map(
            |(
                protocol,
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            )| {
                // 3.1.1 does not allow a password without a user name.
                let password = if protocol.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                let will = will.map(|(topic, payload, qos, retain, properties)| Will {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties,
                });
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        CONNACK_REASONS
    } else {
        V311_CONNACK_REASONS
    };
    (
        any::<bool>(),
        reason(codes),
        properties_for(version, CONNACK_PROPERTIES),
    )
        .prop_map(|(session_present, code, properties)| {
            // A refused connection never has a session.
            let session_present = session_present && !code.is_error();
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        vec(any::<u8>(), 0..64),
        properties_for(version, PUBLISH_PROPERTIES),
    )
        .prop_map(
            move |(dup, qos, retain, topic, use_alias_only, packet_id, payload, properties)| {
                let topic = if properties.topic_alias.is_some() && use_alias_only {
                    TopicName::empty()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

fn ack(
    version: ProtocolVersion,
    codes: &'static [u8],
) -> impl Strategy<Value = (PacketId, ReasonCode, Properties)> {
    let reason = if version.is_v5() {
        reason(codes).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), reason, properties_for(version, ACK_PROPERTIES))
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        move |(qos, no_local, retain_as_published, handling)| {
            if !version.is_v5() {
                return SubscriptionOptions::with_qos(qos);
            }
            let retain_handling = match handling {
                0 => RetainHandling::OnSubscribe,
                1 => RetainHandling::OnNewSubscription,
                _ => RetainHandling::Never,
            };
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            }
        },
    );
    (
        packet_id(),
        vec((topic_filter(), options), 1..5),
        properties_for(version, SUBSCRIBE_PROPERTIES),
    )
        .prop_map(|(packet_id, mut filters, mut properties)| {
            // No local is a protocol error on a shared subscription, and SUBSCRIBE carries
            // at most one subscription identifier.
            for (filter, options) in &mut filters {
                if filter.share().is_some() {
                    options.no_local = false;
                }
            }
            properties.subscription_identifiers.truncate(1);
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        SUBACK_REASONS
    } else {
        V311_SUBACK_REASONS
    };
    (
        packet_id(),
        vec(reason(codes), 1..5),
        properties_for(version, ACK_PROPERTIES),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(topic_filter(), 1..5),
        properties_for(version, UNSUBSCRIBE_PROPERTIES),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if version.is_v5() {
        vec(reason(UNSUBACK_REASONS), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        packet_id(),
        reasons,
        properties_for(version, ACK_PROPERTIES),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn disconnect(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !version.is_v5() {
        return Just(Packet::Disconnect(Disconnect::default())).boxed();
    }
    (
        reason(DISCONNECT_REASONS),
        properties(DISCONNECT_PROPERTIES),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
        .boxed()
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(AUTH_REASONS), properties(AUTH_PROPERTIES))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any packet the decoder accepts for `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        1 => connect(version),
        1 => connack(version),
        4 => publish(version),
        1 => ack(version, PUBACK_REASONS).prop_map(|(packet_id, reason, properties)| Packet::PubAck(PubAck { packet_id, reason, properties })),
        1 => ack(version, PUBACK_REASONS).prop_map(|(packet_id, reason, properties)| Packet::PubRec(PubRec { packet_id, reason, properties })),
        1 => ack(version, PUBREL_REASONS).prop_map(|(packet_id, reason, properties)| Packet::PubRel(PubRel { packet_id, reason, properties })),
        1 => ack(version, PUBREL_REASONS).prop_map(|(packet_id, reason, properties)| Packet::PubComp(PubComp { packet_id, reason, properties })),
        1 => subscribe(version),
        1 => suback(version),
        1 => unsubscribe(version),
        1 => unsuback(version),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect(version),
    ];
    if version.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(&[V31, V311, V5][..])
}

fn assert_round_trip(
    packet: Packet,
    version: ProtocolVersion,
    prefix: &[u8],
) -> Result<(), TestCaseError> {
    // `encode` appends: whatever is already in the buffer stays in front.
    let mut out = BytesMut::from(prefix);
    encode(&packet, version, &mut out)
        .map_err(|error| TestCaseError::fail(format!("encode failed: {error}")))?;
    prop_assert_eq!(&out[..prefix.len()], prefix);
    let written = out.len() - prefix.len();
    prop_assert_eq!(encoded_len(&packet, version), Ok(written));

    // `encode_to_vec` writes the same bytes.
    let mut vec_out = prefix.to_vec();
    prop_assert_eq!(encode_to_vec(&packet, version, &mut vec_out), Ok(()));
    prop_assert_eq!(&vec_out[..], &out[..]);

    let mut wire = out.split_off(prefix.len());
    let decoded = decode(&mut wire, version, written);
    prop_assert_eq!(decoded, Ok(Some(packet)));
    prop_assert!(wire.is_empty(), "{} bytes left over", wire.len());
    Ok(())
}

/// Decodes until the buffer runs dry or an error; panicking is the only failure.
fn decode_all(bytes: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = decode(&mut buf, version, 4096) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_v311_packet_decodes_to_what_was_encoded(packet in packet(V311), prefix in vec(any::<u8>(), 0..4)) {
        assert_round_trip(packet, V311, &prefix)?;
    }

    #[test]
    fn every_v5_packet_decodes_to_what_was_encoded(packet in packet(V5), prefix in vec(any::<u8>(), 0..4)) {
        assert_round_trip(packet, V5, &prefix)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..256), version in version()) {
        decode_all(&bytes, version);
    }

    #[test]
    fn corrupted_packets_never_panic_the_decoder(
        packet in packet(V5),
        version in version(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut out = BytesMut::new();
        // A 5.0 packet may have no 3.1.1 form (AUTH); there is nothing to corrupt then.
        if encode(&packet, version, &mut out).is_err() {
            return Ok(());
        }
        let mut bytes = out.to_vec();
        for (index, value) in flips {
            let position = index.index(bytes.len());
            bytes[position] = value;
        }
        decode_all(&bytes, version);
    }

    #[test]
    fn a_packet_decodes_only_once_its_last_byte_arrives(packet in packet(V5)) {
        let mut out = BytesMut::new();
        encode(&packet, V5, &mut out).map_err(|error| TestCaseError::fail(error.to_string()))?;
        for cut in 0..out.len() {
            let mut partial = BytesMut::from(&out[..cut]);
            prop_assert_eq!(decode(&mut partial, V5, usize::MAX), Ok(None));
            prop_assert_eq!(partial.len(), cut);
        }
    }
}
