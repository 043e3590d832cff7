//! Commands through the platform's door: stored, published on the recording link,
//! delivered when the link says a device has them, answered through the broker's ingest
//! hook, published again while nobody takes them, expired at their deadline.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetwire_broker::{Inbound, Verdict};
use fleetwire_model::{Command, CommandStatus};
use fleetwire_mqtt_codec::QoS;
use fleetwire_platform::{CommandRequest, Error, Platform};
use serde_json::{Value, json};
use support::{Events, Node, create_device, device_id, topic};

fn reboot(timeout: Duration) -> CommandRequest {
    CommandRequest {
        name: "reboot".to_owned(),
        params: json!({"delay": 5}),
        timeout,
    }
}

async fn send_command(platform: &Platform, device: &str, timeout: Duration) -> Command {
    platform
        .send_command(&device_id(device), reboot(timeout))
        .await
        .unwrap()
}

fn command_topic(command: &Command) -> String {
    format!("devices/{}/commands/{}", command.device_id, command.id)
}

/// What the broker's ingest hook answers to `payload`, published by logged-in device
/// `user` on `topic_name`, settled alone.
async fn answer(platform: &Platform, user: &str, topic_name: &str, payload: &Value) -> Verdict {
    let ingest = platform.mqtt_hooks().ingest.unwrap();
    let mut collector = ingest.collector();
    let user: Arc<str> = Arc::from(user);
    let topic_name = topic(topic_name);
    let payload = Bytes::from(payload.to_string());
    let is_kept = collector.offer(Inbound {
        topic: &topic_name,
        payload: &payload,
        qos: QoS::AtLeastOnce,
        user: Some(&user),
    });
    assert!(is_kept, "the platform takes {topic_name}");
    let settled = collector.settle().await;
    assert_eq!(settled.verdicts.len(), 1);
    settled.verdicts[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_stored_pending_and_published_to_its_device_at_qos_1_with_its_deadline() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;

    let command = send_command(platform, "d1", Duration::from_secs(30)).await;
    assert_eq!(command.status, CommandStatus::Pending);
    assert_eq!(command.expires_at - command.created_at, 30_000);
    assert_eq!(
        platform
            .command(&device_id("d1"), &command.id)
            .await
            .unwrap(),
        command
    );

    let published = &node
        .link
        .wait_for_published_on(&command_topic(&command), 1)
        .await[0];
    assert_eq!(published.qos, QoS::AtLeastOnce);
    let expires_in = published.expires_in.unwrap();
    assert!(
        expires_in <= Duration::from_secs(30) && expires_in > Duration::ZERO,
        "{expires_in:?}"
    );
    assert_eq!(
        published.json(),
        json!({"id": command.id.as_str(), "name": "reboot", "params": {"delay": 5}})
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_an_unregistered_device_is_not_found() {
    let node = Node::start().await;
    let answer = node
        .platform
        .send_command(&device_id("ghost"), reboot(Duration::from_secs(30)))
        .await;
    assert!(
        matches!(answer, Err(Error::NotFound { kind: "device", .. })),
        "{answer:?}"
    );
    assert!(node.link.published().is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_delivered_when_its_device_has_it_and_succeeds_with_its_answer() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let mut events = Events::changes(platform);
    let command = send_command(platform, "d1", Duration::from_secs(30)).await;
    let id = command.id.as_str();
    assert_eq!(events.next_command(id).await.status, CommandStatus::Pending);

    let published = &node
        .link
        .wait_for_published_on(&command_topic(&command), 1)
        .await[0];
    assert!(
        node.link.deliver(published.index),
        "the command waits for its delivery"
    );
    let delivered = events.next_command(id).await;
    assert_eq!(delivered.status, CommandStatus::Delivered);
    assert!(delivered.delivered_at.is_some());

    let verdict = answer(
        platform,
        "d1",
        &format!("{}/response", command_topic(&command)),
        &json!({"status": "ok", "result": {"uptime": 0}}),
    )
    .await;
    assert_eq!(verdict, Verdict::Accepted);
    let succeeded = events.next_command(id).await;
    assert_eq!(succeeded.status, CommandStatus::Succeeded);
    assert_eq!(succeeded.result, Some(json!({"uptime": 0})));
    assert!(succeeded.completed_at.is_some());
    assert_eq!(
        platform
            .command(&device_id("d1"), &command.id)
            .await
            .unwrap(),
        succeeded
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_answered_with_an_error_fails_with_its_result() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let command = send_command(platform, "d1", Duration::from_secs(30)).await;

    let verdict = answer(
        platform,
        "d1",
        &format!("{}/response", command_topic(&command)),
        &json!({"status": "error", "result": "busy"}),
    )
    .await;
    assert_eq!(verdict, Verdict::Accepted);
    let failed = platform
        .command(&device_id("d1"), &command.id)
        .await
        .unwrap();
    assert_eq!(failed.status, CommandStatus::Failed);
    assert_eq!(failed.result, Some(json!("busy")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_nobody_takes_is_published_again_until_it_is_taken() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    node.link.set_takers(|_| 0);

    let waiting = send_command(platform, "d1", Duration::from_secs(60)).await;
    let waiting_topic = command_topic(&waiting);
    let published = node.link.wait_for_published_on(&waiting_topic, 3).await;
    assert!(published.iter().all(|published| published.taken_by == 0));

    // d1 is back: the next copy is taken, and delivered.
    let d1_topic = waiting_topic.clone();
    node.link
        .set_takers(move |topic| usize::from(topic == d1_topic));
    let published = node
        .link
        .wait_for_published(
            "a copy of the command taken",
            |published| published.topic == waiting_topic && published.taken_by == 1,
            1,
        )
        .await;
    let taken = &published[0];
    assert!(node.link.deliver(taken.index));
    let copies = node.link.published_on(&waiting_topic).len();

    // A command nobody takes (d2 is offline) is published again, twice: the first is no
    // longer among those waiting.
    let other = send_command(platform, "d2", Duration::from_secs(60)).await;
    node.link
        .wait_for_published_on(&command_topic(&other), 3)
        .await;
    assert_eq!(node.link.published_on(&waiting_topic).len(), copies);
    let delivered = platform
        .command(&device_id("d1"), &waiting.id)
        .await
        .unwrap();
    assert_eq!(delivered.status, CommandStatus::Delivered);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_nobody_takes_expires_at_its_deadline_and_is_not_published_after() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    node.link.set_takers(|_| 0);
    let mut events = Events::changes(platform);

    let command = send_command(platform, "d1", Duration::from_secs(1)).await;
    let id = command.id.as_str();
    assert_eq!(events.next_command(id).await.status, CommandStatus::Pending);
    let expired = events.next_command(id).await;
    assert_eq!(expired.status, CommandStatus::Expired);
    assert!(expired.completed_at.unwrap() >= command.expires_at);
    assert_eq!(expired.result, None);
    let copies = node.link.published_on(&command_topic(&command)).len();
    assert!(copies >= 1);

    // Another command nobody takes is published again twice meanwhile; the expired one
    // is not.
    let other = send_command(platform, "d2", Duration::from_secs(60)).await;
    node.link
        .wait_for_published_on(&command_topic(&other), 3)
        .await;
    assert_eq!(
        node.link.published_on(&command_topic(&command)).len(),
        copies
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_to_another_device_s_command_is_refused() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    let command = send_command(platform, "d1", Duration::from_secs(30)).await;

    // d2 answers d1's command on its own topic.
    let verdict = answer(
        platform,
        "d2",
        &format!("devices/d2/commands/{}/response", command.id),
        &json!({"status": "ok", "result": "done"}),
    )
    .await;
    assert_eq!(verdict, Verdict::Invalid);
    let untouched = platform
        .command(&device_id("d1"), &command.id)
        .await
        .unwrap();
    assert_eq!(untouched.status, CommandStatus::Pending);
    assert_eq!(untouched.result, None);
    let recorded = platform
        .device(&device_id("d2"))
        .await
        .unwrap()
        .last_ingest_error
        .unwrap();
    assert_eq!(recorded.source, "mqtt");

    // d1's own answer is still taken.
    let verdict = answer(
        platform,
        "d1",
        &format!("{}/response", command_topic(&command)),
        &json!({"status": "ok"}),
    )
    .await;
    assert_eq!(verdict, Verdict::Accepted);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_device_s_waiting_commands_are_not_published_any_more() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    node.link.set_takers(|_| 0);
    let command = send_command(platform, "d1", Duration::from_secs(60)).await;
    let topic = format!("devices/d1/commands/{}", command.id);
    node.link.wait_for_published_on(&topic, 1).await;
    platform.delete_device(&device_id("d1")).await.unwrap();
    let copies = node.link.published_on(&topic).len();
    // Another device's waiting command is published again several times meanwhile: the
    // deleted device's would have been too.
    let other = send_command(platform, "d2", Duration::from_secs(60)).await;
    node.link
        .wait_for_published_on(&format!("devices/d2/commands/{}", other.id), 3)
        .await;
    assert_eq!(
        node.link.published_on(&topic).len(),
        copies,
        "{:?}",
        node.link.published()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_commands_does_not_publish_the_waiting_ones_again_before_their_time() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    create_device(platform, "d2").await;
    node.link.set_takers(|_| 0);
    let command = send_command(platform, "d1", Duration::from_secs(60)).await;
    let topic = format!("devices/d1/commands/{}", command.id);
    // Each send wakes the commands' task; a waiting command is published again only once
    // a second has passed since its last copy (ten sends take far less; one regular copy
    // is allowed for a slow machine).
    for _ in 0..10 {
        send_command(platform, "d2", Duration::from_secs(60)).await;
    }
    let copies = node.link.published_on(&topic).len();
    assert!(copies <= 2, "{copies} copies: {:?}", node.link.published());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pending_before_a_restart_are_published_again_after_it() {
    let node = Node::start().await;
    create_device(&node.platform, "d1").await;
    node.link.set_takers(|_| 0);
    let command = send_command(&node.platform, "d1", Duration::from_secs(60)).await;
    let topic = format!("devices/d1/commands/{}", command.id);
    node.link.wait_for_published_on(&topic, 1).await;
    // The sessions that held it are gone with the process: the new one publishes it at
    // once (and a session of the new link takes it).
    let node = node.restart().await;
    node.link.wait_for_published_on(&topic, 1).await;
    node.stop().await;
}
