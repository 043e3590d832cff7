//! Authentication, topic ACLs, presence and revocation, over real sockets. The
//! authenticator here is a fixed table of passwords, whose users get the access the
//! platform gives its devices (their own `devices/{id}/...` topics); the registry-backed
//! one is tested end to end through the binary.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetwire_broker::{
    Access, Authenticator, BoxFuture, Broker, BrokerConfig, Credentials, Denial, Hooks,
};
use fleetwire_mqtt_codec::{
    Packet, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter,
};
use parking_lot::Mutex;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Users and their passwords; reports presence changes on a channel.
struct Table {
    passwords: HashMap<&'static str, &'static [u8]>,
    presence: Mutex<mpsc::UnboundedSender<(String, bool)>>,
}

impl Authenticator for Table {
    fn authenticate<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Access, Denial>> {
        Box::pin(async move {
            let username = credentials.username.unwrap_or_default();
            match self.passwords.get(username) {
                Some(password) if credentials.password == Some(*password) => {
                    Ok(device_access(username))
                }
                _ => Err(Denial::BadCredentials),
            }
        })
    }

    fn presence(&self, user: &str, online: bool) {
        let _ = self.presence.lock().send((user.to_owned(), online));
    }
}

/// What the platform lets device `id` do: publish under `devices/{id}/`, subscribe to
/// its commands.
fn device_access(id: &str) -> Access {
    let filter = |text: String| TopicFilter::new(text).unwrap();
    Access::user(
        id,
        [filter(format!("devices/{id}/+/#"))],
        [filter(format!("devices/{id}/commands/#"))],
    )
}

async fn start_with_devices(
    config: BrokerConfig,
) -> (Broker, SocketAddr, mpsc::UnboundedReceiver<(String, bool)>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let table = Table {
        passwords: HashMap::from([("d1", &b"secret-1"[..]), ("d2", &b"secret-2"[..])]),
        presence: Mutex::new(sender),
    };
    let broker = Broker::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = Hooks {
        authenticator: Some(Arc::new(table)),
        ingest: None,
    };
    let addr = broker.spawn(listener, hooks).unwrap().local_addr();
    (broker, addr, receiver)
}

fn login(
    client_id: &str,
    version: ProtocolVersion,
    username: &str,
    password: &[u8],
) -> fleetwire_mqtt_codec::Connect {
    let mut connect = connect_packet(client_id, version, true);
    connect.username = Some(username.to_owned());
    connect.password = Some(bytes::Bytes::copy_from_slice(password));
    connect
}

