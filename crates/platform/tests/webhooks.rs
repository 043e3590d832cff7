//! Webhook actions through the platform's door: the alarm document POSTed to a local
//! receiver, and deliveries the receiver refuses retried, then counted as failed.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetwire_model::{RuleAction, RuleSpec};
use fleetwire_platform::{PlatformConfig, WebhookConfig};
use serde_json::json;
use support::{Events, Node, Receiver, T0, create_device, eventually, rule, rule_id, send};

/// Webhook delivery with short waits, so retries take milliseconds.
fn quick_webhooks() -> PlatformConfig {
    PlatformConfig {
        webhooks: WebhookConfig {
            timeout: Duration::from_secs(5),
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            ..WebhookConfig::default()
        },
        ..PlatformConfig::default()
    }
}

fn webhook_rule(url: String) -> RuleSpec {
    RuleSpec {
        actions: vec![RuleAction::Alarm, RuleAction::Webhook { url }],
        ..rule("temperature > 30")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_action_posts_the_alarm_document() {
    let receiver = Receiver::start(200).await;
    let node = Node::start_with(quick_webhooks()).await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            webhook_rule(receiver.url("/hooks/alarms")),
        )
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    send(
        platform,
        "d1",
        T0,
        json!({"temperature": 31.5, "humidity": 40}),
    )
    .await;
    let alarm = events.next_alarm("d1").await;
    let request = &receiver.wait_for(1).await[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/alarms");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "event": "raised",
            "rule": {"id": "overheat", "name": "test rule"},
            "device_id": "d1",
            "severity": "high",
            "values": {"temperature": 31.5},
            "ts": T0,
            "alarm": {"id": alarm.id.as_str(), "status": "active"},
        })
    );
    eventually("the delivery counted", async || {
        (platform.stats().webhooks == [1, 0, 0, 0, 0]).then_some(())
    })
    .await;

    send(platform, "d1", T0 + 1000, json!({"temperature": 20})).await;
    let cleared = &receiver.wait_for(2).await[1];
    assert_eq!(cleared.body["event"], "cleared");
    assert_eq!(cleared.body["alarm"]["status"], "cleared");
    assert_eq!(cleared.body["values"], json!({"temperature": 20.0}));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_the_receiver_refuses_is_retried_then_counted_as_failed() {
    let receiver = Receiver::start(500).await;
    let node = Node::start_with(quick_webhooks()).await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            webhook_rule(receiver.url("/hook")),
        )
        .await
        .unwrap();

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    let attempts = receiver.wait_for(3).await;
    assert!(
        attempts
            .iter()
            .all(|attempt| attempt.body == attempts[0].body),
        "the same document every time"
    );
    assert_eq!(attempts[0].body["event"], "raised");
    // Delivered, failed, retries, short-circuited, dropped.
    eventually("the failure counted", async || {
        let webhooks = platform.stats().webhooks;
        (webhooks[1] == 1).then_some(webhooks)
    })
    .await;
    assert_eq!(platform.stats().webhooks, [0, 1, 2, 0, 0]);
    assert_eq!(receiver.requests().len(), 3, "no attempt after the last");
    node.stop().await;
}
