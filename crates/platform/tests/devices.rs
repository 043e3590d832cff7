//! Devices through the platform's door, and what follows their changes: the rules that
//! match them, the device cache ingest uses, their connections, their last ingest error
//! and their MQTT logins.
//!
//! Where a test must show that a message changed nothing, it sends a later message that
//! does change something and checks which message did it (see `automation.rs`).

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use fleetwire_broker::{BrokerConfig, Credentials, Denial};
use fleetwire_client::{ClientError, Connection};
use fleetwire_model::{AlarmStatus, DeviceFilter, DevicePatch, RuleMatch, RuleSpec};
use fleetwire_mqtt_codec::ReasonCode;
use fleetwire_platform::{Error, Platform, Precision};
use serde_json::json;
use support::{
    BrokerNode, Events, Node, T0, alarms_of, create_device, create_device_with, device_id, labels,
    publish_and_wait, rule, rule_id, send, topic,
};

/// A rule raising an alarm for devices of type `boiler` at the `north` site.
fn northern_boilers() -> RuleSpec {
    RuleSpec {
        matcher: RuleMatch {
            device_type: Some("boiler".to_owned()),
            labels: labels(&[("site", "north")]),
            ..RuleMatch::default()
        },
        ..rule("temperature > 30")
    }
}

/// What the hooks' authenticator answers to `device` logging in with `secret`.
async fn log_in(
    platform: &Platform,
    device: &str,
    secret: &str,
) -> Result<fleetwire_broker::Access, Denial> {
    let authenticator = platform.mqtt_hooks().authenticator.unwrap();
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    authenticator
        .authenticate(Credentials {
            client_id: device,
            username: Some(device),
            password: Some(secret.as_bytes()),
            peer,
            certificate: None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_device_is_matched_by_the_rules_that_select_its_type_and_labels() {
    let node = Node::start().await;
    let platform = &node.platform;
    platform
        .create_rule(Some(rule_id("boilers")), northern_boilers())
        .await
        .unwrap();
    create_device_with(platform, "sensor-n", "sensor", &[("site", "north")]).await;
    create_device_with(platform, "boiler-s", "boiler", &[("site", "south")]).await;
    create_device_with(
        platform,
        "boiler-n",
        "boiler",
        &[("site", "north"), ("floor", "2")],
    )
    .await;
    let mut events = Events::changes(platform);

    // The matching device last: once its alarm is raised, the others were evaluated.
    for device in ["sensor-n", "boiler-s", "boiler-n"] {
        send(platform, device, T0, json!({"temperature": 31})).await;
    }
    let raised = events.next_alarm("boiler-n").await;
    assert_eq!(raised.status, AlarmStatus::Active);
    let alarms = alarms_of(platform, "boilers").await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].device_id.as_str(), "boiler-n");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_labels_change_is_matched_again_and_loses_the_alarms_of_rules_that_no_longer_select_it()
 {
    let node = Node::start().await;
    let platform = &node.platform;
    platform
        .create_rule(Some(rule_id("boilers")), northern_boilers())
        .await
        .unwrap();
    create_device_with(platform, "b1", "boiler", &[("site", "north")]).await;
    let mut events = Events::changes(platform);
    let move_to = async |site: &str| {
        let device = platform
            .update_device(
                &device_id("b1"),
                DevicePatch {
                    labels: Some(labels(&[("site", site)])),
                    ..DevicePatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(device.labels, labels(&[("site", site)]));
    };

    send(platform, "b1", T0, json!({"temperature": 31})).await;
    let first = events.next_alarm("b1").await;
    assert_eq!(first.status, AlarmStatus::Active);

    // Moved south: its next message clears the alarm, though the condition still holds.
    move_to("south").await;
    send(platform, "b1", T0 + 1000, json!({"temperature": 32})).await;
    let cleared = events.next_alarm("b1").await;
    assert_eq!(cleared.id, first.id);
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.cleared_by.as_deref(), Some("rule"));

    // Back north: selected again, raised again.
    move_to("north").await;
    send(platform, "b1", T0 + 2000, json!({"temperature": 33})).await;
    let second = events.next_alarm("b1").await;
    assert_ne!(second.id, first.id);
    assert_eq!(second.status, AlarmStatus::Active);
    assert_eq!(second.values, [("temperature".to_owned(), 33.0)]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_is_disconnected_and_its_last_error_and_rule_state_are_forgotten() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            RuleSpec {
                for_ms: Some(10_000),
                ..rule("temperature > 30")
            },
        )
        .await
        .unwrap();
    assert!(
        platform
            .ingest_json(&d1, br#"{"temperature": "hot"}"#)
            .await
            .is_err()
    );
    assert!(
        platform
            .device(&d1)
            .await
            .unwrap()
            .last_ingest_error
            .is_some()
    );
    // Pending since T0.
    send(platform, "d1", T0, json!({"temperature": 31})).await;
    // The registry has the error too (it writes errors in batches).
    node.registry.flush_presence().await.unwrap();

    assert_eq!(platform.delete_device(&d1).await.unwrap(), 1);
    assert_eq!(node.link.disconnected(), ["d1"]);
    assert!(matches!(
        platform.device(&d1).await,
        Err(Error::NotFound { .. })
    ));

    // A new device of the same id starts afresh.
    create_device(platform, "d1").await;
    assert_eq!(platform.device(&d1).await.unwrap().last_ingest_error, None);
    let mut events = Events::changes(platform);
    // Pending since T0 + 10 s (not T0): raised 10 s later, by 33.
    send(platform, "d1", T0 + 10_000, json!({"temperature": 32})).await;
    send(platform, "d1", T0 + 20_000, json!({"temperature": 33})).await;
    let raised = events.next_alarm("d1").await;
    assert_eq!(raised.values, [("temperature".to_owned(), 33.0)]);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_is_unknown_to_ingest_until_it_registers_again() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    send(platform, "d1", T0, json!({"temperature": 20})).await;

    platform.delete_device(&d1).await.unwrap();
    let answer = platform.ingest_json(&d1, br#"{"temperature": 21}"#).await;
    assert!(matches!(answer, Err(Error::NotFound { .. })), "{answer:?}");
    assert!(matches!(
        platform.latest_telemetry(&d1).await,
        Err(Error::NotFound { .. })
    ));

    // Line protocol registers it again.
    platform
        .ingest_line_protocol(
            format!("d1 temperature=22 {T0}").as_bytes(),
            Precision::Milliseconds,
        )
        .await
        .unwrap();
    assert!(platform.device(&d1).await.is_ok());
    send(platform, "d1", T0 + 1000, json!({"temperature": 23})).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_credentials_disconnects_the_device_and_only_the_new_secret_logs_in() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;

    let (old_secret, _) = platform.issue_credentials(&d1).await.unwrap();
    assert!(log_in(platform, "d1", &old_secret).await.is_ok());
    let (new_secret, closed) = platform.issue_credentials(&d1).await.unwrap();
    assert_eq!(closed, 1);
    assert_eq!(node.link.disconnected(), ["d1", "d1"]);

    assert_eq!(
        log_in(platform, "d1", &old_secret).await.err(),
        Some(Denial::BadCredentials)
    );
    assert_eq!(
        log_in(platform, "d2", &new_secret).await.err(),
        Some(Denial::BadCredentials)
    );
    let access = log_in(platform, "d1", &new_secret).await.unwrap();
    assert_eq!(access.user_name().map(|name| &**name), Some("d1"));
    assert!(access.may_publish(&topic("devices/d1/telemetry")));
    assert!(access.may_publish(&topic("devices/d1/commands/cmd-1/response")));
    assert!(!access.may_publish(&topic("devices/d2/telemetry")));
    assert!(!access.may_publish(&topic("devices/d1")));
    assert!(!access.may_publish(&topic("alerts/d1")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_device_given_new_credentials_is_disconnected_and_logs_in_only_with_them() {
    let node = BrokerNode::start(BrokerConfig::default()).await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    let (old_secret, _) = platform.issue_credentials(&d1).await.unwrap();
    let mut connection = node.connect_device("d1", &old_secret).await;
    let mut events = Events::changes(platform);

    let (new_secret, closed) = platform.issue_credentials(&d1).await.unwrap();
    assert_eq!(closed, 1);
    let closed_by_server = tokio::time::timeout(support::TIMEOUT, connection.next_event())
        .await
        .unwrap();
    assert!(
        matches!(
            closed_by_server,
            Err(ClientError::Disconnected(ReasonCode::ADMINISTRATIVE_ACTION))
        ),
        "{closed_by_server:?}"
    );
    assert!(!events.next_presence("d1").await, "offline");

    let refused = Connection::connect(&node.device_options("d1", &old_secret))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            refused,
            ClientError::Refused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        ),
        "{refused:?}"
    );

    let mut connection = node.connect_device("d1", &new_secret).await;
    assert!(events.next_presence("d1").await, "online again");
    let elsewhere = publish_and_wait(&mut connection, "devices/d2/telemetry", r#"{"t": 1}"#).await;
    assert_eq!(elsewhere.reason, ReasonCode::NOT_AUTHORIZED);
    let own = publish_and_wait(&mut connection, "devices/d1/telemetry", r#"{"t": 1}"#).await;
    assert_eq!(own.reason, ReasonCode::SUCCESS);
    connection.disconnect().await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_devices_with_a_bad_cursor_is_an_invalid_query() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;

    let first = platform
        .list_devices(&DeviceFilter {
            limit: 1,
            ..DeviceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    let next = platform
        .list_devices(&DeviceFilter {
            limit: 1,
            cursor: first.next_cursor,
            ..DeviceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(next.items[0].id.as_str(), "d2");

    let answer = platform
        .list_devices(&DeviceFilter {
            cursor: Some("not a cursor!".to_owned()),
            ..DeviceFilter::default()
        })
        .await;
    assert!(
        matches!(answer, Err(Error::InvalidQuery(ref message)) if message.contains("cursor")),
        "{answer:?}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_created_again_does_not_inherit_the_last_error_of_the_deleted_one() {
    let node = Node::start().await;
    let platform = &node.platform;
    let d1 = device_id("d1");
    create_device(platform, "d1").await;
    assert!(
        platform
            .ingest_json(&d1, br#"{"temperature": "hot"}"#)
            .await
            .is_err()
    );
    platform.delete_device(&d1).await.unwrap();
    create_device(platform, "d1").await;
    node.registry.flush_presence().await.unwrap();
    assert_eq!(platform.device(&d1).await.unwrap().last_ingest_error, None);
    node.stop().await;
}
