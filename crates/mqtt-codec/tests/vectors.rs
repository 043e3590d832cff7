//! Byte-exact packet vectors written from the MQTT 3.1.1 and 5.0 specifications.
//!
//! Each valid vector is decoded to the expected packet and the packet is encoded back to
//! the same bytes. Vectors marked `decode_only` are legal but not the form the encoder
//! chooses (5.0 long forms of a success acknowledgement); `encode_only` ones show how the
//! encoder maps what 3.1.1 cannot carry. The malformed table maps broken input to the
//! error the decoder must give.

use bytes::{Bytes, BytesMut};
use fleetwire_mqtt_codec::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Packet, PacketId, PacketType,
    Properties, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, TopicError, TopicFilter, TopicName,
    UnsubAck, Unsubscribe, Will, decode, encode, encoded_len,
};

use ProtocolVersion::{V5, V31, V311};

/// A piece of a wire vector: a byte written as an integer literal, or a string's bytes.
trait Part {
    fn append(&self, out: &mut Vec<u8>);
}

impl Part for i32 {
    fn append(&self, out: &mut Vec<u8>) {
        out.push(u8::try_from(*self).expect("a vector byte is 0..=255"));
    }
}

impl Part for &str {
    fn append(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

/// Builds wire bytes from bytes and strings: `wire![0x00, 0x04, "MQTT"]`.
macro_rules! wire {
    ($($part:expr),* $(,)?) => {{
        let mut bytes: Vec<u8> = Vec::new();
        $( Part::append(&$part, &mut bytes); )*
        bytes
    }};
}

fn topic(text: &str) -> TopicName {
    TopicName::new(text).expect("test topic is valid")
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text).expect("test filter is valid")
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("test packet id is not 0")
}

fn none() -> Properties {
    Properties::default()
}

fn user(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Both,
    DecodeOnly,
    EncodeOnly,
}

struct Vector {
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    packet: Packet,
    direction: Direction,
}

fn both(name: &'static str, version: ProtocolVersion, bytes: Vec<u8>, packet: Packet) -> Vector {
    Vector {
        name,
        version,
        bytes,
        packet,
        direction: Direction::Both,
    }
}

fn decode_only(
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    packet: Packet,
) -> Vector {
    Vector {
        name,
        version,
        bytes,
        packet,
        direction: Direction::DecodeOnly,
    }
}

fn encode_only(
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    packet: Packet,
) -> Vector {
    Vector {
        name,
        version,
        bytes,
        packet,
        direction: Direction::EncodeOnly,
    }
}

fn check(vectors: &[Vector]) {
    for vector in vectors {
        let name = vector.name;
        if vector.direction != Direction::EncodeOnly {
            let mut buf = BytesMut::from(&vector.bytes[..]);
            let decoded = decode(&mut buf, vector.version, usize::MAX)
                .unwrap_or_else(|error| panic!("{name}: decode failed: {error}"))
                .unwrap_or_else(|| panic!("{name}: decode wanted more bytes"));
            assert_eq!(decoded, vector.packet, "{name}: decoded packet");
            assert!(
                buf.is_empty(),
                "{name}: {} bytes left in the buffer",
                buf.len()
            );
        }
        if vector.direction != Direction::DecodeOnly {
            let mut out = BytesMut::new();
            encode(&vector.packet, vector.version, &mut out)
                .unwrap_or_else(|error| panic!("{name}: encode failed: {error}"));
            assert_eq!(out[..], vector.bytes[..], "{name}: encoded bytes");
            let len = encoded_len(&vector.packet, vector.version)
                .expect("encoded_len agrees with encode");
            assert_eq!(len, vector.bytes.len(), "{name}: encoded_len");
        }
    }
}

fn connect_v311_vectors() -> Vec<Vector> {
    vec![
        both(
            "minimal clean session",
            V311,
            wire![
                0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: true,
                keep_alive: 60,
                client_id: "c1".into(),
                will: None,
                username: None,
                password: None,
                properties: none(),
            })),
        ),
        both(
            "will, user name and password",
            V311,
            wire![
                0x10, 0x1F, 0x00, 0x04, "MQTT", 0x04,
                0xEE, // user name, password, will retain, will QoS 1, will, clean session
                0x00, 0x0A, // keep-alive 10 s
                0x00, 0x03, "dev", 0x00, 0x03, "w/t", 0x00, 0x03, "bye", 0x00, 0x01, "u", 0x00,
                0x01, "p",
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: true,
                keep_alive: 10,
                client_id: "dev".into(),
                will: Some(Will {
                    topic: topic("w/t"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: none(),
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
                properties: none(),
            })),
        ),
        both(
            "empty client id without clean session",
            V311,
            wire![
                0x10, 0x0C, 0x00, 0x04, "MQTT", 0x04, 0x00, 0x00, 0x00, 0x00, 0x00
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V311,
                clean_start: false,
                keep_alive: 0,
                client_id: String::new(),
                will: None,
                username: None,
                password: None,
                properties: none(),
            })),
        ),
    ]
}

#[test]
fn connect_v311_vectors_decode_and_encode_byte_exact() {
    check(&connect_v311_vectors());
}

#[test]
fn connect_v31_mqisdp_level_3_is_read_as_3_1_1() {
    check(&[both(
        "MQIsdp level 3",
        V31,
        wire![
            0x10, 0x10, 0x00, 0x06, "MQIsdp", 0x03, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"
        ],
        Packet::Connect(Box::new(Connect {
            protocol: V31,
            clean_start: true,
            keep_alive: 60,
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
            properties: none(),
        })),
    )]);
}

#[test]
fn connect_is_decoded_by_the_level_it_carries_not_the_negotiated_version() {
    let mut buf = BytesMut::from(
        &wire![
            0x10, 0x0F, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x02, "c1"
        ][..],
    );
    let packet = decode(&mut buf, V311, 1024)
        .expect("valid")
        .expect("complete");
    let Packet::Connect(connect) = packet else {
        panic!("expected CONNECT, got {packet:?}")
    };
    assert_eq!(connect.protocol, V5);
}