fn connack_code(packet: &Packet) -> ReasonCode {
    match packet {
        Packet::ConnAck(ack) => ack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn device(addr: SocketAddr, id: &str, password: &[u8], version: ProtocolVersion) -> Client {
    let (client, connack) = Client::connect_with(addr, login(id, version, id, password)).await;
    assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
    client
}

#[tokio::test]
async fn devices_log_in_with_their_secret_and_wrong_secrets_are_refused() {
    let (broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    device(addr, "d1", b"secret-1", ProtocolVersion::V5).await;

    for (username, password) in [("d1", &b"wrong"[..]), ("nobody", b"secret-1")] {
        let (mut client, connack) =
            Client::connect_with(addr, login("x", ProtocolVersion::V5, username, password)).await;
        assert_eq!(
            connack_code(&connack),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
        assert!(client.expect_closed().await.is_empty());
    }
    // 3.1.1 gets return code 4 (bad user name or password).
    let (_, connack) =
        Client::connect_with(addr, login("y", ProtocolVersion::V311, "d1", b"wrong")).await;
    assert_eq!(
        connack_code(&connack),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    // Anonymous clients are refused without allow_anonymous.
    let (_, connack) =
        Client::connect_with(addr, connect_packet("anon", ProtocolVersion::V5, true)).await;
    assert_eq!(connack_code(&connack), ReasonCode::NOT_AUTHORIZED);
    assert_eq!(broker.stats_snapshot().auth_failures, 4);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_rate_limited() {
    let config = BrokerConfig {
        auth_failure_burst: 3,
        auth_failures_per_minute: 1,
        ..BrokerConfig::default()
    };
    let (_broker, addr, _presence) = start_with_devices(config).await;
    for _ in 0..3 {
        let (_, connack) =
            Client::connect_with(addr, login("x", ProtocolVersion::V5, "d1", b"guess")).await;
        assert_eq!(
            connack_code(&connack),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        );
    }
    // Now even the right secret is refused from this address until the bucket refills.
    let (_, connack) =
        Client::connect_with(addr, login("x", ProtocolVersion::V5, "d1", b"secret-1")).await;
    assert_eq!(connack_code(&connack), ReasonCode::CONNECTION_RATE_EXCEEDED);
}

#[tokio::test]
async fn devices_publish_only_to_their_own_topics() {
    let (_broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    let mut watcher = device(addr, "d2", b"secret-2", ProtocolVersion::V5).await;
    watcher
        .subscribe("devices/d2/commands/#", QoS::AtLeastOnce)
        .await;
    let mut d1 = device(addr, "d1", b"secret-1", ProtocolVersion::V5).await;

    // Into another device's command topic: refused with 0x87, not delivered.
    d1.send(Packet::Publish(publish(
        "devices/d2/commands/reboot",
        b"{}",
        QoS::AtLeastOnce,
        1,
        false,
    )))
    .await;
    match d1.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    watcher.expect_silence(Duration::from_millis(200)).await;

    // Its own topic is fine (no subscriber: 0x10 no matching subscribers).
    d1.send(Packet::Publish(publish(
        "devices/d1/telemetry",
        b"{}",
        QoS::AtLeastOnce,
        2,
        false,
    )))
    .await;
    match d1.recv().await {
        Some(Packet::PubAck(ack)) => assert!(!ack.reason.is_error(), "{ack:?}"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_subscribe_only_to_their_own_commands() {
    let (_broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let mut d1 = device(addr, "d1", b"secret-1", version).await;
        let filters = [
            "devices/d1/commands/#",
            "devices/d2/commands/#",
            "#",
            "devices/d1/#",
        ];
        d1.send(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(7).unwrap(),
            filters: filters
                .iter()
                .map(|filter| {
                    (
                        TopicFilter::new(*filter).unwrap(),
                        SubscriptionOptions::with_qos(QoS::AtLeastOnce),
                    )
                })
                .collect(),
            properties: Properties::default(),
        }))
        .await;
        let refused = if version.is_v5() { 0x87 } else { 0x80 };
        match d1.recv().await {
            Some(Packet::SubAck(ack)) => assert_eq!(
                ack.reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
                [1, refused, refused, refused]
            ),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_will_outside_the_devices_topics_is_refused_at_connect() {
    let (_broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    let mut connect = login("d1", ProtocolVersion::V5, "d1", b"secret-1");
    connect.will = Some(will("devices/d2/status", b"gone", QoS::AtMostOnce, false));
    let (_, connack) = Client::connect_with(addr, connect).await;
    assert_eq!(connack_code(&connack), ReasonCode::NOT_AUTHORIZED);
}

#[tokio::test]
async fn a_user_cannot_take_over_another_users_session() {
    let (_broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    let mut d1 = device(addr, "d1", b"secret-1", ProtocolVersion::V5).await;
    let (_, connack) =
        Client::connect_with(addr, login("d1", ProtocolVersion::V5, "d2", b"secret-2")).await;
    assert_eq!(
        connack_code(&connack),
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    );
    d1.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn presence_follows_the_first_and_last_connection_of_a_user() {
    let (broker, addr, mut presence) = start_with_devices(BrokerConfig::default()).await;
    let first = device(addr, "d1", b"secret-1", ProtocolVersion::V311).await;
    assert_eq!(presence.recv().await, Some(("d1".to_owned(), true)));
    // Another client id, same device credentials.
    let (extra, connack) = Client::connect_with(
        addr,
        login("extra", ProtocolVersion::V311, "d1", b"secret-1"),
    )
    .await;
    assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
    assert!(broker.is_user_connected("d1"));
    drop(first);
    // Still connected through `extra`: no presence change yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(presence.try_recv().is_err());
    drop(extra);
    assert_eq!(
        tokio::time::timeout(TIMEOUT, presence.recv())
            .await
            .unwrap(),
        Some(("d1".to_owned(), false))
    );
    assert!(!broker.is_user_connected("d1"));
}

#[tokio::test]
async fn disconnecting_a_user_closes_its_connections_with_administrative_action() {
    let (broker, addr, _presence) = start_with_devices(BrokerConfig::default()).await;
    let mut v5 = device(addr, "d1", b"secret-1", ProtocolVersion::V5).await;
    let (mut v3, connack) = Client::connect_with(
        addr,
        login("d1-b", ProtocolVersion::V311, "d1", b"secret-1"),
    )
    .await;
    assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
    let mut bystander = device(addr, "d2", b"secret-2", ProtocolVersion::V5).await;

    assert_eq!(broker.disconnect_user("d1"), 2);
    let farewell = v5.expect_closed().await;
    assert!(
        matches!(farewell.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::ADMINISTRATIVE_ACTION),
        "{farewell:?}"
    );
    assert!(v3.expect_closed().await.is_empty());
    bystander.expect_silence(Duration::from_millis(100)).await;
    assert_eq!(broker.disconnect_user("d1"), 0);
}
