//! The ingest seam over real sockets: acknowledgements wait for and carry the verdicts of
//! the listener's ingest, and an anonymous client counts as the user its ingest names.
//! The ingest here is a small table; the platform's is tested through the binary.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetwire_broker::{
    Access, Authenticator, BoxFuture, Broker, Collector, Credentials, Denial, Hooks, Inbound,
    Ingest, Settled, Verdict,
};
use fleetwire_mqtt_codec::{Packet, ProtocolVersion, QoS, ReasonCode, TopicName};
use parking_lot::Mutex;
use support::*;
use tokio::sync::mpsc;

/// Takes the messages of `in/...` and `as/{user}`: `in/bad` is invalid, `in/fail` cannot
/// be stored, everything else is accepted; `as/{user}` names `user` for an anonymous
/// client.
struct Table;

impl Ingest for Table {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(TableCollector { kept: Vec::new() })
    }
}

struct TableCollector {
    /// Topics kept, and whether their client was anonymous.
    kept: Vec<(TopicName, bool)>,
}

impl Collector for TableCollector {
    fn offer(&mut self, message: Inbound<'_>) -> bool {
        let topic = message.topic.as_str();
        if !(topic.starts_with("in/") || topic.starts_with("as/")) {
            return false;
        }
        self.kept
            .push((message.topic.clone(), message.user.is_none()));
        true
    }

    fn settle(&mut self) -> BoxFuture<'static, Settled> {
        let kept = std::mem::take(&mut self.kept);
        Box::pin(async move {
            let mut acting_as = None;
            let verdicts = kept
                .iter()
                .map(|(topic, is_anonymous)| match topic.as_str() {
                    "in/bad" => Verdict::Invalid,
                    "in/fail" => Verdict::Failed,
                    other => {
                        if let (Some(user), true) = (other.strip_prefix("as/"), is_anonymous) {
                            acting_as.get_or_insert_with(|| Arc::from(user));
                        }
                        Verdict::Accepted
                    }
                })
                .collect();
            Settled {
                verdicts,
                acting_as,
            }
        })
    }
}

/// Admits nobody by name; reports presence changes on a channel.
struct Presence(Mutex<mpsc::UnboundedSender<(String, bool)>>);

impl Authenticator for Presence {
    fn authenticate<'a>(
        &'a self,
        _credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        Box::pin(async { Err(Denial::BadCredentials) })
    }

    fn presence(&self, user: &str, online: bool) {
        let _ = self.0.lock().send((user.to_owned(), online));
    }
}

async fn start_with_table() -> (Broker, SocketAddr, mpsc::UnboundedReceiver<(String, bool)>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let hooks = Hooks {
        authenticator: Some(Arc::new(Presence(Mutex::new(sender)))),
        ingest: Some(Arc::new(Table)),
    };
    let (broker, addr) = start_with_hooks(anonymous(), hooks).await;
    (broker, addr, receiver)
}

async fn connect_v5(addr: SocketAddr, client_id: &str) -> Client {
    let (client, connack) =
        Client::connect_with(addr, connect_packet(client_id, ProtocolVersion::V5, true)).await;
    assert!(
        matches!(connack, Packet::ConnAck(ref ack) if ack.code == ReasonCode::SUCCESS),
        "{connack:?}"
    );
    client
}

/// The reason of the next packet, which must be a `PUBACK` or `PUBREC`.
async fn acknowledgement(client: &mut Client) -> ReasonCode {
    match client.recv().await {
        Some(Packet::PubAck(ack)) => ack.reason,
        Some(Packet::PubRec(rec)) => rec.reason,
        other => panic!("expected PUBACK or PUBREC, got {other:?}"),
    }
}

#[tokio::test]
async fn acknowledgements_carry_the_ingest_verdicts() {
    let (_broker, addr, _presence) = start_with_table().await;
    let mut watcher = connect_v5(addr, "watcher").await;
    watcher.subscribe("in/#", QoS::AtMostOnce).await;
    let mut client = connect_v5(addr, "publisher").await;
    let cases = [
        ("in/ok", QoS::AtLeastOnce, ReasonCode::SUCCESS),
        (
            "in/bad",
            QoS::AtLeastOnce,
            ReasonCode::PAYLOAD_FORMAT_INVALID,
        ),
        ("in/fail", QoS::AtLeastOnce, ReasonCode::UNSPECIFIED_ERROR),
        (
            "in/bad",
            QoS::ExactlyOnce,
            ReasonCode::PAYLOAD_FORMAT_INVALID,
        ),
        (
            "elsewhere",
            QoS::AtLeastOnce,
            ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ),
    ];
    for (index, (topic, qos, expected)) in cases.into_iter().enumerate() {
        let packet_id = u16::try_from(index + 1).unwrap();
        client.publish(topic, b"{}", qos, packet_id, false).await;
        assert_eq!(acknowledgement(&mut client).await, expected, "{topic}");
    }
    // The ingest is one more receiver, not a filter: subscribers get every message.
    for expected in ["in/ok", "in/bad", "in/fail", "in/bad"] {
        assert_eq!(watcher.expect_publish().await.topic.as_str(), expected);
    }
}

#[tokio::test]
async fn a_message_the_ingest_cannot_store_closes_a_3_1_1_client_unacknowledged() {
    let (_broker, addr, _presence) = start_with_table().await;
    let mut client = Client::connect(addr, "old-client").await;
    client
        .publish("in/ok", b"{}", QoS::AtLeastOnce, 1, false)
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
    client
        .publish("in/fail", b"{}", QoS::AtLeastOnce, 2, false)
        .await;
    assert!(client.expect_closed().await.is_empty());
}

/// Waits until the broker holds `count` parked (idle) connections.
async fn until_parked(broker: &Broker, count: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while broker.stats_snapshot().clients_parked != count {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_anonymous_client_counts_as_the_first_user_its_ingest_names() {
    let (broker, addr, mut presence) = start_with_table().await;
    let mut client = connect_v5(addr, "anonymous").await;
    client
        .publish("as/d7", b"{}", QoS::AtLeastOnce, 1, false)
        .await;
    assert_eq!(acknowledgement(&mut client).await, ReasonCode::SUCCESS);
    assert_eq!(presence.recv().await, Some(("d7".to_owned(), true)));
    assert!(broker.is_user_connected("d7"));
    // Only the first user named counts, also after the connection parked and resumed.
    client
        .publish("as/d8", b"{}", QoS::AtLeastOnce, 2, false)
        .await;
    assert_eq!(acknowledgement(&mut client).await, ReasonCode::SUCCESS);
    until_parked(&broker, 1).await;
    client
        .publish("as/d9", b"{}", QoS::AtLeastOnce, 3, false)
        .await;
    assert_eq!(acknowledgement(&mut client).await, ReasonCode::SUCCESS);
    assert!(!broker.is_user_connected("d8") && !broker.is_user_connected("d9"));
    assert!(presence.try_recv().is_err());

    // Disconnecting the user reaches the anonymous connection.
    assert_eq!(broker.disconnect_user("d7"), 1);
    let farewell = client.expect_closed().await;
    assert!(
        matches!(farewell.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::ADMINISTRATIVE_ACTION),
        "{farewell:?}"
    );
    assert_eq!(
        tokio::time::timeout(TIMEOUT, presence.recv())
            .await
            .unwrap(),
        Some(("d7".to_owned(), false))
    );
    assert!(!broker.is_user_connected("d7"));
}