fn connect_v5_vectors() -> Vec<Vector> {
    vec![
        both(
            "minimal",
            V5,
            wire![
                0x10, 0x0F, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x02, "c1"
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 60,
                client_id: "c1".into(),
                will: None,
                username: None,
                password: None,
                properties: none(),
            })),
        ),
        both(
            "every connect and will property",
            V5,
            wire![
                0x10,
                0x6D,
                0x00,
                0x04,
                "MQTT",
                0x05,
                0xCE, // user name, password, will QoS 1, will, clean start
                0x00,
                0x1E,
                0x28, // connect properties: 40 bytes
                0x11,
                0x00,
                0x00,
                0x0E,
                0x10, // session expiry interval 3600
                0x15,
                0x00,
                0x05,
                "SCRAM", // authentication method
                0x16,
                0x00,
                0x02,
                0x01,
                0x02, // authentication data
                0x17,
                0x00, // request problem information 0
                0x19,
                0x01, // request response information 1
                0x21,
                0x00,
                0x14, // receive maximum 20
                0x22,
                0x00,
                0x0A, // topic alias maximum 10
                0x26,
                0x00,
                0x01,
                "k",
                0x00,
                0x01,
                "v", // user property
                0x27,
                0x00,
                0x00,
                0x04,
                0x00, // maximum packet size 1024
                0x00,
                0x03,
                "dev",
                0x28, // will properties: 40 bytes
                0x01,
                0x01, // payload format indicator UTF-8
                0x02,
                0x00,
                0x00,
                0x00,
                0x3C, // message expiry interval 60
                0x03,
                0x00,
                0x0A,
                "text/plain", // content type
                0x08,
                0x00,
                0x01,
                "r", // response topic
                0x09,
                0x00,
                0x01,
                0xAB, // correlation data
                0x18,
                0x00,
                0x00,
                0x00,
                0x05, // will delay interval 5
                0x26,
                0x00,
                0x01,
                "a",
                0x00,
                0x01,
                "b", // user property
                0x00,
                0x01,
                "w",
                0x00,
                0x01,
                "x",
                0x00,
                0x01,
                "u",
                0x00,
                0x01,
                "p",
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 30,
                client_id: "dev".into(),
                will: Some(Will {
                    topic: topic("w"),
                    payload: Bytes::from_static(b"x"),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties {
                        payload_format_indicator: Some(1),
                        message_expiry_interval: Some(60),
                        content_type: Some("text/plain".into()),
                        response_topic: Some(topic("r")),
                        correlation_data: Some(Bytes::from_static(&[0xAB])),
                        will_delay_interval: Some(5),
                        user_properties: vec![user("a", "b")],
                        ..none()
                    },
                }),
                username: Some("u".into()),
                password: Some(Bytes::from_static(b"p")),
                properties: Properties {
                    session_expiry_interval: Some(3600),
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(Bytes::from_static(&[1, 2])),
                    request_problem_information: Some(0),
                    request_response_information: Some(1),
                    receive_maximum: Some(20),
                    topic_alias_maximum: Some(10),
                    user_properties: vec![user("k", "v")],
                    maximum_packet_size: Some(1024),
                    ..none()
                },
            })),
        ),
        both(
            "password without user name is allowed in 5.0",
            V5,
            wire![
                0x10, 0x12, 0x00, 0x04, "MQTT", 0x05, 0x42, 0x00, 0x3C, 0x00, 0x00, 0x02, "c1",
                0x00, 0x01, "p"
            ],
            Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                keep_alive: 60,
                client_id: "c1".into(),
                will: None,
                username: None,
                password: Some(Bytes::from_static(b"p")),
                properties: none(),
            })),
        ),
    ]
}

#[test]
fn connect_v5_vectors_decode_and_encode_byte_exact() {
    check(&connect_v5_vectors());
}

fn connack(session_present: bool, code: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties: none(),
    })
}

fn connack_v311_vectors() -> Vec<Vector> {
    vec![
        both(
            "accepted",
            V311,
            wire![0x20, 0x02, 0x00, 0x00],
            connack(false, ReasonCode::SUCCESS),
        ),
        both(
            "session present",
            V311,
            wire![0x20, 0x02, 0x01, 0x00],
            connack(true, ReasonCode::SUCCESS),
        ),
        both(
            "1 unacceptable protocol version",
            V311,
            wire![0x20, 0x02, 0x00, 0x01],
            connack(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        ),
        both(
            "2 identifier rejected",
            V311,
            wire![0x20, 0x02, 0x00, 0x02],
            connack(false, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        ),
        both(
            "3 server unavailable",
            V311,
            wire![0x20, 0x02, 0x00, 0x03],
            connack(false, ReasonCode::SERVER_UNAVAILABLE),
        ),
        both(
            "4 bad user name or password",
            V311,
            wire![0x20, 0x02, 0x00, 0x04],
            connack(false, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        ),
        both(
            "5 not authorized",
            V311,
            wire![0x20, 0x02, 0x00, 0x05],
            connack(false, ReasonCode::NOT_AUTHORIZED),
        ),
    ]
}

#[test]
fn connack_v311_vectors_map_return_codes_to_reason_codes() {
    check(&connack_v311_vectors());
}

#[test]
fn connack_v311_encodes_5_0_only_codes_as_the_closest_return_code() {
    check(&[
        encode_only(
            "banned is not authorized",
            V311,
            wire![0x20, 0x02, 0x00, 0x05],
            connack(false, ReasonCode::BANNED),
        ),
        encode_only(
            "bad authentication method is bad credentials",
            V311,
            wire![0x20, 0x02, 0x00, 0x04],
            connack(false, ReasonCode::BAD_AUTHENTICATION_METHOD),
        ),
        encode_only(
            "unspecified error is server unavailable",
            V311,
            wire![0x20, 0x02, 0x00, 0x03],
            connack(false, ReasonCode::UNSPECIFIED_ERROR),
        ),
        encode_only(
            "server busy is server unavailable",
            V311,
            wire![0x20, 0x02, 0x00, 0x03],
            connack(false, ReasonCode::SERVER_BUSY),
        ),
        encode_only(
            "properties are not encoded",
            V311,
            wire![0x20, 0x02, 0x00, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::SUCCESS,
                properties: Properties {
                    receive_maximum: Some(10),
                    ..none()
                },
            }),
        ),
    ]);
}

fn connack_v5_vectors() -> Vec<Vector> {
    vec![
        both(
            "success",
            V5,
            wire![0x20, 0x03, 0x00, 0x00, 0x00],
            connack(false, ReasonCode::SUCCESS),
        ),
        both(
            "not authorized",
            V5,
            wire![0x20, 0x03, 0x00, 0x87, 0x00],
            connack(false, ReasonCode::NOT_AUTHORIZED),
        ),
        both(
            "every connack property",
            V5,
            wire![
                0x20, 0x4C, 0x01, 0x00, 0x49, // properties: 73 bytes
                0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
                0x12, 0x00, 0x06, "auto-1", // assigned client identifier
                0x13, 0x00, 0x1E, // server keep alive 30
                0x15, 0x00, 0x01, "m", // authentication method
                0x16, 0x00, 0x01, 0x09, // authentication data
                0x1A, 0x00, 0x04, "resp", // response information
                0x1C, 0x00, 0x05, "other", // server reference
                0x1F, 0x00, 0x02, "ok", // reason string
                0x21, 0x00, 0x64, // receive maximum 100
                0x22, 0x00, 0x05, // topic alias maximum 5
                0x24, 0x01, // maximum QoS 1
                0x25, 0x00, // retain available 0
                0x26, 0x00, 0x01, "x", 0x00, 0x01, "y", // user property
                0x27, 0x00, 0x01, 0x00, 0x00, // maximum packet size 65536
                0x28, 0x01, // wildcard subscription available
                0x29, 0x00, // subscription identifiers available
                0x2A, 0x01, // shared subscription available
            ],
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ReasonCode::SUCCESS,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    assigned_client_identifier: Some("auto-1".into()),
                    server_keep_alive: Some(30),
                    authentication_method: Some("m".into()),
                    authentication_data: Some(Bytes::from_static(&[9])),
                    response_information: Some("resp".into()),
                    server_reference: Some("other".into()),
                    reason_string: Some("ok".into()),
                    receive_maximum: Some(100),
                    topic_alias_maximum: Some(5),
                    maximum_qos: Some(1),
                    retain_available: Some(0),
                    user_properties: vec![user("x", "y")],
                    maximum_packet_size: Some(65536),
                    wildcard_subscription_available: Some(1),
                    subscription_identifier_available: Some(0),
                    shared_subscription_available: Some(1),
                    ..none()
                },
            }),
        ),
    ]
}

#[test]
fn connack_v5_vectors_decode_and_encode_byte_exact() {
    check(&connack_v5_vectors());
}

