//! Clients that send packets without waiting for the answers to earlier ones: nothing
//! they sent may be lost between the steps of a connection's life (`CONNECT`, parking,
//! resuming).

#![allow(clippy::unwrap_used)]

mod support;

use bytes::BytesMut;
use fleetwire_mqtt_codec::{Packet, ProtocolVersion, QoS, encode};
use support::{Client, anonymous, connect_packet, publish, start};

#[tokio::test]
async fn packets_sent_with_connect_in_one_write_are_all_served() {
    let (_broker, addr) = start(anonymous()).await;
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut subscriber = Client::connect(addr, "pipelined-sub").await;
        subscriber.subscribe("pipelined/t", QoS::AtLeastOnce).await;
        let mut client = Client::raw(addr, version).await;
        let mut burst = BytesMut::new();
        let connect = connect_packet("pipelined", version, true);
        encode(&Packet::Connect(Box::new(connect)), version, &mut burst).unwrap();
        let message = publish(
            "pipelined/t",
            b"right after CONNECT",
            QoS::AtLeastOnce,
            1,
            false,
        );
        encode(&Packet::Publish(message), version, &mut burst).unwrap();
        client.send_bytes(&burst).await;
        assert!(
            matches!(client.recv().await, Some(Packet::ConnAck(ref ack)) if ack.code.0 == 0),
            "{version:?}"
        );
        assert!(
            matches!(client.recv().await, Some(Packet::PubAck(ref ack)) if ack.packet_id.get() == 1),
            "{version:?}: the PUBLISH sent with CONNECT was not acknowledged"
        );
        let delivered = subscriber.expect_publish().await;
        assert_eq!(&delivered.payload[..], b"right after CONNECT");
    }
}
