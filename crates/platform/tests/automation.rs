//! Rules at work through the platform's door: alarms raised and cleared in data time,
//! their events, republished documents and commands on the recording link, rule changes,
//! and the rules the platform refuses.
//!
//! Where a test must show that a message changed nothing, it does not wait for a while:
//! it sends a later message that does change something and checks which message did it
//! (an alarm's values name the message that raised or cleared it), since the rules and
//! their actions take messages strictly in order.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use fleetwire_model::{AlarmStatus, CommandStatus, RuleAction, RuleSpec, Severity};
use fleetwire_mqtt_codec::QoS;
use fleetwire_platform::Error;
use serde_json::json;
use support::{Events, Node, T0, alarms_of, create_device, device_id, rule, rule_id, send};

fn values(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs
        .iter()
        .map(|(field, value)| ((*field).to_owned(), *value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_raises_one_alarm_after_its_for_in_data_time_and_clears_it_by_its_clear_expression()
{
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            RuleSpec {
                for_ms: Some(10_000),
                clear: Some("temperature < 28".to_owned()),
                ..rule("temperature > 30")
            },
        )
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    // Holds from T0, but only 5 s of data time later, then 10 s: raised by 33.
    send(platform, "d1", T0, json!({"temperature": 31})).await;
    send(platform, "d1", T0 + 5_000, json!({"temperature": 32})).await;
    send(platform, "d1", T0 + 10_000, json!({"temperature": 33})).await;
    let raised = events.next_alarm("d1").await;
    assert_eq!(raised.status, AlarmStatus::Active);
    assert_eq!(raised.rule_id.as_str(), "overheat");
    assert_eq!(raised.severity, Severity::High);
    assert_eq!(raised.values, values(&[("temperature", 33.0)]));

    // Still holding: no second alarm. Below 30 but not below 28: not cleared (hysteresis).
    send(platform, "d1", T0 + 11_000, json!({"temperature": 34})).await;
    send(platform, "d1", T0 + 12_000, json!({"temperature": 29})).await;
    send(platform, "d1", T0 + 13_000, json!({"temperature": 27})).await;
    let cleared = events.next_alarm("d1").await;
    assert_eq!(cleared.id, raised.id);
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.cleared_by.as_deref(), Some("rule"));
    assert_eq!(cleared.clear_values, values(&[("temperature", 27.0)]));

    let alarms = alarms_of(platform, "overheat").await;
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0], cleared);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_action_publishes_the_alarm_on_its_topic_with_the_device_filled_in() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            RuleSpec {
                actions: vec![
                    RuleAction::Alarm,
                    RuleAction::Republish {
                        topic: "alerts/{device}/overheat".to_owned(),
                    },
                ],
                ..rule("temperature > 30")
            },
        )
        .await
        .unwrap();

    send(platform, "d1", T0, json!({"temperature": 31.5})).await;
    let raised = &node
        .link
        .wait_for_published_on("alerts/d1/overheat", 1)
        .await[0];
    let alarm = &alarms_of(platform, "overheat").await[0];
    assert_eq!(raised.qos, QoS::AtLeastOnce);
    let document = raised.json();
    assert_eq!(document["event"], "raised");
    assert_eq!(document["device_id"], "d1");
    assert_eq!(
        document["rule"],
        json!({"id": "overheat", "name": "test rule"})
    );
    assert_eq!(document["severity"], "high");
    assert_eq!(document["values"], json!({"temperature": 31.5}));
    assert_eq!(document["ts"], T0);
    assert_eq!(
        document["alarm"],
        json!({"id": alarm.id.as_str(), "status": "active"})
    );

    // Its clearing too.
    send(platform, "d1", T0 + 1000, json!({"temperature": 20})).await;
    let cleared = &node
        .link
        .wait_for_published_on("alerts/d1/overheat", 2)
        .await[1];
    assert_eq!(cleared.json()["event"], "cleared");
    assert_eq!(cleared.json()["alarm"]["status"], "cleared");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_action_sends_its_command_to_the_device_when_raised_only() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(
            Some(rule_id("overheat")),
            RuleSpec {
                actions: vec![
                    RuleAction::Command {
                        name: "fan-on".to_owned(),
                        params: json!({"speed": 3}),
                    },
                    // Carried out after the command: once the clearing is republished, a
                    // command of the clearing would have been sent.
                    RuleAction::Republish {
                        topic: "alerts/{device}".to_owned(),
                    },
                ],
                ..rule("temperature > 30")
            },
        )
        .await
        .unwrap();
    let is_command =
        |published: &support::Published| published.topic.starts_with("devices/d1/commands/");

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    let sent = &node
        .link
        .wait_for_published("a command to d1", is_command, 1)
        .await[0];
    let payload = sent.json();
    assert_eq!(payload["name"], "fan-on");
    assert_eq!(payload["params"], json!({"speed": 3}));
    let id = payload["id"].as_str().unwrap().to_owned();
    assert_eq!(sent.topic, format!("devices/d1/commands/{id}"));

    send(platform, "d1", T0 + 1000, json!({"temperature": 20})).await;
    let republished = node.link.wait_for_published_on("alerts/d1", 2).await;
    assert_eq!(republished[1].json()["event"], "cleared");
    // Commands, not copies: the commands' task, when it starts, may take a command sent
    // meanwhile for one left from before a restart and publish it once more.
    let commands_published: BTreeSet<String> = node
        .link
        .published_where(is_command)
        .into_iter()
        .map(|published| published.topic)
        .collect();
    assert_eq!(commands_published.len(), 1, "{commands_published:?}");
    let commands = platform
        .list_commands(&device_id("d1"), 100, None)
        .await
        .unwrap()
        .items;
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands[0].id.as_str(), id);
    assert_eq!(commands[0].name, "fan-on");
    assert_eq!(commands[0].status, CommandStatus::Pending);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_rule_whose_logic_is_unchanged_keeps_its_pending_state() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let spec = RuleSpec {
        for_ms: Some(10_000),
        ..rule("temperature > 30")
    };
    platform
        .create_rule(Some(rule_id("overheat")), spec.clone())
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    platform
        .replace_rule(
            &rule_id("overheat"),
            RuleSpec {
                name: "overheating".to_owned(),
                severity: Severity::Critical,
                ..spec
            },
        )
        .await
        .unwrap();
    // Pending since T0 still: 10 s later it is raised, under the new name and severity.
    send(platform, "d1", T0 + 10_000, json!({"temperature": 32})).await;
    let raised = events.next_alarm("d1").await;
    assert_eq!(raised.values, values(&[("temperature", 32.0)]));
    assert_eq!(raised.rule_name, "overheating");
    assert_eq!(raised.severity, Severity::Critical);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_rule_acts_with_its_new_name_severity_and_actions() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(Some(rule_id("overheat")), rule("temperature > 30"))
        .await
        .unwrap();
    let mut events = Events::changes(platform);
    send(platform, "d1", T0, json!({"temperature": 31})).await;
    let first = events.next_alarm("d1").await;
    assert_eq!(
        (first.rule_name.as_str(), first.severity),
        ("test rule", Severity::High)
    );
    send(platform, "d1", T0 + 1000, json!({"temperature": 20})).await;
    assert_eq!(events.next_alarm("d1").await.status, AlarmStatus::Cleared);

    platform
        .replace_rule(
            &rule_id("overheat"),
            RuleSpec {
                name: "overheating".to_owned(),
                severity: Severity::Critical,
                actions: vec![
                    RuleAction::Alarm,
                    RuleAction::Republish {
                        topic: "alerts/{device}".to_owned(),
                    },
                ],
                ..rule("temperature > 30")
            },
        )
        .await
        .unwrap();
    send(platform, "d1", T0 + 2000, json!({"temperature": 32})).await;
    let second = events.next_alarm("d1").await;
    assert_eq!(
        (second.rule_name.as_str(), second.severity),
        ("overheating", Severity::Critical)
    );
    let republished = &node.link.wait_for_published_on("alerts/d1", 1).await[0];
    assert_eq!(republished.json()["rule"]["name"], "overheating");
    assert_eq!(republished.json()["severity"], "critical");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_rule_whose_logic_changed_starts_its_pending_state_over() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    let spec = RuleSpec {
        for_ms: Some(10_000),
        ..rule("temperature > 30")
    };
    platform
        .create_rule(Some(rule_id("overheat")), spec.clone())
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    platform
        .replace_rule(
            &rule_id("overheat"),
            RuleSpec {
                condition: "temperature > 30.5".to_owned(),
                ..spec
            },
        )
        .await
        .unwrap();
    // Pending again from T0 + 10 s: raised only 10 s after that.
    send(platform, "d1", T0 + 10_000, json!({"temperature": 32})).await;
    send(platform, "d1", T0 + 20_000, json!({"temperature": 33})).await;
    let raised = events.next_alarm("d1").await;
    assert_eq!(raised.values, values(&[("temperature", 33.0)]));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_cleared_by_hand_while_its_condition_holds_is_raised_again_at_the_next_message() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(Some(rule_id("overheat")), rule("temperature > 30"))
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    let first = events.next_alarm("d1").await;
    let cleared = platform.clear_alarm(&first.id, "operator").await.unwrap();
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.cleared_by.as_deref(), Some("operator"));
    assert_eq!(events.next_alarm("d1").await.status, AlarmStatus::Cleared);

    send(platform, "d1", T0 + 1000, json!({"temperature": 32})).await;
    let second = events.next_alarm("d1").await;
    assert_ne!(second.id, first.id);
    assert_eq!(second.status, AlarmStatus::Active);
    assert_eq!(second.values, values(&[("temperature", 32.0)]));

    // The rule clears the new alarm, not the old one.
    send(platform, "d1", T0 + 2000, json!({"temperature": 20})).await;
    let cleared_by_rule = events.next_alarm("d1").await;
    assert_eq!(cleared_by_rule.id, second.id);
    assert_eq!(cleared_by_rule.cleared_by.as_deref(), Some("rule"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_alarm_stays_open_until_its_rule_clears_it() {
    let node = Node::start().await;
    let platform = &node.platform;
    create_device(platform, "d1").await;
    platform
        .create_rule(Some(rule_id("overheat")), rule("temperature > 30"))
        .await
        .unwrap();
    let mut events = Events::changes(platform);

    send(platform, "d1", T0, json!({"temperature": 31})).await;
    let raised = events.next_alarm("d1").await;
    let acknowledged = platform
        .acknowledge_alarm(&raised.id, "operator")
        .await
        .unwrap();
    assert_eq!(acknowledged.status, AlarmStatus::Acknowledged);
    assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("operator"));
    assert_eq!(events.next_alarm("d1").await, acknowledged);

    // Still holding: nothing new; then it stops holding and the rule clears it.
    send(platform, "d1", T0 + 1000, json!({"temperature": 32})).await;
    send(platform, "d1", T0 + 2000, json!({"temperature": 20})).await;
    let cleared = events.next_alarm("d1").await;
    assert_eq!(cleared.id, raised.id);
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.acknowledged_by.as_deref(), Some("operator"));
    assert_eq!(alarms_of(platform, "overheat").await.len(), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_expression_does_not_compile_is_refused_with_its_position() {
    let node = Node::start().await;
    let platform = &node.platform;

    let answer = platform
        .create_rule(Some(rule_id("broken")), rule("temperature > > 30"))
        .await;
    let Err(Error::InvalidExpression { position, detail }) = answer else {
        panic!("expected an invalid expression, got {answer:?}");
    };
    assert_eq!(position, Some(14));
    assert!(detail.contains("column 15"), "{detail}");

    let answer = platform
        .create_rule(
            Some(rule_id("broken")),
            RuleSpec {
                clear: Some("temperature <".to_owned()),
                ..rule("temperature > 30")
            },
        )
        .await;
    assert!(
        matches!(answer, Err(Error::InvalidExpression { ref detail, .. }) if detail.contains("clear")),
        "{answer:?}"
    );
    assert!(
        platform
            .list_rules(100, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_a_bad_action_is_refused() {
    let node = Node::start().await;
    let platform = &node.platform;

    for (action, expected) in [
        (
            RuleAction::Republish {
                topic: "alerts/#".to_owned(),
            },
            "wildcards",
        ),
        (
            RuleAction::Webhook {
                url: "ftp://example.com/hook".to_owned(),
            },
            "http:// or https://",
        ),
        (
            RuleAction::Command {
                name: "reboot now".to_owned(),
                params: json!(null),
            },
            "command",
        ),
    ] {
        let answer = platform
            .create_rule(
                None,
                RuleSpec {
                    actions: vec![RuleAction::Alarm, action.clone()],
                    ..rule("temperature > 30")
                },
            )
            .await;
        assert!(
            matches!(answer, Err(Error::Invalid(ref message)) if message.contains(expected)),
            "{action:?}: {answer:?}"
        );
    }
    assert!(
        platform
            .list_rules(100, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    node.stop().await;
}