fn publish_v311_vectors() -> Vec<Vector> {
    vec![
        both(
            "QoS 0",
            V311,
            wire![0x30, 0x07, 0x00, 0x03, "a/b", "hi"],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("a/b"),
                packet_id: None,
                payload: Bytes::from_static(b"hi"),
                properties: none(),
            }),
        ),
        both(
            "QoS 1 with DUP and retain",
            V311,
            wire![0x3B, 0x09, 0x00, 0x03, "a/b", 0x00, 0x0A, "hi"],
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic("a/b"),
                packet_id: Some(id(10)),
                payload: Bytes::from_static(b"hi"),
                properties: none(),
            }),
        ),
        both(
            "QoS 2 with an empty payload",
            V311,
            wire![0x34, 0x07, 0x00, 0x03, "a/b", 0x00, 0x01],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: topic("a/b"),
                packet_id: Some(id(1)),
                payload: Bytes::new(),
                properties: none(),
            }),
        ),
        both(
            "a 200-byte payload needs a two-byte remaining length",
            V311,
            {
                let mut bytes = wire![0x30, 0xCD, 0x01, 0x00, 0x03, "a/b"];
                bytes.extend_from_slice(&[0x5A; 200]);
                bytes
            },
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("a/b"),
                packet_id: None,
                payload: Bytes::from_static(&[0x5A; 200]),
                properties: none(),
            }),
        ),
        both(
            "multi-byte UTF-8 topic",
            V311,
            wire![0x30, 0x0A, 0x00, 0x07, "t/\u{e9}t\u{e9}", "!"],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("t/\u{e9}t\u{e9}"),
                packet_id: None,
                payload: Bytes::from_static(b"!"),
                properties: none(),
            }),
        ),
    ]
}

#[test]
fn publish_v311_vectors_decode_and_encode_byte_exact() {
    check(&publish_v311_vectors());
}

fn publish_v5_vectors() -> Vec<Vector> {
    vec![
        both(
            "QoS 0 without properties",
            V5,
            wire![0x30, 0x08, 0x00, 0x03, "a/b", 0x00, "hi"],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("a/b"),
                packet_id: None,
                payload: Bytes::from_static(b"hi"),
                properties: none(),
            }),
        ),
        both(
            "QoS 1 with every publish property",
            V5,
            wire![
                0x32, 0x32, 0x00, 0x03, "a/b", 0x00, 0x01, 0x28, // properties: 40 bytes
                0x01, 0x01, // payload format indicator UTF-8
                0x02, 0x00, 0x00, 0x00, 0x0A, // message expiry interval 10
                0x03, 0x00, 0x04, "json", // content type
                0x08, 0x00, 0x03, "r/1", // response topic
                0x09, 0x00, 0x02, 0x01, 0x02, // correlation data
                0x0B, 0x01, // subscription identifier 1
                0x0B, 0x80, 0x01, // subscription identifier 128
                0x23, 0x00, 0x07, // topic alias 7
                0x26, 0x00, 0x01, "k", 0x00, 0x01, "v", // user property
                "{}",
            ],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic("a/b"),
                packet_id: Some(id(1)),
                payload: Bytes::from_static(b"{}"),
                properties: Properties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(10),
                    content_type: Some("json".into()),
                    response_topic: Some(topic("r/1")),
                    correlation_data: Some(Bytes::from_static(&[1, 2])),
                    subscription_identifiers: vec![1, 128],
                    topic_alias: Some(7),
                    user_properties: vec![user("k", "v")],
                    ..none()
                },
            }),
        ),
        both(
            "empty topic with a topic alias",
            V5,
            wire![0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07, "hi"],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: TopicName::empty(),
                packet_id: None,
                payload: Bytes::from_static(b"hi"),
                properties: Properties {
                    topic_alias: Some(7),
                    ..none()
                },
            }),
        ),
        both(
            "repeated user properties keep their order",
            V5,
            wire![
                0x30, 0x13, 0x00, 0x01, "t", 0x0E, 0x26, 0x00, 0x01, "b", 0x00, 0x01, "1", 0x26,
                0x00, 0x01, "a", 0x00, 0x01, "2", "p",
            ],
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic("t"),
                packet_id: None,
                payload: Bytes::from_static(b"p"),
                properties: Properties {
                    user_properties: vec![user("b", "1"), user("a", "2")],
                    ..none()
                },
            }),
        ),
    ]
}

#[test]
fn publish_v5_vectors_decode_and_encode_byte_exact() {
    check(&publish_v5_vectors());
}

#[test]
fn publish_v311_does_not_encode_properties() {
    check(&[encode_only(
        "properties dropped",
        V311,
        wire![0x30, 0x07, 0x00, 0x03, "a/b", "hi"],
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic("a/b"),
            packet_id: None,
            payload: Bytes::from_static(b"hi"),
            properties: Properties {
                message_expiry_interval: Some(5),
                ..none()
            },
        }),
    )]);
}

#[test]
fn decoded_publish_payload_and_topic_share_the_read_buffer() {
    let mut buf = BytesMut::from(&wire![0x30, 0x07, 0x00, 0x03, "a/b", "hi"][..]);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(publish)) = decode(&mut buf, V311, 1024).expect("valid") else {
        panic!("expected a PUBLISH");
    };
    assert_eq!(
        publish.payload.as_ptr() as usize,
        start + 7,
        "payload is a slice of the buffer"
    );
    assert_eq!(
        publish.topic.as_str().as_ptr() as usize,
        start + 4,
        "topic is a slice of the buffer"
    );
}

fn pub_acks_v311() -> Vec<Vector> {
    vec![
        both(
            "PUBACK",
            V311,
            wire![0x40, 0x02, 0x00, 0x01],
            Packet::PubAck(PubAck::new(id(1))),
        ),
        both(
            "PUBREC",
            V311,
            wire![0x50, 0x02, 0x00, 0x02],
            Packet::PubRec(PubRec::new(id(2))),
        ),
        both(
            "PUBREL",
            V311,
            wire![0x62, 0x02, 0x00, 0x03],
            Packet::PubRel(PubRel::new(id(3))),
        ),
        both(
            "PUBCOMP",
            V311,
            wire![0x70, 0x02, 0xFF, 0xFF],
            Packet::PubComp(PubComp::new(id(65535))),
        ),
    ]
}

#[test]
fn puback_pubrec_pubrel_pubcomp_v311_vectors_decode_and_encode_byte_exact() {
    check(&pub_acks_v311());
}

#[test]
fn acks_v311_do_not_encode_reason_codes_or_properties() {
    check(&[encode_only(
        "reason and properties dropped",
        V311,
        wire![0x40, 0x02, 0x00, 0x01],
        Packet::PubAck(PubAck {
            packet_id: id(1),
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            properties: Properties {
                reason_string: Some("x".into()),
                ..none()
            },
        }),
    )]);
}

