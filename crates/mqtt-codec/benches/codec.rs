//! Codec hot paths: decoding and encoding the packets a broker handles most.
//!
//! Run with `cargo bench -p fleetwire-mqtt-codec`. Single-packet benchmarks report one
//! element per packet (so criterion prints messages per second); the batch benchmark decodes
//! 1,000 back-to-back `PUBLISH` packets from one buffer, the steady state of a busy
//! connection, and reports both packets and bytes.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use fleetwire_mqtt_codec::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, TopicName, decode, encode,
};

const MAX_PACKET_SIZE: usize = 1 << 20;

fn topic(text: &str) -> TopicName {
    TopicName::new(text).expect("bench topics are valid")
}

/// A QoS 0 telemetry message whose whole packet is 64 bytes.
fn publish_qos0_64_bytes() -> Packet {
    // Fixed header 2, topic 2 + 20, payload 40.
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("devices/d0001/telemt"),
        packet_id: None,
        payload: Bytes::from_static(b"{\"t\":21.50,\"h\":40.1,\"ts\":1700000000000}\n"),
        properties: Properties::default(),
    })
}

/// A QoS 1 5.0 message with the properties IoT clients commonly set.
fn publish_qos1_with_properties() -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic("devices/d0001/telemetry"),
        packet_id: PacketId::new(42),
        payload: Bytes::from_static(&[0x5A; 64]),
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(3600),
            content_type: Some("application/json".into()),
            topic_alias: Some(3),
            user_properties: vec![("fw".into(), "1.4.2".into())],
            ..Properties::default()
        },
    })
}

fn connect() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "device-0001".into(),
        will: None,
        username: Some("device-0001".into()),
        password: Some(Bytes::from_static(b"s3cr3t-t0ken")),
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            ..Properties::default()
        },
    }))
}

fn wire(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("bench packets encode");
    out.freeze()
}

fn single_packets() -> [(&'static str, Packet, ProtocolVersion); 3] {
    [
        (
            "publish_qos0_64b_v311",
            publish_qos0_64_bytes(),
            ProtocolVersion::V311,
        ),
        (
            "publish_qos1_properties_v5",
            publish_qos1_with_properties(),
            ProtocolVersion::V5,
        ),
        ("connect_v5", connect(), ProtocolVersion::V5),
    ]
}

fn decode_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, packet, version) in single_packets() {
        let bytes = wire(&packet, version);
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&bytes[..]),
                |mut buf| {
                    let packet = decode(&mut buf, version, MAX_PACKET_SIZE);
                    // Returned so that dropping happens outside the measurement, as it does
                    // for the setup's allocation.
                    (black_box(packet), buf)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let one = wire(&publish_qos0_64_bytes(), ProtocolVersion::V311);
    assert_eq!(one.len(), 64, "the small publish is 64 bytes on the wire");
    let mut stream = BytesMut::with_capacity(one.len() * 1000);
    for _ in 0..1000 {
        stream.extend_from_slice(&one);
    }
    let stream = stream.freeze();
    for (group_name, throughput) in [
        ("decode_1000_publishes", Throughput::Elements(1000)),
        (
            "decode_1000_publishes_bytes",
            Throughput::Bytes(stream.len() as u64),
        ),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(throughput);
        group.bench_function("qos0_64b_v311", |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    while let Some(packet) =
                        decode(&mut buf, ProtocolVersion::V311, MAX_PACKET_SIZE)
                            .expect("valid stream")
                    {
                        black_box(packet);
                    }
                    buf
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn encode_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, packet, version) in single_packets() {
        // The output buffer is reused, as a connection's write buffer is.
        let mut out = BytesMut::with_capacity(4096);
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode(black_box(&packet), version, &mut out).expect("bench packets encode");
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    decode_benches(&mut criterion);
    encode_benches(&mut criterion);
    criterion.final_summary();
}