fn pub_acks_v5() -> Vec<Vector> {
    vec![
        both(
            "PUBACK short form",
            V5,
            wire![0x40, 0x02, 0x00, 0x01],
            Packet::PubAck(PubAck::new(id(1))),
        ),
        both(
            "PUBACK reason without properties",
            V5,
            wire![0x40, 0x03, 0x00, 0x01, 0x10],
            Packet::PubAck(PubAck {
                packet_id: id(1),
                reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: none(),
            }),
        ),
        both(
            "PUBACK reason with a reason string",
            V5,
            wire![0x40, 0x0B, 0x00, 0x01, 0x87, 0x07, 0x1F, 0x00, 0x04, "nope"],
            Packet::PubAck(PubAck {
                packet_id: id(1),
                reason: ReasonCode::NOT_AUTHORIZED,
                properties: Properties {
                    reason_string: Some("nope".into()),
                    ..none()
                },
            }),
        ),
        both(
            "PUBACK success with a user property",
            V5,
            wire![
                0x40, 0x0B, 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x01, "a", 0x00, 0x01, "b"
            ],
            Packet::PubAck(PubAck {
                packet_id: id(1),
                reason: ReasonCode::SUCCESS,
                properties: Properties {
                    user_properties: vec![user("a", "b")],
                    ..none()
                },
            }),
        ),
        decode_only(
            "PUBACK long form of success",
            V5,
            wire![0x40, 0x04, 0x00, 0x01, 0x00, 0x00],
            Packet::PubAck(PubAck::new(id(1))),
        ),
        decode_only(
            "PUBACK reason with an empty property block",
            V5,
            wire![0x40, 0x04, 0x00, 0x01, 0x97, 0x00],
            Packet::PubAck(PubAck {
                packet_id: id(1),
                reason: ReasonCode::QUOTA_EXCEEDED,
                properties: none(),
            }),
        ),
        both(
            "PUBREC short form",
            V5,
            wire![0x50, 0x02, 0x00, 0x02],
            Packet::PubRec(PubRec::new(id(2))),
        ),
        both(
            "PUBREC payload format invalid",
            V5,
            wire![0x50, 0x03, 0x00, 0x02, 0x99],
            Packet::PubRec(PubRec {
                packet_id: id(2),
                reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
                properties: none(),
            }),
        ),
        both(
            "PUBREL short form",
            V5,
            wire![0x62, 0x02, 0x00, 0x03],
            Packet::PubRel(PubRel::new(id(3))),
        ),
        both(
            "PUBREL packet identifier not found",
            V5,
            wire![0x62, 0x03, 0x00, 0x03, 0x92],
            Packet::PubRel(PubRel {
                packet_id: id(3),
                reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: none(),
            }),
        ),
        both(
            "PUBCOMP short form",
            V5,
            wire![0x70, 0x02, 0x00, 0x04],
            Packet::PubComp(PubComp::new(id(4))),
        ),
        both(
            "PUBCOMP with a reason string",
            V5,
            wire![0x70, 0x09, 0x00, 0x04, 0x92, 0x05, 0x1F, 0x00, 0x02, "no"],
            Packet::PubComp(PubComp {
                packet_id: id(4),
                reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: Properties {
                    reason_string: Some("no".into()),
                    ..none()
                },
            }),
        ),
    ]
}

#[test]
fn puback_pubrec_pubrel_pubcomp_v5_vectors_use_the_short_forms() {
    check(&pub_acks_v5());
}

fn subscribe_v311_vectors() -> Vec<Vector> {
    vec![both(
        "two filters",
        V311,
        wire![
            0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, "a/b", 0x01, 0x00, 0x03, "c/#", 0x02
        ],
        Packet::Subscribe(Subscribe {
            packet_id: id(10),
            filters: vec![
                (
                    filter("a/b"),
                    SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                ),
                (
                    filter("c/#"),
                    SubscriptionOptions::with_qos(QoS::ExactlyOnce),
                ),
            ],
            properties: none(),
        }),
    )]
}

#[test]
fn subscribe_v311_vectors_decode_and_encode_byte_exact() {
    check(&subscribe_v311_vectors());
}

fn subscribe_v5_vectors() -> Vec<Vector> {
    vec![both(
        "options and properties",
        V5,
        wire![
            0x82,
            0x1F,
            0x00,
            0x0A,
            0x09, // properties: 9 bytes
            0x0B,
            0x05, // subscription identifier 5
            0x26,
            0x00,
            0x01,
            "k",
            0x00,
            0x01,
            "v",
            0x00,
            0x03,
            "a/+",
            0x2D, // retain handling 2, retain as published, no local, QoS 1
            0x00,
            0x0A,
            "$share/g/x",
            0x12, // retain handling 1, QoS 2
        ],
        Packet::Subscribe(Subscribe {
            packet_id: id(10),
            filters: vec![
                (
                    filter("a/+"),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::Never,
                    },
                ),
                (
                    filter("$share/g/x"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::OnNewSubscription,
                    },
                ),
            ],
            properties: Properties {
                subscription_identifiers: vec![5],
                user_properties: vec![user("k", "v")],
                ..none()
            },
        }),
    )]
}

#[test]
fn subscribe_v5_vectors_decode_and_encode_byte_exact() {
    check(&subscribe_v5_vectors());
}

#[test]
fn subscribe_v311_does_not_encode_5_0_options() {
    check(&[encode_only(
        "no local, retain as published and retain handling dropped",
        V311,
        wire![0x82, 0x08, 0x00, 0x01, 0x00, 0x03, "a/b", 0x01],
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: vec![(
                filter("a/b"),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            )],
            properties: none(),
        }),
    )]);
}

fn suback_v311_vectors() -> Vec<Vector> {
    vec![both(
        "granted QoS and failure",
        V311,
        wire![0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
        Packet::SubAck(SubAck {
            packet_id: id(10),
            reasons: vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ],
            properties: none(),
        }),
    )]
}

#[test]
fn suback_v311_vectors_decode_and_encode_byte_exact() {
    check(&suback_v311_vectors());
}

#[test]
fn suback_v311_encodes_every_5_0_failure_as_0x80() {
    check(&[encode_only(
        "failures",
        V311,
        wire![0x90, 0x05, 0x00, 0x0A, 0x80, 0x80, 0x01],
        Packet::SubAck(SubAck {
            packet_id: id(10),
            reasons: vec![
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::GRANTED_QOS_1,
            ],
            properties: Properties {
                reason_string: Some("dropped".into()),
                ..none()
            },
        }),
    )]);
}

fn suback_v5_vectors() -> Vec<Vector> {
    vec![both(
        "reasons and a reason string",
        V5,
        wire![
            0x90, 0x0C, 0x00, 0x0A, 0x05, 0x1F, 0x00, 0x02, "ok", 0x01, 0x00, 0x87, 0xA1
        ],
        Packet::SubAck(SubAck {
            packet_id: id(10),
            reasons: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::NOT_AUTHORIZED,
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            ],
            properties: Properties {
                reason_string: Some("ok".into()),
                ..none()
            },
        }),
    )]
}

#[test]
fn suback_v5_vectors_decode_and_encode_byte_exact() {
    check(&suback_v5_vectors());
}

fn unsubscribe_vectors() -> Vec<Vector> {
    vec![
        both(
            "3.1.1 one filter",
            V311,
            wire![0xA2, 0x07, 0x00, 0x0B, 0x00, 0x03, "a/b"],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(11),
                filters: vec![filter("a/b")],
                properties: none(),
            }),
        ),
        both(
            "5.0 two filters and a user property",
            V5,
            wire![
                0xA2, 0x14, 0x00, 0x0B, 0x07, 0x26, 0x00, 0x01, "a", 0x00, 0x01, "b", 0x00, 0x03,
                "a/b", 0x00, 0x03, "c/#",
            ],
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(11),
                filters: vec![filter("a/b"), filter("c/#")],
                properties: Properties {
                    user_properties: vec![user("a", "b")],
                    ..none()
                },
            }),
        ),
    ]
}

#[test]
fn unsubscribe_vectors_decode_and_encode_byte_exact() {
    check(&unsubscribe_vectors());
}

fn unsuback_vectors() -> Vec<Vector> {
    vec![
        both(
            "3.1.1 has no reason codes",
            V311,
            wire![0xB0, 0x02, 0x00, 0x0B],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(11),
                reasons: vec![],
                properties: none(),
            }),
        ),
        both(
            "5.0 success and no subscription existed",
            V5,
            wire![0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(11),
                reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
                properties: none(),
            }),
        ),
        encode_only(
            "3.1.1 drops reason codes",
            V311,
            wire![0xB0, 0x02, 0x00, 0x0B],
            Packet::UnsubAck(UnsubAck {
                packet_id: id(11),
                reasons: vec![ReasonCode::SUCCESS],
                properties: none(),
            }),
        ),
    ]
}

#[test]
fn unsuback_vectors_decode_and_encode_byte_exact() {
    check(&unsuback_vectors());
}

fn ping_and_disconnect_vectors() -> Vec<Vector> {
    vec![
        both("PINGREQ 3.1.1", V311, wire![0xC0, 0x00], Packet::PingReq),
        both("PINGRESP 3.1.1", V311, wire![0xD0, 0x00], Packet::PingResp),
        both("PINGREQ 5.0", V5, wire![0xC0, 0x00], Packet::PingReq),
        both("PINGRESP 5.0", V5, wire![0xD0, 0x00], Packet::PingResp),
        both(
            "DISCONNECT 3.1.1",
            V311,
            wire![0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
        encode_only(
            "DISCONNECT 3.1.1 has no body",
            V311,
            wire![0xE0, 0x00],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: Properties {
                    session_expiry_interval: Some(1),
                    ..none()
                },
            }),
        ),
    ]
}

#[test]
fn pingreq_pingresp_and_disconnect_v311_vectors_decode_and_encode_byte_exact() {
    check(&ping_and_disconnect_vectors());
}

fn disconnect_v5_vectors() -> Vec<Vector> {
    vec![
        both(
            "normal disconnection",
            V5,
            wire![0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
        both(
            "with will message",
            V5,
            wire![0xE0, 0x01, 0x04],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: none(),
            }),
        ),
        both(
            "session taken over with properties",
            V5,
            wire![
                0xE0, 0x11, 0x8E, 0x0F, 0x11, 0x00, 0x00, 0x00,
                0x00, // session expiry interval 0
                0x1C, 0x00, 0x01, "s", // server reference
                0x1F, 0x00, 0x03, "bye", // reason string
            ],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::SESSION_TAKEN_OVER,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    server_reference: Some("s".into()),
                    reason_string: Some("bye".into()),
                    ..none()
                },
            }),
        ),
        decode_only(
            "long form of normal disconnection",
            V5,
            wire![0xE0, 0x02, 0x00, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
    ]
}

#[test]
fn disconnect_v5_vectors_decode_and_encode_byte_exact() {
    check(&disconnect_v5_vectors());
}

fn auth_vectors() -> Vec<Vector> {
    vec![
        both(
            "success",
            V5,
            wire![0xF0, 0x00],
            Packet::Auth(Auth::default()),
        ),
        both(
            "continue authentication",
            V5,
            wire![
                0xF0, 0x10, 0x18, 0x0E, 0x15, 0x00, 0x05, "SCRAM", 0x16, 0x00, 0x03, 0x01, 0x02,
                0x03,
            ],
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties {
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(Bytes::from_static(&[1, 2, 3])),
                    ..none()
                },
            }),
        ),
        both(
            "re-authenticate without properties",
            V5,
            wire![0xF0, 0x01, 0x19],
            Packet::Auth(Auth {
                reason: ReasonCode::RE_AUTHENTICATE,
                properties: none(),
            }),
        ),
    ]
}

#[test]
fn auth_v5_vectors_decode_and_encode_byte_exact() {
    check(&auth_vectors());
}

#[test]
fn auth_cannot_be_encoded_for_3_1_1() {
    let mut out = BytesMut::new();
    let result = encode(&Packet::Auth(Auth::default()), V311, &mut out);
    assert_eq!(
        result,
        Err(EncodeError::PacketNotInVersion(PacketType::Auth))
    );
    assert!(out.is_empty(), "nothing is written on error");
}

fn publish(qos: QoS, packet_id: Option<PacketId>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic("t"),
        packet_id,
        payload: Bytes::new(),
        properties: none(),
    })
}

#[test]
fn publish_qos_and_packet_id_must_agree_to_be_encoded() {
    let mut out = BytesMut::new();
    assert!(matches!(
        encode(&publish(QoS::AtLeastOnce, None), V311, &mut out),
        Err(EncodeError::PacketIdMismatch { qos: 1, .. })
    ));
    assert!(matches!(
        encode(&publish(QoS::AtMostOnce, Some(id(1))), V5, &mut out),
        Err(EncodeError::PacketIdMismatch { qos: 0, .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn fields_over_65535_bytes_cannot_be_encoded() {
    let long = "x".repeat(65_536);
    let packet = Packet::Disconnect(Disconnect {
        reason: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties {
            reason_string: Some(long.clone()),
            ..none()
        },
    });
    assert_eq!(
        encoded_len(&packet, V5),
        Err(EncodeError::FieldTooLong {
            field: "reason string",
            len: 65_536
        })
    );
    let connect = Packet::Connect(Box::new(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 0,
        client_id: long,
        will: None,
        username: None,
        password: None,
        properties: none(),
    }));
    assert_eq!(
        encoded_len(&connect, V311),
        Err(EncodeError::FieldTooLong {
            field: "client identifier",
            len: 65_536
        })
    );
}

#[test]
fn a_field_of_exactly_65535_bytes_is_encoded() {
    let packet = Packet::PubAck(PubAck {
        packet_id: id(1),
        reason: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties {
            reason_string: Some("x".repeat(65_535)),
            ..none()
        },
    });
    let mut out = BytesMut::new();
    encode(&packet, V5, &mut out).expect("65535 bytes fit a length prefix");
    // Fixed header 1 + 3, packet id 2, reason 1, property length 3, id 1, length 2, text.
    assert_eq!(out.len(), 4 + 2 + 1 + 3 + 1 + 2 + 65_535);
    let decoded = decode(&mut out, V5, usize::MAX)
        .expect("valid")
        .expect("complete");
    assert_eq!(decoded, packet);
}

#[test]
fn a_body_over_268435455_bytes_cannot_be_encoded() {
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("t"),
        packet_id: None,
        payload: Bytes::from(vec![0u8; 268_435_455]),
        properties: none(),
    });
    assert_eq!(
        encoded_len(&packet, V311),
        Err(EncodeError::PacketTooLarge(268_435_455 + 3))
    );
}

#[test]
fn subscription_identifier_outside_1_to_268435455_cannot_be_encoded() {
    for value in [0, 268_435_456] {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: vec![(filter("a"), SubscriptionOptions::with_qos(QoS::AtMostOnce))],
            properties: Properties {
                subscription_identifiers: vec![value],
                ..none()
            },
        });
        assert_eq!(
            encoded_len(&packet, V5),
            Err(EncodeError::InvalidPropertyValue { id: 0x0B, value })
        );
    }
}

#[test]
fn remaining_length_uses_four_bytes_for_the_largest_packets() {
    // 2,097,152 bytes of body is the smallest remaining length that needs four bytes.
    let payload_len = 2_097_152 - 3;
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("t"),
        packet_id: None,
        payload: Bytes::from(vec![7u8; payload_len]),
        properties: none(),
    });
    let mut out = BytesMut::new();
    encode(&packet, V311, &mut out).expect("fits");
    assert_eq!(out[..5], [0x30, 0x80, 0x80, 0x80, 0x01]);
    assert_eq!(out.len(), 5 + 2_097_152);
    assert_eq!(decode(&mut out, V311, usize::MAX), Ok(Some(packet)));
}

fn all_valid_vectors() -> Vec<Vector> {
    let mut vectors = Vec::new();
    vectors.extend(connect_v311_vectors());
    vectors.extend(connect_v5_vectors());
    vectors.extend(connack_v311_vectors());
    vectors.extend(connack_v5_vectors());
    vectors.extend(publish_v311_vectors());
    vectors.extend(publish_v5_vectors());
    vectors.extend(pub_acks_v311());
    vectors.extend(pub_acks_v5());
    vectors.extend(subscribe_v311_vectors());
    vectors.extend(subscribe_v5_vectors());
    vectors.extend(suback_v311_vectors());
    vectors.extend(suback_v5_vectors());
    vectors.extend(unsubscribe_vectors());
    vectors.extend(unsuback_vectors());
    vectors.extend(ping_and_disconnect_vectors());
    vectors.extend(disconnect_v5_vectors());
    vectors.extend(auth_vectors());
    vectors.retain(|vector| vector.direction != Direction::EncodeOnly);
    vectors
}

#[test]
fn a_stream_fed_one_byte_at_a_time_yields_the_same_packets() {
    for version in [V311, V5] {
        let vectors: Vec<Vector> = all_valid_vectors()
            .into_iter()
            .filter(|vector| {
                vector.version == version || matches!(vector.packet, Packet::Connect(_))
            })
            .collect();
        let stream: Vec<u8> = vectors
            .iter()
            .flat_map(|vector| vector.bytes.iter().copied())
            .collect();

        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for &byte in &stream {
            buf.extend_from_slice(&[byte]);
            loop {
                let before = buf.clone();
                match decode(&mut buf, version, usize::MAX) {
                    Ok(Some(packet)) => decoded.push(packet),
                    Ok(None) => {
                        assert_eq!(buf, before, "Ok(None) must not consume anything");
                        break;
                    }
                    Err(error) => panic!("{version:?}: stream failed to decode: {error}"),
                }
            }
        }
        assert!(buf.is_empty(), "{version:?}: {} bytes left over", buf.len());
        let expected: Vec<Packet> = vectors.into_iter().map(|vector| vector.packet).collect();
        assert_eq!(decoded, expected, "{version:?}");
    }
}

#[test]
fn back_to_back_packets_in_one_buffer_are_decoded_in_order() {
    let vectors = publish_v311_vectors();
    let mut buf = BytesMut::new();
    for vector in &vectors {
        buf.extend_from_slice(&vector.bytes);
    }
    for vector in &vectors {
        assert_eq!(
            decode(&mut buf, V311, usize::MAX),
            Ok(Some(vector.packet.clone())),
            "{}",
            vector.name
        );
    }
    assert_eq!(decode(&mut buf, V311, usize::MAX), Ok(None));
}

#[test]
fn packet_too_large_is_reported_before_the_body_arrives() {
    // PUBLISH announcing 16,383 bytes; only the fixed header has arrived.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
    assert_eq!(
        decode(&mut buf, V311, 1000),
        Err(DecodeError::PacketTooLarge {
            size: 16_386,
            max: 1000
        })
    );
    assert_eq!(buf.len(), 3, "the header is not consumed");
}

#[test]
fn max_packet_size_counts_the_fixed_header() {
    let bytes = wire![0x30, 0x07, 0x00, 0x03, "a/b", "hi"];
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, V311, 8),
        Err(DecodeError::PacketTooLarge { size: 9, max: 8 })
    );
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        decode(&mut buf, V311, 9),
        Ok(Some(Packet::Publish(_)))
    ));
}

#[test]
fn an_empty_or_partial_header_needs_more_bytes() {
    for partial in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 0x80, 0x80, 0x80]] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(
            decode(&mut buf, V311, usize::MAX),
            Ok(None),
            "{partial:02x?}"
        );
        assert_eq!(&buf[..], partial);
    }
}

/// One test per malformed input, named after the rule it breaks.
macro_rules! malformed {
    ($($name:ident: $version:expr, $bytes:expr => $error:pat),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let bytes: Vec<u8> = $bytes;
                let mut buf = BytesMut::from(&bytes[..]);
                let result = decode(&mut buf, $version, usize::MAX);
                assert!(matches!(result, Err($error)), "{bytes:02x?} gave {result:?}");
            }
        )*
    };
}

malformed! {
    packet_type_0_is_reserved:
        V311, wire![0x00, 0x00] => DecodeError::ReservedPacketType(0),
    pubrel_flags_must_be_0010:
        V311, wire![0x60, 0x02, 0x00, 0x01]
        => DecodeError::InvalidFlags { packet: PacketType::PubRel, flags: 0, expected: 0b0010 },
    subscribe_flags_must_be_0010:
        V311, wire![0x80, 0x08, 0x00, 0x01, 0x00, 0x03, "a/b", 0x00]
        => DecodeError::InvalidFlags { packet: PacketType::Subscribe, flags: 0, expected: 0b0010 },
    unsubscribe_flags_must_be_0010:
        V5, wire![0xA3, 0x08, 0x00, 0x01, 0x00, 0x00, 0x03, "a/b"]
        => DecodeError::InvalidFlags { packet: PacketType::Unsubscribe, flags: 0b0011, expected: 0b0010 },
    puback_flags_must_be_0:
        V311, wire![0x41, 0x02, 0x00, 0x01]
        => DecodeError::InvalidFlags { packet: PacketType::PubAck, flags: 1, expected: 0 },
    pingreq_flags_must_be_0:
        V311, wire![0xC8, 0x00] => DecodeError::InvalidFlags { packet: PacketType::PingReq, .. },
    connect_flags_in_the_fixed_header_must_be_0:
        V311, wire![0x12, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::InvalidFlags { packet: PacketType::Connect, .. },
    remaining_length_of_5_bytes_is_malformed:
        V311, wire![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01] => DecodeError::MalformedRemainingLength,
    publish_with_qos_3_is_malformed:
        V311, wire![0x36, 0x07, 0x00, 0x03, "a/b", 0x00, 0x01] => DecodeError::InvalidQoS,
    publish_with_qos_0_and_dup_is_malformed:
        V311, wire![0x38, 0x05, 0x00, 0x03, "a/b"]
        => DecodeError::Malformed { packet: PacketType::Publish, .. },
    auth_does_not_exist_in_3_1_1:
        V311, wire![0xF0, 0x00] => DecodeError::PacketNotInVersion { packet: PacketType::Auth, level: 4 },
    connect_with_protocol_name_other_than_mqtt_is_rejected:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTX", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::InvalidProtocolName(_),
    connect_with_protocol_level_6_is_unsupported:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x06, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::UnsupportedProtocolLevel(6),
    connect_mqtt_with_level_3_is_unsupported:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x03, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::UnsupportedProtocolLevel(3),
    connect_mqisdp_with_level_4_is_unsupported:
        V311, wire![0x10, 0x10, 0x00, 0x06, "MQIsdp", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::UnsupportedProtocolLevel(4),
    connect_reserved_flag_must_be_0:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x03, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connect_will_qos_without_will_flag_is_malformed:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x0A, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connect_will_retain_without_will_flag_is_malformed:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x22, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connect_will_qos_3_is_malformed:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x1E, 0x00, 0x3C, 0x00, 0x02, "c1"]
        => DecodeError::InvalidQoS,
    connect_password_without_user_name_is_malformed_in_3_1_1:
        V311, wire![0x10, 0x11, 0x00, 0x04, "MQTT", 0x04, 0x42, 0x00, 0x3C, 0x00, 0x02, "c1", 0x00, 0x01, "p"]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connect_client_id_must_be_utf8:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, 0xC3, 0x28]
        => DecodeError::InvalidUtf8,
    connect_client_id_must_not_contain_u0000:
        V311, wire![0x10, 0x0E, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c", 0x00]
        => DecodeError::NullCharacter,
    connect_user_name_must_not_contain_u0000:
        V311, wire![0x10, 0x11, 0x00, 0x04, "MQTT", 0x04, 0x82, 0x00, 0x3C, 0x00, 0x02, "c1", 0x00, 0x01, 0x00]
        => DecodeError::NullCharacter,
    connect_will_topic_must_not_contain_wildcards:
        V311, wire![0x10, 0x16, 0x00, 0x04, "MQTT", 0x04, 0x06, 0x00, 0x3C, 0x00, 0x02, "c1", 0x00, 0x03, "a/#", 0x00, 0x01, "x"]
        => DecodeError::InvalidTopic(TopicError::WildcardInName('#')),
    connect_with_bytes_after_the_payload_is_malformed:
        V311, wire![0x10, 0x0F, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c1", 0x00]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connect_cut_short_is_malformed:
        V311, wire![0x10, 0x0D, 0x00, 0x04, "MQTT", 0x04, 0x02, 0x00, 0x3C, 0x00, 0x02, "c"]
        => DecodeError::Malformed { packet: PacketType::Connect, .. },
    connack_reserved_flags_must_be_0:
        V311, wire![0x20, 0x02, 0x02, 0x00] => DecodeError::Malformed { packet: PacketType::ConnAck, .. },
    connack_return_code_6_is_invalid_in_3_1_1:
        V311, wire![0x20, 0x02, 0x00, 0x06] => DecodeError::InvalidReasonCode { packet: PacketType::ConnAck, code: 6 },
    connack_session_present_with_a_refusal_is_malformed:
        V311, wire![0x20, 0x02, 0x01, 0x05] => DecodeError::Malformed { packet: PacketType::ConnAck, .. },
    connack_v5_reason_server_shutting_down_is_invalid:
        V5, wire![0x20, 0x03, 0x00, 0x8B, 0x00]
        => DecodeError::InvalidReasonCode { packet: PacketType::ConnAck, code: 0x8B },
    connack_v5_without_property_length_is_malformed:
        V5, wire![0x20, 0x02, 0x00, 0x00] => DecodeError::Malformed { packet: PacketType::ConnAck, .. },
    publish_topic_must_not_contain_u0000:
        V311, wire![0x30, 0x07, 0x00, 0x03, "a", 0x00, "b", "hi"] => DecodeError::NullCharacter,
    publish_topic_must_be_utf8:
        V311, wire![0x30, 0x07, 0x00, 0x03, "a", 0xFF, "b", "hi"] => DecodeError::InvalidUtf8,
    publish_topic_with_a_surrogate_is_not_utf8:
        V311, wire![0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80] => DecodeError::InvalidUtf8,
    publish_topic_must_not_contain_wildcards:
        V311, wire![0x30, 0x07, 0x00, 0x03, "a/+", "hi"] => DecodeError::InvalidTopic(TopicError::WildcardInName('+')),
    publish_topic_must_not_be_empty_in_3_1_1:
        V311, wire![0x30, 0x04, 0x00, 0x00, "hi"] => DecodeError::InvalidTopic(TopicError::Empty),
    publish_empty_topic_without_topic_alias_is_invalid:
        V5, wire![0x30, 0x05, 0x00, 0x00, 0x00, "hi"] => DecodeError::InvalidTopic(TopicError::Empty),
    publish_with_packet_id_0_is_malformed:
        V311, wire![0x32, 0x07, 0x00, 0x03, "a/b", 0x00, 0x00] => DecodeError::ZeroPacketId(PacketType::Publish),
    publish_topic_length_past_the_body_is_malformed:
        V311, wire![0x30, 0x03, 0x00, 0x05, "a"] => DecodeError::Malformed { packet: PacketType::Publish, .. },
    publish_with_a_duplicate_message_expiry_interval_is_rejected:
        V5, wire![0x30, 0x0E, 0x00, 0x01, "t", 0x0A, 0x02, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x02]
        => DecodeError::DuplicateProperty(0x02),
    publish_with_session_expiry_interval_is_not_allowed:
        V5, wire![0x30, 0x09, 0x00, 0x01, "t", 0x05, 0x11, 0x00, 0x00, 0x00, 0x01]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Publish, id: 0x11 },
    publish_with_unknown_property_0x05_is_rejected:
        V5, wire![0x30, 0x06, 0x00, 0x01, "t", 0x02, 0x05, 0x00] => DecodeError::UnknownProperty(0x05),
    publish_payload_format_indicator_must_be_0_or_1:
        V5, wire![0x30, 0x06, 0x00, 0x01, "t", 0x02, 0x01, 0x02]
        => DecodeError::InvalidPropertyValue { id: 0x01, value: 2 },
    publish_topic_alias_0_is_invalid:
        V5, wire![0x30, 0x07, 0x00, 0x01, "t", 0x03, 0x23, 0x00, 0x00]
        => DecodeError::InvalidPropertyValue { id: 0x23, value: 0 },
    publish_subscription_identifier_0_is_invalid:
        V5, wire![0x30, 0x06, 0x00, 0x01, "t", 0x02, 0x0B, 0x00]
        => DecodeError::InvalidPropertyValue { id: 0x0B, value: 0 },
    publish_response_topic_must_not_contain_wildcards:
        V5, wire![0x30, 0x0A, 0x00, 0x01, "t", 0x06, 0x08, 0x00, 0x03, "r/#"]
        => DecodeError::InvalidTopic(TopicError::WildcardInName('#')),
    publish_user_property_must_not_contain_u0000:
        V5, wire![0x30, 0x0B, 0x00, 0x01, "t", 0x07, 0x26, 0x00, 0x01, "k", 0x00, 0x01, 0x00]
        => DecodeError::NullCharacter,
    publish_content_type_must_be_utf8:
        V5, wire![0x30, 0x08, 0x00, 0x01, "t", 0x04, 0x03, 0x00, 0x01, 0xC0]
        => DecodeError::InvalidUtf8,
    publish_property_length_past_the_body_is_malformed:
        V5, wire![0x30, 0x05, 0x00, 0x01, "t", 0x10, 0x01]
        => DecodeError::Malformed { packet: PacketType::Publish, .. },
    publish_property_past_its_block_is_malformed:
        V5, wire![0x30, 0x0A, 0x00, 0x01, "t", 0x02, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00]
        => DecodeError::Malformed { packet: PacketType::Publish, .. },
    publish_property_length_of_5_bytes_is_malformed:
        V5, wire![0x30, 0x08, 0x00, 0x01, "t", 0x80, 0x80, 0x80, 0x80, 0x00]
        => DecodeError::Malformed { packet: PacketType::Publish, .. },
    puback_with_packet_id_0_is_malformed:
        V311, wire![0x40, 0x02, 0x00, 0x00] => DecodeError::ZeroPacketId(PacketType::PubAck),
    puback_with_leftover_bytes_is_malformed_in_3_1_1:
        V311, wire![0x40, 0x03, 0x00, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::PubAck, .. },
    puback_cut_short_is_malformed:
        V311, wire![0x40, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::PubAck, .. },
    puback_reason_0x04_is_invalid:
        V5, wire![0x40, 0x03, 0x00, 0x01, 0x04] => DecodeError::InvalidReasonCode { packet: PacketType::PubAck, code: 0x04 },
    puback_with_topic_alias_is_not_allowed:
        V5, wire![0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01]
        => DecodeError::PropertyNotAllowed { packet: PacketType::PubAck, id: 0x23 },
    puback_with_two_reason_strings_is_rejected:
        V5, wire![0x40, 0x0C, 0x00, 0x01, 0x80, 0x08, 0x1F, 0x00, 0x01, "a", 0x1F, 0x00, 0x01, "b"]
        => DecodeError::DuplicateProperty(0x1F),
    puback_with_bytes_after_its_properties_is_malformed:
        V5, wire![0x40, 0x05, 0x00, 0x01, 0x80, 0x00, 0x00] => DecodeError::Malformed { packet: PacketType::PubAck, .. },
    pubrel_reason_no_matching_subscribers_is_invalid:
        V5, wire![0x62, 0x03, 0x00, 0x01, 0x10] => DecodeError::InvalidReasonCode { packet: PacketType::PubRel, code: 0x10 },
    subscribe_without_filters_is_malformed:
        V311, wire![0x82, 0x02, 0x00, 0x01] => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_with_packet_id_0_is_malformed:
        V311, wire![0x82, 0x08, 0x00, 0x00, 0x00, 0x03, "a/b", 0x00] => DecodeError::ZeroPacketId(PacketType::Subscribe),
    subscribe_option_bits_2_to_7_must_be_0_in_3_1_1:
        V311, wire![0x82, 0x08, 0x00, 0x01, 0x00, 0x03, "a/b", 0x04]
        => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_option_bits_6_and_7_must_be_0_in_5_0:
        V5, wire![0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, "a/b", 0x40]
        => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_retain_handling_3_is_malformed:
        V5, wire![0x82, 0x09, 0x00, 0x01, 0x00, 0x00, 0x03, "a/b", 0x30]
        => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_with_qos_3_is_malformed:
        V311, wire![0x82, 0x08, 0x00, 0x01, 0x00, 0x03, "a/b", 0x03] => DecodeError::InvalidQoS,
    subscribe_no_local_on_a_shared_subscription_is_malformed:
        V5, wire![0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A, "$share/g/x", 0x04]
        => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_filter_with_misplaced_hash_is_invalid:
        V311, wire![0x82, 0x0A, 0x00, 0x01, 0x00, 0x05, "a/#/b", 0x00]
        => DecodeError::InvalidTopic(TopicError::MisplacedWildcard('#')),
    subscribe_filter_without_options_is_malformed:
        V311, wire![0x82, 0x07, 0x00, 0x01, 0x00, 0x03, "a/b"]
        => DecodeError::Malformed { packet: PacketType::Subscribe, .. },
    subscribe_with_two_subscription_identifiers_is_rejected:
        V5, wire![0x82, 0x0D, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x03, "a/b", 0x00]
        => DecodeError::DuplicateProperty(0x0B),
    suback_without_reason_codes_is_malformed:
        V311, wire![0x90, 0x02, 0x00, 0x01] => DecodeError::Malformed { packet: PacketType::SubAck, .. },
    suback_return_code_3_is_invalid_in_3_1_1:
        V311, wire![0x90, 0x03, 0x00, 0x01, 0x03] => DecodeError::InvalidReasonCode { packet: PacketType::SubAck, code: 3 },
    suback_v5_reason_0x10_is_invalid:
        V5, wire![0x90, 0x04, 0x00, 0x01, 0x00, 0x10] => DecodeError::InvalidReasonCode { packet: PacketType::SubAck, code: 0x10 },
    unsubscribe_without_filters_is_malformed:
        V311, wire![0xA2, 0x02, 0x00, 0x01] => DecodeError::Malformed { packet: PacketType::Unsubscribe, .. },
    unsubscribe_with_subscription_identifier_is_not_allowed:
        V5, wire![0xA2, 0x0A, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x03, "a/b"]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Unsubscribe, id: 0x0B },
    unsuback_with_leftover_bytes_is_malformed_in_3_1_1:
        V311, wire![0xB0, 0x03, 0x00, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::UnsubAck, .. },
    unsuback_v5_reason_0x10_is_invalid:
        V5, wire![0xB0, 0x04, 0x00, 0x01, 0x00, 0x10] => DecodeError::InvalidReasonCode { packet: PacketType::UnsubAck, code: 0x10 },
    unsuback_v5_without_reason_codes_is_malformed:
        V5, wire![0xB0, 0x03, 0x00, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::UnsubAck, .. },
    pingreq_with_a_body_is_malformed:
        V311, wire![0xC0, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::PingReq, .. },
    disconnect_with_a_body_is_malformed_in_3_1_1:
        V311, wire![0xE0, 0x01, 0x00] => DecodeError::Malformed { packet: PacketType::Disconnect, .. },
    disconnect_reason_0x05_is_invalid:
        V5, wire![0xE0, 0x01, 0x05] => DecodeError::InvalidReasonCode { packet: PacketType::Disconnect, code: 0x05 },
    disconnect_with_receive_maximum_is_not_allowed:
        V5, wire![0xE0, 0x05, 0x00, 0x03, 0x21, 0x00, 0x01]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Disconnect, id: 0x21 },
    connect_receive_maximum_0_is_invalid:
        V5, wire![0x10, 0x12, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x03, 0x21, 0x00, 0x00, 0x00, 0x02, "c1"]
        => DecodeError::InvalidPropertyValue { id: 0x21, value: 0 },
    connect_maximum_packet_size_0_is_invalid:
        V5, wire![0x10, 0x14, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x05, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, "c1"]
        => DecodeError::InvalidPropertyValue { id: 0x27, value: 0 },
    connect_request_problem_information_must_be_0_or_1:
        V5, wire![0x10, 0x11, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x02, 0x17, 0x02, 0x00, 0x02, "c1"]
        => DecodeError::InvalidPropertyValue { id: 0x17, value: 2 },
    connect_with_will_delay_interval_outside_the_will_is_not_allowed:
        V5, wire![0x10, 0x14, 0x00, 0x04, "MQTT", 0x05, 0x02, 0x00, 0x3C, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, "c1"]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Connect, id: 0x18 },
    connect_will_with_session_expiry_interval_is_not_allowed:
        V5, wire![
            0x10, 0x1A, 0x00, 0x04, "MQTT", 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x02, "c1",
            0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, "w", 0x00, 0x00,
        ]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Connect, id: 0x11 },
    auth_reason_0x00_to_0x17_other_than_success_is_invalid:
        V5, wire![0xF0, 0x01, 0x01] => DecodeError::InvalidReasonCode { packet: PacketType::Auth, code: 0x01 },
    auth_with_server_reference_is_not_allowed:
        V5, wire![0xF0, 0x06, 0x18, 0x04, 0x1C, 0x00, 0x01, "s"]
        => DecodeError::PropertyNotAllowed { packet: PacketType::Auth, id: 0x1C },
}
